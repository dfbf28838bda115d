/**
 * Forwards one OpenAI request to a deployment and streams the answer back: one connection pool per
 * deployment (keep-alive, upstream.ts), of its `max_parallel_requests` connections, each request an exchange
 * (exchange.ts) with explicit timeouts (`stream_timeout` or `timeout` for the wait for a free connection,
 * for the head and for each silence in the body; `timeout` for the whole attempt, from its connection on),
 * a fresh X-Request-Id per attempt, the deployment's own `api_key` as Bearer — never the
 * client's credentials. Retries (connect errors, 408, 429, 5xx, a misconfigured deployment's 3xx, 401, 403,
 * 404 or 405) happen only before the first byte went to the client; then fallbacks to other aliases.
 */
import { randomUUID } from 'node:crypto';
import { coolingAnswer } from '../core/messages.js';
import type { ModelEndpoint } from '../core/route.js';
import { ERRORS, errorBody, retryAfterHeaders, type ErrorCode } from '../errors/codes.js';
import { firstBack, type Deployment, type ModelCatalog } from '../routing/deployments.js';
import type { DeploymentTracker, Failure, RoutingStrategy } from '../routing/health.js';
import type { SpendRecorder } from '../store/spend.js';
import { reservation, type GateVerdict, type Lease } from '../store/limiter.js';
import { Exchange, type ClientLink } from './exchange.js';
import { completionEstimate, JsonRelay } from './json-relay.js';
import type { HttpResponse } from './http-response.js';
import { estimateTokens, parseObject, replyUsage, spliceJson, SseRewriter, withModel, type Usage } from './sse.js';
import { UpstreamPool } from './upstream.js';
import { BUSY, BUSY_AFTER, failure, withoutDeployment, type Attempt } from './backend-failure.js';
import { SHUTTING_DOWN, SseRelay } from './sse-relay.js';

/**
 * Admits an attempt on a deployment against its own rpm/tpm: a lease to settle, undefined (nothing to count),
 * or refused. `leastTokens`: the request sent no max_tokens, so its tpm may take the room left, down to this.
 */
export interface DeploymentGate {
  admit(d: Deployment, tokens: number, now: number, leastTokens?: number): GateVerdict | Promise<GateVerdict>;
}

export interface RouterSettings {
  readonly strategy: RoutingStrategy;
  readonly numRetries: number;
  readonly defaultMaxTokens: number;
}

/** Who asked, for spend and logs. */
export interface Caller {
  readonly requestId: string;
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
}

export interface ForwardRequest {
  /** `chat/completions`, `completions` or `embeddings`. */
  readonly endpoint: ModelEndpoint;
  readonly body: Record<string, unknown>;
  /** The text `body` was parsed from, as the client sent it. */
  readonly text: string;
  readonly alias: string;
  /** The deployment authz picked (signed context), used for the first attempt. */
  readonly hint: string | undefined;
  /** Aliases to fall back to, already filtered to what the caller may use. */
  readonly fallbacks: readonly string[];
  readonly caller: Caller;
  /** The limits admission (settled when the request is recorded). */
  readonly lease: Lease | undefined;
  /** Admissions taken here for retries and fallbacks on deployments with limits of their own (settled with the request). */
  readonly extraLeases: Lease[];
  /** `x-ratelimit-*` for the client's response (standalone; behind Envoy, Envoy adds them). */
  readonly responseHeaders: readonly (readonly [string, string])[] | undefined;
  /** The client's connection: leaving aborts the backend request at once (vLLM stops generating only then). */
  readonly client: ClientLink;
  /** Filled in while forwarding: time spent on backends, and to the first streamed token (metrics). */
  readonly timing: Timing;
  /** Filled in while forwarding: what each attempt that failed met (`<deployment>: <why>`), for the log line. */
  readonly upstream: string[];
}

export interface Timing {
  backendMs: number;
  ttftMs: number | undefined;
}

const MAX_ERROR_BODY = 64 * 1024;
/**
 * An idle backend connection is closed after 4 s: before uvicorn's default keep-alive of 5 s (vLLM's and
 * Ray Serve's HTTP servers) closes it from the other side while a request is being written to it.
 */
const KEEP_ALIVE_MS = 4_000;
/**
 * A non-streamed reply up to PARSED_REPLY is parsed whole (#whole), which costs several times its size in
 * memory; a larger one is read as it arrives (json-relay.ts) and held, renamed, up to HELD_REPLY — about its
 * size in memory (byte-list.ts) — then answered whole, with its `content-length` and
 * `x-tollgate-response-cost`. Past HELD_REPLY it is relayed as it arrives, without the cost, and the
 * attempt's `timeout` no longer bounds it: the client's reading does (README, "Large replies").
 */
const PARSED_REPLY = 1024 * 1024;
const HELD_REPLY = 16 * 1024 * 1024;

/** A deployment's connection pool, and what it was made for (a changed deployment gets a new one). */
interface HeldPool {
  readonly pool: UpstreamPool;
  readonly origin: string;
  readonly connections: number;
}

