/**
 * Rewrites a backend's SSE stream (OpenAI / vLLM `data: <json>\n\n` events) on its way to the client,
 * event by event, without buffering the reply:
 * - learns `usage` from the usage chunk (`choices: []`, sent because tollgate adds
 *   `stream_options.include_usage`), and drops that chunk when the client did not ask for it;
 * - renders an in-stream error (`data: {"error": {...}}`, vLLM's failure after the 200) in OpenAI's shape;
 * - counts content chunks, so a stream cut short is charged for what was streamed.
 */
import { StringDecoder } from 'node:string_decoder';
import { ERRORS, type ErrorCode } from '../errors/codes.js';

/** The tokens a reply reports in its `usage`, streamed or not. */
export interface Usage {
  readonly promptTokens: number;
  readonly completionTokens: number;
}

/**
 * A reply's `usage` member as tollgate reads it, streamed or not and whatever the reply's size: an object
 * (its token counts, 0 for one missing or not a count), or undefined — absent, `null`, or not an object —
 * and then the reply is charged for its prompt and generated text, estimated (forward.ts).
 */
export function replyUsage(v: unknown): Usage | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const u = v as Record<string, unknown>;
  return { promptTokens: num(u['prompt_tokens']), completionTokens: num(u['completion_tokens']) };
}

const DONE = 'data: [DONE]\n\n';
/** What a backend's SSE comment (a keep-alive) is passed on as: the client's SDK ignores it, its proxies see bytes. */
export const PING = ': ping\n\n';
/** An event longer than this is collected in pieces (SseRewriter.#parts). */
const LONG_EVENT = 64 * 1024;
/**
 * The longest event passed on, each held whole until its end (it is parsed as one JSON object): vLLM's first
 * chunk of a completion with `echo` holds the whole prompt, and with logprobs more.
 */
const MAX_EVENT = 64 * 1024 * 1024;

export class SseRewriter {
  readonly #keepUsage: boolean;
  readonly #model: string;
  readonly #scrub: ((message: string) => string) | undefined;
  #buffer = '';
  usage: Usage | undefined;
  /** Chunks that carried text: about a token each, from a vLLM that sends every token as it comes. */
  contentChunks = 0;
  /** The streamed text's tokens in quarters (estimateTokens), for chunks that carry several tokens each. */
  #contentQuarters = 0;
  sawDone = false;
  sawError = false;
  /** A choice ended (a finish_reason): the answer is whole, [DONE] or not. */
  sawFinish = false;
  /** Keeps a character split across chunks for the next one (Node's, a fraction of TextDecoder's cost here). */
  readonly #decoder = new StringDecoder('utf8');

  /**
   * `keepUsage`: the client asked for `include_usage`. `model`: the alias the client sent, put back in every
   * chunk. `scrub`: what else a backend's error message loses before the client reads it (the deployment's
   * own host and api_key), as for a non-streamed error.
   */
  constructor(opts: { keepUsage: boolean; model: string; scrub?: (message: string) => string }) {
    this.#keepUsage = opts.keepUsage;
    this.#model = opts.model;
    this.#scrub = opts.scrub;
  }

