/**
 * Bench child: tollgate's HTTP gateway composed as `tollgate gateway` composes it (config validated at boot,
 * decision pipeline run here in standalone mode, pino to stdout, in-process spend log), on 127.0.0.1:0.
 * The config YAML comes in TOLLGATE_BENCH_CONFIG; `os.environ/` references in it read this environment.
 */
import { buildAuthorizer } from '../../src/main/authz-app.js';
import { prepareConfigText } from '../../src/main/config-source.js';
import { startGateway } from '../../src/main/gateway-app.js';
import { contextSecret } from '../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../src/store/spend.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const yaml = process.env['TOLLGATE_BENCH_CONFIG'];
  if (yaml === undefined) throw new Error('TOLLGATE_BENCH_CONFIG is not set');
  const prepared = prepareConfigText(yaml, 'bench.yaml', process.env);
  const gs = prepared.config.general_settings;
  const secret = contextSecret(gs.context_signing_key, gs.master_key);
  if (secret === undefined) throw new Error('the bench config sets no context_signing_key');
  const logger = createLogger('info');
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const app = await startGateway(prepared.config, parts, secret, {
    host: '127.0.0.1',
    port: 0,
    logger,
    spend: new InMemorySpendLog(),
  });
  serveParent(app.port, () => app.close(2000));
}

main().catch(failStartup);
