/**
 * Every metric tollgate exports, created once at boot on one registry. Labels are small fixed sets
 * (route kind, decision code, model alias, deployment): never a key id or a user.
 */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ErrorCode } from '../errors/codes.js';

export interface Metrics {
  readonly registry: Registry;
  /** Check decisions: `allowed`, or the denial's error code. */
  readonly checkDecisions: Counter<'decision'>;
  /** Check calls that failed (gRPC error returned to Envoy), by reason. */
  readonly checkFaults: Counter<'reason'>;
  /** Check latency in seconds, from the decoded request to the encoded response. */
  readonly checkDuration: Histogram<'decision'>;
  /** Policy rules that failed at run time (and therefore denied). */
  readonly policyErrors: Counter<'rule'>;
}

export type CheckDecisionLabel = 'allowed' | ErrorCode;

export function createMetrics(opts: { defaultMetrics: boolean }): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'tollgate_' });
  return {
    registry,
    checkDecisions: new Counter({
      name: 'tollgate_authz_decisions_total',
      help: 'ext_authz Check decisions, by outcome (allowed or the denial code)',
      labelNames: ['decision'],
      registers: [registry],
    }),
    checkFaults: new Counter({
      name: 'tollgate_authz_faults_total',
      help: 'ext_authz Check calls answered with a gRPC error (Envoy applies status_on_error)',
      labelNames: ['reason'],
      registers: [registry],
    }),
    checkDuration: new Histogram({
      name: 'tollgate_authz_check_duration_seconds',
      help: 'ext_authz Check latency inside tollgate',
      labelNames: ['decision'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1],
      registers: [registry],
    }),
    policyErrors: new Counter({
      name: 'tollgate_policy_rule_errors_total',
      help: 'Policy rules that failed while evaluating (fail closed: the request was denied)',
      labelNames: ['rule'],
      registers: [registry],
    }),
  };
}
