/**
 * What tollgate needs of an Envoy bootstrap (../shared/FIELD-NOTES.md, "Envoy ext_authz"), asserted on the
 * normalised JSON that checkEnvoyBootstrap returns. Shared by the envoy/envoy.yaml test and the Helm
 * chart test, which renders the same config for the pod.
 */
import assert from 'node:assert/strict';
import type { Json, JsonObject } from './envoy-bootstrap.js';
import { localReplyMappers, mapLocalReply, type LocalReply } from './envoy-local-reply.js';
import { ERRORS, errorBody, type ErrorCode } from '../../src/errors/codes.js';
import { CONTEXT_TTL_MS } from '../../src/identity/context-token.js';

export const HCM_TYPE = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
export const HEADER_MUTATION_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation';
export const EXT_AUTHZ_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz';
export const ROUTER_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
export const HTTP_OPTIONS_KEY = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

/** Every identity header authz sets (../shared/CONTRACT.md, "What authz sets on an allowed request"). */
export const TOLLGATE_HEADERS = [
  'x-tollgate-key',
  'x-tollgate-key-alias',
  'x-tollgate-user',
  'x-tollgate-team',
  'x-tollgate-model',
  'x-tollgate-deployment',
  'x-tollgate-request-id',
  'x-tollgate-context',
];

export const CLIENT_PORT = 10000;
export const AUTHZ_PORT = 9001;
export const GATEWAY_PORT = 4000;

/** The value at `keys` under `root`; fails the test, naming the path, when any step is missing. */
export function at(root: Json, ...keys: Array<string | number>): Json {
  let cur: Json = root;
  const walked: string[] = [];
  for (const k of keys) {
    walked.push(String(k));
    const next: Json | undefined = typeof k === 'number' ? (Array.isArray(cur) ? cur[k] : undefined) : isObject(cur) ? cur[k] : undefined;
    assert.ok(next !== undefined, `missing ${walked.join('.')}`);
    cur = next;
  }
  return cur;
}

export function list(root: Json, ...keys: Array<string | number>): Json[] {
  const v = at(root, ...keys);
  assert.ok(Array.isArray(v), `${keys.join('.')} is not a list`);
  return v;
}

export function obj(root: Json, ...keys: Array<string | number>): JsonObject {
  const v = at(root, ...keys);
  assert.ok(isObject(v), `${keys.join('.')} is not a mapping`);
  return v;
}

/** The string at `keys`. */
export function text(root: Json, ...keys: Array<string | number>): string {
  const v = at(root, ...keys);
  assert.ok(typeof v === 'string', `${keys.join('.')} is not a string`);
  return v;
}

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Seconds of a proto3 JSON Duration ("0.25s"). */
export function seconds(d: Json): number {
  assert.ok(typeof d === 'string' && /^\d+(\.\d+)?s$/.test(d), `not a duration: ${JSON.stringify(d)}`);
  return Number(d.slice(0, -1));
}

export interface SocketAddress {
  readonly address: string;
  readonly port: number;
}

function socket(address: Json): SocketAddress {
  const s = obj(address, 'socket_address');
  const port = at(s, 'port_value');
  const host = at(s, 'address');
  assert.ok(typeof port === 'number' && typeof host === 'string');
  return { address: host, port };
}

/** The listener bound to `port`. */
export function listener(bootstrap: JsonObject, port: number): JsonObject {
  const found = list(bootstrap, 'static_resources', 'listeners').filter((l) => socket(obj(l, 'address')).port === port);
  assert.equal(found.length, 1, `one listener on port ${port}`);
  const [l] = found;
  assert.ok(isObject(l));
  return l;
}

/** The HTTP connection manager of a listener (its only network filter). */
export function hcm(l: JsonObject): JsonObject {
  const chains = list(l, 'filter_chains');
  assert.equal(chains.length, 1, 'one filter chain');
  const filters = list(chains[0] ?? null, 'filters');
  assert.equal(filters.length, 1, 'one network filter');
  const config = obj(filters[0] ?? null, 'typed_config');
  assert.equal(config['@type'], HCM_TYPE);
  return config;
}