/** What the client is told when its last attempt waited for a connection past its bound: tollgate's own limit, nothing sent. */
const QUEUED =
  "Every connection tollgate may open to this model's deployments (max_parallel_requests) stayed busy while the request waited: it was not sent. Retry shortly.";

export class Forwarder {
  /** By deployment id: LiteLLM's max_parallel_requests caps one deployment, whatever api_base others share with it. */
  readonly #pools = new Map<string, HeldPool>();
  readonly #catalog: () => ModelCatalog;
  readonly #tracker: DeploymentTracker;
  readonly #settings: RouterSettings;
  readonly #spend: SpendRecorder;

  readonly #gate: DeploymentGate | undefined;
  readonly #onQueueTimeout: ((d: Deployment) => void) | undefined;

  /** `onQueueTimeout`: an attempt waited for a free connection of `d` past its bound, and was not sent (metrics). */
  constructor(opts: {
    catalog: () => ModelCatalog;
    tracker: DeploymentTracker;
    settings: RouterSettings;
    spend: SpendRecorder;
    gate?: DeploymentGate | undefined;
    onQueueTimeout?: ((d: Deployment) => void) | undefined;
  }) {
    this.#catalog = opts.catalog;
    this.#tracker = opts.tracker;
    this.#settings = opts.settings;
    this.#spend = opts.spend;
    this.#gate = opts.gate;
    this.#onQueueTimeout = opts.onQueueTimeout;
  }

  /** Creates the pools of every deployment now, so the first request pays no setup. */
  warm(deployments: Iterable<Deployment>): void {
    for (const d of deployments) this.#pool(d);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.pool.close()));
  }

  /** Requests waiting for a free connection of deployment `id` now (all its max_parallel_requests busy). */
  queued(id: string): number {
    return this.#pools.get(id)?.pool.queued ?? 0;
  }

  #pool(d: Deployment): UpstreamPool {
    const held = this.#pools.get(d.id);
    if (held !== undefined && held.origin === d.origin && held.connections === d.maxParallelRequests) return held.pool;
    // A new deployment, or its api_base or max_parallel_requests changed (a reload, /model/new): a pool of
    // its own. A pool left behind finishes the requests it carries; those of deployments gone are dropped.
    if (held !== undefined) void held.pool.close();
    const catalog = this.#catalog();
    for (const [id, other] of this.#pools)
      if (catalog.deployment(id) === undefined) {
        void other.pool.close();
        this.#pools.delete(id);
      }
    const pool = new UpstreamPool(d.origin, {
      connections: d.maxParallelRequests,
      keepAliveTimeout: KEEP_ALIVE_MS,
      connectTimeout: 5_000,
    });
    this.#pools.set(d.id, { pool, origin: d.origin, connections: d.maxParallelRequests });
    return pool;
  }

  /** The clients of the requests being forwarded: cut off (told why) when the drain runs out (shutdown). */
  readonly #inFlight = new Set<ClientLink>();

