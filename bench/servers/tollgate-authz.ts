/**
 * Bench child: tollgate's authz side composed as `tollgate serve` composes it (config validated at boot,
 * JWKS loaded, pino to stdout, prom-client with default metrics, in-process store), on 127.0.0.1:0.
 * The config YAML comes in TOLLGATE_BENCH_CONFIG; `os.environ/` references in it read this environment.
 */
import { startAuthz } from '../../src/main/authz-app.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import { loadBenchConfig } from './bench-config.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const logger = createLogger('info');
  const { parts, store } = await loadBenchConfig(logger, false);
  const metrics = createMetrics({ defaultMetrics: true });
  const app = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics });
  // startAuthz keeps retrying in the background when the IdP is down; a bench must not start that way.
  if (parts.verifier !== undefined && parts.verifier.keyCount === 0) throw new Error('the IdP keys did not load');
  serveParent(app.port, async () => {
    await app.close(2000);
    await store.close(2000);
  });
}

main().catch(failStartup);
