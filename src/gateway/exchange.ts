/**
 * One request to a backend, as a handler of the gateway's HTTP client (upstream.ts), and the client's side
 * of it.
 *
 * A handler object gets the reply's bytes with no promise or stream plumbing per request: the reply is
 * collected in place (or handed to a stream sink as it arrives, or to a relay once it outgrows what is
 * held), a client that leaves aborts the exchange through the controller, and backpressure is the
 * controller's pause/resume (ClientPacer). The connection's timers
 * (`headersTimeout`, `bodyTimeout`) bound every wait; one timer of the exchange bounds the wait for a
 * connection in the pool's queue (QUEUE_TIMEOUT: tollgate's own limit, the request never sent), then the
 * whole exchange from the moment it has one (REQUEST_TIMEOUT: the backend's time) — for a relayed reply, once
 * its head went to the client (`headSent`), counting only the time the backend is read, not the time the
 * client takes.
 */
import { ByteList } from './byte-list.js';
import type { Upstream, UpstreamController, UpstreamHandler, UpstreamRequest } from './upstream.js';

/**
 * The client's side of one request: gone once its connection closed before the reply finished. The
 * server's one `close` listener of the response calls `leave()` (a second listener per request cost
 * more than this object).
 */
export class ClientLink {
  /**
   * Why serving stopped early, undefined until it does: the client left (CLIENT_GONE), or the gateway's drain
   * ran out (SHUTTING_DOWN: cut off, the client told why). A client that leaves after the cut-off is gone.
   */
  stopped: Error | undefined;
  /** Handed to the forwarder, which logs the request itself when it records it. */
  forwarded = false;
  #onGone: ((err: Error) => void) | undefined;

  get gone(): boolean {
    return (this.stopped as { code?: unknown } | undefined)?.code === 'CLIENT_GONE';
  }

  get shuttingDown(): boolean {
    return (this.stopped as { code?: unknown } | undefined)?.code === 'SHUTTING_DOWN';
  }

  leave(): void {
    if (!this.gone) this.#stop(codedError('CLIENT_GONE', 'the client closed its connection'));
  }

  /** The drain's end: the exchange in flight is aborted, and the client gets an error (event) saying so. */
  shutdown(): void {
    if (this.stopped === undefined) this.#stop(codedError('SHUTTING_DOWN', 'tollgate is shutting down'));
  }

  #stop(err: Error): void {
    this.stopped = err;
    const hook = this.#onGone;
    this.#onGone = undefined;
    hook?.(err);
  }

  /** One watcher at a time: the exchange in flight. */
  watch(hook: ((err: Error) => void) | undefined): void {
    this.#onGone = hook;
  }

  /** Waits `ms` between attempts (no exchange in flight), or less when serving stops meanwhile. */
  pause(ms: number): Promise<void> {
    if (this.stopped !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#onGone = undefined;
        resolve();
      }, ms);
      this.#onGone = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** Where a 2xx streamed reply (`text/event-stream`) goes as it arrives. */
export interface StreamSink {
  /** The backend answered 2xx with an event stream: send the head. */
  start(exchange: Exchange): void;
  /** A body chunk; false when the client is not taking more (the exchange pauses until `resume()`). */
  data(chunk: Buffer): boolean;
  /**
   * The streamed reply is over (`err`: it broke off, the client's leaving included). Called at once, in the
   * turn the backend's last bytes came in, so the client's last bytes leave in the same write as the rest.
   */
  end(err: Error | undefined): void;
}

/**
 * Where a non-streamed 2xx reply goes once it outgrows `replyCap` (a reply of many embeddings): the bytes
 * held so far, then the rest as it arrives. Once it sends the reply's head to the client it calls the
 * exchange's `headSent()`.
 */
export interface RelaySink {
  /**
   * The reply outgrew what is held: `held`, its bytes so far. False when the client is not taking more (the
   * exchange pauses until `resume()`). A sink that will not relay the reply aborts the exchange.
   */
  start(exchange: Exchange, held: readonly Buffer[]): boolean;
  /** The next bytes; false when the client is not taking more. */
  data(chunk: Buffer): boolean;
  /** The reply is over (`err`: it broke off, the client's leaving included). */
  end(err: Error | undefined): void;
}