  /**
   * The drain ran out: every request still forwarded is cut off — its backend request aborted, a stream
   * ended with an error event and [DONE], a request not answered yet given a 503 — so its client reads why
   * (and the SDKs retry) instead of a reset connection, and its row records what it got.
   */
  shutdown(): void {
    for (const c of this.#inFlight) c.shutdown();
  }

  /** Serves the request to `res`, through retries and fallbacks; never throws for backend faults. */
  async forward(req: ForwardRequest, res: HttpResponse): Promise<void> {
    this.#inFlight.add(req.client);
    try {
      await this.#forward(req, res);
    } finally {
      this.#inFlight.delete(req.client);
    }
  }

  async #forward(req: ForwardRequest, res: HttpResponse): Promise<void> {
    const started = performance.now();
    const gate = this.#gate;
    const aliases = [req.alias, ...req.fallbacks];
    let last: Attempt | undefined;
    let hint = req.hint;
    let triedAny = false;
    /** The last deployment asked: a request that failed everywhere is recorded with it (which one failed). */
    let lastTried: Deployment | undefined;
    /** Deployments admitted here (gate); `refused`: why one was not (at its limits, or the store down). */
    const gated = new Set<string>();
    let refused: Extract<GateVerdict, { refused: string }> | undefined;
    /**
     * Deployments whose connections stayed busy past the request's wait: not asked again by this request (it
     * would queue at the back once more), but not failed either — nothing was sent.
     */
    const saturated = new Set<string>();
    for (const alias of aliases) {
      const group = this.#catalog().group(alias);
      if (group === undefined) continue;
      const tried = new Set<string>();
      /** Times this request went back to deployments it had tried (againAfter's backoff). */
      let again = 0;
      for (let n = 0; n <= this.#settings.numRetries; n++) {
        if (req.client.gone) break;
        const now = Date.now();
        let d: Deployment | undefined;
        if (hint !== undefined && n === 0) {
          // authz's pick: in this group, or in a fallback's when every deployment of the model was cooling down.
          const h = group.deployments.find((x) => x.id === hint);
          if (h !== undefined) {
            hint = undefined;
            if (this.#tracker.isAvailable(h.id, now)) d = h;
          }
        }
        d ??= this.#tracker.pick(group, this.#settings.strategy, tried, now, Math.random());
        if (d === undefined && tried.size > 0) {
          // Every deployment was tried once: a further retry may go to any of them again, but for those it
          // waited for in vain — after a pause, as LiteLLM's router pauses when no untried deployment is
          // left: asked again at once, an overloaded backend gets the load it asked to be spared (a 429's own
          // wait when it gave one; past AGAIN_MAX_MS the client gets the 429 and its SDK waits it out).
          const pause = last === undefined ? 0 : againAfter(last, again++, Date.now());
          if (pause === undefined) break;
          if (pause > 0) await req.client.pause(pause);
          if (req.client.stopped !== undefined) break;
          tried.clear();
          for (const id of saturated) tried.add(id);
          d = this.#tracker.pick(group, this.#settings.strategy, tried, Date.now(), Math.random());
        }
        if (d === undefined) break;
        tried.add(d.id);
        // A deployment other than the one admitted at Check counts this request against its own rpm/tpm
        // first, once per request however often it is retried.
        if (gate !== undefined && d.id !== req.lease?.deploymentId && (d.rpm !== undefined || d.tpm !== undefined) && !gated.has(d.id)) {
          const r = this.#reservation(req, d);
          const admitted = await gate.admit(d, req.lease?.reservedTokens ?? r.tokens, Date.now(), r.leastTokens);
          if (admitted !== undefined && 'refused' in admitted) {
            failed(req, d, admitted.refused === 'store' ? 'limits store unreachable' : 'at its rpm/tpm');
            // A store outage says more than a full deployment: it holds for every other one too.
            if (refused?.refused !== 'store') refused = admitted;
            continue; // another deployment, or the next alias
          }
          gated.add(d.id);
          if (admitted !== undefined) req.extraLeases.push(admitted);
        }
        triedAny = true;
        lastTried = d;
        last = await this.#attempt(d, alias, req, res, started);
        if (last.kind !== 'done') failed(req, d, why(last));
        // The cap tollgate added did not fit what is left of the model's context after this prompt: vLLM
        // refuses it (it generates to the context end without one). Asked again with what is left, the
        // client gets what vLLM gives a request without max_tokens, not an error about a value it never sent.
        // A batch of prompts is refused at its first one too long for the cap: asked again, at the next; the
        // room only shrinks, so a few rounds settle it.
        let cap = this.#cap(d);
        for (let round = 0; round < 4 && last.kind === 'client-error' && last.status === 400; round++) {
          const room = this.#contextRoom(req, last.message, cap);
          if (room === undefined) break;
          cap = room;
          last = await this.#attempt(d, alias, req, res, started, room);
          if (last.kind !== 'done') failed(req, d, why(last));
        }
        if (last.kind === 'done') return;
        if (last.kind === 'too-large') {
          // Another deployment would send as much: not a fault of this one, and not worth generating again.
          sendError(res, 'upstream_error', "The model server's reply is larger than tollgate forwards.", req.caller.requestId, 502);
          this.#record(req, d, alias, 502, started, NOTHING);
          return;
        }
        if (last.kind === 'client-error') {
          // The backend refused this request itself (400, 413, 422): another deployment would too.
          sendError(res, 'upstream_invalid_request', last.message, req.caller.requestId, last.status, undefined, last.param);
          this.#record(req, d, alias, last.status, started, NOTHING);
          return;
        }
        // A client that went away (or a drain that ran out) says nothing about the deployment.
        if (req.client.stopped !== undefined) break;
        if (last.kind === 'retry' && last.queued === true) {
          // It never reached the backend: tollgate's own connection limit, no word on the deployment's health.
          saturated.add(d.id);
          this.#onQueueTimeout?.(d);
          continue;
        }
        // The only deployment of its alias is never cooled down (as LiteLLM does): there is nothing else to
        // send to, and a cooldown would fail every request for cooldown_time where each could try it again.
        if (group.deployments.length > 1) {
          const t = Date.now();
          const rateLimited: Failure | undefined =
            last.kind === 'retry' && last.status === 429
              ? { rateLimited: true, waitMs: last.wait === undefined ? undefined : last.wait.untilMs - t }
              : undefined;
          this.#tracker.failed(d.id, t, rateLimited);
        }
      }
      if (req.client.stopped !== undefined) break;
    }
    if (req.client.gone) {
      // Every request leaves one spend row; 499 is the de-facto "client closed request" status.
      this.#record(req, lastTried, req.alias, 499, started, NOTHING);
      return;
    }
    if (req.client.shuttingDown) {
      sendError(res, 'gateway_unavailable', SHUTTING_DOWN, req.caller.requestId);
      this.#record(req, lastTried, req.alias, res.statusCode, started, NOTHING);
      return;
    }
    const now = Date.now();
    // Every deployment the request could go to is cooling down now: when the first one is back, and why it is out.
    const back = firstBack(this.#catalog().groups(aliases), this.#tracker, now);
    if (!triedAny && refused !== undefined) {
      if (refused.refused === 'store') sendError(res, 'store_unavailable', undefined, req.caller.requestId);
      else
        sendError(
          res,
          'rate_limit_exceeded',
          'Every deployment of this model is at its rate limit: retry shortly.',
          req.caller.requestId,
          undefined,
          refused.headers,
        );
      this.#record(req, undefined, req.alias, res.statusCode, started, NOTHING);
      return;
    }
    if (last?.kind === 'retry' && last.status === 429) {
      // The last deployment asked is overloaded: the client gets the 429 its SDK waits out and retries (it
      // honours retry-after-ms and retry-after: FIELD-NOTES, OpenAI SDKs), with the backend's own wait when it
      // sent a valid one — or until the first deployment is back, when every one is cooling down past that:
      // sooner, the request would only be refused.
      const wait = last.wait;
      const headers =
        back !== undefined && (wait === undefined || back.untilMs > wait.untilMs) ? retryAfterHeaders(back.untilMs - now) : wait?.headers;
      sendError(res, 'rate_limit_exceeded', headers === undefined ? BUSY : BUSY_AFTER, req.caller.requestId, undefined, [
        ...(req.responseHeaders ?? []),
        ...(headers ?? []),
      ]);
    } else if (!triedAny && back !== undefined) {
      // None was there to ask (behind Envoy, Check does not know the gateway's cooldowns): as the gateway's
      // own authorization answers it (coolingAnswer), a 429 when 429s cooled them down, with when to come back.
      const answer = coolingAnswer(back, now);
      const limits = answer.code === 'rate_limit_exceeded' ? (req.responseHeaders ?? []) : [];
      sendError(res, answer.code, answer.message, req.caller.requestId, undefined, [...limits, ...retryAfterHeaders(answer.retryAfterMs)]);
    } else {
      let code: ErrorCode = 'no_healthy_deployment';
      // Its last attempt waited for a connection in vain (QUEUED): 503, as tollgate is at its own limit — no
      // backend was asked, so it is no backend's timeout (504) or failure (502).
      if (triedAny && !(last?.kind === 'retry' && last.queued === true))
        code = last?.kind === 'retry' && last.timeout ? 'upstream_timeout' : 'upstream_error';
      // Its attempts left every deployment cooling down: the client is told when the first is back.
      const after = back === undefined ? undefined : retryAfterHeaders(back.untilMs - now);
      let message = last?.kind === 'retry' ? last.message : undefined;
      if (after !== undefined && message === undefined && code !== 'upstream_timeout')
        message = `${ERRORS[code].message.replace(/: retry shortly\.$/, '')}: retry after the time given in the retry-after header.`;
      sendError(res, code, message, req.caller.requestId, undefined, after);
    }
    this.#record(req, lastTried, req.alias, res.statusCode, started, NOTHING);
  }

  /**
   * The tokens left for the completion when vLLM refused the max_tokens tollgate added (the client sent none)
   * (`cap`) as more than the context has room for; undefined for any other refusal, when the prompt alone
   * fills the context, or when the room is not less than `cap` (nothing to gain by asking again).
   */
  #contextRoom(req: ForwardRequest, message: string | undefined, cap: number): number | undefined {
    if (message === undefined || !capAdded(req)) return undefined;
    const m = CONTEXT_NEW.exec(message) ?? CONTEXT_OLD.exec(message);
    if (m === null) return undefined;
    const room = Number(m[1]) - Number(m[2]);
    return room >= 1 && room < cap ? room : undefined;
  }

  /** The tokens a request reserves against a deployment's tpm when Check reserved none (nothing else limits the caller). */
  #reservation(req: ForwardRequest, d: Deployment): { tokens: number; leastTokens: number | undefined } {
    const n = req.body['n'];
    const mt = req.body['max_completion_tokens'] ?? req.body['max_tokens'];
    const body = {
      // An embedding generates nothing: its input only.
      maxTokens: req.endpoint === 'embeddings' ? 0 : typeof mt === 'number' ? mt : undefined,
      choices: typeof n === 'number' ? n : 1,
      bytes: req.text.length,
    };
    const r = reservation(body, d, this.#settings.defaultMaxTokens);
    // As at Check (Limiter.admit): without max_tokens, the room a tpm window has left will do.
    return { tokens: r.prompt + r.completion, leastTokens: body.maxTokens === undefined && r.completion > 0 ? r.prompt + 1 : undefined };
  }

  #cap(d: Deployment): number {
    return d.maxTokens === undefined ? this.#settings.defaultMaxTokens : Math.min(d.maxTokens, this.#settings.defaultMaxTokens);
  }

