/**
 * Forwards one OpenAI request to a deployment and streams the answer back: one undici Pool per backend
 * origin (keep-alive), explicit timeouts (`stream_timeout` to the first byte, `timeout` for the whole
 * request), a fresh X-Request-Id per attempt, the deployment's own `api_key` as Bearer — never the
 * client's credentials. Retries (connect errors, 408, 429, 5xx, a misconfigured deployment's 401/403/404)
 * happen only before the first byte went to the client; then fallbacks to other aliases.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import type { ModelEndpoint } from '../core/route.js';
import { ERRORS, errorBody, type ErrorCode } from '../errors/codes.js';
import type { Deployment, ModelCatalog } from '../routing/deployments.js';
import type { DeploymentTracker, RoutingStrategy } from '../routing/health.js';
import type { SpendRecorder } from '../store/spend.js';
import { readCapped } from './read-capped.js';
import { backendMessage, SseRewriter } from './sse.js';

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
  readonly alias: string;
  /** The deployment authz picked (signed context), used for the first attempt. */
  readonly hint: string | undefined;
  /** Aliases to fall back to, already filtered to what the caller may use. */
  readonly fallbacks: readonly string[];
  readonly caller: Caller;
  readonly signal: AbortSignal;
}

type Attempt =
  | { readonly kind: 'done' }
  | { readonly kind: 'retry'; readonly timeout: boolean; readonly detail: string }
  | { readonly kind: 'client-error'; readonly status: number; readonly message: string | undefined };

const MAX_ERROR_BODY = 64 * 1024;
const MAX_REPLY_BODY = 64 * 1024 * 1024;
/** Statuses that mean "this deployment, not this request": try another. 408 is Ray Serve's request timeout. */
const RETRYABLE = new Set([401, 403, 404, 408, 429]);

export class Forwarder {
  readonly #pools = new Map<string, Pool>();
  readonly #catalog: () => ModelCatalog;
  readonly #tracker: DeploymentTracker;
  readonly #settings: RouterSettings;
  readonly #spend: SpendRecorder;

  constructor(opts: { catalog: () => ModelCatalog; tracker: DeploymentTracker; settings: RouterSettings; spend: SpendRecorder }) {
    this.#catalog = opts.catalog;
    this.#tracker = opts.tracker;
    this.#settings = opts.settings;
    this.#spend = opts.spend;
  }

  /** Creates the pools of every deployment now, so the first request pays no setup. */
  warm(deployments: Iterable<Deployment>): void {
    for (const d of deployments) this.#pool(d);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#pools.values()].map((p) => p.close()));
  }

