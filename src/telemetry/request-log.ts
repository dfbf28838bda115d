/**
 * The one JSON line per request, written by hand into the logger's own destination.
 *
 * Every field is an id, a count or a bounded name that tollgate builds itself (never a header, a body
 * or a credential), so the line needs neither pino's redaction walk nor its generic serialiser: it is one
 * template string, each text value through JSON.stringify. (With the batched destination of
 * log-destination.ts and the metric families of families.ts, the log and the metrics together went from
 * about 43 µs a request to about 18: bench/gateway.ts's child with both on and both off, in one run.)
 * The line has the shape and key order pino gives it (`level`, `time`, the logger's bindings, the fields, `msg`), goes
 * to the same stream as every other line (so lines stay in order), and reads the logger's level at each
 * line, so a level changed on the running logger applies at once.
 */
import { pino } from 'pino';
import type { SpendEntry } from '../store/spend.js';
import type { Logger } from './logger.js';

const INFO = 30;
const DEBUG = 20;

/** A request that was not forwarded (a denial, a probe, the admin API, `/v1/models`). */
export interface AnsweredRequest {
  readonly requestId: string | undefined;
  readonly method: string;
  readonly route: string;
  readonly status: number;
  readonly latencyMs: number;
  /** The contract's error code of a denial or failure (`invalid_api_key`, `model_not_allowed`, …). */
  readonly code?: string | undefined;
  /** Why, for on-call (the policy rule that denied), as Check's `check denied` line says it; never a secret. */
  readonly detail?: string | undefined;
}

interface PinoInternals {
  readonly write: (line: string) => void;
  readonly time: () => string;
  readonly bindings: string;
}

export class RequestLog {
  readonly #logger: Logger;
  readonly #out: PinoInternals;

  constructor(logger: Logger) {
    this.#logger = logger;
    const l = logger as unknown as Record<symbol, unknown>;
    const stream = l[pino.symbols.streamSym] as { write(s: string): unknown };
    const time = l[pino.symbols.timeSym] as () => string;
    this.#out = {
      write: (s) => void stream.write(s),
      time: () => time.call(logger),
      bindings: (l[pino.symbols.chindingsSym] as string | undefined) ?? '',
    };
  }

  /** A forwarded request, from its spend entry: who, which model and deployment, status, latency, tokens, cost. */
  forwarded(e: SpendEntry): void {
    if (this.#logger.levelVal > INFO) return;
    let s = this.#head(INFO, e.requestId);
    if (e.keyId !== undefined) s += `,"key_id":${JSON.stringify(e.keyId)}`;
    if (e.userId !== undefined) s += `,"user_id":${JSON.stringify(e.userId)}`;
    if (e.teamId !== undefined) s += `,"team_id":${JSON.stringify(e.teamId)}`;
    s += `,"model":${JSON.stringify(e.model)}`;
    if (e.deployment !== undefined) s += `,"deployment":${JSON.stringify(e.deployment)}`;
    if (e.endpoint !== undefined) s += `,"endpoint":${JSON.stringify(e.endpoint)}`;
    s +=
      `,"status":${num(e.status)},"latency_ms":${num(Math.round(e.latencyMs * 100) / 100)}` +
      `,"prompt_tokens":${num(e.promptTokens)},"completion_tokens":${num(e.completionTokens)},"cost":${num(e.cost)}`;
    if (e.estimated) s += ',"estimated":true';
    if (e.upstream !== undefined) s += `,"upstream":${JSON.stringify(e.upstream)}`;
    this.#out.write(`${s},"msg":"request"}\n`);
  }

  /** A request answered without forwarding; probes and scrapes at debug, so they do not drown the rest. */
  answered(r: AnsweredRequest, quiet: boolean): void {
    const level = quiet ? DEBUG : INFO;
    if (this.#logger.levelVal > level) return;
    let s =
      `${this.#head(level, r.requestId)},"method":${JSON.stringify(r.method)},"route":${JSON.stringify(r.route)}` +
      `,"status":${num(r.status)},"latency_ms":${num(Math.round(r.latencyMs * 100) / 100)}`;
    if (r.code !== undefined) s += `,"code":${JSON.stringify(r.code)}`;
    if (r.detail !== undefined) s += `,"detail":${JSON.stringify(r.detail)}`;
    this.#out.write(`${s},"msg":"request"}\n`);
  }

  #head(level: number, requestId: string | undefined): string {
    const s = `{"level":${level}${this.#out.time()}${this.#out.bindings}`;
    return requestId === undefined ? s : `${s},"request_id":${JSON.stringify(requestId)}`;
  }
}

/** As JSON writes a number: `null` for NaN and the infinities. */
function num(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}
