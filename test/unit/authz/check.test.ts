/** The Envoy door's pure parts: CheckRequest → RequestFacts, and an Authorization → CheckResponse. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { checkResponse, factsFromCheckRequest, MalformedCheckRequest } from '../../../src/authz/check.js';
import type { Authorization, RequestFacts } from '../../../src/authorizer/authorizer.js';
import type { Decision, Principal } from '../../../src/core/decide.js';
import { ERRORS, errorBody, type ErrorCode } from '../../../src/errors/codes.js';
import type { Deployment } from '../../../src/routing/deployments.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const JWT_HEADER = 'x-cake-authorization';

function request(http: Record<string, unknown>, contextExtensions?: Record<string, string>): unknown {
  return { attributes: { request: { http }, ...(contextExtensions && { context_extensions: contextExtensions }) } };
}

describe('factsFromCheckRequest', () => {
  const cases: Array<[name: string, message: unknown, expected: Partial<RequestFacts>]> = [
    [
      'headers map, string body',
      request({
        method: 'POST',
        path: '/v1/chat/completions?x=1',
        headers: { authorization: 'Bearer sk-abcdefgh', 'x-request-id': 'r1' },
        body: '{"model":"m"}',
      }),
      {
        method: 'POST',
        path: '/v1/chat/completions?x=1',
        headers: { authorization: 'Bearer sk-abcdefgh', 'x-request-id': 'r1' },
        body: '{"model":"m"}',
        partialBody: false,
        contextExtensions: {},
      },
    ],
    [
      'header_map with raw_value (encode_raw_headers)',
      request({
        method: 'GET',
        path: '/v1/models',
        header_map: {
          headers: [
            { key: 'authorization', raw_value: enc('Bearer sk-abcdefgh') },
            { key: 'x-a', raw_value: enc('é') },
          ],
        },
      }),
      { headers: { authorization: 'Bearer sk-abcdefgh', 'x-a': 'é' } },
    ],
    [
      'header_map: a repeated header is joined with a comma',
      request({
        header_map: {
          headers: [
            { key: 'x-forwarded-for', raw_value: enc('10.0.0.1') },
            { key: 'x-forwarded-for', raw_value: enc('10.0.0.2') },
            { key: 'x-forwarded-for', raw_value: enc('10.0.0.3') },
          ],
        },
      }),
      { headers: { 'x-forwarded-for': '10.0.0.1,10.0.0.2,10.0.0.3' } },
    ],
    [
      'header_map: names lower-cased, value used when raw_value is empty, empty keys skipped',
      request({
        header_map: {
          headers: [
            { key: 'X-Env', value: 'prod' },
            { key: 'x-b', value: 'v', raw_value: new Uint8Array(0) },
            { key: '', value: 'lost' },
            { value: 'lost' },
          ],
        },
      }),
      { headers: { 'x-env': 'prod', 'x-b': 'v' } },
    ],
    [
      'an empty header_map falls back to the headers map',
      request({ header_map: { headers: [] }, headers: { 'x-a': '1' } }),
      { headers: { 'x-a': '1' } },
    ],
    ['no headers at all → empty', request({}), { headers: {}, method: 'GET', path: '/', body: undefined }],
    [
      'raw_body (pack_as_bytes) wins over body',
      request({ raw_body: enc('{"model":"raw"}'), body: '{"model":"str"}' }),
      { body: enc('{"model":"raw"}') },
    ],
    [
      'an empty raw_body falls back to body',
      request({ raw_body: new Uint8Array(0), body: '{"model":"str"}' }),
      { body: '{"model":"str"}' },
    ],
    ['an empty body → undefined', request({ body: '' }), { body: undefined }],
    [
      'method and path from the pseudo-headers',
      request({ headers: { ':method': 'POST', ':path': '/v1/embeddings' } }),
      { method: 'POST', path: '/v1/embeddings' },
    ],
    [
      'method and path fields win over pseudo-headers',
      request({ method: 'GET', path: '/a', headers: { ':method': 'POST', ':path': '/b' } }),
      { method: 'GET', path: '/a' },
    ],
    ['partial body flag set by Envoy', request({ headers: { 'x-envoy-auth-partial-body': 'true' } }), { partialBody: true }],
    ['partial body flag false', request({ headers: { 'x-envoy-auth-partial-body': 'false' } }), { partialBody: false }],
    [
      'partial body flag from header_map',
      request({ header_map: { headers: [{ key: 'x-envoy-auth-partial-body', raw_value: enc('true') }] } }),
      { partialBody: true },
    ],
    [
      'the source peer address (attributes.source.address.socket_address.address)',
      { attributes: { source: { address: { socket_address: { address: '10.0.0.7', port_value: 51234 } } }, request: { http: {} } } },
      { source: '10.0.0.7' },
    ],
    ['no source peer → undefined', request({}), { source: undefined }],
    [
      'context extensions',
      request({}, { listener: 'internal', tier: 'gold' }),
      { contextExtensions: { listener: 'internal', tier: 'gold' } },
    ],
  ];
  for (const [name, message, expected] of cases) {
    test(name, () => {
      const facts = factsFromCheckRequest(message);
      for (const [k, v] of Object.entries(expected)) {
        const got = facts[k as keyof RequestFacts];
        if (k === 'headers') assert.deepEqual({ ...(got as object) }, v, k);
        else assert.deepEqual(got, v, k);
      }
    });
  }
  for (const [name, message] of [
    ['no attributes', {}],
    ['no request', { attributes: {} }],
    ['no http', { attributes: { request: {} } }],
  ] as const) {
    test(`${name} → MalformedCheckRequest`, () => {
      assert.throws(
        () => factsFromCheckRequest(message),
        (err: unknown) => err instanceof MalformedCheckRequest && err.code === 'MALFORMED_CHECK_REQUEST',
      );
    });
  }
});

// ---- checkResponse ----

const principal = (over: Partial<Principal> = {}): Principal => ({
  keyId: 'abababababababab',
  keyAlias: 'ci-bot',
  userId: 'alice',
  teamId: 'platform',
  email: 'alice@example.com',
  groups: [],
  admin: false,
  key: undefined,
  ...over,
});
const DEPLOYMENT = { id: 'llama-a' } as Deployment;

/** `model` null: a route without a model; `context` null: no signed context. */
function allowed(p: Principal = principal(), model: string | null = 'llama', context: string | null = 'tgc1.e30.sig'): Authorization {
  const decision: Decision = {
    allow: true,
    principal: p,
    body: model === null ? undefined : { ok: true, model, maxTokens: undefined, choices: 1, stream: false, json: { model } },
    deployment: model === null ? undefined : DEPLOYMENT,
    fallbacks: [],
    hidden: [],
  };
  return { decision, route: model === null ? 'plain' : 'model', requestId: 'req-1', context: context ?? undefined };
}