export function cluster(bootstrap: JsonObject, name: string): JsonObject {
  const found = list(bootstrap, 'static_resources', 'clusters').filter((c) => isObject(c) && c['name'] === name);
  assert.equal(found.length, 1, `one cluster named ${name}`);
  const [c] = found;
  assert.ok(isObject(c));
  return c;
}

/** Every endpoint address of a cluster. */
export function endpoints(c: JsonObject): SocketAddress[] {
  return list(c, 'load_assignment', 'endpoints').flatMap((e) =>
    list(e, 'lb_endpoints').map((lb) => socket(obj(lb, 'endpoint', 'address'))),
  );
}

export interface TollgateEnvoyExpectations {
  /** with_request_body.max_request_bytes: tollgate's max_request_size_mb in bytes. */
  readonly maxRequestBytes: number;
  /** Where the two tollgate clusters point (the pod: 127.0.0.1). */
  readonly upstreamHost: string;
}

/**
 * Everything tollgate depends on in Envoy's config; throws an AssertionError naming the first miss.
 * Returns the HCM of the client listener and the ext_authz config for further checks.
 */
export function assertTollgateEnvoyConfig(
  bootstrap: JsonObject,
  expect: TollgateEnvoyExpectations,
): { hcm: JsonObject; extAuthz: JsonObject } {
  // Admin never off the host: it can stop Envoy.
  assert.equal(socket(obj(bootstrap, 'admin', 'address')).address, '127.0.0.1', 'admin on loopback only');

  const client = listener(bootstrap, CLIENT_PORT);
  assert.equal(socket(obj(client, 'address')).address, '0.0.0.0');
  const manager = hcm(client);
  assert.notEqual(manager['codec_type'], 'HTTP3');
  assert.equal(manager['generate_request_id'], true, 'Envoy generates x-request-id');
  // One spelling per path for Envoy and tollgate (src/core/route.ts normalizePath); encoded slashes kept as
  // sent, since UNESCAPE_AND_FORWARD decodes them before dot segments are resolved (x%2F..%2F.. climbs).
  assert.equal(manager['normalize_path'], true, 'normalize_path');
  assert.equal(manager['merge_slashes'], true, 'merge_slashes');
  assert.equal(manager['path_with_escaped_slashes_action'], 'KEEP_UNCHANGED', 'encoded slashes kept as sent');

  // Filter order: strip x-tollgate-* → ext_authz → router (last).
  const filters = list(manager, 'http_filters').map((f) => obj(f, 'typed_config'));
  const types = filters.map((f) => f['@type']);
  const strip = types.indexOf(HEADER_MUTATION_TYPE);
  const authz = types.indexOf(EXT_AUTHZ_TYPE);
  assert.ok(strip >= 0, 'a header_mutation filter');
  assert.ok(authz >= 0, 'an ext_authz filter');
  assert.equal(types.filter((t) => t === EXT_AUTHZ_TYPE).length, 1, 'one ext_authz filter');
  assert.ok(strip < authz, 'client x-tollgate-* headers are stripped before ext_authz runs');
  assert.equal(types.at(-1), ROUTER_TYPE, 'the router is the last filter');
  const mutation = filters[strip];
  assert.ok(mutation !== undefined);
  const removed = list(mutation, 'mutations', 'request_mutations').map((m) => at(m, 'remove'));
  for (const h of TOLLGATE_HEADERS) assert.ok(removed.includes(h), `${h} is stripped`);

  const extAuthz = filters[authz];
  assert.ok(extAuthz !== undefined);
  assert.equal(at(extAuthz, 'transport_api_version'), 'V3');
  assert.equal(at(extAuthz, 'failure_mode_allow'), false, 'failure_mode_allow: false, written out');
  // 500: a status no denial of tollgate's uses, so local_reply_config tells a failed Check from a denial.
  assert.equal(at(extAuthz, 'status_on_error', 'code'), 'InternalServerError');
  assert.equal(at(extAuthz, 'clear_route_cache'), true);
  assert.deepEqual(at(extAuthz, 'with_request_body'), {
    max_request_bytes: expect.maxRequestBytes,
    allow_partial_message: false,
    pack_as_bytes: true,
  });
  const timeout = seconds(at(extAuthz, 'grpc_service', 'timeout'));
  // A Check may wait 0.5 s on the database for an uncached key and 0.2 s for a changed record (src/store/records.ts).
  assert.ok(timeout >= 1 && timeout <= 2, `Check timeout ${timeout}s within [1s, 2s]`);

  // The authz cluster: tollgate's gRPC port, HTTP/2, gRPC health checked.
  const authzCluster = cluster(bootstrap, text(extAuthz, 'grpc_service', 'envoy_grpc', 'cluster_name'));
  assert.deepEqual(endpoints(authzCluster), [{ address: expect.upstreamHost, port: AUTHZ_PORT }]);
  assert.ok(
    isObject(at(authzCluster, 'typed_extension_protocol_options', HTTP_OPTIONS_KEY, 'explicit_http_config', 'http2_protocol_options')),
  );
  const authzChecks = list(authzCluster, 'health_checks');
  assert.equal(authzChecks.length, 1);
  assert.equal(at(authzChecks[0] ?? null, 'grpc_health_check', 'service_name'), 'envoy.service.auth.v3.Authorization');

  // Routes: every one to the gateway, no whole-response timeout, an idle timeout for streams.
  const routes = list(manager, 'route_config', 'virtual_hosts').flatMap((vh) => list(vh, 'routes'));
  assert.ok(routes.length > 0);
  const gatewayNames = new Set<string>();
  for (const r of routes) {
    const action = obj(r, 'route');
    gatewayNames.add(text(action, 'cluster'));
    assert.equal(action['timeout'], '0s', 'route timeout 0s (no cap on a stream)');
    const idle = seconds(at(action, 'idle_timeout'));
    assert.ok(idle >= 60 && idle <= 3600, `route idle_timeout ${idle}s suits long streams`);
  }
  assert.equal(gatewayNames.size, 1, 'one upstream for clients');
  const [gatewayName] = gatewayNames;
  assert.ok(gatewayName !== undefined);
  const gateway = cluster(bootstrap, gatewayName);
  assert.deepEqual(endpoints(gateway), [{ address: expect.upstreamHost, port: GATEWAY_PORT }]);
  const gatewayChecks = list(gateway, 'health_checks');
  assert.equal(gatewayChecks.length, 1);
  assert.equal(at(gatewayChecks[0] ?? null, 'http_health_check', 'path'), '/health/readiness');
  assertPendingBounded(gateway);

  // Memory: ext_authz buffers bodies before authentication, so the overload manager caps Envoy's heap and
  // stops accepting requests before the kernel OOM-kills Envoy; HTTP/2 clients get few streams each.
  assertHeapOverload(bootstrap);
  const streams = at(manager, 'http2_protocol_options', 'max_concurrent_streams');
  assert.ok(typeof streams === 'number' && streams <= 128, `HTTP/2 max_concurrent_streams ${JSON.stringify(streams)} is modest`);

  assertLocalReplies(manager);

  // Access log with Envoy's request id.
  const formats = list(manager, 'access_log').map((a) => JSON.stringify(at(a, 'typed_config')));
  assert.ok(
    formats.some((f) => f.includes('%REQ(X-REQUEST-ID)%')),
    'an access log line carries %REQ(X-REQUEST-ID)%',
  );
  return { hcm: manager, extAuthz };
}

