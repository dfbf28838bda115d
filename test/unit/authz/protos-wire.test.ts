/**
 * Our trimmed protos (protos/) against Envoy's own, as shipped in @grpc/grpc-js-xds (deps/envoy-api):
 * every message, field and enum value we define must exist in Envoy's with the same number, name, type,
 * label and map key, so bytes Envoy writes decode with ours and bytes we write decode with Envoy's.
 * grpc.health.v1 has no copy there; it is checked against grpc/grpc-proto's health.proto, quoted below.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { CHECK_PROTO, HEALTH_PROTO, PROTO_DIR, loadRoot } from '../../../src/authz/protos.js';
import { ENVOY_INCLUDE_DIRS } from '../../support/envoy.js';

/** grpc/health/v1/health.proto from grpc/grpc-proto (comments and file options removed). */
const GRPC_HEALTH_PROTO = `
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest {
  string service = 1;
}
message HealthCheckResponse {
  enum ServingStatus {
    UNKNOWN = 0;
    SERVING = 1;
    NOT_SERVING = 2;
    SERVICE_UNKNOWN = 3;
  }
  ServingStatus status = 1;
}
message HealthListRequest {}
message HealthListResponse {
  map<string, HealthCheckResponse> statuses = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc List(HealthListRequest) returns (HealthListResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
`;

const HEALTH_PACKAGE = '.grpc.health.v1.';

function loadOurs(): protobuf.Root {
  return loadRoot([CHECK_PROTO, HEALTH_PROTO], [PROTO_DIR]);
}

const envoyRoot = loadRoot([CHECK_PROTO], ENVOY_INCLUDE_DIRS);
const healthRoot = protobuf.parse(GRPC_HEALTH_PROTO, new protobuf.Root(), { keepCase: true }).root;
healthRoot.resolveAll();

/** Envoy's root for everything but grpc.health.v1, which is checked against grpc-proto's. */
function referenceFor(fullName: string): protobuf.Root {
  return fullName.startsWith(HEALTH_PACKAGE) ? healthRoot : envoyRoot;
}

interface Comparison {
  /** Full names of every message, enum and service compared. */
  readonly checked: string[];
  /** One line per difference; empty when wire-compatible. */
  readonly problems: string[];
}

/** The type a field carries on the wire: the resolved full name for messages and enums, else the scalar. */
function wireType(f: protobuf.FieldBase): string {
  return f.resolvedType?.fullName ?? f.type;
}

function compareField(where: string, ours: protobuf.Field, ref: protobuf.Type, problems: string[]): void {
  const theirs = ref.fieldsById[ours.id];
  if (theirs === undefined) {
    const byName = ref.fields[ours.name];
    problems.push(`${where}: no field number ${ours.id} in the reference${byName ? ` (it numbers ${ours.name} ${byName.id})` : ''}`);
    return;
  }
  if (theirs.name !== ours.name) problems.push(`${where}: field ${ours.id} is named ${theirs.name} in the reference`);
  if (wireType(theirs) !== wireType(ours)) problems.push(`${where}: type ${wireType(ours)}, reference ${wireType(theirs)}`);
  if (theirs.repeated !== ours.repeated) problems.push(`${where}: repeated ${ours.repeated}, reference ${theirs.repeated}`);
  if (theirs.map !== ours.map) problems.push(`${where}: map ${ours.map}, reference ${theirs.map}`);
  const ourKey = ours.map ? (ours as unknown as protobuf.MapField).keyType : undefined;
  const theirKey = theirs.map ? (theirs as unknown as protobuf.MapField).keyType : undefined;
  if (ourKey !== theirKey) problems.push(`${where}: map key ${ourKey}, reference ${theirKey}`);
  // Only scalar numeric fields can be packed; protobufjs reports `packed` for any repeated field.
  const packable = (protobuf.types.packed as Record<string, number | undefined>)[ours.type] !== undefined;
  if (packable && ours.repeated && theirs.repeated && ours.packed !== theirs.packed)
    problems.push(`${where}: packed ${ours.packed}, reference ${theirs.packed}`);
  if (ours.partOf?.name !== theirs.partOf?.name) {
    problems.push(`${where}: oneof ${ours.partOf?.name ?? '(none)'}, reference ${theirs.partOf?.name ?? '(none)'}`);
  }
}