export type ExchangeResult =
  /**
   * No reply: connect error, a timeout, an abort, a reply larger than allowed, a 2xx to a stream that is not
   * an event stream (NOT_EVENT_STREAM).
   */
  | { readonly kind: 'failed'; readonly err: Error }
  /**
   * A whole reply (any non-2xx, or a 2xx to a request without a stream sink); `retryAfter`,
   * `retryAfterMs`: a non-2xx's `retry-after` and `retry-after-ms` headers as sent (a 429's are passed on to
   * the client when valid).
   */
  | {
      readonly kind: 'reply';
      readonly status: number;
      readonly body: Buffer;
      readonly retryAfter?: string | undefined;
      readonly retryAfterMs?: string | undefined;
    }
  /** A 2xx handed to the sink; `err` when it broke off before its end. */
  | { readonly kind: 'streamed'; readonly err: Error | undefined }
  /** A 2xx past `replyCap` handed to the relay; `err` when it broke off (or the relay refused it) before its end. */
  | { readonly kind: 'relayed'; readonly err: Error | undefined };

/** Errors this module raises, with stable codes. */
export function codedError(
  code:
    | 'CLIENT_GONE'
    | 'REPLY_TOO_LARGE'
    | 'CLIENT_STALLED'
    | 'QUEUE_TIMEOUT'
    | 'REQUEST_TIMEOUT'
    | 'SHUTTING_DOWN'
    | 'MALFORMED_REPLY'
    | 'NOT_EVENT_STREAM',
  message: string,
): Error {
  return Object.assign(new Error(message), { code });
}

export class Exchange implements UpstreamHandler {
  readonly done: Promise<ExchangeResult>;
  /** ms from dispatch to the reply's head; undefined until then. */
  headMs: number | undefined;
  #resolve!: (r: ExchangeResult) => void;
  #settled = false;
  #controller: UpstreamController | undefined;
  /** The request has a connection (onConnection, or onRequestStart): the wait for one is over. */
  #onConnection = false;
  readonly #client: ClientLink;
  readonly #sink: StreamSink | undefined;
  readonly #relay: (() => RelaySink) | undefined;
  /** The relay the reply went to, once it outgrew replyCap. */
  #relaying: RelaySink | undefined;
  readonly #replyCap: number;
  readonly #errorCap: number;
  readonly #t0 = performance.now();
  #status = 0;
  #retryAfter: string | undefined;
  #retryAfterMs: string | undefined;
  #streaming = false;
  /** The reply while it is collected (coalesced: a chunk each would cost more than its bytes). */
  readonly #chunks = new ByteList();
  #cap = 0;
  /** Bounds the wait for a connection, then (armed again when it has one) the whole exchange. */
  #timer: NodeJS.Timeout | undefined;
  #wholeMs = 0;
  #queueMs = 0;
  /** When the request got its connection: the whole exchange's bound counts from there. */
  #connectedAt = 0;
  /**
   * From the relay's head on (headSent): what is left of `wholeMs`, counted only while the backend is read —
   * not while it is paused for a client whose socket is full — and when the timer was last armed.
   */
  #paced: { leftMs: number; armedAt: number } | undefined;

  /**
   * `sink`: where a 2xx event stream goes (a stream was asked for: any other 2xx fails the exchange at its
   * head, NOT_EVENT_STREAM). `replyCap`: the most of a 2xx held whole; past it the reply goes to the relay
   * `relay` makes (made only then), or without one the exchange fails (REPLY_TOO_LARGE). `errorCap`: the
   * most of a non-2xx held (past it, REPLY_TOO_LARGE).
   */
  constructor(opts: {
    client: ClientLink;
    sink: StreamSink | undefined;
    relay?: (() => RelaySink) | undefined;
    replyCap: number;
    errorCap: number;
  }) {
    this.#client = opts.client;
    this.#sink = opts.sink;
    this.#relay = opts.relay;
    this.#replyCap = opts.replyCap;
    this.#errorCap = opts.errorCap;
    this.done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
    this.#client.watch((err) => this.abort(err));
  }

