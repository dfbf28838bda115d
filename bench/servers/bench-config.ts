/** The config a bench child runs: YAML from TOLLGATE_BENCH_CONFIG, validated as at boot, with its pipeline built. */
import { buildAuthorizer, type AuthzParts } from '../../src/main/authz-app.js';
import { prepareConfigText, type PreparedConfig } from '../../src/main/config-source.js';
import { contextSecret } from '../../src/identity/context-token.js';

export function loadBenchConfig(): { prepared: PreparedConfig; secret: Buffer; parts: AuthzParts } {
  const yaml = process.env['TOLLGATE_BENCH_CONFIG'];
  if (yaml === undefined) throw new Error('TOLLGATE_BENCH_CONFIG is not set');
  const prepared = prepareConfigText(yaml, 'bench.yaml', process.env);
  const gs = prepared.config.general_settings;
  const secret = contextSecret(gs.context_signing_key, gs.master_key);
  if (secret === undefined) throw new Error('the bench config sets no context_signing_key');
  return { prepared, secret, parts: buildAuthorizer(prepared.config, prepared.policy, secret) };
}
