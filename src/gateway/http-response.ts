/**
 * One HTTP/1.1 response of the gateway's server (http-server.ts): the members of node:http's ServerResponse
 * the gateway uses, with the same meaning. The head goes out with the first body bytes, in one socket write;
 * the framing is Content-Length when the body is known at once (end() before any write), else chunked
 * (HTTP/1.0: the connection's end). Header names and values are checked before anything is sent, as
 * node:http checks them: a value that would split the response throws.
 */
import { STATUS_CODES } from 'node:http';
import { BAD_VALUE, NOT_PLAIN, TOKEN } from './http-head.js';

/** What a response needs of its connection. */
export interface ResponseConnection {
  /** The connection stays open after this response (the response may turn it off). */
  keepAlive: boolean;
  /** The request's HTTP minor version. */
  readonly minor: 0 | 1;
  /** The server is closing: this response is the connection's last. */
  readonly closing: boolean;
  readonly keepAliveSeconds: number;
  /** The socket is destroyed (its close event may not have come yet): nothing written goes out. */
  readonly gone: boolean;
  /** Writes `head` + `body` + `tail` at once; false when the socket's buffer is full. */
  send(head: string, body: string | Buffer, ascii: boolean, tail?: string): boolean;
  /**
   * Holds this turn's writes back until its end, so they leave in one syscall (node:http corks the same
   * way): a stream's events that arrived in one read of the backend go out together.
   */
  hold(): void;
  /** The response was handed whole to the socket. */
  finished(res: HttpResponse): void;
  destroy(): void;
}

