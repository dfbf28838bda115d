/**
 * The gateway's HTTP/1.1 server, on node:net.
 *
 * Why not node:http: its IncomingMessage and ServerResponse streams were a tenth of the gateway's CPU per
 * proxied request (bench/gateway-ab.ts, the gateway on this server against the same gateway on node:http:
 * 0.84–0.90 of its CPU per request). This server does only what the gateway needs, and strictly (RFC 9112):
 *
 * - The request line and header fields as RFC 9112 §3 and §5 define them: no obsolete line folding, no
 *   whitespace before a colon, no bare CR or LF, no control characters; at most `maxHeaderBytes` of head
 *   (431). HTTP/1.1 requests need a Host (§3.2).
 * - Bodies framed by Content-Length or chunked (§6, §7.1). Both at once, two Content-Lengths, or a
 *   Transfer-Encoding other than chunked: 400 and the connection closes — request smuggling needs an
 *   ambiguity in framing, and this parser refuses every one (§6.3, §11.2).
 * - The body is read whole before the handler runs, up to `maxBodyBytes`. A larger one is dropped as it
 *   arrives and the handler runs at once with `body: null` (it answers 413), so the client reads an answer,
 *   not a reset connection. `Expect: 100-continue` is answered (RFC 9110 §10.1.1).
 * - Keep-alive (HTTP/1.1 by default, 1.0 when asked); pipelined requests answered in order.
 * - Deadlines: the head within `headersTimeoutMs`, the whole request within `requestTimeoutMs` (a slow
 *   client holds no connection for long), an idle connection closed after `keepAliveTimeoutMs`.
 *
 * A malformed request gets the contract's error body (`malformed_request`) saying what is wrong — never
 * echoing what was sent — and the connection is closed, since where the next request starts is unknown.
 */
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { errorBody } from '../errors/codes.js';
import { BAD_VALUE, CHUNK_SIZE, parseHead, TOKEN, type Refusal } from './http-head.js';
import { HttpResponse, type ResponseConnection } from './http-response.js';

export interface HttpServerOptions {
  readonly keepAliveTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** Request line and header fields together (node:http's default is 16 KiB). */
  readonly maxHeaderBytes: number;
  /** Bodies past this are not kept: the handler gets `body: null`. */
  readonly maxBodyBytes: number;
}

export type HttpHandler = (req: HttpRequest, res: HttpResponse) => void;

/** One request, its body read whole. */
export class HttpRequest {
  /**
   * The body: empty when none was sent, null when it was larger than `maxBodyBytes` (then dropped as it
   * arrives).
   */
  body: Buffer | null = null;
  readonly method: string;
  /** The request target as sent. */
  readonly url: string;
  /**
   * Lower-cased names; a repeated field joined with ", " ("; " for cookie), or only its first kept for the
   * fields node:http keeps once. A repeated Host or Content-Length is refused.
   */
  readonly headers: Readonly<Record<string, string>>;
  /** The connection's peer address, as node's socket reports it (undefined once the socket is gone). */
  readonly remoteAddress: string | undefined;

  constructor(method: string, url: string, headers: Readonly<Record<string, string>>, remoteAddress: string | undefined) {
    this.method = method;
    this.url = url;
    this.headers = headers;
    this.remoteAddress = remoteAddress;
  }
}

const CRLF2 = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from('\r\n');
/** Bytes of pipelined requests kept while one is answered; past this they are dropped and the connection closes after that answer. */
const MAX_QUEUED_BYTES = 256 * 1024;
const SWEEP_MS = 1_000;

/** Where a connection is: reading a request head; reading its body; the body read (or dropped), waiting for the response; no more requests. */
const Phase = { Head: 0, Body: 1, Wait: 2, Done: 3 } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

/** Where a chunked body is: a chunk-size line; chunk data; the CRLF after it; the trailer section. */
const Chunk = { Size: 0, Data: 1, DataEnd: 2, Trailer: 3 } as const;
type Chunk = (typeof Chunk)[keyof typeof Chunk];

class Connection implements ResponseConnection {
  readonly server: HttpServer;
  readonly socket: Socket;
  keepAlive = true;
  minor: 0 | 1 = 1;
  #phase: Phase = Phase.Head;
  /** Bytes received and not yet parsed. */
  #buf: Buffer | undefined;
  /** Past this (ms since epoch) the connection is closed: an idle keep-alive, or a request arriving too slowly. */
  deadline: number;
  /** When the request being read began (its head's first byte), for requestTimeoutMs. */
  #began = 0;
  #req: HttpRequest | undefined;
  #res: HttpResponse | undefined;
  #dispatched = false;
  #responded = false;
  /** Body: bytes still to come (Content-Length, or of the current chunk). */
  #remaining = 0;
  #chunkedBody = false;
  #chunk: Chunk = Chunk.Size;
  #trailerBytes = 0;
  /** Body kept (false once it grew past maxBodyBytes: the rest is dropped). */
  #keep = true;
  /**
   * The body so far: the received bytes themselves when it came whole with its head (the usual case), else
   * copied into one buffer — never a list of pieces, which a body sent in one-byte chunks would turn into a
   * hundred bytes of memory for each byte.
   */
  #body: Buffer | undefined;
  #size = 0;
  /** Bytes of the head already searched for its end (a head arriving a few bytes at a time). */
  #searched = 0;
  /** Reading waits for the client to take the answers already written (a client pipelining without reading). */
  #awaitingDrain = false;
  /**
   * A reply was still going out at a deadline: node's socket timeout, which counts the kernel taking bytes
   * as activity, then decides instead of the sweep (until the next request begins).
   */
  #socketTimer = false;
  /** Writes are held back until the end of this turn (hold()). */
  #corked = false;