  /**
   * Sends `req` on `upstream` with this exchange as its handler. `queueMs` bounds the wait for a connection
   * (every one the deployment may have busy): past it the request leaves the queue, never sent
   * (QUEUE_TIMEOUT). `wholeMs` bounds the whole exchange from the moment it has its connection — the wait
   * before that is tollgate's, not the backend's — to the reply's last byte (the connection's timers bound
   * each wait within it, and reset on every chunk), or to the relay's head (headSent).
   */
  send(upstream: Upstream, req: UpstreamRequest, queueMs: number, wholeMs: number): Promise<ExchangeResult> {
    const stopped = this.#client.stopped;
    if (stopped !== undefined) {
      this.#settle({ kind: 'failed', err: stopped });
      return this.done;
    }
    this.#wholeMs = wholeMs;
    this.#queueMs = queueMs;
    this.#timer = setTimeout(this.#expire, queueMs);
    const controller = upstream.dispatch(req, this);
    this.#controller ??= controller;
    return this.done;
  }

  /** Whether the request waited in the pool's queue and never had a connection (so was never sent). */
  get queued(): boolean {
    return !this.#onConnection;
  }

  readonly #expire = (): void => {
    this.abort(
      !this.#onConnection
        ? codedError('QUEUE_TIMEOUT', `no free connection to the backend within ${Math.round(performance.now() - this.#t0)} ms`)
        : this.#paced !== undefined
          ? codedError(
              'REQUEST_TIMEOUT',
              `no whole reply within ${this.#wholeMs} ms of the backend's sending (the client's reading not counted)`,
            )
          : codedError('REQUEST_TIMEOUT', `no whole reply within ${this.#wholeMs} ms`),
    );
  };

  /** The request has its connection: the queue's bound is over, the whole exchange's starts. */
  onConnection(): void {
    if (this.#onConnection || this.#settled) return;
    this.#onConnection = true;
    this.#connectedAt = performance.now();
    // The same bound for both (a request that is not a stream, or no stream_timeout): the timer starts over,
    // not made again.
    if (this.#timer !== undefined && this.#queueMs === this.#wholeMs) this.#timer.refresh();
    else {
      clearTimeout(this.#timer);
      this.#timer = setTimeout(this.#expire, this.#wholeMs);
    }
  }

  /** Ends the exchange (a waiting request leaves the pool's queue); nothing once it has settled. */
  abort(err: Error): void {
    if (this.#settled) return;
    this.#controller?.abort(err);
    this.#broken(err);
  }

  resume(): void {
    if (this.#settled) return;
    const paced = this.#paced;
    if (paced !== undefined && this.#timer === undefined) {
      paced.armedAt = performance.now();
      this.#timer = setTimeout(this.#expire, paced.leftMs);
    }
    this.#controller?.resume();
  }

  /**
   * The relay sent the reply's head to the client. From now on the reply goes at the pace the client reads
   * (the backend is paused while the client's socket is full): counted whole, the bound would count the
   * client's download time, and a client reading steadily would be cut off for the size of the reply. So
   * what is left of it counts only the time the backend is read (#pause stops it, resume() goes on), and a
   * backend trickling its reply is still cut at `wholeMs`. The client reading nothing is the relay's own
   * bound (ClientPacer, CLIENT_STALLED).
   */
  headSent(): void {
    if (this.#settled || this.#paced !== undefined) return;
    const now = performance.now();
    this.#paced = { leftMs: Math.max(0, this.#wholeMs - (now - this.#connectedAt)), armedAt: now };
  }

  /** The backend paused for the client: a relay's bound stops counting until resume(). */
  #pause(controller: UpstreamController): void {
    const paced = this.#paced;
    if (paced !== undefined && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      paced.leftMs = Math.max(0, paced.leftMs - (performance.now() - paced.armedAt));
    }
    controller.pause();
  }

  onRequestStart(controller: UpstreamController): void {
    // A pool that does not say when the request got its connection (a stand-in) says it now.
    this.onConnection();
    this.#controller = controller;
    if (this.#settled) controller.abort(codedError('CLIENT_GONE', 'the client closed its connection'));
  }

  onResponseStart(_controller: UpstreamController, status: number, headers: Readonly<Record<string, string>>): void {
    if (status < 200) return; // 1xx informational heads come before the real one
    this.#status = status;
    this.headMs = performance.now() - this.#t0;
    const ok = status < 300;
    if (ok && this.#sink !== undefined) {
      // A 2xx that is not an event stream where a stream was asked for (JSON) is the deployment's fault
      // whatever it holds — relayed as a stream it would reach the client as an empty one — and is known
      // at its head: nothing of it is read (a large one would be held, or refused as too large).
      if (!isEventStream(headers['content-type'])) {
        this.abort(codedError('NOT_EVENT_STREAM', 'a 2xx reply to a stream that is not an event stream'));
        return;
      }
      this.#streaming = true;
      this.#sink.start(this);
    }
    this.#cap = ok ? this.#replyCap : this.#errorCap;
    if (!ok) {
      const ra = headers['retry-after'];
      if (typeof ra === 'string') this.#retryAfter = ra;
      const ms = headers['retry-after-ms'];
      if (typeof ms === 'string') this.#retryAfterMs = ms;
    }
  }

  onResponseData(controller: UpstreamController, chunk: Buffer): void {
    if (this.#settled) return;
    if (this.#streaming) {
      if (!(this.#sink as StreamSink).data(chunk)) controller.pause();
      return;
    }
    if (this.#relaying !== undefined) {
      if (!this.#relaying.data(chunk)) this.#pause(controller);
      return;
    }
    this.#chunks.push(chunk);
    if (this.#chunks.length <= this.#cap) return;
    if (this.#status < 300 && this.#relay !== undefined) {
      const held = this.#chunks.list();
      this.#relaying = this.#relay();
      const ok = this.#relaying.start(this, held);
      this.#chunks.clear();
      if (!ok) this.#pause(controller);
      return;
    }
    this.abort(codedError('REPLY_TOO_LARGE', `the reply is larger than ${this.#cap} bytes`));
  }

  onResponseEnd(): void {
    if (this.#streaming) return this.#settle({ kind: 'streamed', err: undefined });
    if (this.#relaying !== undefined) return this.#settle({ kind: 'relayed', err: undefined });
    const body = this.#chunks.concat();
    this.#settle({ kind: 'reply', status: this.#status, body, retryAfter: this.#retryAfter, retryAfterMs: this.#retryAfterMs });
  }

  onResponseError(_controller: UpstreamController | undefined, err: Error): void {
    this.#broken(err);
  }

  #broken(err: Error): void {
    this.#settle(
      this.#streaming ? { kind: 'streamed', err } : this.#relaying !== undefined ? { kind: 'relayed', err } : { kind: 'failed', err },
    );
  }

  #settle(r: ExchangeResult): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    this.#chunks.clear();
    this.#client.watch(undefined);
    try {
      if (r.kind === 'streamed') (this.#sink as StreamSink).end(r.err);
      else if (r.kind === 'relayed') this.#relaying?.end(r.err);
    } finally {
      // Whatever the sink does, the forwarder gets its result (and records the request).
      this.#resolve(r);
    }
  }
}

/** What a pacer needs of the client's response (http-response.ts). */
interface PacedResponse {
  write(chunk: string | Buffer): boolean;
  ondrain: (() => void) | undefined;
}

/**
 * Writes a reply to a client at the pace it reads: a write the client's socket cannot take pauses the
 * exchange (the backend's bytes wait in the kernel's buffers, not in memory) until the socket drains; a
 * client that takes nothing for `stallMs` is cut off (CLIENT_STALLED).
 */
export class ClientPacer {
  exchange: Exchange | undefined;
  readonly #res: PacedResponse;
  readonly #stallMs: number;
  #stall: NodeJS.Timeout | undefined;

  constructor(res: PacedResponse, stallMs: number) {
    this.#res = res;
    this.#stallMs = stallMs;
  }

  /** Writes `out`; false when the client's socket is full (the exchange is to pause). */
  write(out: string | Buffer): boolean {
    if (this.#res.write(out)) return true;
    if (this.#stall === undefined) {
      this.#res.ondrain = this.#drained;
      this.#stall = setTimeout(
        () => this.exchange?.abort(codedError('CLIENT_STALLED', `the client read nothing for ${this.#stallMs} ms`)),
        this.#stallMs,
      );
    }
    return false;
  }

  readonly #drained = (): void => {
    this.#res.ondrain = undefined; // once: set again when a write finds the socket full
    clearTimeout(this.#stall);
    this.#stall = undefined;
    this.exchange?.resume();
  };

  stop(): void {
    clearTimeout(this.#stall);
    this.#stall = undefined;
    this.#res.ondrain = undefined;
  }
}

function isEventStream(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.toLowerCase().includes('text/event-stream');
}
