/**
 * A non-streamed reply larger than the forwarder parses whole (exchange.ts `replyCap`), read as it arrives:
 * the backend's JSON object passed on byte for byte but for its top-level `model`, renamed to the alias, and
 * read on the way for what tollgate needs of it — its `usage` (vLLM puts it at the end of an embeddings
 * reply, after a chat reply's choices), or, when the reply breaks off before it, the text generated so far.
 * JsonRelay holds it, renamed, up to a bound (answered whole), and past that relays it to the client.
 *
 * The reader tracks the JSON's structure (strings, nesting, keys), not its values: it holds a few bytes of
 * state whatever the reply's size, skips through strings with indexOf, and parses only the usage member's
 * own bytes. It checks that the reply is one object and nothing else; the values inside it are the
 * client's JSON parser's to judge.
 */
import { ByteList } from './byte-list.js';
import { ClientPacer, codedError, type ClientLink, type Exchange, type RelaySink } from './exchange.js';
import type { HttpResponse } from './http-response.js';
import { replyUsage, type Usage } from './sse.js';

/** The keys whose string values inside `choices` are generated text (a message's, a completion's, a tool call's). */
const GENERATED = new Set(['content', 'text', 'reasoning_content', 'reasoning', 'arguments', 'name']);
/** Deeper than this is no reply of an OpenAI-compatible server (vLLM's nest a few levels). */
const MAX_DEPTH = 512;
/** A key longer than this is none tollgate looks for: its bytes are not kept. */
const MAX_KEY = 64;
/**
 * The most of a top-level member's value kept to be parsed: `usage`, `object`. A Map: the keys are the
 * backend's, and a plain object's lookup of `constructor` or `__proto__` would find its prototype's.
 */
const CAPTURE: ReadonlyMap<string, number> = new Map([
  ['usage', 64 * 1024],
  ['object', 64],
]);

const OBJECT = 1;
const ARRAY = 2;
/** Bytes that change the reader's state outside strings: `"`, `,`, `:`, `[`, `]`, `{`, `}`. */
const STRUCTURAL = new Uint8Array(256);
for (const c of '",:[]{}') STRUCTURAL[c.charCodeAt(0)] = 1;
const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

export class JsonRewriter {
  /** The reply is not one JSON object (why): nothing more is read or passed on. */
  malformed: string | undefined;
  /** The reply's last top-level `usage` so far. */
  usage: Usage | undefined;
  /** A top-level `error` member, or `object` set to "error": an error body sent with a 2xx. */
  errorBody = false;
  readonly #alias: Buffer;
  #depth = 0;
  readonly #stack = new Uint8Array(MAX_DEPTH + 1);
  #expectKey = false;
  #started = false;
  #closed = false;
  #inString = false;
  #stringIsKey = false;
  /** The string is generated text in `choices`: its bytes are counted (completionEstimate). */
  #counting = false;
  /** Backslashes that ended the last chunk inside a string: the next chunk's first quote may be escaped by them. */
  #carry = 0;
  #key: Buffer[] = [];
  #keyLength = 0;
  /** The key whose value comes next (at any depth), and the top-level member's. */
  #lastKey: string | undefined;
  #topKey: string | undefined;
  #members = 0;
  #sawModel = false;
  /** Within a top-level member's value: skipped (model, renamed), or captured (usage, object). */
  #skipping = false;
  #capture: Buffer[] | undefined;
  #captureLength = 0;
  #captureCap = 0;
  /** The generated text's tokens in quarters (sse.ts's estimate: four ASCII bytes a token …). */
  #quarters = 0;

  constructor(alias: string) {
    this.#alias = Buffer.from(JSON.stringify(alias));
  }

  /** The reply's one object closed, with nothing after it but whitespace so far. */
  get complete(): boolean {
    return this.#closed && this.malformed === undefined;
  }

