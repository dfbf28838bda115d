/**
 * Relays a backend's SSE reply to the client as it arrives (sse.ts rewrites each event), at the client's pace.
 */
import { ClientPacer, codedError, type ClientLink, type Exchange, type StreamSink } from './exchange.js';
import type { HttpResponse } from './http-response.js';
import { errorEvent, PING, type SseRewriter } from './sse.js';

/** What a request cut off by the end of the drain is told: another replica will take it. */
export const SHUTTING_DOWN = 'This tollgate replica is shutting down and cut the request off: send it again.';

/**
 * A stream tollgate itself cut off because a wait ran out is a timeout, not the model server closing it:
 * the client (and on-call, reading the event) is told which limit, and what to do.
 */
const TIMED_OUT: ReadonlyMap<unknown, string> = new Map([
  [
    'REQUEST_TIMEOUT',
    "The reply ran past this model's timeout and tollgate cut the stream off: ask for fewer tokens (max_tokens), or have the operator raise the deployment's timeout.",
  ],
  [
    'BODY_TIMEOUT',
    "The model server sent nothing for longer than this model's stream_timeout and tollgate cut the stream off: send the request again.",
  ],
]);

/**
 * Relays a backend's SSE reply to the client event by event. When the client's socket is full, the backend
 * is paused until it drains; a client that takes nothing for `stallMs` is cut off.
 */
export class SseRelay implements StreamSink {
  readonly sse: SseRewriter;
  readonly #res: HttpResponse;
  readonly #client: ClientLink;
  readonly #requestId: string;
  readonly #extra: readonly (readonly [string, string])[] | undefined;
  readonly #pacer: ClientPacer;
  #exchange: Exchange | undefined;
  #onFirstToken: (() => void) | undefined;
  /** Bytes went to the client after the head (which then left with them). */
  #wrote = false;

  constructor(
    res: HttpResponse,
    client: ClientLink,
    requestId: string,
    extra: readonly (readonly [string, string])[] | undefined,
    sse: SseRewriter,
    stallMs: number,
    onFirstToken: () => void,
  ) {
    this.#onFirstToken = onFirstToken;
    this.#res = res;
    this.#client = client;
    this.#requestId = requestId;
    this.#extra = extra;
    this.sse = sse;
    this.#pacer = new ClientPacer(res, stallMs);
  }

  start(exchange: Exchange): void {
    this.#exchange = exchange;
    this.#pacer.exchange = exchange;
    const id = this.#requestId;
    const head = ['content-type', 'text/event-stream', 'cache-control', 'no-cache', 'x-tollgate-request-id', id, 'x-request-id', id];
    if (this.#extra !== undefined) for (const [k, v] of this.#extra) head.push(k, v);
    this.#res.writeHead(200, head);
    // The head goes out now, so the client sees the stream begin however long the first token takes; when
    // events came in with the backend's head (the usual case), it leaves in their write instead of its own.
    queueMicrotask(this.#flushHead);
  }

  /** The backend's stream was cut off here (SseRewriter.malformed). */
  #cutOff = false;

  readonly #flushHead = (): void => {
    if (!this.#wrote && !this.#res.writableEnded && !this.#res.destroyed) this.#res.flushHeaders();
  };

  data(chunk: Buffer): boolean {
    const out = this.sse.push(chunk);
    // Past the largest event there is: the client has its error event, and the backend stops generating.
    if (this.sse.malformed && !this.#cutOff) {
      this.#cutOff = true;
      queueMicrotask(() => this.#exchange?.abort(codedError('REPLY_TOO_LARGE', 'a stream event past the largest one held')));
    }
    if (out === '') return true;
    this.#wrote = true;
    if (this.#onFirstToken !== undefined && out !== PING) {
      this.#onFirstToken();
      this.#onFirstToken = undefined;
    }
    return this.#pacer.write(out);
  }

  /** Ends the client's stream well-formed (unless the client left); a client that stopped reading is dropped. */
  end(err: Error | undefined): void {
    this.#pacer.stop();
    // A client that stopped reading gets no more: its connection is dropped rather than buffered into.
    const code = (err as { code?: unknown } | undefined)?.code;
    if (code === 'CLIENT_STALLED') this.#res.destroy();
    else if (code === 'SHUTTING_DOWN' && !this.#client.gone)
      this.#res.end(this.sse.end(true, errorEvent(SHUTTING_DOWN, 'gateway_unavailable')));
    else if (!this.#client.gone) {
      const timedOut = TIMED_OUT.get(code);
      this.#res.end(this.sse.end(err !== undefined, timedOut === undefined ? undefined : errorEvent(timedOut, 'upstream_timeout')));
    }
  }
}
