/** The config a bench child runs: YAML from TOLLGATE_BENCH_CONFIG, validated as at boot, with its pipeline built. */
import { buildAuthorizer, type AuthzParts } from '../../src/main/authz-app.js';
import { openStore, type StoreApp } from '../../src/main/store-app.js';
import type { Logger } from '../../src/telemetry/logger.js';
import { prepareConfigText, type PreparedConfig } from '../../src/main/config-source.js';
import { contextSecret } from '../../src/identity/context-token.js';

export async function loadBenchConfig(
  logger: Logger,
  withDb: boolean,
): Promise<{ prepared: PreparedConfig; secret: Buffer; parts: AuthzParts; store: StoreApp }> {
  const yaml = process.env['TOLLGATE_BENCH_CONFIG'];
  if (yaml === undefined) throw new Error('TOLLGATE_BENCH_CONFIG is not set');
  const prepared = prepareConfigText(yaml, 'bench.yaml', process.env);
  const gs = prepared.config.general_settings;
  const secret = contextSecret(gs.context_signing_key, gs.master_key);
  if (secret === undefined) throw new Error('the bench config sets no context_signing_key');
  // Composed as the CLI composes it: the store first (counters, limiter), then the pipeline over it.
  const store = await openStore(prepared.config, { logger, withDb, catalog: () => parts.authorizer.rules.catalog });
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret, { keys: store.keys, teams: store.teams, limiter: store.limiter });
  return { prepared, secret, parts, store };
}