  /** The completion tokens streamed so far, estimated (no usage report came): a token a chunk at least. */
  get completionEstimate(): number {
    return Math.max(this.contentChunks, Math.ceil(this.#contentQuarters / 4));
  }

  /**
   * An event longer than LONG_EVENT, in the pieces it came in until its end arrives: appended to one string and
   * searched again on every chunk, a multi-megabyte event (vLLM's echo of a long prompt) would cost the square
   * of its length.
   */
  #parts: string[] = [];
  #partsLength = 0;
  /** The long event's last three characters: its end may straddle pieces of a character or two each. */
  #tail = '';

  /** The backend sent what no OpenAI stream holds (an event past MAX_EVENT): the rest is not read. */
  malformed = false;

  /** Feeds backend bytes; returns the text to send to the client now ('' when nothing is complete yet). */
  push(chunk: Uint8Array): string {
    if (this.malformed) return '';
    const text = this.#decoder.write(chunk);
    if (this.#parts.length > 0) {
      // Still inside the long event unless this text ends it (its end may straddle the seam).
      const seam = this.#tail + text;
      if (eventEnd(seam) === undefined) {
        this.#parts.push(text);
        this.#partsLength += text.length;
        this.#tail = seam.slice(-3);
        return this.#partsLength > MAX_EVENT ? this.#malformed() : '';
      }
      this.#buffer = this.#parts.join('') + text;
      this.#parts = [];
      this.#partsLength = 0;
    } else this.#buffer += text;
    let out = '';
    for (;;) {
      const end = eventEnd(this.#buffer);
      if (end === undefined) break;
      const event = this.#buffer.slice(0, end.at);
      this.#buffer = this.#buffer.slice(end.at + end.length);
      out += this.#event(event);
    }
    if (this.#buffer.length > MAX_EVENT) return out + this.#malformed();
    if (this.#buffer.length > LONG_EVENT) {
      this.#parts = [this.#buffer];
      this.#partsLength = this.#buffer.length;
      this.#tail = this.#buffer.slice(-3);
      this.#buffer = '';
    }
    return out;
  }

  /** One event larger than MAX_EVENT is not an OpenAI stream. */
  #malformed(): string {
    this.malformed = true;
    this.#buffer = '';
    this.#parts = [];
    this.#partsLength = 0;
    this.sawError = true;
    return errorEvent('The model server sent a malformed stream.');
  }

  /**
   * The backend ended: what remains, and the error/[DONE] a well-formed OpenAI stream ends with. A stream
   * that broke off, or ended without [DONE] before any choice finished, gets an error event first: the
   * client would otherwise take a cut answer for a whole one.
   */
  end(cutShort: boolean, cutEvent?: string): string {
    if (this.#parts.length > 0) {
      this.#buffer = this.#parts.join('');
      this.#parts = [];
      this.#partsLength = 0;
    }
    let out = this.#buffer.trim() === '' ? '' : this.#event(this.#buffer);
    this.#buffer = '';
    if ((cutShort || !this.sawFinish) && !this.sawDone && !this.sawError) {
      this.sawError = true;
      out += cutEvent ?? errorEvent('The model server closed the stream before it finished.');
    }
    if (!this.sawDone) out += DONE;
    return out;
  }

  /**
   * withModel, with what it found kept for the next event: the chunks of one stream share their id,
   * created and model (vLLM, OpenAI), so an event that starts with the same text up to the model's value
   * has its model member at the same top-level place, and needs only the checks of its rest.
   */
  #renamed(data: string, o: Record<string, unknown>): string | undefined {
    const p = this.#prefixIn;
    if (p !== undefined && data.startsWith(p) && !data.includes('"model"', p.length) && !data.includes('\\u006', p.length))
      return this.#prefixOut + data.slice(p.length);
    if (o['model'] === this.#model) return data;
    const span = modelSpan(data, o);
    if (span === undefined) return undefined;
    this.#prefixIn = data.slice(0, span.end);
    this.#prefixOut = `${data.slice(0, span.at)}"model":${JSON.stringify(this.#model)}`;
    return this.#prefixOut + data.slice(span.end);
  }

  /** The last event's text up to the end of its model member, and that text with the model renamed. */
  #prefixIn: string | undefined;
  #prefixOut = '';

  #event(raw: string): string {
    let data = '';
    let comment = false;
    // The usual event is one `data:` line (vLLM, OpenAI): taken as it is, without splitting.
    if (!raw.includes('\n')) {
      if (raw.startsWith('data:')) data = raw.slice(raw[5] === ' ' ? 6 : 5);
      else comment = raw.startsWith(':');
    } else {
      for (const line of raw.split(/\r?\n/)) {
        if (line.startsWith('data:')) data += line.slice(line[5] === ' ' ? 6 : 5);
        else if (line.startsWith(':')) comment = true;
        // `event:`, `id:` and `retry:` lines are not used by OpenAI streams.
      }
    }
    // A keep-alive comment (sse-starlette's `: ping - <time>` under Ray Serve, every 15 s) keeps the
    // client's proxies from timing out a long prefill: passed on, as tollgate's own fixed text.
    if (data === '') return comment ? PING : '';
    if (data === '[DONE]') {
      this.sawDone = true;
      return DONE;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      this.sawError = true;
      return errorEvent('The model server sent a malformed stream.');
    }
    if (typeof parsed !== 'object' || parsed === null) return '';
    const o = parsed as Record<string, unknown>;
    if (o['error'] !== undefined || o['object'] === 'error') {
      this.sawError = true;
      const message = backendMessage(o);
      return errorEvent(message === undefined ? 'The model server failed while generating.' : (this.#scrub?.(message) ?? message));
    }
    const usage = replyUsage(o['usage']);
    if (usage !== undefined) this.usage = usage;
    const choices = o['choices'];
    if (Array.isArray(choices)) {
      if (choices.length === 0 && !this.#keepUsage) return '';
      for (const c of choices) {
        const choice = c as { delta?: Delta | null; text?: unknown; finish_reason?: unknown } | null;
        // A delta that is not an object (null) carries no content.
        const delta = choice?.delta;
        const quarters = delta === undefined ? textQuarters(choice?.text) : delta === null ? 0 : deltaQuarters(delta);
        if (quarters > 0) {
          this.contentChunks++;
          this.#contentQuarters += quarters;
        }
        if (typeof choice?.finish_reason === 'string') this.sawFinish = true;
      }
    }
    if (!this.#keepUsage && 'usage' in o) delete o['usage'];
    // Most chunks need only their model renamed: done in the text, the rest passed on as the backend wrote it.
    else {
      const renamed = this.#renamed(data, o);
      if (renamed !== undefined) return `data: ${renamed}\n\n`;
    }
    o['model'] = this.#model;
    return `data: ${JSON.stringify(o)}\n\n`;
  }
}

/**
 * `json` (the text `parsed` was parsed from) with its top-level "model" string set to `alias`, edited in the
 * text; undefined when that cannot be done safely and the object must be serialized again: no model, a model
 * written other than `"model":"…"` (spaces, escapes), a first `"model"` that is not the top-level member (a
 * nested one), a second `"model"` anywhere (a duplicate key, which JSON.parse would take instead), or a
 * `\u006…` escape anywhere (one could spell a duplicate `model` key).
 */
export function withModel(json: string, parsed: Record<string, unknown>, alias: string): string | undefined {
  const model = parsed['model'];
  if (model === alias && typeof model === 'string') return json;
  const span = modelSpan(json, parsed);
  if (span === undefined) return undefined;
  return `${json.slice(0, span.at)}"model":${JSON.stringify(alias)}${json.slice(span.end)}`;
}

/** Where withModel may edit: the top-level `"model":"…"` member of `json`, from its key to the end of its value. */
function modelSpan(json: string, parsed: Record<string, unknown>): { at: number; end: number } | undefined {
  const model = parsed['model'];
  if (typeof model !== 'string') return undefined;
  const needle = `"model":${JSON.stringify(model)}`;
  const at = json.indexOf('"model"');
  if (at < 0 || !json.startsWith(needle, at) || json.includes('"model"', at + needle.length) || json.includes('\\u006')) return undefined;
  if (!atTopLevel(json, at)) return undefined;
  return { at, end: at + needle.length };
}

/** A JSON object's text parsed; undefined when it is not JSON or not an object (an array, a string, null). */
export function parseObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `json` (the object text `parsed` was parsed from) with its top-level `model` set to `model`, the members of
 * `set` set (replaced where they are, else appended) and those named in `remove` left out — edited in the
 * text, so every other member keeps the client's bytes: a number past 2^53 (a 64-bit `seed`) reaches the
 * backend as sent, where JSON.parse and JSON.stringify would round it. Undefined when the text repeats a
 * member (JSON.parse kept the last, which the authorizer saw; a backend might take the first): then the
 * caller serializes `parsed`, which holds what was decided on.
 */
export function spliceJson(
  json: string,
  parsed: Record<string, unknown>,
  model: string,
  set: Readonly<Record<string, unknown>>,
  remove: readonly string[] = [],
): string | undefined {
  const members = topLevelMembers(json);
  if (members === undefined || members.length !== Object.keys(parsed).length) return undefined;
  const parts: string[] = [];
  let hasModel = false;
  const setHere = new Set<string>();
  for (const m of members) {
    if (remove.includes(m.key)) continue;
    let value: string | undefined;
    if (m.key === 'model') {
      hasModel = true;
      value = JSON.stringify(model);
    } else if (Object.hasOwn(set, m.key)) {
      setHere.add(m.key);
      value = JSON.stringify(set[m.key]);
      if (value === undefined) continue;
    }
    parts.push(value === undefined ? json.slice(m.start, m.valueEnd) : json.slice(m.start, m.valueStart) + value);
  }
  if (!hasModel) parts.unshift(`"model":${JSON.stringify(model)}`);
  for (const [k, v] of Object.entries(set)) {
    if (setHere.has(k) || remove.includes(k) || v === undefined) continue;
    parts.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
  }
  return `{${parts.join(',')}}`;
}

/** A top-level member of a JSON object text: its key (decoded), where it starts, and its value's extent. */
interface Member {
  readonly key: string;
  readonly start: number;
  readonly valueStart: number;
  readonly valueEnd: number;
}

/** The top-level members of a valid JSON object text, in order as written (a repeated key twice). */
function topLevelMembers(json: string): Member[] | undefined {
  let i = skipSpace(json, 0);
  if (json.charCodeAt(i) !== 0x7b) return undefined;
  i++;
  const out: Member[] = [];
  for (;;) {
    i = skipSpace(json, i);
    const c = json.charCodeAt(i);
    if (c === 0x7d) return out;
    if (c === 0x2c) {
      i++;
      continue;
    }
    if (c !== 0x22) return undefined;
    const keyEnd = stringEnd(json, i);
    const raw = json.slice(i + 1, keyEnd);
    const key = raw.includes('\\') ? (JSON.parse(json.slice(i, keyEnd + 1)) as string) : raw;
    let j = skipSpace(json, keyEnd + 1);
    if (json.charCodeAt(j) !== 0x3a) return undefined;
    j = skipSpace(json, j + 1);
    const valueEnd = valueEndAt(json, j);
    out.push({ key, start: i, valueStart: j, valueEnd });
    i = valueEnd;
  }
}

function skipSpace(json: string, i: number): number {
  for (;;) {
    const c = json.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
}

/** Where the JSON value starting at `at` ends (exclusive). */
function valueEndAt(json: string, at: number): number {
  const c = json.charCodeAt(at);
  if (c === 0x22) return stringEnd(json, at) + 1;
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    for (let k = at; k < json.length; k++) {
      const ch = json.charCodeAt(k);
      if (ch === 0x22) k = stringEnd(json, k);
      else if (ch === 0x7b || ch === 0x5b) depth++;
      else if ((ch === 0x7d || ch === 0x5d) && --depth === 0) return k + 1;
    }
    return json.length;
  }
  let k = at;
  for (; k < json.length; k++) {
    const ch = json.charCodeAt(k);
    if (ch === 0x2c || ch === 0x7d || ch === 0x5d || ch === 0x20 || ch === 0x0a || ch === 0x0d || ch === 0x09) break;
  }
  return k;
}

/** Whether position `at` of a JSON object text lies directly in its outermost object, outside any string. */
function atTopLevel(json: string, at: number): boolean {
  let depth = 0;
  for (let i = 0; i < at; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) {
      i = stringEnd(json, i);
      if (i >= at) return false; // `at` is inside this string
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return depth === 1;
}

/**
 * The index of the quote that closes the JSON string opened at `open` (json.length if none does). Found by
 * indexOf, not character by character: most of a request's text is the strings of its messages. A quote
 * closes the string unless an odd run of backslashes stands before it (`\\"` is an escaped backslash, then
 * the end); in valid JSON no other escape holds a backslash or a quote.
 */
function stringEnd(json: string, open: number): number {
  let from = open + 1;
  for (;;) {
    const q = json.indexOf('"', from);
    if (q < 0) return json.length;
    let k = q - 1;
    while (k > open && json.charCodeAt(k) === 0x5c) k--;
    if ((q - 1 - k) % 2 === 0) return q;
    from = q + 1;
  }
}

function eventEnd(buf: string): { at: number; length: number } | undefined {
  const lf = buf.indexOf('\n\n');
  const crlf = buf.indexOf('\r\n\r\n');
  if (lf < 0 && crlf < 0) return undefined;
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return { at: crlf, length: 4 };
  return { at: lf, length: 2 };
}

/**
 * Tokens in `text`, estimated without a tokenizer (a stream cut before its usage report): about four ASCII
 * characters a token, two for the alphabets UTF-8 writes in two bytes (Cyrillic, Greek, Arabic, Hebrew),
 * one for each character past them (CJK, Indic, Thai: a token or more each in Llama's and Qwen's
 * vocabularies; an emoji's two UTF-16 units count two). Four characters a token for all of them charged
 * Chinese a quarter of what it used.
 */
export function estimateTokens(text: string): number {
  return Math.ceil(quarterTokens(text) / 4);
}

/** What a chat delta generated: its content, its reasoning (vLLM's `reasoning_content`, or `reasoning`) and its tool calls' arguments. */
interface Delta {
  content?: unknown;
  reasoning_content?: unknown;
  reasoning?: unknown;
  tool_calls?: unknown;
}

/** The tokens a delta carries, in quarters (quarterTokens): every kind of generated text counts. */
function deltaQuarters(d: Delta): number {
  let q = textQuarters(d.content) + textQuarters(d.reasoning_content ?? d.reasoning);
  if (Array.isArray(d.tool_calls))
    for (const t of d.tool_calls as { function?: { name?: unknown; arguments?: unknown } | null }[])
      q += textQuarters(t?.function?.name) + textQuarters(t?.function?.arguments);
  return q;
}

function textQuarters(v: unknown): number {
  return typeof v === 'string' ? quarterTokens(v) : 0;
}

function quarterTokens(text: string): number {
  let quarters = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    quarters += c < 0x80 ? 1 : c < 0x800 ? 2 : 4;
  }
  return quarters;
}

/** An SSE event the OpenAI SDKs raise as an APIError. */
/** An SSE event holding the contract's error (`upstream_error` unless another code is named). */
export function errorEvent(message: string, code: ErrorCode = 'upstream_error'): string {
  return `data: ${JSON.stringify({ error: { message, type: ERRORS[code].type, param: null, code } })}\n\n`;
}

/** vLLM's nested `{"error": {"message"}}` or its older flat `{"object": "error", "message"}`. */
export function backendMessage(o: Record<string, unknown>): string | undefined {
  const err = o['error'];
  const msg =
    typeof err === 'object' && err !== null
      ? (err as Record<string, unknown>)['message']
      : typeof err === 'string'
        ? err
        : (o['message'] ?? fastApiDetail(o['detail']));
  return typeof msg === 'string' && msg !== '' ? withoutAddresses(withoutUrls(withoutEchoes(msg.slice(0, 1000)))) : undefined;
}

/**
 * The request field a backend's error names (`param` of vLLM's nested or flat error, OpenAI's own field):
 * a field name such as `max_tokens` or `messages.0.content`, passed on only when it looks like one, so no
 * value of the request (or anything else the backend put there) reaches the client.
 */
export function backendParam(o: Record<string, unknown>): string | undefined {
  const err = o['error'];
  const param = typeof err === 'object' && err !== null ? (err as Record<string, unknown>)['param'] : o['param'];
  return typeof param === 'string' && PARAM.test(param) ? param : undefined;
}

/** A request field's name or path: `max_tokens`, `messages.0.content`, `tools[0].function`. */
const PARAM = /^[A-Za-z_][\w.[\]-]{0,63}$/;

/**
 * A message without the URLs it holds: the client's own (an image vLLM could not fetch, quoted back) or the
 * backend's and its neighbours' (internal addresses), neither of which the client is told.
 */
function withoutUrls(msg: string): string {
  return msg.includes('://') ? msg.replace(URL_IN_TEXT, '…') : msg;
}

/** A scheme, `://`, and what follows up to a space, quote or bracket, without the punctuation ending a sentence. */
const URL_IN_TEXT = /\b[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^\s'"`<>()[\]{}]*[^\s'"`<>()[\]{}.,;:!?])?/g;

/**
 * A message without the network addresses it names outside a URL: a Ray Serve or proxy error quoting a
 * replica's `10.0.3.7:8000`, `[fd00::7]:8000`, `llama-b.models.svc.cluster.local` or `localhost:8000` tells
 * the client the cluster's layout. IPv4 needs four octets of at most 255 (a version such as `0.10.2` stays);
 * IPv6 needs `::` or all eight groups, and a digit outside brackets (a time such as `12:30:45` and C++'s
 * `A::B` stay); a name is cut when it ends in a cluster-internal suffix or carries a port.
 */
function withoutAddresses(msg: string): string {
  return /[\d:.]/.test(msg) ? msg.replace(ADDRESS_IN_TEXT, '…') : msg;
}

const OCTET = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;
const IPV4 = String.raw`${OCTET}(?:\.${OCTET}){3}`;
const HEX = '[0-9A-Fa-f]{1,4}';
const GROUPS = `${HEX}(?::${HEX})*`;
/** All eight groups, or `::` with a group on at least one side. */
const IPV6 = `(?:(?:${HEX}:){7}${HEX}|${GROUPS}::(?:${GROUPS})?|::${GROUPS})`;
const PORT = String.raw`(?::\d{1,5})?`;
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const ADDRESS_IN_TEXT = new RegExp(
  [
    String.raw`(?<![\w.])${IPV4}${PORT}(?!\w|\.\d)`,
    String.raw`\[${IPV6}(?::${IPV4})?(?:%[\w.-]+)?\]${PORT}`,
    String.raw`(?<![\w:])(?=[0-9A-Fa-f:]*\d)${IPV6}(?::${IPV4})?(?:%[\w.-]+)?(?![\w:]|\.\d)`,
    String.raw`(?<![\w.-])(?:${LABEL}\.)+(?:local|internal|svc|localdomain|lan)\b${PORT}`,
    String.raw`(?<![\w.-])localhost:\d{1,5}\b`,
    String.raw`(?<![\w.-])(?:${LABEL}\.)+${LABEL}:\d{2,5}\b`,
    // A Kubernetes service's short name with a four-digit port (`vllm-llama:8000`): one hyphenated label. Not
    // other digits, which are a LoRA adapter's (`base-model:12345`) or a client's string (`END-OF-TEXT:100`).
    String.raw`(?<![\w.-])[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9-]*[A-Za-z0-9]:[1-9]\d{3}\b`,
  ].join('|'),
  'gi',
);

/**
 * FastAPI's own error body (a 422 before vLLM's handlers, older vLLM's 415): `{"detail": "…"}`, or a list of
 * `{loc, msg, input}` — where and what, never its `input` (the request's own values).
 */
function fastApiDetail(detail: unknown): string | undefined {
  if (typeof detail === 'string') return detail;
  if (!Array.isArray(detail)) return undefined;
  const parts: string[] = [];
  for (const d of detail.slice(0, 5) as unknown[]) {
    if (typeof d !== 'object' || d === null) continue;
    const { loc, msg } = d as { loc?: unknown; msg?: unknown };
    if (typeof msg !== 'string') continue;
    const where = Array.isArray(loc) ? loc.filter((x) => typeof x === 'string' || typeof x === 'number').join('.') : '';
    parts.push(where === '' ? msg : `${where}: ${msg}`);
  }
  return parts.length === 0 ? undefined : parts.join('; ');
}

/**
 * A backend's message without the request values it quotes: pydantic's `input_value=…` (vLLM's request
 * validation, `str(exc)`, up to its `, input_type=`, else to the end) and the `value=…` of vLLM's
 * `VLLMValidationError` (its closing `(parameter=…, value=…)`) can hold the prompt, which the contract's
 * messages never echo. What is wrong, and where, stays. One pass over the text (it is cut to 1,000
 * characters before).
 */
export function withoutEchoes(msg: string): string {
  if (!msg.includes('value=')) return msg;
  let out = '';
  let at = 0;
  for (;;) {
    const start = msg.indexOf('input_value=', at);
    if (start < 0) break;
    const end = msg.indexOf(', input_type=', start);
    out += `${msg.slice(at, start)}input_value=…`;
    at = end < 0 ? msg.length : end;
  }
  out += msg.slice(at);
  // VLLMValidationError's str(): "<message> (parameter=<name>, value=<value>)" or "<message> (value=<value>)".
  const trimmed = out.trimEnd();
  if (!trimmed.endsWith(')')) return out;
  let value: number;
  const named = trimmed.lastIndexOf(' (parameter=');
  if (named >= 0) {
    value = trimmed.indexOf(', value=', named);
    if (value < 0) return out;
    value += 2;
  } else {
    value = trimmed.lastIndexOf(' (value=');
    if (value < 0) return out;
    value += 2;
  }
  return `${trimmed.slice(0, value)}value=…)`;
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0;
}
