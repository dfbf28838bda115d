/**
 * Stands in for Envoy in tests: calls Check with Envoy's OWN protos (as shipped in @grpc/grpc-js-xds,
 * deps/envoy-api), and applies an OkHttpResponse with Envoy's documented header semantics.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const require = createRequire(import.meta.url);
/** deps/ of @grpc/grpc-js-xds: envoy-api, googleapis, protoc-gen-validate, xds. */
export const ENVOY_DEPS = path.join(path.dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
export const ENVOY_INCLUDE_DIRS = ['envoy-api', 'googleapis', 'protoc-gen-validate', 'xds'].map((d) => path.join(ENVOY_DEPS, d));

export interface EnvoyHeaderValueOption {
  header: { key: string; value: string; raw_value?: Buffer };
  append?: { value: boolean } | null;
  append_action: string;
  keep_empty_value?: boolean;
}

export interface EnvoyCheckResponse {
  status: { code: number; message: string } | null;
  http_response: 'ok_response' | 'denied_response' | undefined;
  ok_response?: {
    headers: EnvoyHeaderValueOption[];
    headers_to_remove: string[];
    response_headers_to_add: EnvoyHeaderValueOption[];
  };
  denied_response?: {
    status: { code: string } | null;
    headers: EnvoyHeaderValueOption[];
    body: string;
  };
}

export interface CheckInput {
  method?: string;
  path?: string;
  headers?: Record<string, string>;
  /** with_request_body, as a UTF-8 string (`body`). */
  body?: string;
  /** with_request_body + pack_as_bytes (`raw_body`). */
  rawBody?: Buffer;
  /** encode_raw_headers: send headers in header_map with raw_value instead of the headers map. */
  rawHeaders?: boolean;
  contextExtensions?: Record<string, string>;
  /** The downstream peer's address (attributes.source); 10.0.0.7 when unset. */
  source?: string;
}

type CheckFn = (req: unknown, cb: (err: grpc.ServiceError | null, res: EnvoyCheckResponse) => void) => void;

export class EnvoyCheckClient {
  readonly #client: grpc.Client;
  readonly #check: CheckFn;
  constructor(port: number) {
    const def = protoLoader.loadSync('envoy/service/auth/v3/external_auth.proto', {
      includeDirs: ENVOY_INCLUDE_DIRS,
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      envoy: { service: { auth: { v3: { Authorization: new (addr: string, creds: grpc.ChannelCredentials) => grpc.Client } } } };
    };
    const client = new pkg.envoy.service.auth.v3.Authorization(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    this.#client = client;
    this.#check = (client as unknown as { Check: CheckFn }).Check.bind(client);
  }

  /** Calls Check; resolves with the response (allow or denial), rejects with the gRPC error (a failure). */
  check(input: CheckInput): Promise<EnvoyCheckResponse> {
    return new Promise((resolve, reject) => {
      this.#check(checkRequest(input), (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  close(): void {
    this.#client.close();
  }
}

/** A CheckRequest as Envoy builds it for an HTTP request (attributes.request.http, plus a source peer). */
export function checkRequest(input: CheckInput): object {
  const method = input.method ?? 'POST';
  const p = input.path ?? '/v1/chat/completions';
  const headers: Record<string, string> = {
    ':authority': 'tollgate.example.com',
    ':method': method,
    ':path': p,
    ':scheme': 'https',
    'x-request-id': '7f8c1a52-6d1e-4b7a-9a55-1c2d3e4f5a6b',
    ...(input.headers ?? {}),
  };
  const bodyLength = input.rawBody?.length ?? (input.body === undefined ? 0 : Buffer.byteLength(input.body));
  if (bodyLength > 0 && headers['content-length'] === undefined) headers['content-length'] = String(bodyLength);
  const http: Record<string, unknown> = {
    id: '1234567890',
    method,
    path: p,
    host: 'tollgate.example.com',
    scheme: 'https',
    protocol: 'HTTP/1.1',
    size: String(bodyLength),
  };
  if (input.rawHeaders === true) {
    http['header_map'] = { headers: Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value) })) };
  } else {
    http['headers'] = headers;
  }
  if (input.rawBody !== undefined) http['raw_body'] = input.rawBody;
  else if (input.body !== undefined) http['body'] = input.body;
  return {
    attributes: {
      source: { address: { socket_address: { address: input.source ?? '10.0.0.7', port_value: 51234 } }, principal: '' },
      destination: { address: { socket_address: { address: '10.0.0.1', port_value: 10000 } } },
      request: { time: { seconds: String(Math.floor(Date.now() / 1000)), nanos: 0 }, http },
      context_extensions: input.contextExtensions ?? {},
    },
  };
}

/**
 * Applies an OkHttpResponse to the request headers the way Envoy's ext_authz filter does: each
 * HeaderValueOption by `append` when set (true appends, false overwrites), else by `append_action`
 * (default APPEND_IF_EXISTS_OR_ADD); then `headers_to_remove`.
 */
export function applyOkResponse(
  request: Record<string, string>,
  ok: NonNullable<EnvoyCheckResponse['ok_response']>,
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of Object.entries(request)) out.set(k.toLowerCase(), [v]);
  for (const opt of ok.headers) {
    const key = opt.header.key.toLowerCase();
    const value =
      opt.header.raw_value !== undefined && opt.header.raw_value.length > 0 ? opt.header.raw_value.toString() : opt.header.value;
    const existing = out.get(key);
    let action = opt.append_action;
    if (opt.append !== null && opt.append !== undefined)
      action = opt.append.value ? 'APPEND_IF_EXISTS_OR_ADD' : 'OVERWRITE_IF_EXISTS_OR_ADD';
    switch (action) {
      case 'APPEND_IF_EXISTS_OR_ADD':
        out.set(key, [...(existing ?? []), value]);
        break;
      case 'ADD_IF_ABSENT':
        if (existing === undefined) out.set(key, [value]);
        break;
      case 'OVERWRITE_IF_EXISTS_OR_ADD':
        out.set(key, [value]);
        break;
      case 'OVERWRITE_IF_EXISTS':
        if (existing !== undefined) out.set(key, [value]);
        break;
      default:
        throw new Error(`unknown append_action ${action}`);
    }
  }
  for (const name of ok.headers_to_remove) {
    if (name.startsWith(':') || name === 'host') continue; // Envoy cannot remove pseudo-headers or host
    out.delete(name.toLowerCase());
  }
  return out;
}

/** The denial's headers as a plain map. */
export function deniedHeaders(denied: NonNullable<EnvoyCheckResponse['denied_response']>): Record<string, string> {
  return Object.fromEntries(denied.headers.map((h) => [h.header.key.toLowerCase(), h.header.value]));
}
