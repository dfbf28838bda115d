/**
 * Bench child: tollgate's HTTP gateway composed as `tollgate gateway` composes it (config validated at boot,
 * decision pipeline run here in standalone mode, pino to stdout, in-process spend log), on 127.0.0.1:0.
 * The config YAML comes in TOLLGATE_BENCH_CONFIG; `os.environ/` references in it read this environment.
 */
import { startGateway } from '../../src/main/gateway-app.js';
import { InMemorySpendLog } from '../../src/store/spend.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { loadBenchConfig } from './bench-config.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const { prepared, secret, parts } = loadBenchConfig();
  const logger = createLogger('info');
  const app = await startGateway(prepared.config, parts, secret, {
    host: '127.0.0.1',
    port: 0,
    logger,
    spend: new InMemorySpendLog(),
  });
  serveParent(app.port, () => app.close(2000));
}

main().catch(failStartup);
