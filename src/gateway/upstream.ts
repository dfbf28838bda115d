/**
 * The gateway's HTTP/1.1 client for its backends: a pool of keep-alive connections to one origin (the
 * forwarder keeps one per deployment, of its max_parallel_requests), each request written in one syscall, each reply parsed as it arrives and handed to a handler (exchange.ts).
 *
 * It replaced undici's Pool here (bench/gateway.ts: undici was a quarter of the gateway's CPU per request,
 * in its request object, its deferred write and its wasm parser's callbacks). It does only what the
 * forwarder needs — POST a body, read one reply at a time per connection (no pipelining) — and is strict
 * about what it reads: a reply it cannot frame exactly is an error (BAD_REPLY) and its connection is closed,
 * never reused.
 *
 * Each wait is bounded: the connection (CONNECT_TIMEOUT), the reply's head from the request's last byte
 * (HEADERS_TIMEOUT), each silence within its body while the handler takes it (BODY_TIMEOUT: a reply held
 * back for a slow client is the client's wait, bounded by the caller). A connection that closes before its
 * reply's end fails the request (SOCKET_CLOSED), and the request is not sent again: it is a POST, and the
 * forwarder decides where a failed attempt goes next. Idle connections close before the server's keep-alive
 * ends, so a request is rarely written to a connection the server is closing.
 */
import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';

/** What the handler uses to steer its exchange: give up on it, or hold the reply back while the client is slow. */
export interface UpstreamController {
  abort(err: Error): void;
  pause(): void;
  resume(): void;
}

/**
 * Gets one exchange's events, in this order: connection, start, head, data…, then end or error (error alone
 * if it never started).
 */
export interface UpstreamHandler {
  /**
   * The request has its connection (an idle one, or one being opened): its wait in the pool's queue is over,
   * and what follows is the backend's time. Called within dispatch when a connection is free; a handler
   * only takes note here (an abort waits for onRequestStart).
   */
  onConnection?(controller: UpstreamController): void;
  /** The request has a connection and is being written. */
  onRequestStart(controller: UpstreamController): void;
  /** The reply's head (header names in lower case; a repeated header's values joined with ", "). */
  onResponseStart(controller: UpstreamController, status: number, headers: Readonly<Record<string, string>>): void;
  onResponseData(controller: UpstreamController, chunk: Buffer): void;
  onResponseEnd(controller: UpstreamController): void;
  onResponseError(controller: UpstreamController | undefined, err: Error): void;
}

export interface UpstreamRequest {
  readonly path: string;
  readonly method: 'POST' | 'GET';
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | Buffer;
  /** From the request's last byte to the reply's head. */
  readonly headersTimeout: number;
  /** Each silence within the reply's body. */
  readonly bodyTimeout: number;
}

/** Where a request is sent: a pool, or a stand-in for one in tests. */
export interface Upstream {
  /** Returns the request's controller at once: an abort before it has a connection takes it out of the queue. */
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): UpstreamController;
}

export type UpstreamErrorCode =
  'CONNECT_TIMEOUT' | 'HEADERS_TIMEOUT' | 'BODY_TIMEOUT' | 'SOCKET_CLOSED' | 'BAD_REPLY' | 'BAD_REQUEST_HEADER' | 'POOL_CLOSED';

export function upstreamError(code: UpstreamErrorCode, message: string): Error {
  return Object.assign(new Error(message), { code });
}

export interface UpstreamPoolOptions {
  /** At most this many connections to the origin; requests beyond them wait for one in order (`queued`). */
  readonly connections: number;
  readonly connectTimeout: number;
  /**
   * An idle connection is closed after this long, or after the server's own `Keep-Alive: timeout=N` less a
   * second when that is shorter: tollgate closes it before the server does, so a request is rarely written to
   * a connection the server is closing.
   */
  readonly keepAliveTimeout: number;
}