export const FIXED_HEAP_MONITOR = 'envoy.resource_monitors.fixed_heap';
export const FIXED_HEAP_TYPE = 'type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig';

/** The threshold at which `action` fires on the fixed_heap monitor. */
function heapThreshold(bootstrap: JsonObject, action: string): number {
  const found = list(bootstrap, 'overload_manager', 'actions').filter((a) => isObject(a) && a['name'] === action);
  assert.equal(found.length, 1, `one overload action ${action}`);
  const triggers = list(found[0] ?? null, 'triggers');
  assert.deepEqual(
    triggers.map((t) => at(t, 'name')),
    [FIXED_HEAP_MONITOR],
    `${action} is triggered by the heap`,
  );
  const value = at(triggers[0] ?? null, 'threshold', 'value');
  assert.ok(typeof value === 'number');
  return value;
}

/**
 * The overload manager bounds Envoy's heap: a fixed_heap monitor, shrink_heap first, then
 * stop_accepting_requests below 100%, and the global downstream connection cap kept. Returns the heap cap.
 */
export function assertHeapOverload(bootstrap: JsonObject): number {
  const monitors = list(bootstrap, 'overload_manager', 'resource_monitors');
  const names = monitors.map((m) => at(m, 'name'));
  assert.ok(names.includes('envoy.resource_monitors.global_downstream_max_connections'), 'the downstream connections cap is kept');
  const heap = monitors.filter((m) => isObject(m) && m['name'] === FIXED_HEAP_MONITOR);
  assert.equal(heap.length, 1, 'a fixed_heap resource monitor');
  assert.equal(at(heap[0] ?? null, 'typed_config', '@type'), FIXED_HEAP_TYPE);
  const max = Number(at(heap[0] ?? null, 'typed_config', 'max_heap_size_bytes'));
  assert.ok(Number.isSafeInteger(max) && max >= 64 * 1024 * 1024, `max_heap_size_bytes ${max}`);
  const shrink = heapThreshold(bootstrap, 'envoy.overload_actions.shrink_heap');
  const stop = heapThreshold(bootstrap, 'envoy.overload_actions.stop_accepting_requests');
  assert.ok(shrink >= 0.9 && shrink < stop && stop < 1, `shrink_heap at ${shrink}, stop_accepting_requests at ${stop}`);
  return max;
}