  #pool(d: Deployment): Pool {
    const origin = d.origin;
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      pool = new Pool(origin, { connections: 128, keepAliveTimeout: 30_000, connectTimeout: 5_000, pipelining: 1 });
      this.#pools.set(origin, pool);
    }
    return pool;
  }

  /** Serves the request to `res`, through retries and fallbacks; never throws for backend faults. */
  async forward(req: ForwardRequest, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const aliases = [req.alias, ...req.fallbacks];
    let last: Attempt | undefined;
    let hint = req.hint;
    let triedAny = false;
    for (const alias of aliases) {
      const group = this.#catalog().group(alias);
      if (group === undefined) continue;
      const tried = new Set<string>();
      for (let n = 0; n <= this.#settings.numRetries; n++) {
        if (req.signal.aborted) break;
        const now = Date.now();
        let d: Deployment | undefined;
        if (hint !== undefined) {
          const h = group.deployments.find((x) => x.id === hint);
          hint = undefined;
          if (h !== undefined && this.#tracker.isAvailable(h.id, now)) d = h;
        }
        d ??= this.#tracker.pick(group, this.#settings.strategy, tried, now, Math.random());
        if (d === undefined && tried.size > 0) {
          // Every deployment was tried once: a further retry may go to any of them again.
          tried.clear();
          d = this.#tracker.pick(group, this.#settings.strategy, tried, now, Math.random());
        }
        if (d === undefined) break;
        tried.add(d.id);
        triedAny = true;
        last = await this.#attempt(d, alias, req, res, started);
        if (last.kind === 'done') return;
        if (last.kind === 'client-error') {
          // The backend refused this request itself (400, 413, 422): another deployment would too.
          sendError(res, 'upstream_invalid_request', last.message, req.caller.requestId, last.status);
          this.#record(req, d, alias, last.status, started, 0, 0, 0, false);
          return;
        }
        // A client that went away says nothing about the deployment.
        if (req.signal.aborted) break;
        this.#tracker.failed(d.id, Date.now());
      }
      if (req.signal.aborted) break;
    }
    if (req.signal.aborted) {
      // Every request leaves one spend row; 499 is the de-facto "client closed request" status.
      this.#record(req, undefined, req.alias, 499, started, 0, 0, 0, false);
      return;
    }
    let code: ErrorCode = 'no_healthy_deployment';
    if (triedAny) code = last?.kind === 'retry' && last.timeout ? 'upstream_timeout' : 'upstream_error';
    sendError(res, code, undefined, req.caller.requestId);
    this.#record(req, undefined, req.alias, res.statusCode, started, 0, 0, 0, false);
  }

  async #attempt(d: Deployment, alias: string, req: ForwardRequest, res: ServerResponse, started: number): Promise<Attempt> {
    const stream = req.body['stream'] === true;
    const clientWantsUsage = stream && (req.body['stream_options'] as { include_usage?: unknown } | undefined)?.include_usage === true;
    const body: Record<string, unknown> = { ...req.body, model: d.backendModel };
    if (stream) body['stream_options'] = { ...(req.body['stream_options'] as object | undefined), include_usage: true };
    // vLLM generates to the end of the context without a cap (FIELD-NOTES): send the configured default.
    // `null` counts as absent (the OpenAI SDKs may send it).
    if (req.endpoint !== 'embeddings' && body['max_tokens'] == null && body['max_completion_tokens'] == null) {
      delete body['max_completion_tokens'];
      body['max_tokens'] =
        d.maxTokens === undefined ? this.#settings.defaultMaxTokens : Math.min(d.maxTokens, this.#settings.defaultMaxTokens);
    }
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: stream ? 'text/event-stream' : 'application/json',
      'x-request-id': randomUUID(),
    };
    if (d.apiKey !== undefined) headers['authorization'] = `Bearer ${d.apiKey}`;
    this.#tracker.started(d.id, Date.now());
    const t0 = performance.now();
    let response: Dispatcher.ResponseData;
    try {
      response = await this.#pool(d).request({
        path: `${d.basePath}/${req.endpoint}`,
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        // The client going away aborts the attempt; undici's own timers bound the wait for headers
        // (`stream_timeout` on streams, else `timeout`) and each silence in the body.
        signal: req.signal,
        headersTimeout: stream && d.streamTimeoutMs !== undefined ? d.streamTimeoutMs : d.timeoutMs,
        bodyTimeout: stream && d.streamTimeoutMs !== undefined ? d.streamTimeoutMs : d.timeoutMs,
      });
    } catch (err) {
      this.#tracker.finished(d.id);
      return { kind: 'retry', timeout: isTimeout(err), detail: errCode(err) };
    }
    try {
      if (response.statusCode < 200 || response.statusCode >= 300) return await this.#failure(response);
      this.#tracker.latency(d.id, performance.now() - t0);
      if (!stream) return await this.#whole(d, alias, req, res, response, started);
      await this.#stream(d, alias, req, res, response, clientWantsUsage, started);
      return { kind: 'done' };
    } finally {
      this.#tracker.finished(d.id);
    }
  }

  async #failure(response: Dispatcher.ResponseData): Promise<Attempt> {
    const status = response.statusCode;
    const text = await readText(response.body, MAX_ERROR_BODY).catch(() => '');
    if (status >= 500 || RETRYABLE.has(status))
      return { kind: 'retry', timeout: status === 408 || status === 504, detail: `HTTP ${status}` };
    let message: string | undefined;
    try {
      message = backendMessage(JSON.parse(text) as Record<string, unknown>);
    } catch {
      message = undefined;
    }
    return { kind: 'client-error', status, message };
  }

  async #whole(
    d: Deployment,
    alias: string,
    req: ForwardRequest,
    res: ServerResponse,
    response: Dispatcher.ResponseData,
    started: number,
  ): Promise<Attempt> {
    let text: string;
    try {
      text = await readText(response.body, MAX_REPLY_BODY);
    } catch (err) {
      return { kind: 'retry', timeout: isTimeout(err), detail: errCode(err) };
    }
    let parsed: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(text);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      parsed = v as Record<string, unknown>;
    } catch {
      return { kind: 'retry', timeout: false, detail: 'malformed reply' };
    }
    if (parsed['object'] === 'error' || parsed['error'] !== undefined)
      return { kind: 'retry', timeout: false, detail: 'error body with 2xx' };
    const usage = (parsed['usage'] ?? {}) as Record<string, unknown>;
    const prompt = count(usage['prompt_tokens']);
    const completion = count(usage['completion_tokens']);
    const cost = prompt * d.inputCostPerToken + completion * d.outputCostPerToken;
    const out = withModel(text, parsed, alias);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(out),
      'x-tollgate-request-id': req.caller.requestId,
      'x-tollgate-response-cost': String(cost),
    });
    res.end(out);
    this.#tracker.addTokens(d.id, prompt + completion);
    this.#record(req, d, alias, 200, started, prompt, completion, cost, false);
    return { kind: 'done' };
  }

  async #stream(
    d: Deployment,
    alias: string,
    req: ForwardRequest,
    res: ServerResponse,
    response: Dispatcher.ResponseData,
    keepUsage: boolean,
    started: number,
  ): Promise<void> {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'x-tollgate-request-id': req.caller.requestId,
    });
    res.flushHeaders();
    const sse = new SseRewriter({ keepUsage, model: alias });
    let cutShort = false;
    try {
      for await (const chunk of response.body) {
        const out = sse.push(chunk as Uint8Array);
        if (out !== '' && !res.write(out)) {
          // A client that stopped reading and then left never drains: stop on its abort instead of waiting.
          if (res.destroyed || req.signal.aborted) break;
          if (!(await drained(res, req.signal, d.streamTimeoutMs ?? d.timeoutMs))) break;
        }
      }
    } catch {
      cutShort = true;
    }
    if (!req.signal.aborted) res.end(sse.end(cutShort));
    const usage = sse.usage;
    const prompt = usage?.promptTokens ?? estimateTokens(req.body);
    const completion = usage?.completionTokens ?? sse.contentChunks;
    const cost = prompt * d.inputCostPerToken + completion * d.outputCostPerToken;
    this.#tracker.addTokens(d.id, prompt + completion);
    this.#record(req, d, alias, 200, started, prompt, completion, cost, usage === undefined);
  }

  #record(
    req: ForwardRequest,
    d: Deployment | undefined,
    alias: string,
    status: number,
    started: number,
    prompt: number,
    completion: number,
    cost: number,
    estimated: boolean,
  ): void {
    const c = req.caller;
    this.#spend.record({
      requestId: c.requestId,
      keyId: c.keyId,
      userId: c.userId,
      teamId: c.teamId,
      model: alias,
      deployment: d?.id,
      promptTokens: prompt,
      completionTokens: completion,
      cost,
      status,
      latencyMs: performance.now() - started,
      estimated,
      at: Date.now(),
    });
  }
}