function compareObject(obj: protobuf.ReflectionObject, out: Comparison): void {
  const name = obj.fullName;
  if (!(obj instanceof protobuf.Type) && !(obj instanceof protobuf.Enum) && !(obj instanceof protobuf.Service)) return;
  out.checked.push(name);
  const ref = referenceFor(name).lookup(name);
  if (ref === null) {
    out.problems.push(`${name}: not defined in the reference`);
    return;
  }
  if (obj instanceof protobuf.Type) {
    if (!(ref instanceof protobuf.Type)) {
      out.problems.push(`${name}: a message here, not in the reference`);
      return;
    }
    for (const f of obj.fieldsArray) compareField(`${name}.${f.name}`, f, ref, out.problems);
  } else if (obj instanceof protobuf.Enum) {
    if (!(ref instanceof protobuf.Enum)) {
      out.problems.push(`${name}: an enum here, not in the reference`);
      return;
    }
    for (const [value, num] of Object.entries(obj.values)) {
      const theirs = ref.values[value];
      if (theirs !== num) out.problems.push(`${name}.${value}: number ${num}, reference ${theirs ?? '(absent)'}`);
    }
  } else {
    if (!(ref instanceof protobuf.Service)) {
      out.problems.push(`${name}: a service here, not in the reference`);
      return;
    }
    for (const m of obj.methodsArray) {
      const theirs = ref.methods[m.name];
      const sig = (x: protobuf.Method): string =>
        `${x.requestStream === true ? 'stream ' : ''}${x.resolvedRequestType?.fullName} -> ${x.responseStream === true ? 'stream ' : ''}${x.resolvedResponseType?.fullName}`;
      if (theirs === undefined) out.problems.push(`${name}.${m.name}: no such method in the reference`);
      else if (sig(theirs) !== sig(m)) out.problems.push(`${name}.${m.name}: ${sig(m)}, reference ${sig(theirs)}`);
    }
  }
}

/** Walks every message, enum and service of `ours` (google.protobuf.* aside) and compares it with its reference. */
function compareRoot(ours: protobuf.Root): Comparison {
  const out: Comparison = { checked: [], problems: [] };
  const walk = (ns: protobuf.NamespaceBase): void => {
    for (const nested of ns.nestedArray) {
      if (nested.fullName === '.google.protobuf' || nested.fullName.startsWith('.google.protobuf.')) continue;
      compareObject(nested, out);
      if (nested instanceof protobuf.Namespace || nested instanceof protobuf.Type) walk(nested);
    }
  };
  walk(ours);
  return out;
}

/** Keeps only the fields of `value` (a toObject of the reference's decoding) that `type` defines, recursively. */
function project(type: protobuf.Type, value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const f = type.fields[k];
    if (f === undefined) continue;
    const sub = f.resolvedType;
    if (!(sub instanceof protobuf.Type)) out[k] = v;
    else if (f.map)
      out[k] = Object.fromEntries(Object.entries(v as Record<string, Record<string, unknown>>).map(([mk, mv]) => [mk, project(sub, mv)]));
    else if (f.repeated) out[k] = (v as Record<string, unknown>[]).map((e) => project(sub, e));
    else out[k] = project(sub, v as Record<string, unknown>);
  }
  return out;
}

function omit(o: object, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
}

const AS_PLAIN: protobuf.IConversionOptions = { longs: String, bytes: String, enums: Number };

