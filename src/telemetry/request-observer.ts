/**
 * What the gateway tells operators about each forwarded request, taken from what it already records: every
 * spend entry (one per forwarded request) becomes one JSON log line and feeds the request, token, spend and
 * latency metrics on its way to the spend log; deployment health is read from the tracker when Prometheus
 * scrapes. Metric labels come from the catalog (alias, deployment id) and fixed sets, never from a key or a
 * user, so the series stay bounded. The log line names the key by its id, never the key.
 */
import { Gauge } from 'prom-client';
import type { SpendEntry, SpendRecorder } from '../store/spend.js';
import type { RequestLog } from './request-log.js';
import { statusLabel, type Metrics } from './metrics.js';

/** Logs and meters `entry`, then passes it on. */
export class RequestObserver implements SpendRecorder {
  readonly #next: SpendRecorder;
  readonly #m: Metrics | undefined;
  readonly #log: RequestLog;
  readonly #known: (alias: string) => boolean;
  constructor(next: SpendRecorder, opts: { metrics: Metrics | undefined; log: RequestLog; knownModel: (alias: string) => boolean }) {
    this.#next = next;
    this.#m = opts.metrics;
    this.#log = opts.log;
    this.#known = opts.knownModel;
  }

  record(e: SpendEntry): void {
    this.#log.forwarded(e);
    const m = this.#m;
    if (m !== undefined) this.#meter(m, e);
    this.#next.record(e);
  }

  #meter(m: Metrics, e: SpendEntry): void {
    const model = this.#known(e.model) ? e.model : 'unknown';
    const deployment = e.deployment ?? 'none';
    const status = statusLabel(e.status);
    m.modelRequests.at(model, deployment, status).inc();
    if (e.promptTokens > 0) m.tokens.at(model, 'prompt').inc(e.promptTokens);
    if (e.completionTokens > 0) m.tokens.at(model, 'completion').inc(e.completionTokens);
    if (e.cost > 0) m.spend.at(model).inc(e.cost);
    const l = m.litellm;
    l.requests.at(model, status).inc();
    if (e.promptTokens + e.completionTokens > 0) l.tokens.at(model).inc(e.promptTokens + e.completionTokens);
    if (e.cost > 0) l.spend.at(model).inc(e.cost);
    l.latency.at(model).observe(e.latencyMs / 1000);
    // A request that failed everywhere names the last deployment it tried, but its time is every attempt's.
    if (e.backendMs !== undefined && e.deployment !== undefined && e.status < 500) {
      m.backendDuration.at(model, deployment).observe(e.backendMs / 1000);
      // A stream's latency runs to its end, like its backend time, so the difference is tollgate's share.
      m.overhead.at(e.endpoint ?? 'unknown').observe(Math.max(0, e.latencyMs - e.backendMs) / 1000);
    }
    if (e.ttftMs !== undefined) m.ttft.at(model, deployment).observe(e.ttftMs / 1000);
  }
}

export interface DeploymentView {
  readonly id: string;
  readonly alias: string;
  /** `openai`, `hosted_vllm`… and the backend's model id (LiteLLM's litellm_model_name is both). */
  readonly provider: string;
  readonly backendModel: string;
}

/**
 * `tollgate_deployment_available` (1, or 0 while in cooldown), LiteLLM's `litellm_deployment_state` (0
 * healthy, 2 in cooldown — LiteLLM's outage), `tollgate_deployment_in_flight`, read at scrape time from
 * the routing tracker, and `tollgate_deployment_queued`, from the connection pools (`queued`).
 */
export function registerDeploymentGauges(
  metrics: Metrics,
  deployments: () => Iterable<DeploymentView>,
  state: { isAvailable(id: string, nowMs: number): boolean; inFlight(id: string): number },
  queued: (id: string) => number,
): void {
  /** A gauge per deployment, labelled by its alias and id, read at scrape time. */
  const perDeployment = (name: string, help: string, value: (id: string, now: number) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['model', 'deployment'],
      registers: [metrics.registry],
      collect() {
        this.reset();
        const now = Date.now();
        for (const d of deployments()) this.set({ model: d.alias, deployment: d.id }, value(d.id, now));
      },
    });
  };
  perDeployment(
    'tollgate_deployment_available',
    'Whether a deployment takes traffic now (0 while in cooldown after allowed_fails failures)',
    (id, now) => (state.isAvailable(id, now) ? 1 : 0),
  );
  new Gauge({
    name: 'litellm_deployment_state',
    help: "A deployment's state: 0 healthy, 2 in cooldown after allowed_fails failures (LiteLLM's name and values)",
    labelNames: ['litellm_model_name', 'model_id', 'api_provider'],
    registers: [metrics.registry],
    collect() {
      this.reset();
      const now = Date.now();
      for (const d of deployments())
        this.set(
          { litellm_model_name: `${d.provider}/${d.backendModel}`, model_id: d.id, api_provider: d.provider },
          state.isAvailable(d.id, now) ? 0 : 2,
        );
    },
  });
  perDeployment('tollgate_deployment_in_flight', 'Requests in flight on each deployment (what least-busy routing reads)', (id) =>
    state.inFlight(id),
  );
  perDeployment(
    'tollgate_deployment_queued',
    'Requests waiting in this replica for a free connection of each deployment (all its max_parallel_requests busy); the wait is not counted in its timeout',
    (id) => queued(id),
  );
}

/**
 * Drops the series of deployments that left the catalog (a model deleted through the admin API, a reload),
 * so a churn of deployments cannot grow the metrics without bound.
 */
export function pruneDeploymentSeries(m: Metrics, live: ReadonlySet<string>): void {
  const gone = (labels: Readonly<Record<string, string>>): boolean => {
    const d = labels['deployment'];
    return d !== undefined && d !== 'none' && !live.has(d);
  };
  for (const family of [m.modelRequests, m.backendDuration, m.ttft, m.cooldowns, m.queueTimeouts]) family.removeWhere(gone);
}
