/** Starts tollgate's authz side in-process from config YAML, on 127.0.0.1:0, with captured logs. */
import { Writable } from 'node:stream';
import { prepareConfigText } from '../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../src/main/authz-app.js';
import { contextSecret } from '../../src/identity/context-token.js';
import { createLogger } from '../../src/telemetry/logger.js';
import { createMetrics, type Metrics } from '../../src/telemetry/metrics.js';

export interface TestAuthz {
  readonly app: AuthzApp;
  readonly port: number;
  readonly metrics: Metrics;
  /** Every log line written so far (JSON text). */
  readonly logs: string[];
  close(): Promise<void>;
}

export const TEST_CONTEXT_KEY = 'test-context-signing-key-0123456789abcdef';

export async function startTestAuthz(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<TestAuthz> {
  const prepared = prepareConfigText(yaml, 'test.yaml', env);
  const gs = prepared.config.general_settings;
  const secret = contextSecret(gs.context_signing_key ?? TEST_CONTEXT_KEY, gs.master_key);
  if (secret === undefined) throw new Error('no context secret');
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  const logger = createLogger('debug', sink);
  const metrics = createMetrics({ defaultMetrics: false });
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const app = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics });
  return { app, port: app.port, metrics, logs, close: () => app.close(1000) };
}