  async #attempt(d: Deployment, alias: string, req: ForwardRequest, res: HttpResponse, started: number, cap?: number): Promise<Attempt> {
    // The embeddings API has no stream: vLLM ignores the field and answers JSON, and so does the gateway.
    const stream = req.body['stream'] === true && req.endpoint !== 'embeddings';
    const clientWantsUsage = stream && (req.body['stream_options'] as { include_usage?: unknown } | undefined)?.include_usage === true;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'x-request-id': randomUUID(),
    };
    if (d.apiKey !== undefined) headers['authorization'] = `Bearer ${d.apiKey}`;
    // The wait for the head is `stream_timeout` on streams, else `timeout`; the same bounds each silence in the
    // body, and the wait for a free connection (all max_parallel_requests busy) before it. `timeout` bounds
    // the whole attempt from its connection on (the exchange's own timer): the wait in the queue is tollgate's,
    // not the backend's.
    const wait = stream && d.streamTimeoutMs !== undefined ? d.streamTimeoutMs : d.timeoutMs;
    const timing = req.timing;
    const relay = stream
      ? new SseRelay(
          res,
          req.client,
          req.caller.requestId,
          req.responseHeaders,
          new SseRewriter({ keepUsage: clientWantsUsage, model: alias, scrub: (m) => withoutDeployment(m, d) }),
          wait,
          () => {
            if (timing.ttftMs === undefined) timing.ttftMs = performance.now() - started;
          },
        )
      : undefined;
    // A non-streamed reply past PARSED_REPLY goes to this relay: held up to HELD_REPLY, then relayed.
    let big: JsonRelay | undefined;
    const exchange = new Exchange({
      client: req.client,
      sink: relay,
      relay: stream
        ? undefined
        : () =>
            (big = new JsonRelay({
              res,
              client: req.client,
              requestId: req.caller.requestId,
              extra: req.responseHeaders,
              alias,
              stallMs: wait,
              hold: HELD_REPLY,
            })),
      replyCap: PARSED_REPLY,
      errorCap: MAX_ERROR_BODY,
    });
    this.#tracker.started(d.id, Date.now());
    const sent = performance.now();
    const result = await exchange.send(
      this.#pool(d),
      {
        path: `${d.basePath}/${req.endpoint}`,
        method: 'POST',
        headers,
        body: this.#backendBody(req, d, stream && !clientWantsUsage, cap),
        headersTimeout: wait,
        bodyTimeout: wait,
      },
      wait,
      d.timeoutMs,
    );
    timing.backendMs += performance.now() - sent;
    this.#tracker.finished(d.id);
    if (
      exchange.headMs !== undefined &&
      (result.kind === 'streamed' || result.kind === 'relayed' || (result.kind === 'reply' && result.status < 300))
    )
      this.#tracker.latency(d.id, exchange.headMs);
    switch (result.kind) {
      case 'failed': {
        const code = (result.err as { code?: unknown }).code;
        if (code === 'REPLY_TOO_LARGE') return { kind: 'too-large' };
        // Never sent: safe to send elsewhere, and no fault of the deployment's.
        if (code === 'QUEUE_TIMEOUT' && exchange.queued)
          return {
            kind: 'retry',
            timeout: false,
            queued: true,
            detail: `QUEUE_TIMEOUT (all ${d.maxParallelRequests} connections busy: max_parallel_requests)`,
            message: QUEUED,
          };
        // A stream was asked for and the deployment answered a 2xx that is not one, whatever its size (the
        // exchange reads none of it): it does not speak the API, another deployment may.
        if (code === 'NOT_EVENT_STREAM') return { kind: 'retry', timeout: false, detail: result.err.message };
        return { kind: 'retry', timeout: isTimeout(result.err), detail: errCode(result.err) };
      }
      case 'reply':
        // A 2xx here answers a non-streamed request (a stream's is streamed, or fails as NOT_EVENT_STREAM).
        if (result.status < 200 || result.status >= 300) return failure(result, d);
        return this.#whole(d, alias, req, res, result.body, started);
      case 'streamed':
        this.#streamed(d, alias, req, relay as SseRelay, started, result.err);
        return { kind: 'done' };
      case 'relayed': {
        const r = big as JsonRelay;
        if (r.sent) {
          this.#relayed(d, alias, req, r, started, result.err);
          return { kind: 'done' };
        }
        // Nothing reached the client: it broke off or was refused (not one JSON object) while held, or it
        // ended within HELD_REPLY and is answered whole.
        if (result.err !== undefined) return { kind: 'retry', timeout: isTimeout(result.err), detail: errCode(result.err) };
        if (!r.json.complete) return { kind: 'retry', timeout: false, detail: 'malformed reply' };
        if (r.json.errorBody) return { kind: 'retry', timeout: false, detail: 'error body with 2xx' };
        const charge = this.#charge(d, req, r.json.usage, () => r.json.completionEstimate);
        this.#answer(d, alias, req, res, r.held.list(), r.held.length, charge, started);
        r.held.clear();
        return { kind: 'done' };
      }
    }
  }

  /**
   * The request as the deployment gets it: its model id, `stream_options.include_usage` on streams (so usage
   * is known), and a `max_tokens` cap when the client set none — vLLM generates to the end of the context
   * without one (FIELD-NOTES); `null` counts as none (the OpenAI SDKs may send it); vLLM's old `guided_*`
   * fields moved into `structured_outputs` (guidedToStructured). Edited in the client's text (spliceJson:
   * the rest keeps its bytes), else — a repeated member — serialized again.
   */
  #backendBody(req: ForwardRequest, d: Deployment, addUsage: boolean, cap: number | undefined): string {
    const body = req.endpoint === 'embeddings' ? req.body : (guidedToStructured(req.body) ?? req.body);
    const set: Record<string, unknown> = {};
    const remove: string[] = [];
    if (body !== req.body) {
      // The guided_* moved: gone from the text, structured_outputs set.
      for (const k of Object.keys(req.body)) if (!Object.hasOwn(body, k)) remove.push(k);
      if (body['structured_outputs'] !== req.body['structured_outputs']) set['structured_outputs'] = body['structured_outputs'];
    }
    if (addUsage) set['stream_options'] = { ...(body['stream_options'] as object | undefined), include_usage: true };
    const capped = capAdded(req);
    if (capped) set['max_tokens'] = cap ?? this.#cap(d);
    // A max_completion_tokens: null goes (vLLM takes it over max_tokens).
    if (capped && Object.hasOwn(body, 'max_completion_tokens')) remove.push('max_completion_tokens');
    const spliced = spliceJson(req.text, req.body, d.backendModel, set, remove);
    if (spliced !== undefined) return spliced;
    const out: Record<string, unknown> = { ...body, model: d.backendModel, ...set };
    if (capped) delete out['max_completion_tokens'];
    return JSON.stringify(out);
  }

  #whole(d: Deployment, alias: string, req: ForwardRequest, res: HttpResponse, raw: Buffer, started: number): Attempt {
    const text = raw.toString('utf8');
    const parsed = parseObject(text);
    if (parsed === undefined) return { kind: 'retry', timeout: false, detail: 'malformed reply' };
    if (parsed['object'] === 'error' || parsed['error'] !== undefined)
      return { kind: 'retry', timeout: false, detail: 'error body with 2xx' };
    // Without a usage (absent, null, not an object), as a held or relayed reply and a stream without its
    // usage report: charged for its prompt and generated text, estimated — not for nothing.
    const charge = this.#charge(d, req, replyUsage(parsed['usage']), () => completionEstimate(raw));
    const out = withModel(text, parsed, alias) ?? JSON.stringify({ ...parsed, model: alias });
    this.#answer(d, alias, req, res, out, Buffer.byteLength(out), charge, started);
    return { kind: 'done' };
  }

  /**
   * What a reply is charged, streamed or not, whole or cut short: its usage, or without one its prompt and
   * the text it generated, estimated (`completionEstimate`, asked only then); the deployment's tokens are
   * counted for usage-based routing.
   */
  #charge(d: Deployment, req: ForwardRequest, usage: Usage | undefined, completionEstimate: () => number): Charge {
    const prompt = usage?.promptTokens ?? estimatePromptTokens(req);
    const completion = usage?.completionTokens ?? completionEstimate();
    this.#tracker.addTokens(d.id, prompt + completion);
    return {
      prompt,
      completion,
      cost: prompt * d.inputCostPerToken + completion * d.outputCostPerToken,
      estimated: usage === undefined,
    };
  }

  /**
   * Answers a whole reply, `body` (`length` bytes) renamed, with its cost, and records it. An estimated
   * charge (the reply had no usage) is in the header all the same (the spend log says it is an estimate).
   */
  #answer(
    d: Deployment,
    alias: string,
    req: ForwardRequest,
    res: HttpResponse,
    body: string | readonly Buffer[],
    length: number,
    charge: Charge,
    started: number,
  ): void {
    const head = [
      'content-type',
      'application/json',
      'content-length',
      String(length),
      'x-tollgate-request-id',
      req.caller.requestId,
      'x-request-id',
      req.caller.requestId,
      'x-tollgate-response-cost',
      // Twelve significant digits: 0.21, not 0.21000000000000002.
      String(Number(charge.cost.toPrecision(12))),
    ];
    if (req.responseHeaders !== undefined) for (const [k, v] of req.responseHeaders) head.push(k, v);
    res.writeHead(200, head);
    if (typeof body === 'string') res.end(body);
    else {
      for (const b of body) res.write(b);
      res.end();
    }
    this.#record(req, d, alias, 200, started, charge);
  }

  /**
   * The stream was relayed as it came and ended (SseRelay.end): charge what was streamed. Recorded as 499
   * ("client closed request") when the client left before its end or was cut off for not reading; a backend
   * that broke off still gave the client its 200 (with an error event at the end).
   */
  #streamed(d: Deployment, alias: string, req: ForwardRequest, relay: SseRelay, started: number, err: Error | undefined): void {
    const charge = this.#charge(d, req, relay.sse.usage, () => relay.sse.completionEstimate);
    const code = (err as { code?: unknown } | undefined)?.code;
    // A client that leaves once it read an error event (the SDKs throw on it and close) left a failed
    // stream, not a good one it walked out of: it had its 200 and the error, as a stream that broke off.
    const left = (code === 'CLIENT_GONE' && !relay.sse.sawError) || code === 'CLIENT_STALLED';
    const status = left ? 499 : 200;
    if (code === 'SHUTTING_DOWN') failed(req, d, 'cut off: tollgate shutting down');
    else if (err !== undefined && code !== 'CLIENT_GONE' && code !== 'CLIENT_STALLED') failed(req, d, `stream broke off: ${errCode(err)}`);
    else if (relay.sse.sawError) failed(req, d, 'error event in the stream');
    this.#record(req, d, alias, status, started, charge);
  }

  /**
   * A reply past HELD_REPLY was relayed as it came (JsonRelay) and ended: charged for its usage, or, when it
   * broke off before that (or had none), for its prompt and the text it had generated, estimated. Recorded as
   * 499 when the client left or read nothing for the stall bound; 200 (the client's status) when the backend
   * broke off.
   */
  #relayed(d: Deployment, alias: string, req: ForwardRequest, relay: JsonRelay, started: number, err: Error | undefined): void {
    const json = relay.json;
    const charge = this.#charge(d, req, json.usage, () => json.completionEstimate);
    const code = (err as { code?: unknown } | undefined)?.code;
    // From the relay's head the attempt's `timeout` counts the backend's time only (Exchange.headSent): a
    // client too slow is one that read nothing for the stall bound.
    const left = code === 'CLIENT_GONE' || code === 'CLIENT_STALLED';
    if (code === 'SHUTTING_DOWN') failed(req, d, 'cut off: tollgate shutting down');
    else if (err !== undefined && !left) failed(req, d, `reply broke off: ${errCode(err)}`);
    else if (err === undefined && !json.complete) failed(req, d, 'reply broke off: not one JSON object');
    this.#record(req, d, alias, left ? 499 : 200, started, charge);
  }

  #record(req: ForwardRequest, d: Deployment | undefined, alias: string, status: number, started: number, charge: Charge): void {
    const c = req.caller;
    this.#spend.record({
      requestId: c.requestId,
      keyId: c.keyId,
      userId: c.userId,
      teamId: c.teamId,
      model: alias,
      deployment: d?.id,
      promptTokens: charge.prompt,
      completionTokens: charge.completion,
      cost: charge.cost,
      status,
      latencyMs: performance.now() - started,
      estimated: charge.estimated,
      at: Date.now(),
      endpoint: req.endpoint,
      backendMs: req.timing.backendMs,
      ttftMs: req.timing.ttftMs,
      lease: req.lease,
      extraLeases: req.extraLeases.length === 0 ? undefined : req.extraLeases,
      upstream: req.upstream.length === 0 ? undefined : req.upstream.join('; '),
    });
  }
}