/**
 * The reply with `model` set to the alias the client asked for. vLLM writes compact JSON with the model
 * once near the start, so the value is replaced in the text; anything else is re-serialised.
 */
function withModel(text: string, parsed: Record<string, unknown>, alias: string): string {
  const model = parsed['model'];
  if (model === alias) return text;
  if (typeof model === 'string') {
    const needle = `"model":${JSON.stringify(model)}`;
    const at = text.indexOf(needle);
    if (at >= 0 && text.indexOf(needle, at + needle.length) < 0) {
      return `${text.slice(0, at)}"model":${JSON.stringify(alias)}${text.slice(at + needle.length)}`;
    }
  }
  return JSON.stringify({ ...parsed, model: alias });
}

/** Waits for the client to take more of the stream; false when it left or did not read for `ms`. */
async function drained(res: ServerResponse, signal: AbortSignal, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([once(res, 'drain', { signal }).then(() => true as const), stalled]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Sends an error in OpenAI's shape (the one table), unless headers already went out. */
export function sendError(res: ServerResponse, code: ErrorCode, message: string | undefined, requestId: string, status?: number): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = errorBody(code, message);
  res.writeHead(status ?? ERRORS[code].status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-tollgate-request-id': requestId,
  });
  res.end(body);
}

/** A backend body as text, at most `max` bytes (past that, an error: the reply is not usable). */
async function readText(body: Dispatcher.ResponseData['body'], max: number): Promise<string> {
  const buf = await readCapped(body, max);
  if (buf === null) {
    body.destroy();
    throw new Error('reply too large');
  }
  return buf.toString('utf8');
}

/** undici errors by their stable `code`. */
function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown; name?: unknown }).code;
  return (
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    (err as { name?: unknown }).name === 'TimeoutError'
  );
}

function errCode(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : err instanceof Error ? err.name : 'error';
}

function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** Without a usage report: about four characters a token over the messages or prompt. */
function estimateTokens(body: Record<string, unknown>): number {
  const src = body['messages'] ?? body['prompt'] ?? body['input'] ?? '';
  return Math.ceil(JSON.stringify(src).length / 4);
}
