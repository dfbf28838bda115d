/**
 * What one attempt on a deployment came to (Attempt), and what a backend's non-2xx reply means: try another
 * deployment (a fault of this one: 5xx, 408, 429, a misconfiguration), or tell the client (its own request's
 * fault), and what of the backend's answer the client is told — its message and `param` without what they
 * quote of the request or of the deployment, a 429's wait.
 */
import { retryAfterHeaders } from '../errors/codes.js';
import type { Deployment } from '../routing/deployments.js';
import { backendMessage, backendParam, parseObject } from './sse.js';

/** What one attempt came to: answered (done), try another deployment (retry), the client's fault, a reply too large. */
export type Attempt =
  | { readonly kind: 'done' }
  | {
      readonly kind: 'retry';
      readonly timeout: boolean;
      /** It waited for a free connection past its bound and was never sent: tollgate's own limit, not the deployment's fault. */
      readonly queued?: boolean;
      readonly detail: string;
      /** The backend's status, when it answered one. */
      readonly status?: number;
      /** A 429's valid `retry-after-ms` or `retry-after` (passed on to the client when this attempt was the last). */
      readonly wait?: Wait | undefined;
      /** What the client is told when this attempt was the last (a misconfigured deployment), instead of the generic message. */
      readonly message?: string;
    }
  | { readonly kind: 'client-error'; readonly status: number; readonly message: string | undefined; readonly param: string | undefined }
  | { readonly kind: 'too-large' };

/** 4xx statuses that mean "this deployment, not this request": try another. 408 is Ray Serve's request timeout. */
const RETRYABLE = new Set([401, 403, 404, 405, 408, 429]);

/**
 * A non-2xx reply: another deployment for faults (5xx, 408, 429, misconfiguration — a redirect or a 405 too,
 * which no OpenAI-compatible server answers a good request with), the client's own fault otherwise: then
 * the backend's message and `param` go to the client (backendMessage, backendParam), without what they
 * quote of the request or of the deployment.
 */
export function failure(
  reply: {
    readonly status: number;
    readonly body: Buffer;
    readonly retryAfter?: string | undefined;
    readonly retryAfterMs?: string | undefined;
  },
  d: Deployment,
): Attempt {
  const { status, body } = reply;
  if (status >= 500 || status < 400 || RETRYABLE.has(status)) {
    const detail = `HTTP ${status}`;
    const timeout = status === 408 || status === 504;
    if (status === 429)
      return { kind: 'retry', timeout, detail, status, wait: backendWait(reply.retryAfter, reply.retryAfterMs, Date.now()) };
    // The deployment's own fault, which a retry will not mend: the client is told so, and whom to tell. The
    // backend's message is not passed: it names the backend's model id (not the alias the client sent).
    if (status === 404)
      return {
        kind: 'retry',
        timeout,
        detail,
        status,
        message: servesModel(parseObject(body.toString('utf8'))) ? NO_SUCH_MODEL : NO_SUCH_ROUTE,
      };
    if (status === 401 || status === 403) return { kind: 'retry', timeout, detail, status, message: REFUSED_KEY };
    return { kind: 'retry', timeout, detail, status };
  }
  const o = parseObject(body.toString('utf8'));
  if (o === undefined) return { kind: 'client-error', status, message: undefined, param: undefined };
  const message = backendMessage(o);
  return {
    kind: 'client-error',
    status,
    message: message === undefined ? undefined : withoutDeployment(message, d),
    param: backendParam(o),
  };
}

/**
 * A 404 about the model rather than the path: vLLM's `_check_model` (vllm/entrypoints/openai serving)
 * answers NotFoundError "The model `<id>` does not exist." with param "model" (without it before v0.10.1);
 * a path it has not (an api_base without /v1) is FastAPI's `{"detail": "Not Found"}`.
 */
function servesModel(o: Record<string, unknown> | undefined): boolean {
  if (o === undefined) return false;
  if (backendParam(o) === 'model') return true;
  const m = backendMessage(o);
  return m !== undefined && /\bmodel\b/i.test(m) && /does not exist|not found/i.test(m);
}