/** What a request is charged (Forwarder.#charge): tokens, cost, and whether they are an estimate. */
interface Charge {
  readonly prompt: number;
  readonly completion: number;
  readonly cost: number;
  readonly estimated: boolean;
}

/** A request that got no reply of a deployment: nothing charged. */
const NOTHING: Charge = { prompt: 0, completion: 0, cost: 0, estimated: false };

/** Whether tollgate adds the `max_tokens` cap to this request (the client sent none; embeddings take none). */
function capAdded(req: ForwardRequest): boolean {
  return req.endpoint !== 'embeddings' && req.body['max_tokens'] == null && req.body['max_completion_tokens'] == null;
}

/**
 * vLLM's refusal of a max_tokens past the context's room: since v0.10 "'max_tokens' or 'max_completion_tokens'
 * is too large: 4096. This model's maximum context length is 8192 tokens and your request has 5112 input
 * tokens (4096 > 8192 - 5112)"; before, "This model's maximum context length is 4096 tokens. However, you
 * requested 4200 tokens (104 in the messages, 4096 in the completion)". Groups: the context, the prompt.
 */
const CONTEXT_NEW = /maximum context length is (\d+) tokens and your request has (\d+) input tokens/;
const CONTEXT_OLD =
  /maximum context length is (\d+) tokens\. However, you requested \d+ tokens \((\d+) in the messages, \d+ in the completion\)/;