let dateSecond = 0;
let dateText = '';
/** The Date header's value, formatted once a second. */
function httpDate(): string {
  const now = Date.now();
  const s = Math.floor(now / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

export type OutgoingHeaders = Readonly<Record<string, string | number>> | readonly string[];

/** One response; the methods the gateway uses of node:http's ServerResponse, with the same meaning. */
export class HttpResponse {
  statusCode = 200;
  headersSent = false;
  /** end() was called. */
  writableEnded = false;
  /** The whole response was handed to the socket. */
  writableFinished = false;
  /** The connection closed (or was destroyed) before the response was finished. */
  destroyed = false;
  /** Called once: when the response is finished, or when its connection closes before that. */
  onclose: (() => void) | undefined;
  /** Called when the socket can take more after write() returned false. */
  ondrain: (() => void) | undefined;
  /** The contract's error code this response carries (sendError), for the request's log line. */
  errorCode: string | undefined;
  /** Why the decision denied (the policy rule), for the request's log line only. */
  errorDetail: string | undefined;
  readonly #conn: ResponseConnection;
  /** No body goes out: a HEAD request, or (once the status is known) 1xx, 204, 304 (RFC 9110 §6.4.1). */
  #bodyless: boolean;
  /** The header lines as written by writeHead, checked there. */
  #fields = '';
  /** The handler set Content-Length (the framing is its), or Connection: close. */
  #hasLength = false;
  #closeAsked = false;
  /** Whether the head is plain ASCII (else it is sent as latin1, as node:http does). */
  #ascii = true;
  #fieldPairs: readonly string[] = [];
  #chunked = false;
  #closed = false;

  constructor(conn: ResponseConnection, bodyless: boolean) {
    this.#conn = conn;
    this.#bodyless = bodyless;
  }

  /**
   * Sets the status and headers, checked now as node:http checks them (a name that is not a token, a value
   * with a control character: a TypeError, and nothing was sent); the head goes out with the first bytes.
   */
  writeHead(status: number, headers?: OutgoingHeaders): this {
    if (this.headersSent) throw Object.assign(new Error('the response head was already sent'), { code: 'ERR_HTTP_HEADERS_SENT' });
    if (!Number.isInteger(status) || status < 200 || status > 999) throw new RangeError(`invalid HTTP status ${status}`);
    let flat: readonly string[];
    if (headers === undefined) flat = [];
    else if (Array.isArray(headers)) flat = headers as readonly string[];
    else {
      const pairs: string[] = [];
      for (const [k, v] of Object.entries(headers as Readonly<Record<string, string | number>>)) pairs.push(k, String(v));
      flat = pairs;
    }
    let fields = '';
    let ascii = true;
    let hasLength = false;
    let closeAsked = false;
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i] as string;
      const value = flat[i + 1] as string;
      if (!TOKEN.test(name))
        throw Object.assign(new TypeError(`invalid header name ${JSON.stringify(name)}`), { code: 'ERR_INVALID_HTTP_TOKEN' });
      if (NOT_PLAIN.test(value)) {
        if (BAD_VALUE.test(value)) throw Object.assign(new TypeError(`invalid character in header ${name}`), { code: 'ERR_INVALID_CHAR' });
        ascii = false;
      }
      if (name.length === 14 || name.length === 10 || name.length === 17) {
        const lower = name.toLowerCase();
        if (lower === 'content-length') hasLength = true;
        // The framing and the connection are the server's to say.
        else if (lower === 'connection') {
          closeAsked = /(^|,)\s*close\s*(,|$)/i.test(value);
          continue;
        } else if (lower === 'transfer-encoding') continue;
      }
      fields += `${name}: ${value}\r\n`;
    }
    this.statusCode = status;
    this.#fieldPairs = flat;
    this.#fields = fields;
    this.#ascii = ascii;
    this.#hasLength = hasLength;
    this.#closeAsked = closeAsked;
    if (status === 204 || status === 304) this.#bodyless = true;
    return this;
  }

  getHeader(name: string): string | undefined {
    const h = this.#fieldPairs;
    const lower = name.toLowerCase();
    for (let i = 0; i < h.length; i += 2) if ((h[i] as string).toLowerCase() === lower) return h[i + 1];
    return undefined;
  }

  /** Sends the head now (a stream's first event may be a while). */
  flushHeaders(): void {
    if (this.headersSent || this.#closed) return;
    this.#conn.send(this.#head(undefined), '', this.#ascii);
  }

  write(chunk: string | Buffer): boolean {
    if (this.writableEnded || this.#closed) return false;
    this.#conn.hold();
    const head = this.headersSent ? '' : this.#head(undefined);
    const ascii = this.#ascii;
    if (this.#bodyless || chunk.length === 0) return head === '' || this.#conn.send(head, '', ascii);
    if (this.#chunked) {
      const size = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      return this.#conn.send(`${head}${size.toString(16)}\r\n`, chunk, ascii, '\r\n');
    }
    return this.#conn.send(head, chunk, ascii);
  }

  end(chunk?: string | Buffer): void {
    if (this.writableEnded || this.#closed) return;
    this.writableEnded = true;
    if (this.#conn.gone) {
      // Nothing can go out: the response closes unfinished (the client is gone), not as if it was sent.
      this.closed();
      return;
    }
    const body = this.#bodyless || chunk === undefined ? '' : chunk;
    if (!this.headersSent) {
      // The whole body is known: its length is the framing (none for a HEAD answered without one).
      const size =
        chunk === undefined ? (this.#bodyless ? undefined : 0) : typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      this.#conn.send(this.#head(size), body, this.#ascii);
    } else if (this.#chunked) {
      if (body.length > 0) {
        const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
        this.#conn.send(`${size.toString(16)}\r\n`, body, true, '\r\n0\r\n\r\n');
      } else this.#conn.send('0\r\n\r\n', '', true);
    } else if (body.length > 0) this.#conn.send('', body, true);
    this.writableFinished = true;
    this.#conn.finished(this);
    this.closed();
  }

  /** Closes the connection at once (a stream cut off mid-way); nothing once this response is over. */
  destroy(): void {
    if (!this.#closed) this.#conn.destroy();
  }

  /** The response is over: finished, or its connection closed before (the client is gone). */
  closed(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.writableFinished) this.destroyed = true;
    this.ondrain = undefined;
    const hook = this.onclose;
    this.onclose = undefined;
    hook?.();
  }

  /** The head; `size`: the whole body's length when known now (end() before any write). */
  #head(size: number | undefined): string {
    this.headersSent = true;
    const status = this.statusCode;
    let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n${this.#fields}`;
    const conn = this.#conn;
    if (!this.#hasLength && status !== 204 && status !== 304) {
      if (size !== undefined) text += `content-length: ${size}\r\n`;
      else if (this.#bodyless) {
        // A HEAD answered piecemeal: no body follows, so no framing is announced.
      } else if (conn.minor === 1) {
        text += 'transfer-encoding: chunked\r\n';
        this.#chunked = true;
      } else conn.keepAlive = false; // HTTP/1.0: the end of the connection ends the body
    }
    if (conn.keepAlive && !conn.closing && !this.#closeAsked)
      text += `connection: keep-alive\r\nkeep-alive: timeout=${conn.keepAliveSeconds}\r\n`;
    else {
      conn.keepAlive = false;
      text += 'connection: close\r\n';
    }
    return `${text}date: ${httpDate()}\r\n\r\n`;
  }
}