/** A 429's wait: when it ends (epoch ms), and the headers that tell the client. */
export interface Wait {
  readonly untilMs: number;
  readonly headers: readonly (readonly [string, string])[];
}

/**
 * The wait a backend's 429 asked for. `retry-after-ms` first, as the OpenAI SDKs read it: when valid, the
 * client gets it and a `retry-after` saying the same wait (retryAfterHeaders) — whatever the backend's own
 * `retry-after` said, so the two never disagree. Else a valid `retry-after`, passed as it came. Neither: no
 * wait (none is made up).
 */
function backendWait(retryAfter: string | undefined, retryAfterMs: string | undefined, nowMs: number): Wait | undefined {
  const ms = validRetryAfterMs(retryAfterMs);
  if (ms !== undefined) return { untilMs: nowMs + ms, headers: retryAfterHeaders(ms) };
  const t = validRetryAfter(retryAfter);
  if (t === undefined) return undefined;
  const untilMs = /^\d+$/.test(t) ? nowMs + Number(t) * 1000 : Date.parse(t);
  // Past a day it is no wait a client should be told (317 years fit in ten digits): as retry-after-ms is bounded.
  if (untilMs - nowMs > MAX_RETRY_AFTER_MS) return undefined;
  return { untilMs, headers: [['retry-after', t]] };
}

/**
 * RFC 9110 §10.2.3: `Retry-After = HTTP-date / delay-seconds`; anything else (or nothing) is not passed on.
 * The OpenAI SDKs read both forms.
 */
function validRetryAfter(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const t = v.trim();
  if (/^\d{1,10}$/.test(t)) return t;
  return /^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(t) && !Number.isNaN(Date.parse(t)) ? t : undefined;
}

/** The longest wait passed on (`retry-after-ms`, `retry-after`): a day. */
const MAX_RETRY_AFTER_MS = 86_400_000;

/**
 * `retry-after-ms` (OpenAI's own header, no RFC; its SDKs parseFloat it): a plain non-negative decimal number
 * of milliseconds, at most MAX_RETRY_AFTER_MS. A sign, an exponent, `Infinity`, a list (the header sent twice)
 * or anything else is not a wait: not passed on.
 */
function validRetryAfterMs(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = v.trim();
  if (!/^\d{1,9}(\.\d{1,6})?$/.test(t)) return undefined;
  const ms = Number(t);
  return ms <= MAX_RETRY_AFTER_MS ? ms : undefined;
}

/** A backend message without the deployment's own address or api_key, should it quote them (a proxy in front of vLLM may). */
export function withoutDeployment(message: string, d: Deployment): string {
  let out = message;
  // An api_key of a few characters (`none`, `EMPTY`) is a placeholder, not a secret, and a common word.
  if (d.apiKey !== undefined && d.apiKey.length >= 8) out = out.split(d.apiKey).join('…');
  const { host, hostname } = new URL(d.origin);
  // The host as a whole name only: a host `qwen` leaves the model `qwen-7b` alone.
  for (const s of new Set([host, hostname]))
    if (s.length >= 4) out = out.replace(new RegExp(`(?<![\\w.-])${escapeRegExp(s)}(?![\\w-]|\\.\\w)`, 'g'), '…');
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** What the client of a request that failed everywhere is told when the last deployment asked answered 429. */
export const BUSY = 'The model server is overloaded: retry shortly.';
export const BUSY_AFTER = 'The model server is overloaded: retry after the time given in the retry-after header.';
/** The last deployment asked is misconfigured (its answer a 404, 401 or 403). */
const NO_SUCH_MODEL = 'The model server does not serve this model: its deployment is misconfigured; tell your platform team.';
const NO_SUCH_ROUTE = 'The model server does not serve this endpoint: its deployment is misconfigured; tell your platform team.';
const REFUSED_KEY = "The model server refused tollgate's credentials: its deployment is misconfigured; tell your platform team.";
