/**
 * Envoy's CheckRequest → RequestFacts, and an Authorization → CheckResponse (envoy.service.auth.v3).
 *
 * Allowed: `status.code = 0` with an OkHttpResponse whose identity headers are set with
 * `append_action: OVERWRITE_IF_EXISTS_OR_ADD` (Envoy's default, APPEND_IF_EXISTS_OR_ADD, would keep a
 * client-sent `x-tollgate-user` beside ours), and `headers_to_remove` for the credentials and any other
 * client-sent `x-tollgate-*` (Envoy applies `headers` first, then `headers_to_remove`).
 * Denied: gRPC OK carrying `status.code ≠ 0` and a DeniedHttpResponse with the contract's status, OpenAI
 * error JSON and headers. Faults are gRPC errors, which Envoy answers with `status_on_error`.
 */
import type { RequestFacts, Authorization } from '../authorizer/authorizer.js';
import { ERRORS, errorBody } from '../errors/codes.js';

/** envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD */
const OVERWRITE_IF_EXISTS_OR_ADD = 2;

/** The decoded shape of our trimmed CheckRequest (protobufjs, keepCase). */
interface DecodedCheckRequest {
  attributes?: {
    source?: { address?: { socket_address?: { address?: string } } };
    request?: {
      http?: {
        id?: string;
        method?: string;
        headers?: Record<string, string>;
        header_map?: { headers?: Array<{ key?: string; value?: string; raw_value?: Uint8Array }> };
        path?: string;
        host?: string;
        body?: string;
        raw_body?: Uint8Array;
      };
    };
    context_extensions?: Record<string, string>;
  };
}

export class MalformedCheckRequest extends Error {
  readonly code = 'MALFORMED_CHECK_REQUEST';
}

const EMPTY: Readonly<Record<string, string>> = Object.freeze({});
const utf8 = new TextDecoder();

/** Reads the request the way Envoy sends it: `headers` or `header_map` (encode_raw_headers), `body` or `raw_body` (pack_as_bytes). */
export function factsFromCheckRequest(message: unknown): RequestFacts {
  const http = (message as DecodedCheckRequest).attributes?.request?.http;
  if (http === undefined) throw new MalformedCheckRequest('CheckRequest has no attributes.request.http');
  let headers: Readonly<Record<string, string>>;
  const raw = http.header_map?.headers;
  if (raw !== undefined && raw.length > 0) {
    const joined = Object.create(null) as Record<string, string>;
    for (const h of raw) {
      if (h.key === undefined || h.key === '') continue;
      const name = h.key.toLowerCase();
      const value = h.raw_value !== undefined && h.raw_value.length > 0 ? utf8.decode(h.raw_value) : (h.value ?? '');
      const prev = joined[name];
      // Repeated headers arrive as separate entries; join them as Envoy does in the `headers` map.
      joined[name] = prev === undefined ? value : `${prev},${value}`;
    }
    headers = joined;
  } else {
    headers = http.headers ?? EMPTY;
  }
  const rawBody = http.raw_body;
  const body = rawBody !== undefined && rawBody.length > 0 ? rawBody : http.body !== undefined && http.body !== '' ? http.body : undefined;
  return {
    method: http.method || headers[':method'] || 'GET',
    path: http.path || headers[':path'] || '/',
    headers,
    body,
    partialBody: headers['x-envoy-auth-partial-body'] === 'true',
    contextExtensions: (message as DecodedCheckRequest).attributes?.context_extensions ?? EMPTY,
    // What Envoy saw as the downstream peer (the client, or the address it trusts in x-forwarded-for).
    source: (message as DecodedCheckRequest).attributes?.source?.address?.socket_address?.address,
  };
}

interface HeaderOption {
  header: { key: string; value: string };
  append_action: number;
}

function set(key: string, value: string): HeaderOption {
  return { header: { key, value }, append_action: OVERWRITE_IF_EXISTS_OR_ADD };
}

/** Builds the CheckResponse object for protobufjs to encode. */
export function checkResponse(auth: Authorization, facts: RequestFacts, jwtHeader: string): object {
  const decision = auth.decision;
  if (!decision.allow) {
    const spec = ERRORS[decision.code];
    // x-request-id too: the OpenAI SDKs read it as the request's id (`request_id` on their errors).
    const headers = [
      set('content-type', 'application/json'),
      set('x-tollgate-request-id', auth.requestId),
      set('x-request-id', auth.requestId),
    ];
    if (spec.headers !== undefined) for (const [k, v] of Object.entries(spec.headers)) headers.push(set(k, v));
    if (auth.headers !== undefined) for (const [k, v] of auth.headers) headers.push(set(k, v));
    return {
      status: { code: spec.grpc, message: decision.code },
      denied_response: {
        status: { code: spec.status },
        headers,
        body: errorBody(decision.code, decision.message),
      },
    };
  }
  const p = decision.principal;
  const headers: HeaderOption[] = [set('x-tollgate-request-id', auth.requestId)];
  if (auth.context !== undefined) headers.push(set('x-tollgate-context', auth.context));
  if (p.keyId !== undefined) headers.push(set('x-tollgate-key', p.keyId));
  if (p.keyAlias !== undefined) headers.push(set('x-tollgate-key-alias', headerSafe(p.keyAlias)));
  if (p.userId !== undefined) headers.push(set('x-tollgate-user', headerSafe(p.userId)));
  if (p.teamId !== undefined) headers.push(set('x-tollgate-team', headerSafe(p.teamId)));
  if (decision.body !== undefined) headers.push(set('x-tollgate-model', headerSafe(decision.body.model)));
  if (decision.deployment !== undefined) headers.push(set('x-tollgate-deployment', decision.deployment.id));
  const remove = ['authorization', jwtHeader];
  for (const name in facts.headers) {
    if (name.startsWith('x-tollgate-') && !headers.some((h) => h.header.key === name)) remove.push(name);
  }
  // x-ratelimit-* go on the client's response (OkHttpResponse.response_headers_to_add).
  const toClient = auth.headers === undefined || auth.headers.length === 0 ? undefined : auth.headers.map(([k, v]) => set(k, v));
  return { status: { code: 0 }, ok_response: { headers, headers_to_remove: remove, response_headers_to_add: toClient } };
}

/** Header values must not carry control characters (a claim could hold a newline). */
function headerSafe(v: string): string {
  // eslint-disable-next-line no-control-regex
  return /[\x00-\x1f\x7f]/.test(v) ? v.replace(/[\x00-\x1f\x7f]/g, ' ') : v;
}