/** A reply's head larger than this is refused (BAD_REPLY): no backend sends one. */
const MAX_HEAD = 64 * 1024;
/** A chunk-size line (with extensions) longer than this is refused. */
const MAX_CHUNK_LINE = 4 * 1024;
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})(?: [^\r\n]*)?$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CONTENT_LENGTH = /^\d{1,15}$/;
/** A chunk-size line: hex digits, then optional whitespace before extensions (RFC 9112 §7.1.1), nothing else. */
const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/;
/** A line break that is not CRLF, or a NUL, in a reply's head: parsers differ on them, so none is trusted. */
const BARE_CR_LF_NUL = /\0|\r(?!\n)|(?<!\r)\n/;
/** Characters a header value may not hold (CR, LF, NUL): they would split the request's head. */
const UNSAFE_VALUE = /[\r\n\0]/;

/**
 * One request, from dispatch to its end: its own controller, so an abort, pause or resume that comes late (after
 * its reply ended and its connection took the next request) reaches nothing but it.
 */
class Pending implements UpstreamController {
  readonly req: UpstreamRequest;
  readonly handler: UpstreamHandler;
  readonly #pool: UpstreamPool;
  /** The connection carrying it, once it has one. */
  conn: Connection | undefined;
  /** Over: ended, failed or aborted. */
  done = false;

  constructor(pool: UpstreamPool, req: UpstreamRequest, handler: UpstreamHandler) {
    this.#pool = pool;
    this.req = req;
    this.handler = handler;
  }

  abort(err: Error): void {
    if (this.done) return;
    if (this.conn !== undefined) {
      this.conn.abortRequest(this, err);
      return;
    }
    // Still waiting for a connection: it is skipped when its turn comes.
    this.done = true;
    this.#pool.cancelled();
    this.handler.onResponseError(this, err);
  }

  pause(): void {
    if (!this.done) this.conn?.pauseReply(this);
  }

  resume(): void {
    if (!this.done) this.conn?.resumeReply(this);
  }
}

/** How often idle connections are checked against their keep-alive time (unref'd; only while some are idle). */
const SWEEP_MS = 250;

export class UpstreamPool implements Upstream {
  readonly #url: URL;
  readonly #hostHeader: string;
  readonly #opts: UpstreamPoolOptions;
  /** Idle connections, the most recently used last (reused first: it is the warmest). */
  readonly #idle: Connection[] = [];
  readonly #all = new Set<Connection>();
  readonly #queue: Pending[] = [];
  #queueHead = 0;
  /** Requests in the queue that were aborted while waiting (skipped; the queue is compacted when they pile up). */
  #cancelled = 0;
  #closed = false;
  #drained: Promise<void> | undefined;
  #onDrained: (() => void) | undefined;
  #sweeper: NodeJS.Timeout | undefined;
  /** The last TLS session, offered by the next connection (no full handshake each time). */
  tlsSession: Buffer | undefined;