  /** The completion tokens of the generated text read so far, estimated (a reply broken off before its usage). */
  get completionEstimate(): number {
    return Math.ceil(this.#quarters / 4);
  }

  /** Reads the reply's next bytes; returns what goes to the client for them (empty once the reply is malformed). */
  push(chunk: Buffer): Buffer {
    if (this.malformed !== undefined) return EMPTY;
    const out: Buffer[] = [];
    /** Where the bytes still to be passed on begin in this chunk; -1 while skipping the model's value. */
    let from = this.#skipping ? -1 : 0;
    let captureFrom = this.#capture === undefined ? -1 : 0;
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.#inString) {
        i = this.#string(chunk, i);
        continue;
      }
      const c = chunk[i] as number;
      if (this.#depth === 0) {
        if (c === 0x7b && !this.#started) {
          this.#started = true;
          this.#open(OBJECT);
        } else if (!isSpace(c)) return this.#malformed(this.#started ? 'bytes after its object' : 'not a JSON object');
        i++;
        continue;
      }
      if (STRUCTURAL[c] === 0) {
        i++;
        continue;
      }
      switch (c) {
        case 0x22: // "
          this.#inString = true;
          this.#carry = 0;
          this.#stringIsKey = this.#expectKey;
          if (this.#stringIsKey) {
            this.#key = [];
            this.#keyLength = 0;
          } else {
            this.#counting = this.#depth >= 2 && this.#topKey === 'choices' && this.#lastKey !== undefined && GENERATED.has(this.#lastKey);
          }
          i++;
          continue;
        case 0x7b: // {
        case 0x5b: // [
          if (this.#depth >= MAX_DEPTH) return this.#malformed('nested too deep');
          this.#open(c === 0x7b ? OBJECT : ARRAY);
          break;
        case 0x7d: // }
        case 0x5d: {
          // ]
          if (this.#stack[this.#depth] !== (c === 0x7d ? OBJECT : ARRAY)) return this.#malformed('a bracket that does not match');
          if (this.#depth === 1) {
            if (this.#skipping) from = i;
            if (this.#capture !== undefined) this.#captured(chunk, captureFrom, i);
            captureFrom = -1;
            this.#skipping = false;
            if (!this.#sawModel) {
              // No model member: the alias goes in as the last one (a member's order means nothing in JSON).
              out.push(chunk.subarray(from, i), Buffer.from(this.#members > 0 ? ',"model":' : '"model":'), this.#alias);
              from = i;
              this.#sawModel = true;
            }
            this.#closed = true;
          }
          this.#depth--;
          this.#expectKey = false;
          break;
        }
        case 0x2c: // ,
          if (this.#depth === 1) {
            if (this.#skipping) from = i;
            if (this.#capture !== undefined) this.#captured(chunk, captureFrom, i);
            captureFrom = -1;
            this.#skipping = false;
          }
          this.#expectKey = this.#stack[this.#depth] === OBJECT;
          break;
        case 0x3a: // :
          this.#expectKey = false;
          if (this.#depth === 1) {
            const key = this.#topKey;
            if (key === 'model') {
              out.push(chunk.subarray(from, i + 1), this.#alias);
              from = -1;
              this.#skipping = true;
              this.#sawModel = true;
            } else {
              const cap = key === undefined ? undefined : CAPTURE.get(key);
              if (cap !== undefined) {
                this.#capture = [];
                this.#captureLength = 0;
                this.#captureCap = cap;
                captureFrom = i + 1;
              }
            }
          }
          break;
      }
      i++;
    }
    if (this.#capture !== undefined && captureFrom >= 0) this.#keep(chunk, captureFrom, n);
    if (from === 0 && out.length === 0) return chunk;
    if (from >= 0 && from < n) out.push(chunk.subarray(from));
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  #open(kind: number): void {
    this.#depth++;
    this.#stack[this.#depth] = kind;
    this.#expectKey = kind === OBJECT;
    this.#lastKey = undefined;
  }

  /** Inside a string from `i`: returns where reading goes on (past its closing quote, or the chunk's end). */
  #string(chunk: Buffer, i: number): number {
    /** Backslashes before a quote are counted from here: past an escaped quote, none before it counts. */
    let lo = i;
    let q = chunk.indexOf(0x22, i);
    while (q >= 0) {
      // A quote ends the string unless an odd run of backslashes stands before it (`\\"` is an escaped backslash).
      let k = q - 1;
      while (k >= lo && chunk[k] === 0x5c) k--;
      const run = q - 1 - k + (k < lo ? this.#carry : 0);
      if (run % 2 === 0) break;
      this.#carry = 0;
      lo = q + 1;
      q = chunk.indexOf(0x22, lo);
    }
    const end = q < 0 ? chunk.length : q;
    if (this.#stringIsKey) this.#keyBytes(chunk, i, end);
    else if (this.#counting) this.#quarters += quarters(chunk, i, end);
    if (q < 0) {
      let k = end - 1;
      while (k >= lo && chunk[k] === 0x5c) k--;
      const run = end - 1 - k;
      this.#carry = k < lo ? this.#carry + run : run;
      return end;
    }
    this.#inString = false;
    if (this.#stringIsKey) this.#keyEnd();
    return q + 1;
  }

  #keyBytes(chunk: Buffer, from: number, to: number): void {
    if (this.#keyLength <= MAX_KEY) this.#key.push(chunk.subarray(from, Math.min(to, from + MAX_KEY + 1 - this.#keyLength)));
    this.#keyLength += to - from;
  }

  #keyEnd(): void {
    let key: string | undefined;
    if (this.#keyLength <= MAX_KEY) {
      key = Buffer.concat(this.#key).toString('utf8');
      if (key.includes('\\')) key = parseString(key);
    }
    this.#key = [];
    this.#lastKey = key;
    if (this.#depth !== 1) return;
    this.#topKey = key;
    this.#members++;
    if (key === 'error') this.errorBody = true;
  }

  #keep(chunk: Buffer, from: number, to: number): void {
    if (this.#capture === undefined || to <= from) return;
    const room = this.#captureCap - this.#captureLength;
    if (room > 0) this.#capture.push(Buffer.from(chunk.subarray(from, from + Math.min(room, to - from))));
    this.#captureLength += to - from;
  }

  /** A captured value ended at `to` (its member's `,` or the object's `}`). */
  #captured(chunk: Buffer, from: number, to: number): void {
    if (from >= 0) this.#keep(chunk, from, to);
    const parts = this.#capture as Buffer[];
    this.#capture = undefined;
    if (this.#captureLength > this.#captureCap) return; // too long to be what it should
    let v: unknown;
    try {
      v = JSON.parse(Buffer.concat(parts).toString('utf8'));
    } catch {
      return; // the client's parser will say so
    }
    if (this.#topKey === 'object') {
      if (v === 'error') this.errorBody = true;
    } else {
      const usage = replyUsage(v);
      if (usage !== undefined) this.usage = usage;
    }
  }

  #malformed(why: string): Buffer {
    this.malformed = why;
    this.#capture = undefined;
    return EMPTY;
  }
}

const EMPTY = Buffer.alloc(0);

/** A JSON string's contents with its escapes (a key such as `"mod\u0065l"`); undefined when not valid. */
function parseString(raw: string): string | undefined {
  try {
    return JSON.parse(`"${raw}"`) as string;
  } catch {
    return undefined;
  }
}

/**
 * The tokens of UTF-8 bytes in quarters, as sse.ts's quarterTokens counts a string's characters: an ASCII
 * byte one, a two-byte character two, a three-byte one four, a four-byte one (two UTF-16 units) eight.
 */
function quarters(chunk: Buffer, from: number, to: number): number {
  let q = 0;
  for (let i = from; i < to; i++) {
    const b = chunk[i] as number;
    q += b < 0x80 ? 1 : b < 0xc0 ? 0 : b < 0xe0 ? 2 : b < 0xf0 ? 4 : 8;
  }
  return q;
}

/** The completion tokens of a whole reply's generated text, estimated as JsonRewriter reads them (a reply without usage). */
export function completionEstimate(reply: Buffer): number {
  const rw = new JsonRewriter('');
  rw.push(reply);
  return rw.completionEstimate;
}

/**
 * The exchange's relay for a non-streamed 2xx reply past what is parsed whole (exchange.ts, RelaySink). The
 * reply, renamed, is held until it ends or outgrows `hold` bytes: a reply that ends within them is answered
 * whole by the forwarder (`held`, with its length and its cost). Past them the head goes with the bytes
 * held, the rest as it arrives, at the pace the client reads (ClientPacer) — without `content-length` (the
 * body goes chunked) or `x-tollgate-response-cost` (the usage comes at the reply's end) — and from then on
 * the exchange's whole-attempt bound counts only the time the backend is read (Exchange.headSent), and a
 * client that reads nothing for `stallMs` is cut off. A reply that breaks off after its head went, or turns out not to be one JSON
 * object, ends with the client's connection closed before the body's end: an HTTP/1.1 client sees its
 * chunked body end unfinished; an HTTP/1.0 one, whose body the connection's end delimits, only a JSON text
 * cut short.
 */
export class JsonRelay implements RelaySink {
  readonly json: JsonRewriter;
  /** The head went to the client: from here on, whatever happens, the client has this reply. */
  sent = false;
  /** The renamed reply, while it is held (not sent). */
  readonly held = new ByteList();
  readonly #res: HttpResponse;
  readonly #client: ClientLink;
  readonly #head: string[];
  readonly #pacer: ClientPacer;
  readonly #hold: number;
  #exchange: Exchange | undefined;
  #refused = false;

  constructor(opts: {
    res: HttpResponse;
    client: ClientLink;
    requestId: string;
    extra: readonly (readonly [string, string])[] | undefined;
    alias: string;
    stallMs: number;
    hold: number;
  }) {
    this.#res = opts.res;
    this.#client = opts.client;
    this.#hold = opts.hold;
    this.json = new JsonRewriter(opts.alias);
    this.#pacer = new ClientPacer(opts.res, opts.stallMs);
    this.#head = ['content-type', 'application/json', 'x-tollgate-request-id', opts.requestId, 'x-request-id', opts.requestId];
    if (opts.extra !== undefined) for (const [k, v] of opts.extra) this.#head.push(k, v);
  }

  start(exchange: Exchange, held: readonly Buffer[]): boolean {
    this.#exchange = exchange;
    this.#pacer.exchange = exchange;
    let ok = true;
    for (const c of held) ok = this.data(c) && ok;
    return ok;
  }

  data(chunk: Buffer): boolean {
    const out = this.json.push(chunk);
    if (this.#refuse(this.json.malformed)) return true;
    if (this.sent) return out.length === 0 || this.#pacer.write(out);
    this.held.push(out);
    if (this.held.length <= this.#hold) return true;
    // An error body sent with a 2xx: nothing went to the client yet, so the forwarder may try elsewhere.
    if (this.#refuse(this.json.errorBody ? 'an error body with a 2xx status' : undefined)) return true;
    this.#res.writeHead(200, this.#head);
    this.sent = true;
    this.#exchange?.headSent();
    let ok = true;
    for (const b of this.held.list()) ok = this.#pacer.write(b);
    this.held.clear();
    return ok;
  }

  /** Ends the exchange for `why` (once), from outside the backend client's callback. */
  #refuse(why: string | undefined): boolean {
    if (why === undefined) return false;
    if (!this.#refused) {
      this.#refused = true;
      this.held.clear();
      queueMicrotask(() => this.#exchange?.abort(codedError('MALFORMED_REPLY', `the reply is ${why}`)));
    }
    return true;
  }

  /** Ends the client's reply once its head went: whole when the backend's was, else its connection closed. */
  end(err: Error | undefined): void {
    this.#pacer.stop();
    if (!this.sent) {
      if (err !== undefined) this.held.clear();
      return;
    }
    if (this.#client.gone) return;
    if (err === undefined && this.json.complete) this.#res.end();
    else this.#res.destroy();
  }
}