function facts(headers: Record<string, string>): RequestFacts {
  return { method: 'POST', path: '/v1/chat/completions', headers, body: undefined, partialBody: false, contextExtensions: {} };
}

interface OkShape {
  status: { code: number };
  ok_response: { headers: Array<{ header: { key: string; value: string }; append_action: number }>; headers_to_remove: string[] };
}
interface DeniedShape {
  status: { code: number; message: string };
  denied_response: {
    status: { code: number };
    headers: Array<{ header: { key: string; value: string }; append_action: number }>;
    body: string;
  };
}

const hasControl = (v: string): boolean => [...v].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);

function setHeaders(res: OkShape): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of res.ok_response.headers) {
    assert.equal(out[h.header.key], undefined, `${h.header.key} set once`);
    out[h.header.key] = h.header.value;
  }
  return out;
}

describe('checkResponse: allowed', () => {
  const CLIENT = { authorization: 'Bearer sk-abcdefgh', [JWT_HEADER]: 'Bearer eyJ...', 'content-type': 'application/json' };
  const cases: Array<[name: string, auth: Authorization, client: Record<string, string>, set: Record<string, string>, removed: string[]]> =
    [
      [
        'a model request: every identity header',
        allowed(),
        CLIENT,
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-context': 'tgc1.e30.sig',
          'x-tollgate-key': 'abababababababab',
          'x-tollgate-key-alias': 'ci-bot',
          'x-tollgate-user': 'alice',
          'x-tollgate-team': 'platform',
          'x-tollgate-model': 'llama',
          'x-tollgate-deployment': 'llama-a',
        },
        ['authorization', JWT_HEADER],
      ],
      [
        'client x-tollgate-* headers we set are overwritten, the others removed',
        allowed(principal({ keyId: undefined, keyAlias: undefined, teamId: undefined })),
        {
          ...CLIENT,
          'x-tollgate-user': 'mallory',
          'x-tollgate-key': 'ffffffffffffffff',
          'x-tollgate-team': 'admins',
          'x-tollgate-anything': '1',
          'x-other': 'kept',
        },
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-context': 'tgc1.e30.sig',
          'x-tollgate-user': 'alice',
          'x-tollgate-model': 'llama',
          'x-tollgate-deployment': 'llama-a',
        },
        ['authorization', JWT_HEADER, 'x-tollgate-key', 'x-tollgate-team', 'x-tollgate-anything'],
      ],
      [
        'a plain request: no model or deployment; a client-sent model header is removed',
        allowed(principal(), null),
        { ...CLIENT, 'x-tollgate-model': 'qwen', 'x-tollgate-deployment': 'evil' },
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-context': 'tgc1.e30.sig',
          'x-tollgate-key': 'abababababababab',
          'x-tollgate-key-alias': 'ci-bot',
          'x-tollgate-user': 'alice',
          'x-tollgate-team': 'platform',
        },
        ['authorization', JWT_HEADER, 'x-tollgate-model', 'x-tollgate-deployment'],
      ],
      [
        'no context token: a client-sent x-tollgate-context is removed',
        allowed(principal(), 'llama', null),
        { ...CLIENT, 'x-tollgate-context': 'tgc1.forged.sig' },
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-key': 'abababababababab',
          'x-tollgate-key-alias': 'ci-bot',
          'x-tollgate-user': 'alice',
          'x-tollgate-team': 'platform',
          'x-tollgate-model': 'llama',
          'x-tollgate-deployment': 'llama-a',
        },
        ['authorization', JWT_HEADER, 'x-tollgate-context'],
      ],
      [
        'control characters in claims are replaced by spaces',
        allowed(principal({ keyAlias: 'ci\r\nx-evil: 1', userId: 'al\u0000ice\u007f', teamId: 'plat\tform' }), 'lla\nma'),
        CLIENT,
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-context': 'tgc1.e30.sig',
          'x-tollgate-key': 'abababababababab',
          'x-tollgate-key-alias': 'ci  x-evil: 1',
          'x-tollgate-user': 'al ice ',
          'x-tollgate-team': 'plat form',
          'x-tollgate-model': 'lla ma',
          'x-tollgate-deployment': 'llama-a',
        },
        ['authorization', JWT_HEADER],
      ],
      [
        'non-ASCII claims are kept',
        allowed(principal({ userId: 'José Ñúñez' })),
        CLIENT,
        {
          'x-tollgate-request-id': 'req-1',
          'x-tollgate-context': 'tgc1.e30.sig',
          'x-tollgate-key': 'abababababababab',
          'x-tollgate-key-alias': 'ci-bot',
          'x-tollgate-user': 'José Ñúñez',
          'x-tollgate-team': 'platform',
          'x-tollgate-model': 'llama',
          'x-tollgate-deployment': 'llama-a',
        },
        ['authorization', JWT_HEADER],
      ],
    ];
  for (const [name, auth, client, set, removed] of cases) {
    test(name, () => {
      const res = checkResponse(auth, facts(client), JWT_HEADER) as OkShape;
      assert.deepEqual(res.status, { code: 0 });
      assert.equal('denied_response' in res, false);
      for (const h of res.ok_response.headers) assert.equal(h.append_action, 2, `${h.header.key}: OVERWRITE_IF_EXISTS_OR_ADD`);
      assert.deepEqual(setHeaders(res), set);
      assert.deepEqual([...res.ok_response.headers_to_remove].sort(), [...removed].sort());
      for (const h of res.ok_response.headers) assert.ok(!hasControl(h.header.value), h.header.key);
    });
  }
  test('credentials are removed even when the client did not send them', () => {
    const res = checkResponse(allowed(), facts({}), JWT_HEADER) as OkShape;
    assert.deepEqual([...res.ok_response.headers_to_remove].sort(), ['authorization', JWT_HEADER].sort());
  });
  test('the configured JWT header name is the one removed', () => {
    const res = checkResponse(allowed(), facts({ 'x-id-token': 't' }), 'x-id-token') as OkShape;
    assert.ok(res.ok_response.headers_to_remove.includes('x-id-token'));
    assert.ok(!res.ok_response.headers_to_remove.includes(JWT_HEADER));
  });
  test('no header is both set and removed (Envoy removes after setting)', () => {
    const client = { 'x-tollgate-user': 'x', 'x-tollgate-key': 'y', 'x-tollgate-context': 'z', 'x-tollgate-request-id': 'w' };
    const res = checkResponse(allowed(), facts(client), JWT_HEADER) as OkShape;
    const set = new Set(res.ok_response.headers.map((h) => h.header.key));
    for (const r of res.ok_response.headers_to_remove) assert.ok(!set.has(r), r);
  });
});