  constructor(server: HttpServer, socket: Socket) {
    this.server = server;
    this.socket = socket;
    this.deadline = Date.now() + server.options.headersTimeoutMs;
    socket.on('data', (chunk: Buffer) => this.#data(chunk));
    socket.on('drain', () => {
      if (this.#awaitingDrain) {
        this.#awaitingDrain = false;
        socket.resume();
        this.#parse();
      }
      this.#res?.ondrain?.();
    });
    socket.on('error', () => {});
    socket.on('timeout', () => this.destroy());
    socket.on('close', () => {
      this.#phase = Phase.Done;
      server.forget(this);
      this.#res?.closed();
    });
  }

  get closing(): boolean {
    return this.server.closing;
  }

  get gone(): boolean {
    return this.socket.destroyed;
  }

  get keepAliveSeconds(): number {
    return this.server.keepAliveSeconds;
  }

  /** Between requests, with nothing of one received and nothing left to send. */
  get idle(): boolean {
    return this.#phase === Phase.Head && this.#buf === undefined && this.#began === 0 && this.socket.writableLength === 0;
  }

  hold(): void {
    if (this.#corked) return;
    this.#corked = true;
    this.socket.cork();
    process.nextTick(this.#uncork);
  }

  readonly #uncork = (): void => {
    this.#corked = false;
    this.socket.uncork();
  };

  /** Writes `head` + `body` + `tail` in one socket write; false when the socket's buffer is full. */
  send(head: string, body: string | Buffer, ascii: boolean, tail = ''): boolean {
    const s = this.socket;
    if (s.destroyed) return false;
    if (typeof body === 'string' && ascii) return s.write(head + body + tail);
    s.cork();
    if (head !== '') s.write(head, 'latin1');
    if (body.length > 0) s.write(body);
    const ok = tail === '' ? s.writableLength < s.writableHighWaterMark : s.write(tail);
    s.uncork();
    return ok;
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The response is finished: on to the next request once the body is read too. */
  finished(res: HttpResponse): void {
    if (res !== this.#res) return;
    this.#responded = true;
    if (this.#phase === Phase.Wait) this.#next();
  }

  #data(chunk: Buffer): void {
    if (this.#phase === Phase.Done) return;
    if (this.#phase === Phase.Wait) {
      // Pipelined: kept until the response in flight is finished. Past the bound the rest is dropped and
      // the connection closes after that response (reading goes on, so a client that leaves is still seen).
      if (!this.keepAlive) return;
      if ((this.#buf?.length ?? 0) + chunk.length > MAX_QUEUED_BYTES) {
        this.keepAlive = false;
        this.#buf = undefined;
        return;
      }
      this.#buf = this.#buf === undefined ? chunk : Buffer.concat([this.#buf, chunk]);
      return;
    }
    this.#buf = this.#buf === undefined ? chunk : Buffer.concat([this.#buf, chunk]);
    this.#parse();
  }

  #parse(): void {
    while (this.#buf !== undefined && !this.#awaitingDrain) {
      if (this.#phase === Phase.Head) {
        if (!this.#readHead()) return;
      } else if (this.#phase === Phase.Body) {
        if (!this.#readBody()) return;
      } else return;
    }
  }

  /** Parses a head from the buffer; false when more bytes are needed or the connection is done. */
  #readHead(): boolean {
    let buf = this.#buf as Buffer;
    // RFC 9112 §2.2: empty lines before a request line are ignored (some clients end a body with CRLF).
    let start = 0;
    while (start + 1 < buf.length && buf[start] === 13 && buf[start + 1] === 10) start += 2;
    if (start > 0) {
      buf = buf.subarray(start);
      this.#buf = buf.length === 0 ? undefined : buf;
      if (this.#buf === undefined) return false;
    }
    if (this.#began === 0) {
      if (this.#socketTimer) {
        this.#socketTimer = false;
        this.socket.setTimeout(0);
      }
      this.#began = Date.now();
      this.deadline = this.#began + this.server.options.headersTimeoutMs;
    }
    const max = this.server.options.maxHeaderBytes;
    const end = buf.indexOf(CRLF2, this.#searched);
    // Without its end yet, the head's last line may still be coming: a head of `max` bytes ends past `max + 3`.
    if (end < 0 ? buf.length > max + 3 : end > max) {
      this.#refuse({ status: 431, message: `The request's headers are over ${max} bytes.` });
      return false;
    }
    if (end < 0) {
      this.#searched = Math.max(0, buf.length - 3);
      return false;
    }
    this.#searched = 0;
    const head = parseHead(buf.toString('latin1', 0, end));
    const rest = buf.length > end + 4 ? buf.subarray(end + 4) : undefined;
    this.#buf = rest;
    if (!('method' in head)) {
      this.#refuse(head);
      return false;
    }
    this.minor = head.minor;
    this.keepAlive = head.keepAlive;
    const req = new HttpRequest(head.method, head.url, head.headers, this.socket.remoteAddress);
    this.#req = req;
    this.#res = new HttpResponse(this, head.method === 'HEAD');
    this.#responded = false;
    this.#dispatched = false;
    this.#keep = true;
    this.#body = undefined;
    this.#size = 0;
    this.#chunkedBody = head.length < 0;
    this.#chunk = Chunk.Size;
    this.#trailerBytes = 0;
    this.#remaining = head.length < 0 ? 0 : head.length;
    this.deadline = this.#began + this.server.options.requestTimeoutMs;
    if (head.length > this.server.options.maxBodyBytes) {
      this.#keep = false;
      if (head.expectContinue) {
        // The client waits before sending the body: answer without it, and close (RFC 9110 §10.1.1).
        this.keepAlive = false;
        this.#phase = Phase.Wait;
        this.#buf = undefined;
        this.#dispatch(null);
        return false;
      }
      this.#dispatch(null);
    } else if (head.expectContinue && (rest === undefined || rest.length < head.length || head.length < 0)) {
      this.socket.write('HTTP/1.1 100 Continue\r\n\r\n');
    }
    this.#phase = Phase.Body;
    if (!this.#chunkedBody && this.#remaining === 0) this.#bodyDone();
    return true;
  }

  /** Takes body bytes from the buffer; false when more are needed. */
  #readBody(): boolean {
    if (!this.#chunkedBody) {
      if (!this.#takeRemaining(this.#buf as Buffer)) return false;
      this.#bodyDone();
      return true;
    }
    for (;;) {
      const buf = this.#buf;
      if (buf === undefined) return false;
      switch (this.#chunk) {
        case Chunk.Size:
        case Chunk.Trailer: {
          const eol = buf.indexOf(CRLF);
          const lineMax = this.#chunk === Chunk.Size ? 1024 : this.server.options.maxHeaderBytes - this.#trailerBytes;
          if (eol < 0 || eol > lineMax) {
            if (buf.length > lineMax) return this.#broken('A chunk-size or trailer line is too long.');
            return false;
          }
          const line = buf.toString('latin1', 0, eol);
          this.#buf = buf.length > eol + 2 ? buf.subarray(eol + 2) : undefined;
          if (this.#chunk === Chunk.Trailer) {
            if (eol === 0) {
              this.#bodyDone();
              return true;
            }
            // Trailer fields are read and ignored (RFC 9112 §7.1.2), but must be well-formed.
            this.#trailerBytes += eol + 2;
            const colon = line.indexOf(':');
            if (colon <= 0 || !TOKEN.test(line.slice(0, colon)) || BAD_VALUE.test(line.slice(colon + 1)))
              return this.#broken('A trailer field is malformed.');
            continue;
          }
          const m = CHUNK_SIZE.exec(line);
          if (m === null) return this.#broken('A chunk-size line is malformed.');
          const size = parseInt(m[1] as string, 16);
          if (size === 0) this.#chunk = Chunk.Trailer;
          else {
            this.#remaining = size;
            this.#chunk = Chunk.Data;
          }
          continue;
        }
        case Chunk.Data: {
          if (!this.#takeRemaining(buf)) return false;
          this.#chunk = Chunk.DataEnd;
          continue;
        }
        case Chunk.DataEnd: {
          if (buf.length < 2) return false;
          if (buf[0] !== 13 || buf[1] !== 10) return this.#broken('A chunk does not end with CRLF.');
          this.#buf = buf.length > 2 ? buf.subarray(2) : undefined;
          this.#chunk = Chunk.Size;
          continue;
        }
      }
    }
  }

  /** Takes up to `#remaining` body bytes from `buf` (the buffer); true once none remain. */
  #takeRemaining(buf: Buffer): boolean {
    const n = Math.min(this.#remaining, buf.length);
    this.#take(n === buf.length ? buf : buf.subarray(0, n));
    this.#buf = n === buf.length ? undefined : buf.subarray(n);
    this.#remaining -= n;
    return this.#remaining === 0;
  }

  #take(part: Buffer): void {
    if (!this.#keep || part.length === 0) return;
    const size = this.#size + part.length;
    const max = this.server.options.maxBodyBytes;
    if (size > max) {
      // Dropped from here on; the handler answers now, while the rest arrives.
      this.#keep = false;
      this.#body = undefined;
      this.#dispatch(null);
      return;
    }
    if (this.#size === 0 && !this.#chunkedBody && part.length === this.#remaining)
      this.#body = part; // whole, as received
    else {
      let body = this.#body;
      if (body === undefined || body.length < size) {
        // Doubling as bytes arrive, up to the declared length (Content-Length) or the bound (chunked): a
        // declared length reserves nothing before its bytes come.
        const cap = this.#chunkedBody ? max : this.#size + this.#remaining;
        const grown = Buffer.allocUnsafe(Math.min(cap, Math.max(size, 2 * (body?.length ?? 32 * 1024))));
        if (body !== undefined) body.copy(grown, 0, 0, this.#size);
        body = grown;
        this.#body = body;
      }
      part.copy(body, this.#size);
    }
    this.#size = size;
  }

  #bodyDone(): void {
    this.#phase = Phase.Wait;
    this.deadline = Infinity;
    this.#began = 0;
    if (!this.#dispatched) {
      const body = this.#body;
      this.#body = undefined;
      this.#dispatch(body === undefined ? EMPTY : body.length === this.#size ? body : body.subarray(0, this.#size));
    }
    // A handler that answered at once has moved the connection on already (finished()).
    if (this.#responded && this.#phase === Phase.Wait) this.#next();
  }

  #dispatch(body: Buffer | null): void {
    this.#dispatched = true;
    const req = this.#req as HttpRequest;
    req.body = body;
    try {
      this.server.handler(req, this.#res as HttpResponse);
    } catch {
      this.destroy();
    }
  }

  /** A request whose framing is broken after its handler ran: nothing sensible can follow on this connection. */
  #broken(message: string): false {
    if (this.#dispatched) this.destroy();
    else this.#refuse({ status: 400, message });
    return false;
  }

  /** Answers a request that cannot be read, and closes the connection. */
  #refuse(r: Refusal): void {
    this.#phase = Phase.Done;
    this.keepAlive = false;
    this.minor = 1;
    const body = errorBody('malformed_request', r.message);
    const res = new HttpResponse(this, false);
    this.#res = res;
    res.writeHead(r.status, ['content-type', 'application/json']);
    res.end(body);
    this.#close();
  }

  /** Ends the connection after what was written; a client that keeps its side open is cut off later. */
  #close(): void {
    this.#phase = Phase.Done;
    this.#buf = undefined;
    this.#setDeadline(this.server.options.headersTimeoutMs);
    this.socket.end();
  }

  /** One request answered and its body read: close, or read the next one. */
  #next(): void {
    this.#req = undefined;
    this.#res = undefined;
    if (!this.keepAlive || this.server.closing) {
      this.#close();
      return;
    }
    this.#phase = Phase.Head;
    this.#began = 0;
    this.#setDeadline(this.server.options.keepAliveTimeoutMs);
    // A client that does not read its answers gets no more until it does (node:http waits the same way).
    if (this.socket.writableNeedDrain) {
      this.#awaitingDrain = true;
      this.socket.pause();
      return;
    }
    // Pipelined bytes already here: parsed after the current call stack (the handler may still be running).
    if (this.#buf !== undefined) queueMicrotask(() => this.#parse());
  }

  #setDeadline(ms: number): void {
    this.deadline = Date.now() + ms;
  }

  /**
   * A deadline passed: an idle keep-alive closes quietly, a request still arriving gets 408. A reply still
   * going out is bounded by the socket's own idle timeout of the same length instead, which a client still
   * reading keeps from firing (socket.bytesWritten counts bytes handed to libuv, not taken by the kernel,
   * so it cannot tell a slow reader from one that stopped); once the reply is out, the connection has its
   * whole keep-alive (or closing) time again, as its Keep-Alive header promised.
   */
  expire(): void {
    if ((this.#phase === Phase.Head || this.#phase === Phase.Done) && this.socket.writableLength > 0) {
      this.deadline = Infinity;
      if (this.#socketTimer) return;
      this.#socketTimer = true;
      const done = this.#phase === Phase.Done;
      const ms = done ? this.server.options.headersTimeoutMs : this.server.options.keepAliveTimeoutMs;
      this.socket.setTimeout(ms);
      const flushed = (): void => {
        if (!this.#socketTimer) return; // a request began meanwhile
        this.#socketTimer = false;
        this.socket.setTimeout(0);
        this.#setDeadline(ms);
      };
      // Called once everything written before has gone to the kernel (an ended socket: 'finish').
      if (done) this.socket.once('finish', flushed);
      else this.socket.write(EMPTY, (err) => (err == null ? flushed() : undefined));
      return;
    }
    if (this.#phase === Phase.Done || (this.#phase === Phase.Head && this.#buf === undefined && this.#began === 0)) this.destroy();
    else if (this.#phase === Phase.Head || (this.#phase === Phase.Body && !this.#dispatched))
      this.#refuse({ status: 408, message: 'The request did not arrive in time.' });
    else this.destroy();
  }
}

export class HttpServer {
  readonly options: HttpServerOptions;
  readonly handler: HttpHandler;
  readonly keepAliveSeconds: number;
  /** close() was called: no new connections; each open one closes after its response. */
  closing = false;
  readonly #net: Server;
  readonly #conns = new Set<Connection>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(options: HttpServerOptions, handler: HttpHandler) {
    this.options = options;
    this.handler = handler;
    this.keepAliveSeconds = Math.floor(options.keepAliveTimeoutMs / 1000);
    // A client's FIN closes the connection, and a request in flight counts as abandoned (its backend request
    // is aborted): node:http does the same unless told to allow half-open connections.
    this.#net = createServer({ allowHalfOpen: false, noDelay: true }, (socket) => {
      if (this.closing) {
        socket.destroy();
        return;
      }
      this.#conns.add(new Connection(this, socket));
    });
  }

  /** Listens; resolves with the port. */
  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#net.once('error', reject);
      this.#net.listen(port, host, () => {
        this.#net.off('error', reject);
        this.#sweep = setInterval(() => this.#expire(), SWEEP_MS);
        this.#sweep.unref();
        resolve((this.#net.address() as AddressInfo).port);
      });
    });
  }

  forget(conn: Connection): void {
    this.#conns.delete(conn);
  }

  /** Stops accepting, closes idle connections; resolves once every connection has closed. */
  close(): Promise<void> {
    this.closing = true;
    // The sweep goes on until the last connection is gone: a client that keeps its side open is still cut off.
    const closed = new Promise<void>((resolve) =>
      this.#net.close(() => {
        clearInterval(this.#sweep);
        resolve();
      }),
    );
    this.closeIdleConnections();
    return closed;
  }

  closeIdleConnections(): void {
    for (const c of this.#conns) if (c.idle) c.destroy();
  }

  closeAllConnections(): void {
    for (const c of this.#conns) c.destroy();
  }

  #expire(): void {
    const now = Date.now();
    for (const c of this.#conns) {
      if (this.closing && c.idle)
        c.destroy(); // idle since close(): a reply that was still going out has gone
      else if (c.deadline < now) c.expire();
    }
  }
}
