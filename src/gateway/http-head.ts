/**
 * Request heads as RFC 9112 §3 and §5 define them, read strictly: the request line, header fields (no
 * obsolete line folding, no whitespace before a colon, no bare CR or LF, no control characters), and the
 * body's framing (§6): Content-Length or chunked, never both, one Content-Length, no other coding. Every
 * ambiguity request smuggling could use is a refusal (§6.3, §11.2). Used by http-server.ts.
 */
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Anything but visible ASCII, space and tab: checked further only when found. */
export const NOT_PLAIN = /[^\t\x20-\x7e]/;
/** What a field value may not hold (RFC 9110 §5.5): controls but tab. obs-text (0x80-0xff) is allowed, as latin1. */
export const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
/** chunk-size [ chunk-ext ] (RFC 9112 §7.1); extensions are ignored. */
export const CHUNK_SIZE = /^([0-9A-Fa-f]{1,12})(?:[ \t]*;[\t\x20-\x7e]*)?$/;
const DIGITS = /^\d{1,15}$/;
/** Only the first of these counts when repeated, as node:http does. */
const FIRST_WINS = new Set([
  'content-type',
  'user-agent',
  'referer',
  'authorization',
  'proxy-authorization',
  'if-modified-since',
  'if-unmodified-since',
  'from',
  'location',
  'max-forwards',
]);

/** Why a request head is refused, with its status. */
export interface Refusal {
  readonly status: 400 | 408 | 413 | 417 | 431 | 501 | 505;
  readonly message: string;
}

export interface Head {
  readonly method: string;
  readonly url: string;
  readonly minor: 0 | 1;
  readonly headers: Record<string, string>;
  /** Bytes of body by Content-Length, or -1 when chunked. */
  readonly length: number;
  readonly keepAlive: boolean;
  readonly expectContinue: boolean;
}

/** Parses a request head (without its closing blank line). */
export function parseHead(text: string): Head | Refusal {
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const line = REQUEST_LINE.exec(text.slice(0, eol));
  if (line === null) {
    return /^\S+ \S+ HTTP\/\d/.test(text.slice(0, eol))
      ? { status: 505, message: 'tollgate speaks HTTP/1.0 and HTTP/1.1 on this port.' }
      : { status: 400, message: 'The request line is malformed: METHOD /path HTTP/1.1 is expected.' };
  }
  // No prototype: a field named like an Object member (constructor, __proto__) is only a field.
  const headers = Object.create(null) as Record<string, string>;
  for (let pos = eol + 2; pos < text.length;) {
    let next = text.indexOf('\r\n', pos);
    if (next < 0) next = text.length;
    const colon = text.indexOf(':', pos);
    if (colon < 0 || colon >= next)
      return { status: 400, message: 'A header line has no colon (or is folded, which HTTP/1.1 no longer allows).' };
    const name = text.slice(pos, colon);
    if (!TOKEN.test(name)) return { status: 400, message: 'A header name is malformed (no spaces before the colon, no folding).' };
    let a = colon + 1;
    let b = next;
    while (a < b && (text.charCodeAt(a) === 32 || text.charCodeAt(a) === 9)) a++;
    while (b > a && (text.charCodeAt(b - 1) === 32 || text.charCodeAt(b - 1) === 9)) b--;
    const value = text.slice(a, b);
    if (NOT_PLAIN.test(value) && BAD_VALUE.test(value)) return { status: 400, message: 'A header value holds a control character.' };
    const key = name.toLowerCase();
    const prev = headers[key];
    if (prev === undefined) {
      headers[key] = value;
    } else if (key === 'content-length' || key === 'host') {
      return { status: 400, message: `The request has two ${key} headers.` };
    } else if (!FIRST_WINS.has(key)) headers[key] = `${prev}${key === 'cookie' ? '; ' : ', '}${value}`;
    pos = next + 2;
  }
  const minor = line[3] === '1' ? 1 : 0;
  if (minor === 1 && headers['host'] === undefined) return { status: 400, message: 'An HTTP/1.1 request needs a Host header.' };
  const te = headers['transfer-encoding'];
  const cl = headers['content-length'];
  let length = 0;
  if (te !== undefined) {
    // RFC 9112 §6.1: chunked is the only coding tollgate reads; with Content-Length as well, framing is ambiguous.
    if (cl !== undefined) return { status: 400, message: 'The request has both Transfer-Encoding and Content-Length.' };
    if (minor === 0) return { status: 400, message: 'Transfer-Encoding needs HTTP/1.1.' };
    if (te.toLowerCase() !== 'chunked') return { status: 501, message: 'Only Transfer-Encoding: chunked is accepted.' };
    length = -1;
  } else if (cl !== undefined) {
    if (!DIGITS.test(cl)) return { status: 400, message: 'The Content-Length header is not a number.' };
    length = Number(cl);
  }
  const connection = headers['connection']?.toLowerCase();
  const keepAlive = minor === 1 ? !hasToken(connection, 'close') : hasToken(connection, 'keep-alive');
  const expect = headers['expect'];
  let expectContinue = false;
  if (expect !== undefined) {
    if (expect.toLowerCase() !== '100-continue') return { status: 417, message: 'Only Expect: 100-continue is understood.' };
    expectContinue = minor === 1 && length !== 0;
  }
  return { method: line[1] as string, url: line[2] as string, minor, headers, length, keepAlive, expectContinue };
}

function hasToken(list: string | undefined, token: string): boolean {
  if (list === undefined) return false;
  if (list === token) return true;
  if (!list.includes(token)) return false;
  return list.split(',').some((t) => t.trim() === token);
}