/**
 * vLLM's structured-output fields before v0.12 (`guided_json`, …), which it now ignores without an error
 * (FIELD-NOTES): moved into `structured_outputs` under their new names, beside what the client set there
 * itself (which wins; a constraint of its own replaces theirs); `guided_decoding_backend` is gone (a server
 * flag now). Undefined when the body has none.
 */
export function guidedToStructured(body: Record<string, unknown>): Record<string, unknown> | undefined {
  let out: Record<string, unknown> | undefined;
  let moved: Record<string, unknown> | undefined;
  for (const [from, to] of GUIDED_FIELDS) {
    if (!Object.hasOwn(body, from)) continue;
    out ??= { ...body };
    const v = out[from];
    delete out[from];
    if (to !== undefined && v !== null && v !== undefined) (moved ??= {})[to] = v;
  }
  if (out === undefined) return undefined;
  if (moved !== undefined) {
    const raw = body['structured_outputs'];
    const own = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as Record<string, unknown>) : {};
    // One kind of constraint: the client's own, when it set one, as vLLM since v0.12 reads the request (it
    // ignores guided_*); merged, two kinds would be refused ("only one kind of structured outputs").
    if (CONSTRAINTS.some((k) => own[k] !== undefined && own[k] !== null)) for (const k of CONSTRAINTS) delete moved[k];
    out['structured_outputs'] = { ...moved, ...own };
  }
  return out;
}