  constructor(origin: string, opts: UpstreamPoolOptions) {
    this.#url = new URL(origin);
    if (this.#url.protocol !== 'http:' && this.#url.protocol !== 'https:')
      throw new Error(`unsupported backend protocol ${this.#url.protocol}`);
    this.#hostHeader = this.#url.host;
    this.#opts = opts;
  }

  get connections(): number {
    return this.#all.size;
  }

  /** Requests waiting for a connection (every one of `connections` busy), aborted ones not counted. */
  get queued(): number {
    return this.#queue.length - this.#queueHead - this.#cancelled;
  }

  /** Sends `req`; returns its controller at once (an abort before it has a connection takes it out of the queue). */
  dispatch(req: UpstreamRequest, handler: UpstreamHandler): UpstreamController {
    const p = new Pending(this, req, handler);
    if (this.#closed) {
      p.done = true;
      queueMicrotask(() => handler.onResponseError(undefined, upstreamError('POOL_CLOSED', 'the backend connection pool is closed')));
      return p;
    }
    for (;;) {
      const conn = this.#idle.pop();
      if (conn === undefined) break;
      if (conn.gone) continue; // closed since it idled; its 'close' removes it
      if (!conn.send(p)) this.#idle.push(conn); // aborted as it started: the connection is still clean
      return p;
    }
    if (this.#all.size < this.#opts.connections) this.#open().send(p);
    else this.#queue.push(p);
    return p;
  }

  #open(): Connection {
    const conn = new Connection(this, this.#url, this.#hostHeader, this.#opts);
    this.#all.add(conn);
    return conn;
  }

  /**
   * `conn` finished a reply and can take another: the next waiting request, else it idles. A loop, not a
   * recursion: each waiter aborted as it starts leaves the connection clean for the next.
   */
  released(conn: Connection): void {
    for (;;) {
      const next = this.#next();
      if (next === undefined) break;
      if (conn.send(next)) return;
    }
    if (this.#closed) {
      conn.destroy();
      return;
    }
    conn.idle();
    this.#idle.push(conn);
    this.#sweeper ??= setInterval(this.#sweep, SWEEP_MS).unref();
  }

  /** `conn` is gone: a waiting request gets a new connection in its place. */
  removed(conn: Connection): void {
    this.#all.delete(conn);
    const i = this.#idle.lastIndexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    const next = this.#next();
    if (next !== undefined) this.#open().send(next);
    if (this.#all.size === 0) this.#onDrained?.();
  }

  cancelled(): void {
    this.#cancelled++;
    // Aborted waiters hold their bodies until their turn: drop them once they are half the queue.
    if (this.#cancelled > 64 && this.#cancelled * 2 > this.#queue.length - this.#queueHead) {
      const live = this.#queue.slice(this.#queueHead).filter((p) => !p.done);
      this.#queue.length = 0;
      this.#queue.push(...live);
      this.#queueHead = 0;
      this.#cancelled = 0;
    }
  }

  #next(): Pending | undefined {
    while (this.#queueHead < this.#queue.length) {
      const p = this.#queue[this.#queueHead] as Pending;
      this.#queue[this.#queueHead++] = undefined as unknown as Pending;
      if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#queueHead);
        this.#queueHead = 0;
      }
      if (!p.done) return p;
      this.#cancelled = Math.max(0, this.#cancelled - 1);
    }
    return undefined;
  }

  /** Closes the connections idle past their keep-alive time. */
  readonly #sweep = (): void => {
    const now = performance.now();
    for (let i = this.#idle.length - 1; i >= 0; i--) {
      const conn = this.#idle[i] as Connection;
      if (conn.idleExpired(now)) {
        this.#idle.splice(i, 1);
        conn.destroy();
      }
    }
    if (this.#idle.length === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  };

  /** Refuses new requests, closes idle connections, and resolves once the requests in flight or waiting are over. */
  close(): Promise<void> {
    if (this.#drained !== undefined) return this.#drained;
    this.#closed = true;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const conn of this.#idle.splice(0)) conn.destroy();
    this.#drained =
      this.#all.size === 0
        ? Promise.resolve()
        : new Promise((resolve) => {
            this.#onDrained = resolve;
          });
    return this.#drained;
  }
}

type ReadState = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-crlf' | 'trailers' | 'until-close';

/** One connection to the origin, carrying one request at a time. */
class Connection {
  readonly #pool: UpstreamPool;
  readonly #socket: Socket;
  readonly #hostHeader: string;
  readonly #opts: UpstreamPoolOptions;
  #connected = false;
  #current: Pending | undefined;
  gone = false;
  /**
   * One timer per connection: the connect wait, then each request's head and body waits. Requests of one
   * deployment wait alike, so the timer is refreshed, not made again, per request; left running after a
   * reply (nothing to time out then), it fires once and is dropped.
   */
  #timer: NodeJS.Timeout | undefined;
  #timerMs = -1;
  #timerCode: UpstreamErrorCode = 'CONNECT_TIMEOUT';
  #idleMs: number;
  #idleSince = 0;
  // The reply being read.
  #state: ReadState = 'head';
  #buffered: Buffer | undefined;
  #remaining = 0;
  #keepAlive = true;
  #started = false;
  #sawBytes = false;
  /** Set by #end within a read, for #onData to release the connection once the read is consumed. */
  #ended = false;
  /** The handler paused the reply: its silence is not timed until it resumes. */
  #paused = false;

  constructor(pool: UpstreamPool, url: URL, hostHeader: string, opts: UpstreamPoolOptions) {
    this.#pool = pool;
    this.#hostHeader = hostHeader;
    this.#opts = opts;
    this.#idleMs = opts.keepAliveTimeout;
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const tls = url.protocol === 'https:';
    const port = Number(url.port || (tls ? 443 : 80));
    const socket = tls
      ? connectTls({
          host,
          port,
          servername: isIP(host) === 0 ? host : undefined,
          ALPNProtocols: ['http/1.1'],
          session: pool.tlsSession,
        })
      : connectTcp({ host, port });
    this.#socket = socket;
    socket.setNoDelay(true);
    // A backend host that vanishes without a FIN is noticed between requests too, not only by a request's timeout.
    socket.setKeepAlive(true, 60_000);
    if (tls) socket.on('session', (session: Buffer) => (pool.tlsSession = session));
    socket.on(tls ? 'secureConnect' : 'connect', this.#onConnect);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    this.#arm(opts.connectTimeout, 'CONNECT_TIMEOUT');
  }

  /** Takes `p`; false when it was aborted as it started (nothing written: the connection is free for another). */
  send(p: Pending): boolean {
    this.#current = p;
    p.conn = this;
    p.handler.onConnection?.(p);
    this.#socket.ref();
    return this.#connected ? this.#write(p) : true;
  }

  /** Between requests: counted as idle for the keep-alive time, and not holding the process open. */
  idle(): void {
    this.#idleSince = performance.now();
    this.#socket.unref();
  }

  idleExpired(now: number): boolean {
    return now - this.#idleSince >= this.#idleMs;
  }

  destroy(): void {
    this.gone = true;
    this.#socket.destroy();
  }

  abortRequest(p: Pending, err: Error): void {
    if (this.#current !== p) return;
    this.#current = undefined;
    p.done = true;
    // Aborted from onRequestStart, before a byte went out: the connection is clean, and #write's caller
    // gives it the next request. Otherwise what is on the wire cannot be taken back.
    if (!(this.#connected && !this.#started && !this.gone)) this.destroy();
    p.handler.onResponseError(p, err);
  }

  /** Holds the reply back; its silence is not timed meanwhile (the wait is the client's, bounded by the caller). */
  pauseReply(p: Pending): void {
    // Only a reply can be held back: the wait for its head is the backend's, and stays timed.
    if (this.#current !== p || this.#state === 'head') return;
    this.#socket.pause();
    this.#paused = true;
  }

  resumeReply(p: Pending): void {
    if (this.#current !== p || !this.#paused) return;
    this.#paused = false;
    this.#socket.resume();
    this.#arm(p.req.bodyTimeout, 'BODY_TIMEOUT');
  }

  readonly #onConnect = (): void => {
    this.#connected = true;
    const p = this.#current;
    try {
      if (p === undefined || !this.#write(p)) this.#pool.released(this);
    } catch (err) {
      this.#thrown(err);
    }
  };

  #write(p: Pending): boolean {
    const { req, handler } = p;
    this.#state = 'head';
    this.#buffered = undefined;
    this.#keepAlive = true;
    this.#started = false;
    this.#paused = false;
    this.#sawBytes = false;
    handler.onRequestStart(p);
    if (this.#current !== p) return false; // aborted as it started
    let head = `${req.method} ${req.path} HTTP/1.1\r\nhost: ${this.#hostHeader}\r\n`;
    for (const name in req.headers) {
      const value = req.headers[name] as string;
      if (UNSAFE_VALUE.test(value)) {
        this.abortRequest(p, upstreamError('BAD_REQUEST_HEADER', `the backend request header ${name} holds a line break or NUL`));
        return false;
      }
      head += `${name}: ${value}\r\n`;
    }
    const body = req.body;
    this.#started = true;
    if (typeof body === 'string') {
      this.#socket.write(`${head}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    } else {
      this.#socket.cork();
      this.#socket.write(`${head}content-length: ${body.length}\r\n\r\n`, 'latin1');
      if (body.length > 0) this.#socket.write(body);
      this.#socket.uncork();
    }
    this.#arm(req.headersTimeout, 'HEADERS_TIMEOUT');
    return true;
  }

  readonly #onData = (chunk: Buffer): void => {
    try {
      this.#read(chunk);
    } catch (err) {
      this.#thrown(err);
    }
  };

  #read(chunk: Buffer): void {
    const p = this.#current;
    if (p === undefined) {
      // Bytes with no request in flight: the server is not speaking HTTP/1.1 as asked. Never reuse it.
      this.destroy();
      return;
    }
    this.#sawBytes = true;
    if (this.#state !== 'head' && !this.#paused) this.#timer?.refresh();
    let buf = chunk;
    if (this.#buffered !== undefined) {
      buf = Buffer.concat([this.#buffered, chunk]);
      this.#buffered = undefined;
    }
    let at = 0;
    // Each step consumes from `at` and returns the new offset, or -1 when it needs more bytes (kept).
    while (at < buf.length && this.#current === p) {
      const next = this.#step(p, buf, at);
      if (next < 0) {
        if (this.#current === p) this.#buffered = at === 0 ? buf : buf.subarray(at);
        return;
      }
      at = next;
    }
    if (!this.#ended) return;
    this.#ended = false;
    // Bytes past the reply's end: nothing was pipelined, so the connection is out of step. Never reuse it.
    if (at < buf.length || !this.#keepAlive || this.gone) this.destroy();
    else this.#free();
  }

  #free(): void {
    this.#state = 'head';
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
    this.#pool.released(this);
  }

  /** A handler threw (a bug): its request fails and the connection, in an unknown state, is closed. */
  #thrown(err: unknown): void {
    const p = this.#current;
    this.#ended = false;
    this.destroy();
    if (p !== undefined) {
      this.#current = undefined;
      p.done = true;
      try {
        p.handler.onResponseError(p, err instanceof Error ? err : new Error(String(err)));
      } catch {
        // Nothing more to tell it.
      }
    }
  }

  #step(p: Pending, buf: Buffer, at: number): number {
    switch (this.#state) {
      case 'head':
        return this.#head(p, buf, at);
      case 'length': {
        const n = Math.min(this.#remaining, buf.length - at);
        this.#remaining -= n;
        this.#data(p, buf.subarray(at, at + n));
        if (this.#remaining === 0 && this.#current === p) this.#end(p);
        return at + n;
      }
      case 'until-close':
        this.#data(p, at === 0 ? buf : buf.subarray(at));
        return buf.length;
      case 'chunk-size': {
        const eol = buf.indexOf('\r\n', at, 'latin1');
        if (eol < 0) {
          if (buf.length - at > MAX_CHUNK_LINE) return this.#bad(p, 'a chunk-size line is too long');
          return -1;
        }
        const m = CHUNK_SIZE.exec(buf.toString('latin1', at, eol));
        if (m === null) return this.#bad(p, 'a chunk size is not hexadecimal');
        const size = parseInt(m[1] as string, 16);
        this.#remaining = size;
        this.#state = size === 0 ? 'trailers' : 'chunk-data';
        return eol + 2;
      }
      case 'chunk-data': {
        const n = Math.min(this.#remaining, buf.length - at);
        this.#remaining -= n;
        if (this.#remaining === 0) this.#state = 'chunk-crlf';
        this.#data(p, buf.subarray(at, at + n));
        return at + n;
      }
      case 'chunk-crlf': {
        if (buf.length - at < 2) return -1;
        if (buf[at] !== 13 || buf[at + 1] !== 10) return this.#bad(p, 'a chunk does not end with CRLF');
        this.#state = 'chunk-size';
        return at + 2;
      }
      case 'trailers': {
        const eol = buf.indexOf('\r\n', at, 'latin1');
        if (eol < 0) {
          if (buf.length - at > MAX_HEAD) return this.#bad(p, 'the trailers are too long');
          return -1;
        }
        // Trailer fields are read past and dropped; the empty line ends the reply.
        if (eol === at) {
          this.#end(p);
          return at + 2;
        }
        return eol + 2;
      }
    }
  }

  #head(p: Pending, buf: Buffer, at: number): number {
    const end = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (end < 0 ? buf.length - at > MAX_HEAD : end - at > MAX_HEAD) return this.#bad(p, 'the reply head is larger than 64 KiB');
    if (end < 0) {
      // A head ended by bare LFs would otherwise wait out the head's timeout.
      if (buf.indexOf('\n\n', at, 'latin1') >= 0) return this.#bad(p, 'the reply head does not end with CRLF CRLF');
      return -1;
    }
    const text = buf.toString('latin1', at, end);
    if (BARE_CR_LF_NUL.test(text)) return this.#bad(p, 'the reply head holds a bare CR or LF, or a NUL');
    const lines = text.split('\r\n');
    const m = STATUS_LINE.exec(lines[0] as string);
    if (m === null) return this.#bad(p, 'the reply does not start with an HTTP/1.x status line');
    const minor = m[1];
    const status = Number(m[2]);
    const headers: Record<string, string> = {};
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      // No obsolete line folding, no space before the colon, no empty or odd names.
      if (!TOKEN.test(name)) return this.#bad(p, 'a reply header line is malformed');
      const value = line.slice(colon + 1).trim();
      const key = name.toLowerCase();
      const prior = headers[key];
      headers[key] = prior === undefined ? value : `${prior}, ${value}`;
    }
    const next = end + 4;
    if (status < 200) {
      if (status === 101) return this.#bad(p, 'the backend switched protocols');
      return next; // 100 Continue, 103 Early Hints: the real head follows
    }
    const connection = headers['connection'];
    this.#keepAlive =
      minor === '1'
        ? connection === undefined || !/\bclose\b/i.test(connection)
        : connection !== undefined && /\bkeep-alive\b/i.test(connection);
    const hint = headers['keep-alive'];
    if (hint !== undefined) {
      const t = /\btimeout=(\d+)/i.exec(hint);
      if (t !== null) this.#idleMs = Math.min(this.#opts.keepAliveTimeout, Math.max(0, Number(t[1]) * 1000 - 1000));
    }
    const te = headers['transfer-encoding'];
    const cl = headers['content-length'];
    // RFC 9112 §6.3: a 204 or 304 has no body, whatever its head says.
    if (status === 204 || status === 304) {
      this.#state = 'length';
      this.#remaining = 0;
    } else if (te !== undefined) {
      // Chunked last: framed by chunks. A Content-Length beside it, or Transfer-Encoding in an HTTP/1.0
      // reply, is faulty framing (§6.1, §6.3): read, then the connection is not reused.
      if (!/(?:^|,)\s*chunked\s*$/i.test(te)) {
        this.#state = 'until-close';
        this.#keepAlive = false;
      } else this.#state = 'chunk-size';
      if (cl !== undefined || minor === '0') this.#keepAlive = false;
    } else if (cl !== undefined) {
      // A repeated Content-Length arrives joined ("12, 12"): equal values are one length, unequal ones no framing.
      let length = cl;
      if (!CONTENT_LENGTH.test(cl)) {
        const values = cl.split(',').map((v) => v.trim());
        length = values[0] as string;
        if (!CONTENT_LENGTH.test(length) || values.some((v) => v !== length))
          return this.#bad(p, 'the reply has an invalid Content-Length');
      }
      this.#state = 'length';
      this.#remaining = Number(length);
    } else {
      this.#state = 'until-close';
      this.#keepAlive = false;
    }
    this.#arm(p.req.bodyTimeout, 'BODY_TIMEOUT');
    p.handler.onResponseStart(p, status, headers);
    if (this.#current === p && this.#state === 'length' && this.#remaining === 0) this.#end(p);
    return next;
  }

  #data(p: Pending, chunk: Buffer): void {
    if (chunk.length > 0) p.handler.onResponseData(p, chunk);
  }

  /** The reply is whole. The connection is released (or closed) by the read that ended it (#read), after this. */
  #end(p: Pending): void {
    this.#current = undefined;
    p.done = true;
    this.#ended = true;
    p.handler.onResponseEnd(p);
  }

  #bad(p: Pending, why: string): number {
    this.#fail(p, upstreamError('BAD_REPLY', `the backend's reply is not valid HTTP/1.1: ${why}`));
    return -1;
  }

  #fail(p: Pending, err: Error): void {
    if (this.#current !== p) return;
    this.#current = undefined;
    p.done = true;
    this.destroy();
    p.handler.onResponseError(p, err);
  }

  readonly #onEnd = (): void => {
    const p = this.#current;
    if (p !== undefined && this.#state === 'until-close') {
      try {
        this.#end(p);
      } catch (err) {
        this.#thrown(err);
      }
      this.#ended = false;
      this.destroy();
      return;
    }
    this.#closed(undefined);
  };

  /**
   * A connect error keeps its own code (ECONNREFUSED, ENOTFOUND …: what an operator looks for); a reset or
   * broken pipe on a connection that was up is the backend closing it, SOCKET_CLOSED like a FIN.
   */
  readonly #onError = (err: Error): void => {
    if (!this.#connected) return this.#closed(err);
    const code = (err as { code?: unknown }).code;
    const why = typeof code === 'string' ? ` (${code})` : '';
    this.#closed(
      Object.assign(
        upstreamError(
          'SOCKET_CLOSED',
          `the connection to the backend failed${why} ${this.#sawBytes ? "before the reply's end" : 'without a reply'}`,
        ),
        { cause: err },
      ),
    );
  };

  readonly #onClose = (): void => {
    this.#closed(undefined);
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#pool.removed(this);
  };

  /** The socket ended or failed: the request in flight (if any) fails. */
  #closed(err: Error | undefined): void {
    const p = this.#current;
    this.gone = true;
    this.#socket.destroy();
    if (p === undefined) return;
    this.#current = undefined;
    p.done = true;
    try {
      p.handler.onResponseError(
        p,
        err ??
          upstreamError(
            'SOCKET_CLOSED',
            `the backend closed the connection ${this.#sawBytes ? "before the reply's end" : 'without a reply'}`,
          ),
      );
    } catch {
      // A handler that throws here has nothing more to be told.
    }
  }

  #arm(ms: number, code: UpstreamErrorCode): void {
    this.#timerCode = code;
    if (this.#timer !== undefined && this.#timerMs === ms) {
      this.#timer.refresh();
      return;
    }
    clearTimeout(this.#timer);
    this.#timerMs = ms;
    this.#timer = setTimeout(this.#expired, ms);
    // The socket holds the process open while a request is in flight; the timer never needs to.
    this.#timer.unref();
  }

  readonly #expired = (): void => {
    this.#timer = undefined;
    this.#timerMs = -1;
    const p = this.#current;
    // Nothing in flight (the timer outlived its reply), or a reply held back by its handler: not a timeout.
    if (p === undefined || this.#paused) {
      if (!this.#connected) this.destroy();
      return;
    }
    const code = this.#timerCode;
    const what =
      code === 'CONNECT_TIMEOUT'
        ? `no connection to the backend within ${this.#opts.connectTimeout} ms`
        : code === 'HEADERS_TIMEOUT'
          ? `no reply head within ${p.req.headersTimeout} ms`
          : `no reply bytes for ${p.req.bodyTimeout} ms`;
    try {
      this.#fail(p, upstreamError(code, what));
    } catch {
      // A handler that throws here has nothing more to be told.
    }
  };
}
