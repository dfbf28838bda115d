/**
 * envoy/envoy.yaml read as Envoy reads it: every key checked against Envoy's own protos (typed_config
 * resolved by @type, unknown fields refused), then what tollgate needs of it asserted.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { checkEnvoyBootstrap, checkEnvoyMessage, unpackAny, type BootstrapCheck, type JsonObject } from '../../support/envoy-bootstrap.js';
import {
  assertHeapOverload,
  assertTollgateEnvoyConfig,
  at,
  assertPendingBounded,
  cluster,
  hcm,
  listener,
  list,
  obj,
  seconds,
  EXT_AUTHZ_TYPE,
} from '../../support/envoy-expectations.js';
import { configSchema, DEFAULT_TIMEOUT_S } from '../../../src/config/schema.js';

const ENVOY_YAML = readFileSync(new URL('../../../../envoy/envoy.yaml', import.meta.url), 'utf8');

function valid(text: string): JsonObject {
  const check = checkEnvoyBootstrap(text);
  assert.deepEqual(check.issues, []);
  assert.ok(check.json !== undefined);
  return check.json;
}

/** envoy.yaml parsed to plain data, changed by `edit`, and checked again. */
function edited(edit: (doc: Record<string, unknown>) => void): BootstrapCheck {
  const doc = parse(ENVOY_YAML) as Record<string, unknown>;
  edit(doc);
  return checkEnvoyBootstrap(stringify(doc));
}

/** The plain-data node at `keys`, for edits. */
function node(root: unknown, ...keys: Array<string | number>): Record<string, unknown> {
  let cur = root;
  for (const k of keys) cur = (cur as Record<string | number, unknown>)[k];
  assert.ok(typeof cur === 'object' && cur !== null, `no node at ${keys.join('.')}`);
  return cur as Record<string, unknown>;
}

const HCM_PATH = ['static_resources', 'listeners', 0, 'filter_chains', 0, 'filters', 0, 'typed_config'] as const;
const EXT_AUTHZ_PATH = [...HCM_PATH, 'http_filters', 1, 'typed_config'] as const;
/** A static cluster's first endpoint port. */
const ENDPOINT_PORT = [
  'load_assignment',
  'endpoints',
  0,
  'lb_endpoints',
  0,
  'endpoint',
  'address',
  'socket_address',
  'port_value',
] as const;

