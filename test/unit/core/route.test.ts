/** classifyRoute and normalizePath: what Check demands of a request, from its method and path. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyRoute, normalizePath, type RouteKind } from '../../../src/core/route.js';
import { canonicalPath, envoyPath, unescapeSlashes } from '../../support/envoy-path.js';

const routes: Array<[method: string, path: string, kind: RouteKind]> = [
  ['POST', '/v1/chat/completions', 'model'],
  ['POST', '/chat/completions', 'model'],
  ['POST', '/v1/completions', 'model'],
  ['POST', '/completions', 'model'],
  ['POST', '/v1/embeddings', 'model'],
  ['POST', '/embeddings', 'model'],
  ['GET', '/v1/chat/completions', 'plain'],
  ['GET', '/v1/models', 'plain'],
  ['GET', '/models', 'plain'],
  ['POST', '/v1/models', 'plain'],
  ['GET', '/', 'plain'],
  ['GET', '/health/liveliness', 'probe'],
  ['GET', '/health/readiness', 'probe'],
  ['GET', '/health/liveness', 'probe'],
  ['HEAD', '/health/readiness', 'probe'],
  ['GET', '/health', 'admin'],
  ['GET', '/metrics', 'admin'],
  ['POST', '/key/generate', 'admin'],
  ['GET', '/key/info', 'admin'],
  ['GET', '/key/list', 'admin'],
  ['POST', '/key/update', 'admin'],
  ['POST', '/key/delete', 'admin'],
  ['POST', '/key/block', 'admin'],
  ['POST', '/key/unblock', 'admin'],
  ['POST', '/key/regenerate', 'admin'],
  ['POST', '/team/new', 'admin'],
  ['GET', '/team/info', 'admin'],
  ['POST', '/team/update', 'admin'],
  ['POST', '/team/delete', 'admin'],
  ['GET', '/team/list', 'admin'],
  ['GET', '/user/list', 'admin'],
  ['GET', '/spend/keys', 'admin'],
  ['GET', '/spend/logs', 'admin'],
  ['GET', '/global/spend', 'admin'],
  ['GET', '/model/info', 'admin'],
  ['POST', '/model/new', 'admin'],
  ['POST', '/model/delete', 'admin'],
  // Not admin merely for sharing a prefix without the slash.
  ['GET', '/keys', 'plain'],
  ['GET', '/healthz', 'plain'],
];

describe('classifyRoute', () => {
  for (const [method, path, kind] of routes) {
    test(`${method} ${path} → ${kind}`, () => assert.equal(classifyRoute(method, path), kind));
  }
});

const paths: Array<[raw: string, path: string | null]> = [
  ['/v1/chat/completions', '/v1/chat/completions'],
  ['/v1/models?limit=10', '/v1/models'],
  ['/key/info?key=sk-abc', '/key/info'],
  ['/spend/logs#frag', '/spend/logs'],
  ['/a?b=1#c', '/a'],
  ['/a#c?b=1', '/a'],
  ['/?', '/'],
  ['?x', '/'],
  ['/', '/'],
  ['', '/'],
  // Spelling variants of a model route normalise to it, so they cannot skip the model allow-lists.
  ['/v1/chat/completions/', '/v1/chat/completions'],
  ['//v1//chat/completions', '/v1/chat/completions'],
  ['/V1/Chat/Completions', '/v1/chat/completions'],
  ['/v1/%63hat/completions', '/v1/chat/completions'],
  // An encoded slash is a slash in a model id (the SDKs encode an alias's /), refused anywhere else: a proxy
  // in front routes on the path as sent, and /key%2Fgenerate is no admin route to it.
  ['/v1/chat%2Fcompletions', null],
  ['/v1/chat%2fcompletions', null],
  ['/key%2Fgenerate', null],
  ['/v1%2Fmodels/a', null],
  ['/V1//Models/a%2Fb', '/v1/models/a/b'],
  ['/v1/models/meta-llama%2FLlama-3.1-8B', '/v1/models/meta-llama/llama-3.1-8b'],
  ['/v1/models/a%2F%2Fb', '/v1/models/a/b'],
  ['/v1/models/a%252Fb', '/v1/models/a%2fb'],
  // Paths that hide their shape are refused, not resolved: a proxy in front may resolve them otherwise.
  ['/v1/models%2F..%2Fkey%2Fgenerate', null],
  ['/v1/%2E%2E/key/generate', null],
  ['/v1/.%2e/key/generate', null],
  ['/v1/chat%5Ccompletions', null],
  ['/v1/chat\\completions', null],
  ['/v1/%2e%2e/health/liveliness', null],
  ['/v1/./chat/completions', null],
  ['/v1/models/../chat/completions', null],
  ['/v1/chat/completions/..%2F..%2F..%2Fhealth%2Fliveliness', null],
  ['/../../v1/embeddings', null],
  ['/v1/chat/completions%', null],
];

describe('normalizePath', () => {
  for (const [raw, path] of paths) {
    test(`${JSON.stringify(raw)} → ${JSON.stringify(path)}`, () => assert.equal(normalizePath(raw), path));
  }
  test('the same string is returned when there is nothing to strip', () => {
    const raw = '/v1/embeddings';
    assert.equal(normalizePath(raw), raw);
  });
  test('a spelling variant of a model route is still a model route', () => {
    for (const raw of ['/v1/chat/completions/', '//v1/chat/completions', '/V1/CHAT/COMPLETIONS', '/v1/%63hat/completions']) {
      assert.equal(classifyRoute('POST', normalizePath(raw) ?? ''), 'model', raw);
    }
  });
  test('a query does not change the route kind', () => {
    assert.equal(classifyRoute('POST', normalizePath('/v1/chat/completions?stream=true') ?? ''), 'model');
    assert.equal(classifyRoute('GET', normalizePath('/health/readiness?full=1') ?? ''), 'probe');
  });
});

describe("normalizePath behind Envoy's path normalisation (test/support/envoy-path.ts)", () => {
  test("the model follows Envoy's own vectors (test/common/http/path_utility_test.cc)", () => {
    const vectors: Array<[string, string]> = [
      ['/a/b/../c', '/a/c'],
      ['/a/b/./c', '/a/b/c'],
      ['/a/b/../../../../c', '/c'],
      ['/a/..\\c', '/c'],
      ['/%5c%25', '/%5c%25'],
      ['/a/b/%2E%2E/c', '/a/c'],
      ['/xyz/..;foo=bar/abc', '/abc'],
      ['/a/%2F%2f/c', '/a/%2F%2f/c'],
    ];
    for (const [raw, out] of vectors) assert.equal(canonicalPath(raw), out, raw);
    assert.equal(unescapeSlashes('/x/%2E%2e/z%2f%2Fabc%5C../def').path, '/x/%2E%2e/z//abc\\../def');
  });

  // Encoded spellings a client could send to climb out of /v1/models/ (a prefix an ingress in front may allow).
  const climbing = [
    '/v1/models/x%2F..%2F..%2F..%2Fmetrics',
    '/v1/models/x%2f..%2f..%2f..%2fkey%2fgenerate',
    '/v1/models/x%5C..%5C..%5C..%5Cmetrics',
    '/v1/models/x%2F%2e%2e%2F%2e%2e%2F%2e%2e%2Fmetrics',
    '/v1/models/x%2F..;a%2F..;b%2F..;c%2Fmetrics',
    '/v1/models/x%252F..%252F..%252Fmetrics',
  ];

  test('with KEEP_UNCHANGED (the shipped config), no encoded spelling leaves /v1/models/, behind Envoy or not', () => {
    for (const raw of climbing) {
      for (const path of [envoyPath(raw, 'KEEP_UNCHANGED'), raw]) {
        const normal = path === null ? null : normalizePath(path);
        assert.ok(normal === null || normal.startsWith('/v1/models/'), `${raw} → ${String(normal)}`);
      }
    }
    // What the SDKs send for an alias with a / still names it.
    assert.equal(normalizePath(envoyPath('/v1/models/org%2Fmodel', 'KEEP_UNCHANGED') ?? ''), '/v1/models/org/model');
  });

  test('UNESCAPE_AND_FORWARD would let them climb: it decodes %2F and %5C before it resolves dot segments', () => {
    assert.equal(envoyPath('/v1/models/x%2F..%2F..%2F..%2Fmetrics', 'UNESCAPE_AND_FORWARD'), '/metrics');
    assert.equal(envoyPath('/v1/models/x%5C..%5C..%5C..%5Cmetrics', 'UNESCAPE_AND_FORWARD'), '/metrics');
  });
});
