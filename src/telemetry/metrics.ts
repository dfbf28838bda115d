/**
 * Every metric tollgate exports, created once at boot on one registry. Labels are small fixed sets
 * (route kind, decision code, model alias, deployment): never a key id or a user.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { ErrorCode } from '../errors/codes.js';
import { CounterFamily, GaugeFamily, HistogramFamily } from './families.js';

export interface Metrics {
  readonly registry: Registry;
  /**
   * Authorization decisions, by where they were made (`ext_authz`: Check; `gateway`: the gateway itself, for
   * a request that came without a valid signed context) and outcome (`allowed`, or the denial's code).
   */
  readonly checkDecisions: CounterFamily<readonly ['source', 'decision']>;
  /** Check calls that failed (gRPC error returned to Envoy), by reason. */
  readonly checkFaults: CounterFamily<readonly ['reason']>;
  /** Check latency in seconds, from the decoded request to the encoded response. */
  readonly checkDuration: HistogramFamily<readonly ['decision']>;
  /** Policy rules that failed at run time (and therefore denied). */
  readonly policyErrors: CounterFamily<readonly ['rule']>;
  /** Every HTTP request the gateway answered, by route kind and status. */
  readonly httpRequests: CounterFamily<readonly ['route', 'status']>;
  /** HTTP requests being served now, by route kind. */
  readonly httpInFlight: GaugeFamily<readonly ['route']>;
  /** Forwarded model requests, by alias, deployment and status. */
  readonly modelRequests: CounterFamily<readonly ['model', 'deployment', 'status']>;
  /** Time tollgate added to a forwarded request (its latency less the time spent on backends). */
  readonly overhead: HistogramFamily<readonly ['endpoint']>;
  /** Time spent on backends per forwarded request (retries included; a stream until its end). */
  readonly backendDuration: HistogramFamily<readonly ['model', 'deployment']>;
  /** Time to the first streamed token, from the request's arrival. */
  readonly ttft: HistogramFamily<readonly ['model', 'deployment']>;
  readonly tokens: CounterFamily<readonly ['model', 'type']>;
  readonly spend: CounterFamily<readonly ['model']>;
  /** Operations on Redis or the records database that failed. */
  readonly storeErrors: CounterFamily<readonly ['store', 'op']>;
  /** Times a deployment entered cooldown. */
  readonly cooldowns: CounterFamily<readonly ['deployment']>;
  /**
   * Attempts that waited for a free connection of a deployment (all its max_parallel_requests busy) past
   * their bound, and were not sent. The requests waiting now: `tollgate_deployment_queued` (registerDeploymentGauges).
   */
  readonly queueTimeouts: CounterFamily<readonly ['deployment']>;
  /**
   * LiteLLM's names, as its Python client exposes them (a counter's name ends in `_total`), so dashboards
   * and alerts written for LiteLLM find them: forwarded requests, spend, tokens and latency, by model alias
   * (`litellm_deployment_state` is registerDeploymentGauges'). Only bounded labels: LiteLLM's per-key and
   * per-user ones (hashed_api_key, user, team) are the spend log's, not Prometheus's here.
   */
  readonly litellm: {
    readonly requests: CounterFamily<readonly ['requested_model', 'status_code']>;
    readonly spend: CounterFamily<readonly ['model']>;
    readonly tokens: CounterFamily<readonly ['model']>;
    readonly latency: HistogramFamily<readonly ['model']>;
  };
}

export type CheckDecisionLabel = 'allowed' | ErrorCode;

const STATUS_LABELS = Array.from({ length: 600 }, (_, i) => String(i));

/** The `status` label of an HTTP status, without building a new string per request. */
export function statusLabel(status: number): string {
  return STATUS_LABELS[status] ?? String(status);
}

