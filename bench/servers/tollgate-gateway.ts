/**
 * Bench child: tollgate's HTTP gateway composed as `tollgate gateway` composes it (config validated at boot,
 * decision pipeline run here in standalone mode, pino to stdout, the store: in-process counters and the
 * spend log in embedded PGlite, since the bench config sets no redis_url or database_url), on 127.0.0.1:0.
 * The config YAML comes in TOLLGATE_BENCH_CONFIG; `os.environ/` references in it read this environment.
 */
import { startGateway } from '../../src/main/gateway-app.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { gatewayStoreOptions } from '../../src/main/store-app.js';
import { loadBenchConfig } from './bench-config.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const logger = createLogger('info');
  const { prepared, secret, parts, store } = await loadBenchConfig(
    logger,
    process.env['TOLLGATE_BENCH_CONFIG']?.includes('database_url') === true,
  );
  const app = await startGateway(prepared.config, parts, secret, {
    host: '127.0.0.1',
    port: 0,
    logger,
    ...gatewayStoreOptions(store),
  });
  serveParent(app.port, async () => {
    await app.close(2000);
    await store.close(2000);
  });
}

main().catch(failStartup);