/** The first pause before a deployment is asked again by the same request, doubled each time (LiteLLM's 0.5 s). */
const AGAIN_BASE_MS = 500;
/**
 * The longest pause: a backend asking for a longer wait is not asked again by this request — the client gets
 * the 429 with that wait, which its SDK waits out (a reply held back that long would look hung).
 */
const AGAIN_MAX_MS = 2_000;

/**
 * How long to pause before sending a request again to a deployment it already tried: the backend's own
 * wait when its 429 gave one (undefined, do not, past AGAIN_MAX_MS), else a backoff doubling from
 * AGAIN_BASE_MS, jittered so the retries of many requests do not land at once.
 */
function againAfter(last: Attempt, repeat: number, now: number): number | undefined {
  if (last.kind !== 'retry' || last.queued === true) return 0;
  const wait = last.wait;
  if (wait !== undefined) {
    const ms = wait.untilMs - now;
    return ms > AGAIN_MAX_MS ? undefined : Math.max(0, ms);
  }
  return Math.min(AGAIN_MAX_MS, AGAIN_BASE_MS * 2 ** repeat * (0.75 + Math.random() * 0.5));
}

/** The kinds of constraint in vLLM's StructuredOutputsParams, of which a request may have one. */
const CONSTRAINTS = ['json', 'regex', 'choice', 'grammar', 'json_object', 'structural_tag'] as const;