void describe('protos/ are wire-compatible with Envoy’s protos', () => {
  void it('every message, field, enum value and method matches its reference', () => {
    const result = compareRoot(loadOurs());
    assert.deepEqual(result.problems, []);
    // Not vacuous: the walk reached the messages and enums Check and Health put on the wire.
    for (const name of [
      '.envoy.service.auth.v3.CheckRequest',
      '.envoy.service.auth.v3.AttributeContext',
      '.envoy.service.auth.v3.AttributeContext.Request',
      '.envoy.service.auth.v3.AttributeContext.HttpRequest',
      '.envoy.service.auth.v3.CheckResponse',
      '.envoy.service.auth.v3.OkHttpResponse',
      '.envoy.service.auth.v3.DeniedHttpResponse',
      '.envoy.service.auth.v3.Authorization',
      '.envoy.config.core.v3.HeaderValue',
      '.envoy.config.core.v3.HeaderValueOption',
      '.envoy.config.core.v3.HeaderValueOption.HeaderAppendAction',
      '.envoy.config.core.v3.HeaderMap',
      '.envoy.type.v3.HttpStatus',
      '.envoy.type.v3.StatusCode',
      '.google.rpc.Status',
      '.grpc.health.v1.HealthCheckRequest',
      '.grpc.health.v1.HealthCheckResponse',
      '.grpc.health.v1.HealthCheckResponse.ServingStatus',
      '.grpc.health.v1.Health',
    ]) {
      assert.ok(result.checked.includes(name), `${name} was not compared`);
    }
    assert.ok(!result.checked.some((n) => n.startsWith('.google.protobuf.')), 'google.protobuf.* is protobufjs’s own, not ours');
  });

  // Negative controls: each deliberate alteration of a fresh copy of our root must be reported, so the
  // comparison above cannot pass by comparing nothing (or by comparing a root with itself).
  const HTTP_REQUEST = 'envoy.service.auth.v3.AttributeContext.HttpRequest';
  const replaceField = (root: protobuf.Root, typeName: string, field: protobuf.Field): void => {
    const type = root.lookupType(typeName);
    const old = type.fields[field.name];
    if (old !== undefined) type.remove(old);
    type.add(field);
    field.resolve();
  };
  const controls: Array<{ name: string; alter: (root: protobuf.Root) => void; expect: RegExp }> = [
    {
      name: 'a field number',
      alter: (r) => replaceField(r, HTTP_REQUEST, new protobuf.Field('body', 14, 'string')),
      expect: /HttpRequest\.body: no field number 14 in the reference \(it numbers body 11\)/,
    },
    {
      name: 'a field name',
      alter: (r) => {
        const t = r.lookupType(HTTP_REQUEST);
        t.remove(t.fields['host'] as protobuf.Field);
        replaceField(r, HTTP_REQUEST, new protobuf.Field('hostname', 5, 'string'));
      },
      expect: /HttpRequest\.hostname: field 5 is named host in the reference/,
    },
    {
      name: 'a scalar type',
      alter: (r) => replaceField(r, HTTP_REQUEST, new protobuf.Field('raw_body', 12, 'string')),
      expect: /HttpRequest\.raw_body: type string, reference bytes/,
    },
    {
      name: 'a message type',
      alter: (r) => replaceField(r, 'envoy.config.core.v3.HeaderMap', new protobuf.Field('headers', 1, 'HeaderValueOption', 'repeated')),
      expect: /HeaderMap\.headers: type \.envoy\.config\.core\.v3\.HeaderValueOption, reference \.envoy\.config\.core\.v3\.HeaderValue$/,
    },
    {
      name: 'the repeated label',
      alter: (r) => replaceField(r, 'envoy.service.auth.v3.OkHttpResponse', new protobuf.Field('headers_to_remove', 5, 'string')),
      expect: /OkHttpResponse\.headers_to_remove: repeated false, reference true/,
    },
    {
      name: 'a map key type',
      alter: (r) =>
        replaceField(
          r,
          'envoy.service.auth.v3.AttributeContext',
          new protobuf.MapField('context_extensions', 10, 'int32', 'string') as unknown as protobuf.Field,
        ),
      expect: /AttributeContext\.context_extensions: map key int32, reference string/,
    },
    {
      name: 'an enum value number',
      alter: (r) => {
        const e = r.lookupEnum('envoy.config.core.v3.HeaderValueOption.HeaderAppendAction');
        e.remove('OVERWRITE_IF_EXISTS_OR_ADD');
        e.add('OVERWRITE_IF_EXISTS_OR_ADD', 5);
      },
      expect: /HeaderAppendAction\.OVERWRITE_IF_EXISTS_OR_ADD: number 5, reference 2/,
    },
    {
      name: 'an enum value Envoy lacks',
      alter: (r) => r.lookupEnum('envoy.type.v3.StatusCode').add('ImATeapot', 418),
      expect: /StatusCode\.ImATeapot: number 418, reference \(absent\)/,
    },
    {
      name: 'a grpc.health.v1 field type',
      alter: (r) => replaceField(r, 'grpc.health.v1.HealthCheckResponse', new protobuf.Field('status', 1, 'int32')),
      expect: /HealthCheckResponse\.status: type int32, reference \.grpc\.health\.v1\.HealthCheckResponse\.ServingStatus/,
    },
    {
      name: 'a message Envoy lacks',
      alter: (r) =>
        (r.lookup('envoy.service.auth.v3') as protobuf.Namespace).add(new protobuf.Type('Extra').add(new protobuf.Field('x', 1, 'string'))),
      expect: /^\.envoy\.service\.auth\.v3\.Extra: not defined in the reference$/,
    },
  ];
  for (const c of controls) {
    void it(`reports ${c.name} that differs`, () => {
      const root = loadOurs();
      c.alter(root);
      const { problems } = compareRoot(root);
      assert.ok(
        problems.some((p) => c.expect.test(p)),
        `expected a problem matching ${c.expect}, got ${JSON.stringify(problems)}`,
      );
    });
  }
});

