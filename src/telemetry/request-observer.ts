/**
 * What the gateway tells operators about each forwarded request, taken from what it already records: every
 * spend entry (one per forwarded request) becomes one JSON log line and feeds the request, token, spend and
 * latency metrics on its way to the spend log; deployment health is read from the tracker when Prometheus
 * scrapes. Metric labels come from the catalog (alias, deployment id) and fixed sets, never from a key or a
 * user, so the series stay bounded. The log line names the key by its id, never the key.
 */
import { Gauge } from 'prom-client';
import type { SpendEntry, SpendRecorder } from '../store/spend.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** Logs and meters `entry`, then passes it on. */
export class RequestObserver implements SpendRecorder {
  readonly #next: SpendRecorder;
  readonly #m: Metrics | undefined;
  readonly #logger: Logger;
  readonly #known: (alias: string) => boolean;
  constructor(next: SpendRecorder, opts: { metrics: Metrics | undefined; logger: Logger; knownModel: (alias: string) => boolean }) {
    this.#next = next;
    this.#m = opts.metrics;
    this.#logger = opts.logger;
    this.#known = opts.knownModel;
  }

  record(e: SpendEntry): void {
    this.#logger.info(
      {
        request_id: e.requestId,
        key_id: e.keyId,
        user_id: e.userId,
        team_id: e.teamId,
        model: e.model,
        deployment: e.deployment,
        endpoint: e.endpoint,
        status: e.status,
        latency_ms: Math.round(e.latencyMs * 100) / 100,
        prompt_tokens: e.promptTokens,
        completion_tokens: e.completionTokens,
        cost: e.cost,
        estimated: e.estimated || undefined,
      },
      'request',
    );
    const m = this.#m;
    if (m !== undefined) this.#meter(m, e);
    this.#next.record(e);
  }

  #meter(m: Metrics, e: SpendEntry): void {
    const model = this.#known(e.model) ? e.model : 'unknown';
    const deployment = e.deployment ?? 'none';
    m.modelRequests.inc({ model, deployment, status: String(e.status) });
    if (e.promptTokens > 0) m.tokens.inc({ model, type: 'prompt' }, e.promptTokens);
    if (e.completionTokens > 0) m.tokens.inc({ model, type: 'completion' }, e.completionTokens);
    if (e.cost > 0) m.spend.inc({ model }, e.cost);
    if (e.backendMs !== undefined && e.deployment !== undefined) {
      m.backendDuration.observe({ model, deployment }, e.backendMs / 1000);
      // A stream's latency runs to its end, like its backend time, so the difference is tollgate's share.
      m.overhead.observe({ endpoint: e.endpoint ?? 'unknown' }, Math.max(0, e.latencyMs - e.backendMs) / 1000);
    }
    if (e.ttftMs !== undefined) m.ttft.observe({ model, deployment }, e.ttftMs / 1000);
  }
}

export interface DeploymentView {
  readonly id: string;
  readonly alias: string;
}

/**
 * `tollgate_deployment_available` (1, or 0 while in cooldown) and `tollgate_deployment_in_flight`, read at
 * scrape time from the routing tracker.
 */
export function registerDeploymentGauges(
  metrics: Metrics,
  deployments: () => Iterable<DeploymentView>,
  state: { isAvailable(id: string, nowMs: number): boolean; inFlight(id: string): number },
): void {
  new Gauge({
    name: 'tollgate_deployment_available',
    help: 'Whether a deployment takes traffic now (0 while in cooldown after allowed_fails failures)',
    labelNames: ['model', 'deployment'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      const now = Date.now();
      for (const d of deployments()) this.set({ model: d.alias, deployment: d.id }, state.isAvailable(d.id, now) ? 1 : 0);
    },
  });
  new Gauge({
    name: 'tollgate_deployment_in_flight',
    help: 'Requests in flight on each deployment (what least-busy routing reads)',
    labelNames: ['model', 'deployment'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const d of deployments()) this.set({ model: d.alias, deployment: d.id }, state.inFlight(d.id));
    },
  });
}

/**
 * Drops the series of deployments that left the catalog (a model deleted through the admin API, a reload),
 * so a churn of deployments cannot grow the metrics without bound.
 */
export async function pruneDeploymentSeries(m: Metrics, live: ReadonlySet<string>): Promise<void> {
  for (const metric of [m.modelRequests, m.backendDuration, m.ttft, m.cooldowns]) {
    const seen = new Map<string, Record<string, string | number>>();
    for (const v of (await metric.get()).values) {
      const { le: _bucket, ...labels } = v.labels as Record<string, string | number>;
      const d = labels['deployment'];
      if (typeof d === 'string' && d !== 'none' && !live.has(d)) seen.set(JSON.stringify(labels), labels);
    }
    for (const labels of seen.values()) metric.remove(labels as never);
  }
}