/**
 * Envoy's own replies (the gateway unreachable, a timeout, a body too large) reach clients in OpenAI's error
 * shape, without Envoy's text; a Check's denial and a failed Check (flag UAEX) keep what they had.
 */
export function assertLocalReplies(manager: JsonObject): void {
  const mappers = localReplyMappers(manager);
  const json = 'application/json';
  for (const kept of [
    { status: 401, flags: ['UAEX'], body: errorBody('invalid_api_key'), contentType: json },
    { status: 429, flags: ['UAEX'], body: errorBody('rate_limit_exceeded'), contentType: json },
    { status: 503, flags: ['UAEX'], body: errorBody('store_unavailable'), contentType: json },
    { status: 413, flags: ['UAEX'], body: errorBody('request_too_large'), contentType: json },
    { status: 502, flags: ['UAEX'], body: errorBody('upstream_error'), contentType: json },
    { status: 504, flags: ['UAEX'], body: errorBody('upstream_timeout'), contentType: json },
  ] satisfies LocalReply[]) {
    assert.deepEqual(mapLocalReply(mappers, kept), kept, `a Check's ${kept.status} keeps its body`);
  }
  const envoyText = 'upstream connect error or disconnect/reset before headers. reset reason: connection failure';
  const cases: [flag: string, envoyStatus: number, code: ErrorCode][] = [
    ['UF', 503, 'gateway_unavailable'],
    ['UH', 503, 'gateway_unavailable'],
    ['URX', 503, 'gateway_unavailable'],
    ['UC', 503, 'gateway_unavailable'],
    ['UR', 503, 'gateway_unavailable'],
    ['LR', 503, 'gateway_unavailable'],
    ['UPE', 502, 'gateway_unavailable'],
    ['UO', 503, 'gateway_unavailable'],
    ['OM', 503, 'gateway_unavailable'],
    ['UT', 504, 'upstream_timeout'],
    ['SI', 408, 'upstream_timeout'],
  ];
  const sent: LocalReply[] = cases.map(([flag, status]) => ({ status, flags: [flag], body: envoyText, contentType: 'text/plain' }));
  sent.push({ status: 413, flags: [], body: 'Payload Too Large', contentType: 'text/plain' });
  cases.push(['', 413, 'request_too_large']);
  sent.forEach((reply, i) => {
    const code = (cases[i] as [string, number, ErrorCode])[2];
    const out = mapLocalReply(mappers, reply);
    const what = `Envoy's ${reply.status} ${reply.flags.join(',')}`;
    assert.equal(out.status, ERRORS[code].status, what);
    assert.equal(out.contentType, json, what);
    const e = (JSON.parse(out.body) as { error: Record<string, unknown> }).error;
    assert.deepEqual(Object.keys(e), ['message', 'type', 'param', 'code'], what);
    assert.equal(e['code'], code, what);
    assert.equal(e['type'], ERRORS[code].type, what);
    assert.equal(e['param'], null, what);
  });
  // No denial is a 500 (the error table), so status_on_error's 500 is a failed Check.
  assert.ok(!Object.values(ERRORS).some((e) => (e.status as number) === 500), 'no error of the table is a 500');
  const failedCheck = mapLocalReply(mappers, { status: 500, flags: ['UAEX'], body: '', contentType: undefined });
  assert.equal(failedCheck.status, 503, 'a failed Check is a 503');
  assert.equal(failedCheck.contentType, json);
  assert.deepEqual(JSON.parse(failedCheck.body), JSON.parse(errorBody('authz_unavailable')), "a failed Check in OpenAI's shape");
  // A 500 that is not a Check's (a route's direct_response, say) is not taken for one.
  const other = { status: 500, flags: [], body: 'x', contentType: 'text/plain' };
  assert.deepEqual(mapLocalReply(mappers, other), other, 'only a failed Check is rewritten');
}