void describe('round trips between Envoy’s protos and ours', () => {
  const ours = loadOurs();

  void it('a full CheckRequest Envoy encodes decodes with ours, every kept field equal', () => {
    const EnvoyCheckRequest = envoyRoot.lookupType('envoy.service.auth.v3.CheckRequest');
    const OurCheckRequest = ours.lookupType('envoy.service.auth.v3.CheckRequest');
    const body = JSON.stringify({ model: 'llama-3-8b', messages: [{ role: 'user', content: 'héllo' }] });
    const request = {
      attributes: {
        source: {
          address: { socket_address: { address: '10.0.0.7', port_value: 51234 } },
          service: 'client',
          labels: { app: 'web' },
          principal: 'spiffe://cluster.local/ns/web/sa/client',
          certificate: '-----BEGIN CERTIFICATE-----',
        },
        destination: { address: { socket_address: { address: '10.0.0.1', port_value: 10000 } }, principal: 'tollgate' },
        request: {
          time: { seconds: 1_760_000_000, nanos: 123_000_000 },
          http: {
            id: '1234567890',
            method: 'POST',
            headers: { ':authority': 'tollgate.example.com', ':path': '/v1/chat/completions?x=1', 'content-type': 'application/json' },
            header_map: {
              headers: [
                { key: ':method', raw_value: Buffer.from('POST') },
                { key: 'x-binary', raw_value: Buffer.from([0xc3, 0xa9, 0x00, 0xff]) },
                { key: 'x-plain', value: 'v' },
              ],
            },
            path: '/v1/chat/completions?x=1',
            host: 'tollgate.example.com',
            scheme: 'https',
            query: 'x=1',
            fragment: 'top',
            // Beyond 32 bits, so a varint of the wrong width would show.
            size: 5_000_000_123,
            protocol: 'HTTP/2',
            body,
            raw_body: Buffer.from(body),
          },
        },
        context_extensions: { route: 'chat', tenant: 'acme' },
        metadata_context: {
          filter_metadata: { 'envoy.filters.http.jwt_authn': { fields: { sub: { string_value: 'alice' } } } },
        },
        route_metadata_context: { filter_metadata: { tollgate: { fields: { tier: { number_value: 2 } } } } },
        tls_session: { sni: 'tollgate.example.com' },
      },
    };
    assert.equal(EnvoyCheckRequest.verify(request), null);
    const bytes = EnvoyCheckRequest.encode(EnvoyCheckRequest.fromObject(request)).finish();

    const decodedOurs = OurCheckRequest.toObject(OurCheckRequest.decode(bytes), AS_PLAIN);
    const decodedEnvoy = EnvoyCheckRequest.toObject(EnvoyCheckRequest.decode(bytes), AS_PLAIN);
    assert.deepEqual(decodedOurs, project(OurCheckRequest, decodedEnvoy));

    // And against the input itself, so the projection cannot hide a field both sides lost.
    const http = (decodedOurs['attributes'] as { request: { http: Record<string, unknown> } }).request.http;
    const sent = request.attributes.request.http;
    assert.deepEqual(omit(http, ['header_map', 'raw_body', 'size']), omit(sent, ['header_map', 'raw_body', 'size']));
    assert.equal(http['size'], '5000000123');
    assert.equal(http['raw_body'], Buffer.from(body).toString('base64'));
    assert.deepEqual(http['header_map'], {
      headers: [
        { key: ':method', raw_value: Buffer.from('POST').toString('base64') },
        { key: 'x-binary', raw_value: Buffer.from([0xc3, 0xa9, 0x00, 0xff]).toString('base64') },
        { key: 'x-plain', value: 'v' },
      ],
    });
    assert.deepEqual((decodedOurs['attributes'] as Record<string, unknown>)['context_extensions'], { route: 'chat', tenant: 'acme' });
    // Of the peers, only the source's IP address (request.source for the policy).
    assert.deepEqual((decodedOurs['attributes'] as Record<string, unknown>)['source'], {
      address: { socket_address: { address: '10.0.0.7' } },
    });
    assert.deepEqual(Object.keys(decodedOurs['attributes'] as object).sort(), ['context_extensions', 'request', 'source']);
  });

  const OurCheckResponse = ours.lookupType('envoy.service.auth.v3.CheckResponse');
  const EnvoyCheckResponse = envoyRoot.lookupType('envoy.service.auth.v3.CheckResponse');
  const roundTrip = (response: Record<string, unknown>): Record<string, unknown> => {
    assert.equal(OurCheckResponse.verify(response), null);
    const bytes = OurCheckResponse.encode(OurCheckResponse.fromObject(response)).finish();
    const decodedEnvoy = EnvoyCheckResponse.toObject(EnvoyCheckResponse.decode(bytes), AS_PLAIN);
    const decodedOurs = OurCheckResponse.toObject(OurCheckResponse.decode(bytes), AS_PLAIN);
    // Envoy's decoding holds exactly what we wrote: nothing more, nothing lost.
    assert.deepEqual(decodedEnvoy, decodedOurs);
    return EnvoyCheckResponse.toObject(EnvoyCheckResponse.decode(bytes), { enums: String, oneofs: true });
  };

  void it('an ok_response we encode decodes with Envoy’s protos, every field equal', () => {
    const response = {
      status: { code: 0 },
      ok_response: {
        headers: [
          { header: { key: 'x-tollgate-user', value: 'alice' }, append_action: 2 },
          { header: { key: 'x-tollgate-key', value: '0123456789abcdef' }, append_action: 2, keep_empty_value: true },
          { header: { key: 'x-raw', raw_value: Buffer.from([0xc3, 0xa9]) }, append: { value: true } },
        ],
        headers_to_remove: ['authorization', 'x-cake-authorization'],
        response_headers_to_add: [{ header: { key: 'x-tollgate-request-id', value: 'r-1' }, append_action: 2 }],
      },
    };
    const envoy = roundTrip(response);
    assert.equal(envoy['http_response'], 'ok_response');
    assert.deepEqual(envoy['status'], { code: 0 });
    assert.deepEqual(envoy['ok_response'], {
      headers: [
        { header: { key: 'x-tollgate-user', value: 'alice' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        {
          header: { key: 'x-tollgate-key', value: '0123456789abcdef' },
          append_action: 'OVERWRITE_IF_EXISTS_OR_ADD',
          keep_empty_value: true,
        },
        { header: { key: 'x-raw', raw_value: Buffer.from([0xc3, 0xa9]) }, append: { value: true } },
      ],
      headers_to_remove: ['authorization', 'x-cake-authorization'],
      response_headers_to_add: [{ header: { key: 'x-tollgate-request-id', value: 'r-1' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' }],
    });
  });

  void it('a denied_response we encode decodes with Envoy’s protos, every field equal', () => {
    const body = JSON.stringify({ error: { message: 'Missing token', type: 'invalid_request_error', code: 'missing_jwt' } });
    const response = {
      status: { code: 16, message: 'missing_jwt' },
      denied_response: {
        status: { code: 401 },
        headers: [
          { header: { key: 'content-type', value: 'application/json' }, append_action: 2 },
          { header: { key: 'www-authenticate', value: 'Bearer' }, append_action: 2 },
        ],
        body,
      },
    };
    const envoy = roundTrip(response);
    assert.equal(envoy['http_response'], 'denied_response');
    assert.deepEqual(envoy['status'], { code: 16, message: 'missing_jwt' });
    assert.deepEqual(envoy['denied_response'], {
      status: { code: 'Unauthorized' },
      headers: [
        { header: { key: 'content-type', value: 'application/json' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        { header: { key: 'www-authenticate', value: 'Bearer' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
      ],
      body,
    });
  });
});
