/**
 * Composition root of the authz side: everything prepared at boot (CEL, JWKS, key index, metric
 * objects), then the protos and the gRPC server. Nothing imports main/.
 */
import { createHash } from 'node:crypto';
import { Authorizer } from '../authorizer/authorizer.js';
import type { AuthzServer } from '../authz/server.js';
import type { Config } from '../config/schema.js';
import type { TeamRecord } from '../core/decide.js';
import { ContextSigner } from '../identity/context-token.js';
import { JwtVerifier } from '../identity/jwt.js';
import { limitsOf, StaticKeyDirectory, type KeyDirectory } from '../identity/keys.js';
import type { Policy } from '../policy/rules.js';
import type { Limiter } from '../store/limiter.js';
import { ALWAYS_HEALTHY, ModelCatalog } from '../routing/deployments.js';
import type { Logger } from '../telemetry/logger.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { DenialRecorder } from '../store/spend.js';

export interface AuthzParts {
  readonly authorizer: Authorizer;
  readonly keys: KeyDirectory;
  readonly teams: ReadonlyMap<string, TeamRecord>;
  readonly verifier: JwtVerifier | undefined;
  readonly jwtHeader: string;
  readonly maxBodyBytes: number;
}

/** Builds the decision pipeline from a validated config (shared by the gRPC server and, later, the gateway). */
export function buildAuthorizer(
  config: Config,
  policy: Policy,
  contextSecret: Buffer,
  opts: { catalog?: ModelCatalog; keys?: KeyDirectory; teams?: ReadonlyMap<string, TeamRecord>; limiter?: Limiter } = {},
): AuthzParts {
  const jwtSettings = config.auth.jwt;
  const verifier = jwtSettings === undefined ? undefined : new JwtVerifier(jwtSettings);
  const master = config.general_settings.master_key;
  const maxBodyBytes = Math.floor(config.general_settings.max_request_size_mb * 1024 * 1024);
  const jwtHeader = jwtSettings?.header ?? 'x-cake-authorization';
  const keys = opts.keys ?? new StaticKeyDirectory(config.keys);
  const teams = opts.teams ?? teamsFromConfig(config);
  const authorizer = new Authorizer({
    rules: {
      jwtRequired: jwtSettings?.required ?? false,
      keysRequired: config.auth.keys.required,
      adminGroups: config.auth.admin_groups,
      masterKeySet: master !== undefined,
      jwtHeader,
      policy,
      catalog: opts.catalog ?? ModelCatalog.fromConfig(config.model_list),
      health: ALWAYS_HEALTHY,
      fallbacks: new Map(config.router_settings.fallbacks.flatMap((f) => Object.entries(f))),
      requiredParams: requiredParams(config),
    },
    keys,
    teams,
    jwt: verifier,
    jwtHeader,
    masterKeyHash: master === undefined ? undefined : createHash('sha256').update(master).digest(),
    maxBodyBytes,
    signer: new ContextSigner(contextSecret),
    random: Math.random,
    limiter: opts.limiter,
  });
  return { authorizer, keys, teams, verifier, jwtHeader, maxBodyBytes };
}

/** general_settings.enforce_user_param and enforced_params, as one list of body fields. */
export function requiredParams(config: Config): readonly string[] {
  const gs = config.general_settings;
  return [...new Set([...(gs.enforce_user_param ? ['user'] : []), ...gs.enforced_params])];
}

export function teamsFromConfig(config: Config): Map<string, TeamRecord> {
  return new Map(
    config.teams.map(
      (t) =>
        [
          t.team_id,
          { teamId: t.team_id, alias: t.team_alias, models: t.models, blocked: t.blocked, limits: limitsOf(t), metadata: t.metadata },
        ] as const,
    ),
  );
}

export interface AuthzApp {
  readonly server: AuthzServer;
  readonly parts: AuthzParts;
  readonly port: number;
  close(graceMs: number): Promise<void>;
}

const JWKS_RETRY_MS = 5_000;

/** Loads the IdP's keys, retrying in the background until they load; `onLoaded` runs once they do. */
export async function loadIdentityKeys(parts: AuthzParts, logger: Logger, onLoaded: () => void): Promise<{ stop(): void }> {
  let retry: NodeJS.Timeout | undefined;
  let stopped = false;
  const verifier = parts.verifier;
  const attempt = async (): Promise<void> => {
    if (verifier === undefined || stopped) return;
    try {
      await verifier.start((err) =>
        logger.warn({ err: err.message }, 'cannot refresh the identity provider keys; the ones loaded stay in use until it answers'),
      );
      logger.info({ keys: verifier.keyCount }, 'identity provider keys loaded');
      onLoaded();
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'cannot load the identity provider keys; retrying');
      retry = setTimeout(() => void attempt(), JWKS_RETRY_MS);
      retry.unref();
    }
  };
  if (verifier === undefined) onLoaded();
  else await attempt();
  return {
    stop() {
      stopped = true;
      if (retry) clearTimeout(retry);
      verifier?.stop();
    },
  };
}

/**
 * Starts the gRPC server. Health answers NOT_SERVING until the IdP's keys are loaded (retried in the
 * background), so Envoy's health check and Kubernetes keep traffic away until Check can allow anything.
 */
export async function startAuthz(
  parts: AuthzParts,
  opts: {
    host: string;
    port: number;
    logger: Logger;
    metrics: Metrics;
    ready?: () => boolean;
    /** Where denials of known keys leave their spend-log rows (the store's accounting). */
    denials?: DenialRecorder | undefined;
  },
): Promise<AuthzApp> {
  // The gRPC side (grpc-js, protobufjs, Envoy's protos) loads only here: `tollgate gateway` never holds it.
  const [{ AuthzServer }, { loadProtos }] = await Promise.all([import('../authz/server.js'), import('../authz/protos.js')]);
  const protos = loadProtos();
  const server = new AuthzServer({
    protos,
    authorizer: parts.authorizer,
    jwtHeader: parts.jwtHeader,
    logger: opts.logger,
    metrics: opts.metrics,
    maxMessageBytes: parts.maxBodyBytes * 2 + 1024 * 1024,
    ready: opts.ready,
    denials: opts.denials,
  });
  const port = await server.listen(opts.host, opts.port);
  const keys = await loadIdentityKeys(parts, opts.logger, () => server.setServing(true));
  return {
    server,
    parts,
    port,
    async close(graceMs: number) {
      keys.stop();
      await server.close(graceMs);
    },
  };
}
