/**
 * Bench child: tollgate's HTTP gateway composed as `tollgate gateway` composes it (config validated at boot,
 * decision pipeline run here in standalone mode, one JSON log line per request, Prometheus metrics, the
 * store: in-process counters and the spend log in the database the bench config names), on 127.0.0.1:0.
 * The config YAML comes in TOLLGATE_BENCH_CONFIG; `os.environ/` references in it read this environment.
 * The log goes to the file TOLLGATE_BENCH_LOG names, as a container's stdout goes to its runtime's log
 * file: read by the parent through a pipe, it would cost the load generator CPU.
 */
import { startGateway } from '../../src/main/gateway-app.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { LogDestination } from '../../src/telemetry/log-destination.js';
import { createMetrics } from '../../src/telemetry/metrics.js';
import { gatewayStoreOptions } from '../../src/main/store-app.js';
import { loadBenchConfig } from './bench-config.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const logFile = process.env['TOLLGATE_BENCH_LOG'];
  // As createLogger's own stdout destination, the file's dropped-lines warning follows the logger's level.
  const logger = createLogger(
    'info',
    logFile === undefined ? undefined : LogDestination.toFile(logFile, { warns: () => logger.isLevelEnabled('warn') }),
  );
  const metrics = createMetrics({ defaultMetrics: true });
  const { prepared, secret, parts, store } = await loadBenchConfig(
    logger,
    process.env['TOLLGATE_BENCH_CONFIG']?.includes('database_url') === true,
  );
  const app = await startGateway(prepared.config, parts, secret, {
    host: '127.0.0.1',
    port: 0,
    logger,
    ...gatewayStoreOptions(store),
    metrics,
  });
  serveParent(app.port, async () => {
    await app.close(2000);
    await store.close(2000);
  });
}

main().catch(failStartup);
