/**
 * The ext_authz gRPC server: envoy.service.auth.v3.Authorization/Check and grpc.health.v1.Health on one
 * port. A denial is a successful call carrying a DeniedHttpResponse; a fault (bug, IdP outage) is a gRPC
 * error, which Envoy turns into `status_on_error` — never an allow.
 */
import * as grpc from '@grpc/grpc-js';
import type { Authorization, Authorizer, RequestFacts } from '../authorizer/authorizer.js';
import { ERRORS } from '../errors/codes.js';
import type { DenialRecorder } from '../store/spend.js';
import type { Logger } from '../telemetry/logger.js';
import type { CheckDecisionLabel, Metrics } from '../telemetry/metrics.js';
import { checkResponse, factsFromCheckRequest } from './check.js';
import type { LoadedProtos } from './protos.js';

export const CHECK_SERVICE = 'envoy.service.auth.v3.Authorization';
const HEALTH_SERVICE = 'grpc.health.v1.Health';

/** grpc.health.v1 ServingStatus */
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;

export interface AuthzServerDeps {
  readonly protos: LoadedProtos;
  readonly authorizer: Authorizer;
  readonly jwtHeader: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Largest CheckRequest accepted: the body limit plus headroom for headers. */
  readonly maxMessageBytes: number;
  readonly now?: () => number;
  /** The stores answer (readiness): health mirrors the gateway's /health/readiness. */
  readonly ready?: () => boolean;
  /** Denials of known keys, each a spend-log row (the records database's log, when this process has one). */
  readonly denials?: DenialRecorder | undefined;
}

/** How often a change of store readiness is pushed to Health/Watch streams. */
const READY_POLL_MS = 1_000;

export class AuthzServer {
  readonly #deps: AuthzServerDeps;
  readonly #server: grpc.Server;
  #serving = false;
  #readyTimer: NodeJS.Timeout | undefined;
  #wasReady = true;
  readonly #watchers = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  #port = 0;