/** vLLM's old request fields and their names in `structured_outputs` (undefined: dropped). */
const GUIDED_FIELDS: readonly (readonly [string, string | undefined])[] = [
  ['guided_json', 'json'],
  ['guided_regex', 'regex'],
  ['guided_choice', 'choice'],
  ['guided_grammar', 'grammar'],
  ['guided_whitespace_pattern', 'whitespace_pattern'],
  ['structural_tag', 'structural_tag'],
  ['guided_decoding_backend', undefined],
];

/** Sends an error in OpenAI's shape (the one table), unless headers already went out. */
export function sendError(
  res: HttpResponse,
  code: ErrorCode,
  message: string | undefined,
  requestId: string,
  status?: number,
  extra?: readonly (readonly [string, string])[],
  param?: string,
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = errorBody(code, message, param);
  res.errorCode = code;
  const head = [
    'content-type',
    'application/json',
    'content-length',
    String(Buffer.byteLength(body)),
    'x-tollgate-request-id',
    requestId,
    'x-request-id',
    requestId,
  ];
  const table = ERRORS[code].headers;
  if (table !== undefined) for (const [k, v] of Object.entries(table)) head.push(k, v);
  if (extra !== undefined) for (const [k, v] of extra) head.push(k, v);
  res.writeHead(status ?? ERRORS[code].status, head);
  res.end(body);
}

/** The exchange's and the connection's errors by their stable `code` (exchange.ts, upstream.ts). */
function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown; name?: unknown }).code;
  return (
    code === 'QUEUE_TIMEOUT' ||
    code === 'REQUEST_TIMEOUT' ||
    code === 'HEADERS_TIMEOUT' ||
    code === 'BODY_TIMEOUT' ||
    code === 'CONNECT_TIMEOUT' ||
    (err as { name?: unknown }).name === 'TimeoutError'
  );
}

/** At most this many failed attempts are named in a request's log line. */
const UPSTREAM_NOTED = 8;

/** Notes what an attempt on `d` met, for the request's log line: an operator tells a wrong api_key from a timeout. */
function failed(req: ForwardRequest, d: Deployment, reason: string): void {
  if (req.upstream.length < UPSTREAM_NOTED) req.upstream.push(`${d.id}: ${reason}`);
}

function why(a: Exclude<Attempt, { kind: 'done' }>): string {
  switch (a.kind) {
    case 'retry':
      return a.detail;
    case 'client-error':
      return `HTTP ${a.status}`;
    case 'too-large':
      return 'reply too large';
  }
}

/** An error's code for the log line, with the socket error under it when there is one: `SOCKET_CLOSED (ECONNRESET)`. */
function errCode(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const own = typeof code === 'string' ? code : err instanceof Error ? err.name : 'error';
  const cause = (err as { cause?: { code?: unknown } }).cause?.code;
  return typeof cause === 'string' ? `${own} (${cause})` : own;
}

/** Without a usage report: the tokens of the messages or prompt, estimated from their JSON text. */
function estimatePromptTokens(req: ForwardRequest): number {
  const b = req.body;
  try {
    return estimateTokens(JSON.stringify(b['messages'] ?? b['prompt'] ?? b['input'] ?? ''));
  } catch {
    // Nested too deep to serialise again (JSON.parse took it; the stack does not): the whole body's text.
    return estimateTokens(req.text);
  }
}