describe('envoy/envoy.yaml', () => {
  const json = valid(ENVOY_YAML);

  it('is a valid envoy.config.bootstrap.v3.Bootstrap: no unknown, deprecated or ill-typed field, every @type resolved', () => {
    // valid() above asserted no issues; the message also survives protobuf encoding.
    const check = checkEnvoyBootstrap(ENVOY_YAML);
    assert.ok(check.message !== undefined);
  });

  it('strips x-tollgate-* before ext_authz, fails closed with 503, buffers the body whole and clears the route cache', () => {
    assertTollgateEnvoyConfig(json, { maxRequestBytes: 4 * 1024 * 1024, upstreamHost: '127.0.0.1' });
  });

  it("outlasts tollgate's longest silence with the defaults: the deployment timeout times num_retries + 1", () => {
    // A non-streamed completion sends Envoy nothing, not even headers, until the backend's whole reply is in,
    // and a failed attempt is retried on another deployment before anything is sent (src/gateway/forward.ts).
    // litellm_params.timeout has no schema default (router_settings.timeout fills it): DEFAULT_TIMEOUT_S does.
    const backendTimeout = DEFAULT_TIMEOUT_S;
    const attempts = configSchema.parse({}).router_settings.num_retries + 1;
    assert.deepEqual([backendTimeout, attempts], [600, 3]);
    const manager = hcm(listener(json, 10000));
    const route = at(manager, 'route_config', 'virtual_hosts', 0, 'routes', 0, 'route');
    assert.equal(at(route, 'timeout'), '0s');
    for (const idle of [at(route, 'idle_timeout'), at(manager, 'stream_idle_timeout')]) {
      assert.ok(seconds(idle) > backendTimeout * attempts, `idle timeout ${JSON.stringify(idle)} above ${backendTimeout * attempts} s`);
      assert.equal(idle, '1860s');
    }
  });

  it('never lets a request wait for the gateway past its 30 s signed context: no queue behind busy connections', () => {
    const gateway = cluster(json, 'tollgate_gateway');
    assert.deepEqual(at(gateway, 'circuit_breakers', 'thresholds', 0), {
      priority: 'DEFAULT',
      max_connections: 1280,
      max_pending_requests: 128,
      max_requests: 1024,
    });
    assert.doesNotThrow(() => assertPendingBounded(gateway));
    // Envoy's defaults (1024 of each, as this file used to state them): a request finding 1024 streams busy
    // waits in a 1024-deep queue until one ends, minutes later, with its context long expired.
    const defaults = edited((doc) => {
      const limits = node(doc, 'static_resources', 'clusters', 1, 'circuit_breakers', 'thresholds', 0);
      Object.assign(limits, { max_connections: 1024, max_pending_requests: 1024, max_requests: 1024 });
    });
    assert.deepEqual(defaults.issues, []);
    assert.throws(
      () => assertPendingBounded(cluster(defaults.json ?? {}, 'tollgate_gateway')),
      /at least max_requests \+ max_pending_requests \(2048\)/,
    );
    // Left unstated, they are Envoy's defaults too.
    const unstated = edited((doc) => {
      delete node(doc, 'static_resources', 'clusters', 1)['circuit_breakers'];
    });
    assert.throws(() => assertPendingBounded(cluster(unstated.json ?? {}, 'tollgate_gateway')), /missing circuit_breakers/);
    const slowConnect = edited((doc) => {
      node(doc, 'static_resources', 'clusters', 1)['connect_timeout'] = '5s';
    });
    assert.throws(() => assertPendingBounded(cluster(slowConnect.json ?? {}, 'tollgate_gateway')), /connect_timeout 5000 ms/);
  });

  it('trusts no x-forwarded-for hop unless told: xff_num_trusted_hops 0, written out beside use_remote_address', () => {
    const manager = hcm(listener(json, 10000));
    assert.equal(at(manager, 'use_remote_address'), true);
    assert.equal(at(manager, 'xff_num_trusted_hops'), 0);
  });

  it("caps Envoy's heap: fixed_heap monitor, shrink_heap at 95%, stop_accepting_requests at 98%, connections capped", () => {
    // ext_authz raises each stream's buffer to max_request_bytes (4 MiB) before any credential is checked.
    assert.equal(assertHeapOverload(json), Math.floor(0.8 * 256 * 1024 * 1024));
    const actions = list(json, 'overload_manager', 'actions').map((a) => [at(a, 'name'), at(a, 'triggers', 0, 'threshold', 'value')]);
    assert.deepEqual(actions, [
      ['envoy.overload_actions.shrink_heap', 0.95],
      ['envoy.overload_actions.stop_accepting_requests', 0.98],
    ]);
    assert.equal(at(hcm(listener(json, 10000)), 'http2_protocol_options', 'max_concurrent_streams'), 100);
    // The strict reader knows the monitor's config type, and refuses a misspelt field of it.
    const misspelt = edited((doc) => {
      const monitors = node(doc, 'overload_manager')['resource_monitors'] as Array<Record<string, unknown>>;
      const heap = monitors.find((m) => m['name'] === 'envoy.resource_monitors.fixed_heap');
      assert.ok(heap !== undefined);
      (heap['typed_config'] as Record<string, unknown>)['max_heap_bytes'] = 1;
    });
    assert.equal(misspelt.issues.length, 1);
    assert.match(
      misspelt.issues[0] ?? '',
      /max_heap_bytes: unknown field of envoy\.extensions\.resource_monitors\.fixed_heap\.v3\.FixedHeapConfig/,
    );
    // Without the heap monitor the expectations fail.
    const unbounded = parse(ENVOY_YAML) as Record<string, unknown>;
    delete node(unbounded, 'overload_manager')['actions'];
    assert.throws(
      () => assertTollgateEnvoyConfig(valid(stringify(unbounded)), { maxRequestBytes: 4194304, upstreamHost: '127.0.0.1' }),
      /overload_manager\.actions/,
    );
  });

  it('listens for clients on 0.0.0.0:10000 and sends authz to :9001, requests to :4000, both on loopback', () => {
    const client = listener(json, 10000);
    assert.equal(at(client, 'address', 'socket_address', 'address'), '0.0.0.0');
    assert.equal(at(cluster(json, 'tollgate_authz'), ...ENDPOINT_PORT), 9001);
    assert.equal(at(cluster(json, 'tollgate_gateway'), ...ENDPOINT_PORT), 4000);
  });

  it('keeps the admin API on loopback and exposes only GET /ready and GET /stats/prometheus on :9902', () => {
    assert.deepEqual(at(json, 'admin', 'address', 'socket_address'), { address: '127.0.0.1', port_value: 9901 });
    const routes = list(hcm(listener(json, 9902)), 'route_config', 'virtual_hosts', 0, 'routes');
    assert.deepEqual(
      routes.map((r) => [at(r, 'match', 'path'), at(r, 'match', 'headers', 0, 'string_match', 'exact'), at(r, 'route', 'cluster')]),
      [
        ['/ready', 'GET', 'envoy_admin'],
        ['/stats/prometheus', 'GET', 'envoy_admin'],
      ],
    );
    assert.equal(at(cluster(json, 'envoy_admin'), ...ENDPOINT_PORT), 9901);
  });

  it('logs the request id, never the query string (LiteLLM /key/info?key=sk-… carries a key there)', () => {
    const log = obj(hcm(listener(json, 10000)), 'access_log', 0, 'typed_config', 'log_format');
    const fields = Object.values(obj(log, 'json_format')).map(String);
    assert.ok(fields.includes('%REQ(X-REQUEST-ID)%'));
    assert.ok(!fields.some((f) => /%REQ\(:PATH\)%|%REQ\(X-ENVOY-ORIGINAL-PATH\?:PATH\)%/.test(f)), 'no path with its query');
    assert.equal(at(log, 'formatters', 0, 'name'), 'envoy.formatter.req_without_query');
  });

  it('decodes as protobuf: the ext_authz Any inside the HCM Any carries the same settings', () => {
    const { message } = checkEnvoyBootstrap(ENVOY_YAML);
    assert.ok(message !== undefined);
    type AnyValue = { type_url: string; value: Uint8Array };
    const plain = message.$type.toObject(message, { enums: String, longs: Number }) as {
      static_resources: { listeners: Array<{ filter_chains: Array<{ filters: Array<{ typed_config: AnyValue }> }> }> };
    };
    const hcmAny = plain.static_resources.listeners[0]?.filter_chains[0]?.filters[0]?.typed_config;
    assert.ok(hcmAny !== undefined);
    const manager = unpackAny(hcmAny);
    assert.equal(manager.typeName, 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
    const filters = (manager.message.$type.toObject(manager.message) as { http_filters: Array<{ typed_config: AnyValue }> }).http_filters;
    const authzAny = filters.find((f) => f.typed_config.type_url === EXT_AUTHZ_TYPE)?.typed_config;
    assert.ok(authzAny !== undefined);
    const authz = unpackAny(authzAny);
    const decoded = authz.message.$type.toObject(authz.message, { enums: String, defaults: true }) as {
      failure_mode_allow: boolean;
      clear_route_cache: boolean;
      with_request_body: { max_request_bytes: number; allow_partial_message: boolean; pack_as_bytes: boolean };
      status_on_error: { code: string };
      transport_api_version: string;
    };
    assert.equal(decoded.failure_mode_allow, false);
    assert.equal(decoded.clear_route_cache, true);
    assert.deepEqual(decoded.with_request_body, { max_request_bytes: 4194304, allow_partial_message: false, pack_as_bytes: true });
    assert.equal(decoded.status_on_error.code, 'InternalServerError');
    assert.equal(decoded.transport_api_version, 'V3');
  });
});

describe('the strict bootstrap reader', () => {
  it('refuses a misspelt field and names its path', () => {
    const check = edited((doc) => {
      const authz = node(doc, ...EXT_AUTHZ_PATH);
      authz['failure_mode_alow'] = authz['failure_mode_allow'];
      delete authz['failure_mode_allow'];
    });
    assert.equal(check.json, undefined);
    assert.deepEqual(check.issues, [
      'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config.failure_mode_alow: ' +
        'unknown field of envoy.extensions.filters.http.ext_authz.v3.ExtAuthz (did you mean failure_mode_allow?)',
    ]);
  });

  it('accepts JSON names as Envoy does, and refuses the same field under both names', () => {
    const camel = edited((doc) => {
      const authz = node(doc, ...EXT_AUTHZ_PATH);
      authz['failureModeAllow'] = authz['failure_mode_allow'];
      delete authz['failure_mode_allow'];
    });
    assert.deepEqual(camel.issues, []);
    assert.equal(at(camel.json ?? null, ...EXT_AUTHZ_PATH, 'failure_mode_allow'), false);
    const both = edited((doc) => {
      node(doc, ...EXT_AUTHZ_PATH)['failureModeAllow'] = true;
    });
    assert.equal(both.issues.length, 1);
    assert.match(both.issues[0] ?? '', /failureModeAllow: failure_mode_allow given twice/);
  });

  it('resolves @type and refuses a type Envoy does not have', () => {
    const check = edited((doc) => {
      node(doc, ...EXT_AUTHZ_PATH)['@type'] = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuth';
    });
    assert.deepEqual(check.issues, [
      'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config.@type: ' +
        "no message envoy.extensions.filters.http.ext_authz.v3.ExtAuth in Envoy's protos",
    ]);
  });

  it('checks a typed_config as the message its @type names, not as the filter it sits in', () => {
    // A field of ExtAuthz under the header_mutation filter's @type is unknown there.
    const check = edited((doc) => {
      node(doc, ...HCM_PATH, 'http_filters', 0, 'typed_config')['clear_route_cache'] = true;
    });
    assert.equal(check.issues.length, 1);
    assert.match(
      check.issues[0] ?? '',
      /http_filters\[0\]\.typed_config\.clear_route_cache: unknown field of envoy\.extensions\.filters\.http\.header_mutation\.v3\.HeaderMutation/,
    );
  });

  it('refuses ill-typed scalars, bad durations, unknown enum values and two members of a oneof', () => {
    const check = edited((doc) => {
      node(doc, 'admin', 'address', 'socket_address')['port_value'] = 'ten';
      node(doc, 'static_resources', 'clusters', 0)['connect_timeout'] = '250ms';
      node(doc, 'static_resources', 'clusters', 0)['type'] = 'STATIK';
      node(doc, ...HCM_PATH, 'route_config', 'virtual_hosts', 0, 'routes', 0, 'route')['cluster_header'] = 'x-tollgate-deployment';
    });
    assert.deepEqual(check.issues, [
      'admin.address.socket_address.port_value: expected an integer in [0, 4294967295], got string "ten"',
      'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster_header: ' +
        'only one of oneof cluster_specifier may be set (cluster is set too)',
      'static_resources.clusters[0].type: not a value of enum envoy.config.cluster.v3.Cluster.DiscoveryType (STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST), got string "STATIK"',
      'static_resources.clusters[0].connect_timeout: expected a duration such as "1s" or "0.25s", got string "250ms"',
    ]);
  });

  it('applies the validation rules Envoy enforces at load: required fields, bounds, and deprecated fields', () => {
    const check = edited((doc) => {
      const c = node(doc, 'static_resources', 'clusters', 0);
      delete c['name'];
      c['http2_protocol_options'] = {};
      const hc = node(c, 'health_checks', 0);
      delete hc['interval'];
      node(doc, ...EXT_AUTHZ_PATH, 'with_request_body')['max_request_bytes'] = 0;
    });
    assert.deepEqual(
      [...check.issues].sort(),
      [
        'static_resources.clusters[0].health_checks[0].interval: required',
        'static_resources.clusters[0].http2_protocol_options: deprecated field of envoy.config.cluster.v3.Cluster: Envoy warns or refuses it',
        'static_resources.clusters[0].name: required (string.min_len 1)',
        'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config.with_request_body.max_request_bytes: breaks uint32.gt 0 (value 0)',
      ].sort(),
    );
  });

  it('takes Struct as any JSON and wrappers as plain values, and refuses a wrapper given as a message', () => {
    const ok = checkEnvoyMessage('envoy.config.core.v3.Http2ProtocolOptions', { max_concurrent_streams: 100 });
    assert.deepEqual(ok.issues, []);
    const wrapped = checkEnvoyMessage('envoy.config.core.v3.Http2ProtocolOptions', { max_concurrent_streams: { value: 100 } });
    assert.deepEqual(wrapped.issues, ['max_concurrent_streams: expected an integer in [0, 4294967295], got a mapping']);
    const struct = checkEnvoyMessage('envoy.config.core.v3.SubstitutionFormatString', {
      json_format: { a: '%START_TIME%', nested: { list: [1, 'two', null, true] } },
    });
    assert.deepEqual(struct.issues, []);
  });

  it('refuses a key with no value, which YAML reads as null', () => {
    const check = checkEnvoyBootstrap('admin:\n  address:\n');
    assert.deepEqual(check.issues, ['admin.address: no value: give one or remove the key']);
  });

  it('catches a config that breaks what tollgate needs: ext_authz before the header strip', () => {
    const doc = parse(ENVOY_YAML) as Record<string, unknown>;
    const filters = node(doc, ...HCM_PATH)['http_filters'] as unknown[];
    filters.reverse();
    const swapped = valid(stringify(doc));
    assert.throws(
      () => assertTollgateEnvoyConfig(swapped, { maxRequestBytes: 4194304, upstreamHost: '127.0.0.1' }),
      /stripped before ext_authz|router is the last/,
    );
  });

  it('catches failure_mode_allow left to its default rather than written out, and a route timeout left at 15 s', () => {
    const implicit = parse(ENVOY_YAML) as Record<string, unknown>;
    delete node(implicit, ...EXT_AUTHZ_PATH)['failure_mode_allow'];
    assert.throws(
      () => assertTollgateEnvoyConfig(valid(stringify(implicit)), { maxRequestBytes: 4194304, upstreamHost: '127.0.0.1' }),
      /failure_mode_allow/,
    );
    const capped = parse(ENVOY_YAML) as Record<string, unknown>;
    delete node(capped, ...HCM_PATH, 'route_config', 'virtual_hosts', 0, 'routes', 0, 'route')['timeout'];
    assert.throws(
      () => assertTollgateEnvoyConfig(valid(stringify(capped)), { maxRequestBytes: 4194304, upstreamHost: '127.0.0.1' }),
      /route timeout 0s/,
    );
  });

  it("catches Envoy's own text reaching clients, and a mapper that would rewrite tollgate's denials", () => {
    const expect = { maxRequestBytes: 4194304, upstreamHost: '127.0.0.1' };
    const none = parse(ENVOY_YAML) as Record<string, unknown>;
    delete node(none, ...HCM_PATH)['local_reply_config'];
    assert.throws(() => assertTollgateEnvoyConfig(valid(stringify(none)), expect), /Envoy's 503 UF/);
    const greedy = parse(ENVOY_YAML) as Record<string, unknown>;
    (node(greedy, ...HCM_PATH, 'local_reply_config', 'mappers', 0, 'filter', 'response_flag_filter')['flags'] as string[]).push('UAEX');
    assert.throws(() => assertTollgateEnvoyConfig(valid(stringify(greedy)), expect), /a Check's 401 keeps its body/);
    // 413 and above, not 413 alone: it would rewrite a Check's 429 and 503 too.
    const wide = parse(ENVOY_YAML) as Record<string, unknown>;
    node(wide, ...HCM_PATH, 'local_reply_config', 'mappers', 2, 'filter', 'status_code_filter', 'comparison')['op'] = 'GE';
    assert.throws(() => assertTollgateEnvoyConfig(valid(stringify(wide)), expect), /a Check's 429 keeps its body/);
    // Without the failed-Check mapper, a failed Check would reach clients as an empty 500.
    const bare = parse(ENVOY_YAML) as Record<string, unknown>;
    (node(bare, ...HCM_PATH, 'local_reply_config')['mappers'] as unknown[]).pop();
    assert.throws(() => assertTollgateEnvoyConfig(valid(stringify(bare)), expect), /a failed Check is a 503/);
  });
});