export function createMetrics(opts: { defaultMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'tollgate_' });
  return {
    registry,
    checkDecisions: new CounterFamily({
      name: 'tollgate_authz_decisions_total',
      help: 'Authorization decisions, by where they were made (ext_authz Check, or the gateway for a request without a valid context) and outcome (allowed or the denial code)',
      labelNames: ['source', 'decision'] as const,
      registers: [registry],
    }),
    checkFaults: new CounterFamily({
      name: 'tollgate_authz_faults_total',
      help: 'ext_authz Check calls answered with a gRPC error (Envoy applies status_on_error)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    checkDuration: new HistogramFamily({
      name: 'tollgate_authz_check_duration_seconds',
      help: 'ext_authz Check latency inside tollgate',
      labelNames: ['decision'] as const,
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers: [registry],
    }),
    policyErrors: new CounterFamily({
      name: 'tollgate_policy_rule_errors_total',
      help: 'Policy rules that failed while evaluating (fail closed: the request was denied)',
      labelNames: ['rule'] as const,
      registers: [registry],
    }),
    httpRequests: new CounterFamily({
      name: 'tollgate_http_requests_total',
      help: 'HTTP requests answered by the gateway, by route kind (model, models, admin, probe, metrics, other) and status',
      labelNames: ['route', 'status'] as const,
      registers: [registry],
    }),
    httpInFlight: new GaugeFamily({
      name: 'tollgate_http_requests_in_flight',
      help: 'HTTP requests the gateway is serving now (streams included), by route kind',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    modelRequests: new CounterFamily({
      name: 'tollgate_model_requests_total',
      help: 'Forwarded model requests, by model alias, deployment and the status sent to the client',
      labelNames: ['model', 'deployment', 'status'] as const,
      registers: [registry],
    }),
    overhead: new HistogramFamily({
      name: 'tollgate_gateway_overhead_seconds',
      help: 'Time the gateway added to a forwarded request: its latency less the time spent waiting on backends',
      labelNames: ['endpoint'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registers: [registry],
    }),
    backendDuration: new HistogramFamily({
      name: 'tollgate_backend_duration_seconds',
      help: 'Time spent on backends per forwarded request (retries included; a stream until its end)',
      labelNames: ['model', 'deployment'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers: [registry],
    }),
    ttft: new HistogramFamily({
      name: 'tollgate_time_to_first_token_seconds',
      help: 'Time from the arrival of a streamed request to its first token sent to the client',
      labelNames: ['model', 'deployment'] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    tokens: new CounterFamily({
      name: 'tollgate_tokens_total',
      help: 'Tokens served, by model alias and type (prompt or completion)',
      labelNames: ['model', 'type'] as const,
      registers: [registry],
    }),
    spend: new CounterFamily({
      name: 'tollgate_spend_usd_total',
      help: 'Spend in USD (tokens times the deployment prices), by model alias',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    litellm: {
      requests: new CounterFamily({
        name: 'litellm_proxy_total_requests_metric_total',
        help: "Forwarded model requests, by model alias and the status sent to the client (LiteLLM's name)",
        labelNames: ['requested_model', 'status_code'] as const,
        registers: [registry],
      }),
      spend: new CounterFamily({
        name: 'litellm_spend_metric_total',
        help: "Spend in USD, by model alias (LiteLLM's name)",
        labelNames: ['model'] as const,
        registers: [registry],
      }),
      tokens: new CounterFamily({
        name: 'litellm_total_tokens_total',
        help: "Prompt and completion tokens, by model alias (LiteLLM's name)",
        labelNames: ['model'] as const,
        registers: [registry],
      }),
      latency: new HistogramFamily({
        name: 'litellm_request_total_latency_metric',
        help: "Whole latency of a forwarded request in seconds, a stream's to its end, by model alias (LiteLLM's name)",
        labelNames: ['model'] as const,
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
        registers: [registry],
      }),
    },
    cooldowns: new CounterFamily({
      name: 'tollgate_deployment_cooldowns_total',
      help: 'Times a deployment entered cooldown (a failure past allowed_fails within a minute)',
      labelNames: ['deployment'] as const,
      registers: [registry],
    }),
    queueTimeouts: new CounterFamily({
      name: 'tollgate_deployment_queue_timeouts_total',
      help: 'Attempts that waited for a free connection of a deployment (all its max_parallel_requests busy) past stream_timeout or timeout, and were not sent',
      labelNames: ['deployment'] as const,
      registers: [registry],
    }),
    storeErrors: new CounterFamily({
      name: 'tollgate_store_errors_total',
      help: 'Failed operations on Redis or the records database, by store and operation',
      labelNames: ['store', 'op'] as const,
      registers: [registry],
    }),
  };
}
