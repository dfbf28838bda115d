/** Composition root of the HTTP gateway: forwarder, deployment tracking, spend recording, the server. */
import type { Config } from '../config/schema.js';
import type { HttpServer } from '../gateway/http-server.js';
import { createGateway, type GatewayDeps } from '../gateway/server.js';
import { Forwarder, type DeploymentGate } from '../gateway/forward.js';
import { ContextSigner } from '../identity/context-token.js';
import { DeploymentTracker } from '../routing/health.js';
import { bounded } from '../store/change-bus.js';
import type { SpendRecorder } from '../store/spend.js';
import type { Logger } from '../telemetry/logger.js';
import { RequestLog } from '../telemetry/request-log.js';
import type { Metrics } from '../telemetry/metrics.js';
import { RequestObserver, registerDeploymentGauges } from '../telemetry/request-observer.js';
import type { AdminApi } from '../gateway/admin.js';
import type { Deployment, ModelCatalog } from '../routing/deployments.js';
import type { AuthzParts } from './authz-app.js';

export interface GatewayApp {
  readonly server: HttpServer;
  readonly port: number;
  readonly forwarder: Forwarder;
  close(graceMs: number): Promise<void>;
}

export async function startGateway(
  config: Config,
  parts: AuthzParts,
  contextSecret: Buffer,
  opts: {
    host: string;
    port: number;
    logger: Logger;
    spend: SpendRecorder;
    /** Renews the leases of admitted requests in flight (the store's accounting). */
    leases?: GatewayDeps['leases'];
    /** Where denials of known keys leave their spend-log rows. */
    denials?: GatewayDeps['denials'];
    /** Counts retries and fallbacks on deployments with rpm/tpm of their own (the store's limiter). */
    gate?: DeploymentGate;
    /** Why the stores keep this replica from serving, if they do (readiness). */
    storeNotReady?: () => string | undefined;
    /** Prometheus metrics: `/metrics`, and what the gateway counts. */
    metrics?: Metrics;
    /** The admin API (needs the records database). */
    admin?: AdminApi;
  },
): Promise<GatewayApp> {
  const rs = config.router_settings;
  const tracker = new DeploymentTracker({ allowedFails: rs.allowed_fails, cooldownSeconds: rs.cooldown_time });
  // authz picks its routing hint with the same cooldown view in one process.
  parts.authorizer.updateRules({ health: tracker });
  const catalog = () => parts.authorizer.rules.catalog;
  const metrics = opts.metrics;
  const requestLog = new RequestLog(opts.logger);
  const spend = new RequestObserver(opts.spend, {
    metrics,
    log: requestLog,
    knownModel: (alias) => catalog().group(alias) !== undefined,
  });
  // One line per cooldown (at most one per deployment each cooldown_time): an operator sees a backend failing
  // without a dashboard; each failed attempt is in the request log's status and the retry metrics.
  tracker.onCooldown = (id) => {
    metrics?.cooldowns.inc({ deployment: id });
    opts.logger.warn(
      { deployment: id, model: catalog().deployment(id)?.alias, cooldown_s: rs.cooldown_time, allowed_fails: rs.allowed_fails },
      'deployment failing: cooled down',
    );
  };
  const forwarder = new Forwarder({
    catalog,
    tracker,
    spend,
    gate: opts.gate,
    settings: {
      strategy: rs.routing_strategy,
      numRetries: rs.num_retries,
      defaultMaxTokens: config.general_settings.default_max_tokens,
    },
    onQueueTimeout: (d) => metrics?.queueTimeouts.inc({ deployment: d.id }),
  });
  if (metrics !== undefined) {
    registerDeploymentGauges(
      metrics,
      () => allDeployments(catalog()),
      tracker,
      (id) => forwarder.queued(id),
    );
  }
  const cat = catalog();
  forwarder.warm(allDeployments(cat));
  const server = createGateway({
    authorizer: parts.authorizer,
    signer: new ContextSigner(contextSecret),
    forwarder,
    catalog,
    keys: parts.keys,
    teams: parts.teams,
    maxBodyBytes: parts.maxBodyBytes,
    logger: opts.logger,
    requestLog,
    notReady: () => {
      if (parts.verifier !== undefined && parts.verifier.keyCount === 0) return 'identity provider keys not loaded';
      return opts.storeNotReady?.();
    },
    leases: opts.leases,
    denials: opts.denials,
    metrics,
    admin: opts.admin,
  });
  const port = await server.listen(opts.port, opts.host);
  return {
    server,
    port,
    forwarder,
    async close(graceMs: number) {
      // Idle connections close now, busy ones after their response. Past the grace, the requests still
      // forwarded are cut off with an answer (a stream's error event and [DONE], else a 503) and their
      // connections close once that is written; past CUT_OFF_MS more, every connection is cut.
      const closed = server.close().then(() => true);
      const within = async (ms: number): Promise<boolean> => (await bounded(closed, ms)) === true;
      if (!(await within(graceMs))) {
        forwarder.shutdown();
        if (!(await within(CUT_OFF_MS))) server.closeAllConnections();
      }
      await forwarder.close();
    },
  };
}

/** How long the requests cut off at the drain's end have to write their last bytes before connections are cut. */
const CUT_OFF_MS = 1_000;

function allDeployments(catalog: ModelCatalog): Deployment[] {
  return [...catalog.aliases()].flatMap((a) => catalog.group(a)?.deployments ?? []);
}