  constructor(deps: AuthzServerDeps) {
    this.#deps = deps;
    this.#server = new grpc.Server({
      'grpc.max_receive_message_length': deps.maxMessageBytes,
      'grpc.max_send_message_length': 1024 * 1024,
      'grpc.keepalive_permit_without_calls': 1,
    });
    const { CheckRequest, CheckResponse, HealthCheckRequest, HealthCheckResponse } = deps.protos;
    const codec = (t: typeof CheckRequest) => ({
      serialize: (m: unknown): Buffer => Buffer.from(t.encode(m as object).finish()),
      deserialize: (b: Buffer): unknown => t.decode(b),
    });
    const req = codec(CheckRequest);
    const res = codec(CheckResponse);
    const hreq = codec(HealthCheckRequest);
    const hres = codec(HealthCheckResponse);
    this.#server.addService(
      {
        Check: {
          path: `/${CHECK_SERVICE}/Check`,
          requestStream: false,
          responseStream: false,
          requestSerialize: req.serialize,
          requestDeserialize: req.deserialize,
          responseSerialize: res.serialize,
          responseDeserialize: res.deserialize,
        },
      },
      { Check: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => this.#check(call, cb) },
    );
    this.#server.addService(
      {
        Check: {
          path: `/${HEALTH_SERVICE}/Check`,
          requestStream: false,
          responseStream: false,
          requestSerialize: hreq.serialize,
          requestDeserialize: hreq.deserialize,
          responseSerialize: hres.serialize,
          responseDeserialize: hres.deserialize,
        },
        Watch: {
          path: `/${HEALTH_SERVICE}/Watch`,
          requestStream: false,
          responseStream: true,
          requestSerialize: hreq.serialize,
          requestDeserialize: hreq.deserialize,
          responseSerialize: hres.serialize,
          responseDeserialize: hres.deserialize,
        },
      },
      {
        Check: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          const status = this.#statusOf(call.request);
          if (status === SERVICE_UNKNOWN) cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
          else cb(null, { status });
        },
        Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          call.write({ status: this.#statusOf(call.request) });
          this.#watchers.add(call);
          call.on('cancelled', () => this.#watchers.delete(call));
        },
      },
    );
  }

  get port(): number {
    return this.#port;
  }

  async listen(host: string, port: number): Promise<number> {
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
        err ? reject(err) : resolve(bound),
      );
    });
    return this.#port;
  }

  /** Health reports SERVING only after this (and NOT_SERVING again while draining). */
  setServing(serving: boolean): void {
    this.#serving = serving;
    for (const w of this.#watchers) w.write({ status: this.#statusOf(w.request) });
    const ready = this.#deps.ready;
    if (serving && ready !== undefined && this.#readyTimer === undefined) {
      this.#readyTimer = setInterval(() => {
        const now = ready();
        if (now === this.#wasReady) return;
        this.#wasReady = now;
        for (const w of this.#watchers) w.write({ status: this.#statusOf(w.request) });
      }, READY_POLL_MS).unref();
    }
  }

  /** Stops accepting calls and waits for in-flight ones, at most `graceMs`. */
  async close(graceMs: number): Promise<void> {
    clearInterval(this.#readyTimer);
    this.setServing(false);
    for (const w of this.#watchers) w.end();
    this.#watchers.clear();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  #statusOf(request: unknown): number {
    const service = (request as { service?: string } | undefined)?.service ?? '';
    if (service !== '' && service !== CHECK_SERVICE) return SERVICE_UNKNOWN;
    return this.#serving && (this.#deps.ready?.() ?? true) ? SERVING : NOT_SERVING;
  }

  #check(call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>): void {
    const started = performance.now();
    const d = this.#deps;
    let facts: RequestFacts;
    let result: Authorization | Promise<Authorization>;
    try {
      facts = factsFromCheckRequest(call.request);
      result = d.authorizer.authorize(facts, d.now?.() ?? Date.now());
    } catch (err) {
      this.#fault(err, cb);
      return;
    }
    if (result instanceof Promise) {
      result.then(
        (auth) => this.#respond(auth, facts, started, cb),
        (err: unknown) => this.#fault(err, cb),
      );
    } else {
      this.#respond(result, facts, started, cb);
    }
  }

  #respond(auth: Authorization, facts: RequestFacts, started: number, cb: grpc.sendUnaryData<unknown>): void {
    const d = this.#deps;
    let response: object;
    try {
      response = checkResponse(auth, facts, d.jwtHeader);
    } catch (err) {
      this.#fault(err, cb);
      return;
    }
    cb(null, response);
    const decision = auth.decision;
    const label: CheckDecisionLabel = decision.allow ? 'allowed' : decision.code;
    d.metrics.checkDecisions.at('ext_authz', label).inc();
    d.metrics.checkDuration.at(label).observe((performance.now() - started) / 1000);
    if (decision.allow) {
      // A rule that failed while judging an alias of the model listing hid it: counted as a failed denial is.
      if (decision.failedRules !== undefined) for (const rule of decision.failedRules) d.metrics.policyErrors.inc({ rule });
    } else {
      if (auth.denied !== undefined)
        d.denials?.denied(auth.requestId, auth.denied, ERRORS[decision.code].status, performance.now() - started);
      if (decision.failedRule !== undefined) d.metrics.policyErrors.inc({ rule: decision.failedRule });
      d.logger.info(
        {
          request_id: auth.requestId,
          route: auth.route,
          method: facts.method,
          decision: decision.code,
          detail: decision.detail,
          key_id: auth.denied?.keyId,
        },
        'check denied',
      );
    }
  }

  #fault(err: unknown, cb: grpc.sendUnaryData<unknown>): void {
    const code = (err as { code?: unknown }).code;
    const reason = code === 'IDP_UNAVAILABLE' ? 'idp_unavailable' : code === 'MALFORMED_CHECK_REQUEST' ? 'malformed_request' : 'internal';
    this.#deps.metrics.checkFaults.inc({ reason });
    this.#deps.logger.error({ err, reason }, 'check failed; Envoy applies status_on_error');
    cb({
      code:
        reason === 'malformed_request'
          ? grpc.status.INVALID_ARGUMENT
          : reason === 'idp_unavailable'
            ? grpc.status.UNAVAILABLE
            : grpc.status.INTERNAL,
      details: reason === 'internal' ? 'internal error' : (err as Error).message,
    });
  }
}