/**
 * A request reaches the gateway while the x-tollgate-context authz signed for it is valid (CONTEXT_TTL_MS).
 * Envoy has no timer on a cluster's pending queue, and its pool checks max_requests only as it attaches a request
 * to a ready connection (conn_pool_base.cc attachStreamToClient): so max_connections must leave a connection
 * for each pending request beyond max_requests, or a request queued behind busy connections waits for a stream
 * to end. Each then waits for its own connect only, bounded by connect_timeout.
 */
export function assertPendingBounded(gateway: JsonObject): void {
  const thresholds = list(gateway, 'circuit_breakers', 'thresholds').filter(
    (t) => isObject(t) && (t['priority'] ?? 'DEFAULT') === 'DEFAULT',
  );
  assert.equal(thresholds.length, 1, 'circuit_breakers with DEFAULT thresholds on the gateway cluster, written out');
  const limits = thresholds[0];
  const limit = (name: string): number => {
    const v = isObject(limits) ? limits[name] : undefined;
    assert.ok(typeof v === 'number', `circuit_breakers ${name} written out (Envoy's default is 1024)`);
    return v;
  };
  const [connections, pending, requests] = [limit('max_connections'), limit('max_pending_requests'), limit('max_requests')];
  assert.ok(
    connections >= requests + pending,
    `max_connections ${connections} leaves a connection per pending request: at least max_requests + max_pending_requests (${requests + pending})`,
  );
  const connectMs = seconds(at(gateway, 'connect_timeout')) * 1000;
  assert.ok(connectMs <= CONTEXT_TTL_MS / 10, `connect_timeout ${connectMs} ms well under the signed context's ${CONTEXT_TTL_MS} ms`);
}