describe('checkResponse: denied', () => {
  const cases: Array<[code: ErrorCode, message: string | undefined, status: number, grpc: number]> = [
    ['invalid_body', undefined, 400, 3],
    ['missing_model', undefined, 400, 3],
    ['missing_jwt', undefined, 401, 16],
    ['invalid_jwt', 'The identity token in X-Cake-Authorization has expired: get a new token from your identity provider.', 401, 16],
    ['missing_api_key', undefined, 401, 16],
    ['invalid_api_key', undefined, 401, 16],
    ['expired_api_key', undefined, 401, 16],
    ['model_not_allowed', undefined, 403, 7],
    ['policy_denied', 'guests may only use llama', 403, 7],
    ['key_blocked', undefined, 403, 7],
    ['model_not_found', undefined, 404, 5],
    ['request_too_large', undefined, 413, 3],
    ['rate_limit_exceeded', undefined, 429, 8],
    ['budget_exceeded', undefined, 429, 8],
    ['store_unavailable', undefined, 503, 14],
    ['no_healthy_deployment', undefined, 503, 14],
  ];
  for (const [code, message, status, grpc] of cases) {
    test(`${code} → HTTP ${status}, gRPC ${grpc}`, () => {
      const auth: Authorization = {
        decision: { allow: false, code, message, detail: 'rule x (never shown)' },
        route: 'model',
        requestId: 'req-9',
        context: undefined,
      };
      const res = checkResponse(auth, facts({ authorization: 'Bearer sk-abcdefgh' }), JWT_HEADER) as DeniedShape;
      assert.deepEqual(res.status, { code: grpc, message: code });
      assert.equal('ok_response' in res, false);
      assert.deepEqual(res.denied_response.status, { code: status });
      const headers = Object.fromEntries(res.denied_response.headers.map((h) => [h.header.key, h.header.value]));
      assert.equal(headers['content-type'], 'application/json');
      assert.equal(headers['x-tollgate-request-id'], 'req-9');
      assert.equal(res.denied_response.body, errorBody(code, message));
      assert.deepEqual(JSON.parse(res.denied_response.body), {
        error: { message: message ?? ERRORS[code].message, type: ERRORS[code].type, param: null, code },
      });
      assert.doesNotMatch(res.denied_response.body, /never shown/, 'detail is for logs only');
    });
  }
  // CONTRACT.md, Denials: budget_exceeded carries `x-should-retry: false`.
  test('budget_exceeded carries x-should-retry: false', () => {
    const auth: Authorization = {
      decision: { allow: false, code: 'budget_exceeded', message: undefined, detail: undefined },
      route: 'model',
      requestId: 'r',
      context: undefined,
    };
    const res = checkResponse(auth, facts({}), JWT_HEADER) as DeniedShape;
    const headers = Object.fromEntries(res.denied_response.headers.map((h) => [h.header.key, h.header.value]));
    assert.equal(headers['x-should-retry'], 'false');
  });
});
