/**
 * Envoy's local reply mapping (HttpConnectionManager.local_reply_config), as documented
 * (configuration/http/http_conn_man/local_reply): every reply Envoy generates itself — a Check's denial
 * or failure included — goes through the mappers; the first whose filter matches may set the status, and
 * its `body_format_override` replaces the body and its content type. A `response_flag_filter` matches when
 * the reply carries any of its flags; a `status_code_filter` compares the status; an `and_filter` matches
 * when all of its filters do. Filter kinds the tollgate
 * config does not use are refused rather than guessed.
 */
import type { Json, JsonObject } from './envoy-bootstrap.js';

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The value at `keys`, or undefined (a field left at its default is absent from the normalised JSON). */
function get(root: Json | undefined, ...keys: string[]): Json | undefined {
  let cur = root;
  for (const k of keys) cur = isObject(cur) ? cur[k] : undefined;
  return cur;
}

function array(v: Json | undefined): Json[] {
  return Array.isArray(v) ? v : [];
}

export interface LocalReply {
  readonly status: number;
  /** Envoy's response flags of the stream: UAEX for a Check's denial or failure, UF for a connect failure… */
  readonly flags: readonly string[];
  readonly body: string;
  readonly contentType: string | undefined;
}

/** The mappers of an HttpConnectionManager (its typed_config, normalised), in order. */
export function localReplyMappers(manager: JsonObject): JsonObject[] {
  const config = manager['local_reply_config'];
  if (!isObject(config)) return [];
  if (config['body_format'] !== undefined) throw new Error('a top-level body_format rewrites every local reply: not modelled');
  return array(config['mappers']).filter(isObject);
}

function matches(filter: Json, reply: LocalReply): boolean {
  if (!isObject(filter)) throw new Error('a mapper without a filter');
  const all = filter['and_filter'];
  if (isObject(all)) {
    const filters = array(all['filters']);
    if (filters.length < 2) throw new Error('an and_filter takes two filters or more');
    return filters.every((f) => matches(f, reply));
  }
  const flags = filter['response_flag_filter'];
  if (isObject(flags)) {
    const wanted = array(flags['flags']).map(String);
    return wanted.length === 0 ? reply.flags.length > 0 : wanted.some((f) => reply.flags.includes(f));
  }
  const status = filter['status_code_filter'];
  if (isObject(status)) {
    const given = get(status, 'comparison', 'op');
    const op = typeof given === 'string' ? given : 'EQ'; // EQ is the enum's default, absent once normalised
    const value = Number(get(status, 'comparison', 'value', 'default_value'));
    if (op === 'EQ') return reply.status === value;
    if (op === 'GE') return reply.status >= value;
    if (op === 'LE') return reply.status <= value;
    throw new Error(`status_code_filter op ${op}`);
  }
  throw new Error(`mapper filter ${Object.keys(filter).join(',')} is not modelled here`);
}

/** The reply as the client receives it after the mappers. */
export function mapLocalReply(mappers: readonly JsonObject[], reply: LocalReply): LocalReply {
  const m = mappers.find((x) => matches(x['filter'] ?? null, reply));
  if (m === undefined) return reply;
  const status = typeof m['status_code'] === 'number' ? m['status_code'] : reply.status;
  const format = m['body_format_override'];
  if (!isObject(format)) return { ...reply, status };
  const text = get(format, 'text_format_source', 'inline_string');
  if (typeof text !== 'string' || text.includes('%')) throw new Error('only a literal inline_string body is modelled');
  const contentType = format['content_type'];
  return { ...reply, status, body: text, contentType: typeof contentType === 'string' ? contentType : 'text/plain' };
}
