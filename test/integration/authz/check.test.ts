/**
 * Check end to end: a real OIDC provider issues tokens, tollgate's authz server runs on 127.0.0.1, and
 * the calls are made with Envoy's own protos; allowed responses are applied with Envoy's header semantics.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { SignJWT, importJWK, type JWK } from 'jose';
import { startIdp, type TestIdp } from '../../support/idp.js';
import { applyOkResponse, deniedHeaders, EnvoyCheckClient, type CheckInput, type EnvoyCheckResponse } from '../../support/envoy.js';
import { startTestAuthz, TEST_CONTEXT_KEY, type TestAuthz } from '../../support/authz.js';
import { startEnvoyProxy } from '../../support/envoy-proxy.js';
import { errorBody } from '../../../src/errors/codes.js';
import { ContextSigner, contextSecret } from '../../../src/identity/context-token.js';
import { PROTO_DIR } from '../../../src/authz/protos.js';
import { KID_REFETCH_COOLDOWN_MS } from '../../../src/identity/jwt.js';

const AUDIENCE = 'https://tollgate.internal';
const MASTER = 'sk-master-0123456789abcdefghij';
const KEY = 'sk-ci-bot-key-0001';
const KEY_LLAMA_ONLY = 'sk-llama-only-key-0002';
const KEY_BLOCKED = 'sk-blocked-key-0003';
const KEY_EXPIRED = 'sk-expired-key-0004';
const KEY_NO_TEAM = 'sk-no-team-key-0005';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

function config(issuer: string): string {
  return `
model_list:
  - model_name: llama-3.1-8b
    litellm_params: { model: openai/meta-llama/Llama-3.1-8B-Instruct, api_base: "http://127.0.0.1:9/v1", weight: 1 }
    model_info: { id: llama-a }
  - model_name: llama-3.1-8b
    litellm_params: { model: openai/meta-llama/Llama-3.1-8B-Instruct, api_base: "http://127.0.0.1:10/v1", weight: 3 }
    model_info: { id: llama-b }
  - model_name: qwen3-8b
    litellm_params: { model: openai/Qwen/Qwen3-8B, api_base: "http://127.0.0.1:11/v1" }
    model_info: { id: qwen-a }
general_settings:
  master_key: os.environ/TG_MASTER
  context_signing_key: ${TEST_CONTEXT_KEY}
  max_request_size_mb: 0.01
auth:
  jwt:
    issuer: ${issuer}
    audience: ${AUDIENCE}
    algorithms: [RS256]
    clock_tolerance_s: 5
    allow_insecure_http: true
  admin_groups: [platform-admins]
policy:
  rules:
    - name: guests-small-models-only
      when: "'guests' in jwt.groups && !model.startsWith('llama-3.1-8b')"
      deny: guests may only use the 8B model
keys:
  - key: sha256:${sha(KEY)}
    key_alias: ci-bot
    models: [llama-3.1-8b, qwen3-8b]
    user_id: ci
    team_id: platform
  - key: os.environ/TG_KEY_LLAMA
    key_alias: llama-only
    models: [llama-3.1-8b]
  - key: sha256:${sha(KEY_BLOCKED)}
    blocked: true
  - key: sha256:${sha(KEY_EXPIRED)}
    expires: 2020-01-01T00:00:00Z
  - key: sha256:${sha(KEY_NO_TEAM)}
    user_id: solo
teams:
  - team_id: platform
    models: [llama-3.1-8b, qwen3-8b]
`;
}

const CHAT_BODY = JSON.stringify({ model: 'llama-3.1-8b', messages: [{ role: 'user', content: 'Say hello in French.' }], max_tokens: 64 });

describe('ext_authz Check', () => {
  let idp: TestIdp;
  let authz: TestAuthz;
  let envoy: EnvoyCheckClient;
  let token: string;
  const signer = new ContextSigner(contextSecret(TEST_CONTEXT_KEY, undefined) as Buffer);

  before(async () => {
    idp = await startIdp({ audience: AUDIENCE });
    authz = await startTestAuthz(config(idp.issuer), { TG_MASTER: MASTER, TG_KEY_LLAMA: KEY_LLAMA_ONLY });
    envoy = new EnvoyCheckClient(authz.port);
    token = await idp.token({ claims: { sub: 'alice', email: 'alice@example.com', groups: ['engineers'] } });
  });
  after(async () => {
    envoy.close();
    await authz.close();
    await idp.close();
  });

  const call = (input: CheckInput): Promise<EnvoyCheckResponse> => envoy.check(input);
  const creds = (key = KEY, jwt = token): Record<string, string> => ({
    authorization: `Bearer ${key}`,
    'x-cake-authorization': `Bearer ${jwt}`,
  });

  async function denied(input: CheckInput, status: number, code: string): Promise<{ message: string; headers: Record<string, string> }> {
    const res = await call(input);
    assert.notEqual(res.status?.code, 0, `expected a denial ${code}`);
    assert.equal(res.http_response, 'denied_response');
    const d = res.denied_response;
    assert.ok(d);
    const body = JSON.parse(d.body) as { error: { message: string; type: string; param: null; code: string } };
    assert.equal(body.error.code, code);
    assert.equal(body.error.param, null);
    assert.equal(httpStatus(d.status?.code), status, `HTTP status of ${code}`);
    const headers = deniedHeaders(d);
    assert.equal(headers['content-type'], 'application/json');
    return { message: body.error.message, headers };
  }

  test('allows a valid request and sets every contract header with overwrite semantics', async () => {
    const reqHeaders = { ...creds(), 'content-type': 'application/json', 'x-request-id': 'req-123' };
    const res = await call({ headers: reqHeaders, body: CHAT_BODY });
    assert.equal(res.status?.code, 0);
    assert.equal(res.http_response, 'ok_response');
    const ok = res.ok_response;
    assert.ok(ok);
    for (const h of ok.headers) assert.equal(h.append_action, 'OVERWRITE_IF_EXISTS_OR_ADD', h.header.key);
    const fwd = applyOkResponse({ ...reqHeaders, ':path': '/v1/chat/completions' }, ok);
    const one = (name: string): string | undefined => {
      const v = fwd.get(name);
      assert.ok(v === undefined || v.length === 1, `${name} has one value`);
      return v?.[0];
    };
    assert.equal(one('authorization'), undefined);
    assert.equal(one('x-cake-authorization'), undefined);
    assert.equal(one('x-tollgate-key'), sha(KEY).slice(0, 16));
    assert.equal(one('x-tollgate-key-alias'), 'ci-bot');
    assert.equal(one('x-tollgate-user'), 'alice');
    assert.equal(one('x-tollgate-team'), 'platform');
    assert.equal(one('x-tollgate-model'), 'llama-3.1-8b');
    assert.ok(['llama-a', 'llama-b'].includes(one('x-tollgate-deployment') ?? ''));
    assert.equal(one('x-tollgate-request-id'), 'req-123');
    const ctx = signer.verify(one('x-tollgate-context') ?? '', Date.now());
    assert.ok(ctx.ok);
    assert.equal(ctx.claims.m, 'llama-3.1-8b');
    assert.equal(ctx.claims.d, one('x-tollgate-deployment'));
    assert.equal(ctx.claims.k, sha(KEY).slice(0, 16));
    assert.equal(ctx.claims.u, 'alice');
    assert.equal(ctx.claims.r, 'req-123');
    assert.equal(ctx.claims.p, 'POST /v1/chat/completions');
    assert.ok(ctx.claims.x > Date.now() && ctx.claims.x <= Date.now() + 60_000, 'short-lived');
    assert.equal(signer.verify(one('x-tollgate-context') ?? '', Date.now() + 120_000).ok, false, 'expires');
  });

  test('client-sent x-tollgate-* headers never survive', async () => {
    const spoofed = {
      ...creds(KEY_NO_TEAM),
      'x-tollgate-user': 'root',
      'x-tollgate-team': 'platform-admins',
      'x-tollgate-deployment': 'evil',
      'x-tollgate-context': 'tgc1.forged.forged',
      'x-tollgate-key-alias': 'ci-bot',
      'x-tollgate-anything': 'x',
    };
    const res = await call({ headers: spoofed, body: CHAT_BODY });
    assert.equal(res.status?.code, 0);
    const fwd = applyOkResponse(spoofed, res.ok_response as NonNullable<EnvoyCheckResponse['ok_response']>);
    assert.deepEqual(fwd.get('x-tollgate-user'), ['alice']);
    assert.equal(fwd.get('x-tollgate-team'), undefined, 'a key without a team: the spoofed team is removed');
    assert.equal(fwd.get('x-tollgate-key-alias'), undefined, 'a key without an alias: the spoofed alias is removed');
    assert.equal(fwd.get('x-tollgate-anything'), undefined);
    assert.notDeepEqual(fwd.get('x-tollgate-deployment'), ['evil']);
    assert.equal(fwd.get('x-tollgate-context')?.length, 1);
    assert.notEqual(fwd.get('x-tollgate-context')?.[0], 'tgc1.forged.forged');
  });

  test('reads the body as body, raw_body (pack_as_bytes) and headers from header_map (encode_raw_headers)', async () => {
    for (const input of [
      { headers: creds(), body: CHAT_BODY },
      { headers: creds(), rawBody: Buffer.from(CHAT_BODY) },
      { headers: creds(), rawBody: Buffer.from(CHAT_BODY), rawHeaders: true },
      { headers: creds(), body: CHAT_BODY, rawHeaders: true },
    ]) {
      const res = await call(input);
      assert.equal(res.status?.code, 0, JSON.stringify({ raw: input.rawHeaders, rawBody: input.rawBody !== undefined }));
      const model = res.ok_response?.headers.find((h) => h.header.key === 'x-tollgate-model');
      assert.equal(model?.header.value, 'llama-3.1-8b');
    }
  });

  test('GET /v1/models and /v1/models/{model} are authorized without a body or model; not without a key', async () => {
    for (const path of ['/v1/models', '/v1/models/qwen3-8b']) {
      const res = await call({ method: 'GET', path, headers: creds() });
      assert.equal(res.status?.code, 0, path);
      const keys = res.ok_response?.headers.map((h) => h.header.key) ?? [];
      assert.ok(keys.includes('x-tollgate-key'));
      assert.ok(!keys.includes('x-tollgate-model'));
      assert.ok(!keys.includes('x-tollgate-deployment'));
      await denied({ method: 'GET', path, headers: { 'x-cake-authorization': `Bearer ${token}` } }, 401, 'missing_api_key');
    }
  });

  test('JWT and key denials', async () => {
    await denied({ headers: { authorization: `Bearer ${KEY}` }, body: CHAT_BODY }, 401, 'missing_jwt');
    await denied({ headers: { 'x-cake-authorization': token }, body: CHAT_BODY }, 401, 'missing_api_key');
    await denied({ headers: creds('sk-not-a-known-key-99'), body: CHAT_BODY }, 401, 'invalid_api_key');
    await denied({ headers: { ...creds(), authorization: 'Basic dXNlcjpwYXNz' }, body: CHAT_BODY }, 401, 'invalid_api_key');
    await denied({ headers: creds(KEY_EXPIRED), body: CHAT_BODY }, 401, 'expired_api_key');
    await denied({ headers: creds(KEY_BLOCKED), body: CHAT_BODY }, 403, 'key_blocked');
    // raw JWT (no "Bearer ") is accepted as well
    assert.equal(
      (await call({ headers: { authorization: `Bearer ${KEY}`, 'x-cake-authorization': token }, body: CHAT_BODY })).status?.code,
      0,
    );
  });

  test('request denials: body, model, allow-lists, policy, size', async () => {
    const c = creds();
    await denied({ headers: c, body: 'not json' }, 400, 'invalid_body');
    await denied({ headers: c }, 400, 'invalid_body');
    await denied({ headers: c, body: JSON.stringify({ messages: [] }) }, 400, 'missing_model');
    await denied({ headers: creds(KEY_LLAMA_ONLY), body: JSON.stringify({ model: 'qwen3-8b' }) }, 403, 'model_not_allowed');
    await denied({ headers: creds(KEY_NO_TEAM), body: JSON.stringify({ model: 'no-such-model' }) }, 404, 'model_not_found');
    const guest = await idp.token({ claims: { sub: 'gus', groups: ['guests'] } });
    const p = await denied({ headers: creds(KEY, guest), body: JSON.stringify({ model: 'qwen3-8b' }) }, 403, 'policy_denied');
    assert.equal(p.message, 'guests may only use the 8B model');
    assert.equal((await call({ headers: creds(KEY, guest), body: CHAT_BODY })).status?.code, 0, 'the guest may use the 8B model');
    const big = JSON.stringify({ model: 'llama-3.1-8b', messages: [{ role: 'user', content: 'x'.repeat(20_000) }] });
    const tooBig = await denied({ headers: c, body: big }, 413, 'request_too_large');
    assert.match(tooBig.message, /larger than this gateway takes \(10 KiB\)/, 'max_request_size_mb: 0.01');
    assert.equal(tooBig.headers['x-request-id'], tooBig.headers['x-tollgate-request-id'], "the SDKs' request id is tollgate's");
    await denied({ headers: { ...c, 'x-envoy-auth-partial-body': 'true' }, body: CHAT_BODY }, 413, 'request_too_large');
    // A path that hides its shape is refused, never decoded into a credential-free probe.
    await denied({ path: '/v1/chat/completions/..%2F..%2F..%2Fhealth%2Fliveliness', body: CHAT_BODY }, 404, 'not_found');
  });

  test('no denial message echoes a key, a token or the prompt', async () => {
    const secretPrompt = 'my-secret-prompt-text';
    const responses = await Promise.all([
      call({ headers: creds('sk-leaky-key-123456'), body: CHAT_BODY }),
      call({ headers: creds(KEY, `${token}x`), body: CHAT_BODY }),
      call({ headers: creds(), body: `{"model": 5, "messages": "${secretPrompt}"}` }),
      call({ headers: creds(), body: JSON.stringify({ model: `nope-${secretPrompt}` }) }),
    ]);
    for (const r of responses) {
      const text = JSON.stringify(r.denied_response);
      assert.ok(r.denied_response, 'denied');
      for (const secret of ['sk-leaky-key-123456', token.slice(20, 60), secretPrompt, KEY])
        assert.ok(!text.includes(secret), `leaks ${secret.slice(0, 8)}`);
    }
    const logs = authz.logs.join('\n');
    for (const secret of [KEY, KEY_LLAMA_ONLY, MASTER, token.slice(20, 60), 'sk-leaky-key-123456'])
      assert.ok(!logs.includes(secret), 'logs leak a secret');
  });

  test('admin routes: the master key or an admin group, nothing else', async () => {
    assert.equal((await call({ method: 'GET', path: '/key/list', headers: creds(MASTER) })).status?.code, 0);
    const admin = await idp.token({ claims: { sub: 'pat', groups: ['platform-admins'] } });
    assert.equal((await call({ method: 'GET', path: '/key/list', headers: { 'x-cake-authorization': admin } })).status?.code, 0);
    await denied({ method: 'GET', path: '/key/list', headers: creds() }, 403, 'policy_denied');
    await denied({ method: 'POST', path: '/key/generate', headers: { 'x-cake-authorization': token }, body: '{}' }, 401, 'missing_api_key');
    // Liveness needs no credentials.
    assert.equal((await call({ method: 'GET', path: '/health/liveliness' })).status?.code, 0);
  });

  describe('token attacks', () => {
    let forge: (claims: Record<string, unknown>, header?: Record<string, unknown>) => Promise<string>;
    before(() => {
      const sk = idp.signingKey();
      forge = async (claims, header = {}) => {
        const key = await importJWK(sk.privateJwk as JWK, 'RS256');
        const now = Math.floor(Date.now() / 1000);
        return new SignJWT({ iss: idp.issuer, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300, ...claims })
          .setProtectedHeader({ alg: 'RS256', kid: sk.kid, typ: 'at+jwt', ...header })
          .sign(key);
      };
    });
    const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const reason = async (jwt: string, code = 'invalid_jwt'): Promise<string> =>
      (await denied({ headers: creds(KEY, jwt), body: CHAT_BODY }, 401, code)).message;

    test('a correctly signed forgery is accepted only with valid claims (control)', async () => {
      assert.equal((await call({ headers: creds(KEY, await forge({})), body: CHAT_BODY })).status?.code, 0);
    });
    test('forged signature', async () => {
      const good = await forge({});
      const [h, p] = good.split('.');
      const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const sig = (await import('node:crypto')).sign('sha256', Buffer.from(`${h}.${p}`), other.privateKey).toString('base64url');
      assert.match(await reason(`${h}.${p}.${sig}`), /signature/);
      const tampered = `${h}.${b64({ ...JSON.parse(Buffer.from(p as string, 'base64url').toString()), sub: 'root' })}.${good.split('.')[2]}`;
      assert.match(await reason(tampered), /signature/);
    });
    test('alg none', async () => {
      const now = Math.floor(Date.now() / 1000);
      const jwt = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: idp.issuer, aud: AUDIENCE, sub: 'x', exp: now + 60 })}.`;
      assert.match(await reason(jwt), /algorithm|not a JWT/);
    });
    test('HS256 signed with the RSA public key', async () => {
      const pem = createPublicKey({ key: idp.signingKey().publicJwk as JsonWebKey, format: 'jwk' }).export({
        type: 'spki',
        format: 'pem',
      });
      const now = Math.floor(Date.now() / 1000);
      const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: idp.signingKey().kid })}.${b64({ iss: idp.issuer, aud: AUDIENCE, sub: 'x', exp: now + 60 })}`;
      const sig = createHmac('sha256', pem).update(input).digest('base64url');
      assert.match(await reason(`${input}.${sig}`), /algorithm/);
    });
    test('wrong audience, wrong issuer, expired, not yet valid', async () => {
      assert.match(await reason(await idp.token({ audience: 'https://other.internal' })), /audience/);
      assert.match(await reason(await forge({ iss: 'https://evil.example.com' })), /another identity provider/);
      const now = Math.floor(Date.now() / 1000);
      assert.match(await reason(await forge({ exp: now - 60, iat: now - 120 })), /expired/);
      assert.match(await reason(await forge({ nbf: now + 600 })), /not valid yet/);
      // Within the configured clock tolerance (5 s) both are still fine.
      assert.equal((await call({ headers: creds(KEY, await forge({ exp: now - 2 })), body: CHAT_BODY })).status?.code, 0);
    });
    test('a token without exp is refused, not cached forever (RFC 9068 §2.2)', async () => {
      const noExp = await forge({ exp: undefined });
      const claims = JSON.parse(Buffer.from(noExp.split('.')[1] as string, 'base64url').toString()) as Record<string, unknown>;
      assert.ok(!('exp' in claims), 'the token has no exp');
      const message = await reason(noExp);
      assert.match(message, /no expiry \(exp claim\)/);
      assert.ok(!message.includes(noExp.slice(0, 20)), 'the message does not echo the token');
      assert.match(await reason(await forge({ exp: '9999999999' })), /invalid claims/);
    });
    test('a typ header naming another kind of JWT is refused; JWT, at+jwt or none are accepted', async () => {
      for (const typ of ['logout+jwt', 'secevent+jwt', 'id_token+jwt', 'application/logout+jwt', 'JOSE', 'dpop+jwt']) {
        const jwt = await forge({}, { typ });
        const message = await reason(jwt);
        assert.match(message, /not an access token/, typ);
        assert.ok(!message.includes(jwt.slice(0, 20)) && !message.includes(typ), 'the message echoes neither the token nor its header');
      }
      for (const typ of [undefined, 'JWT', 'jwt', 'at+jwt', 'AT+JWT', 'application/at+jwt', 'Application/JWT']) {
        const res = await call({ headers: creds(KEY, await forge({}, { typ })), body: CHAT_BODY });
        assert.equal(res.status?.code, 0, `typ ${String(typ)} is accepted`);
      }
    });
    test("Keycloak's typ claim: an ID, refresh or logout token is refused; Bearer (its access tokens) or none is accepted", async () => {
      for (const typ of ['ID', 'Refresh', 'Logout', 'Offline'])
        assert.match(await reason(await forge({ typ }, { typ: 'JWT' })), /not an access token/, typ);
      for (const typ of ['Bearer', 'bearer']) {
        const res = await call({ headers: creds(KEY, await forge({ typ }, { typ: 'JWT' })), body: CHAT_BODY });
        assert.equal(res.status?.code, 0, `typ claim ${typ} is accepted`);
      }
    });
    test('garbage and empty tokens', async () => {
      assert.match(await reason('garbage'), /not a JWT/);
      assert.match(await reason('a.b.c'), /not a JWT|invalid/);
      await denied({ headers: creds(KEY, ''), body: CHAT_BODY }, 401, 'missing_jwt');
      await denied({ headers: { authorization: `Bearer ${KEY}`, 'x-cake-authorization': 'Bearer ' }, body: CHAT_BODY }, 401, 'missing_jwt');
    });
    test('a cached valid token stops being accepted when it expires', async () => {
      const now = Date.now();
      const short = await forge({ exp: Math.floor(now / 1000) + 1 });
      assert.equal((await call({ headers: creds(KEY, short), body: CHAT_BODY })).status?.code, 0);
      await new Promise((r) => setTimeout(r, 1000 * (1 + 5) + 200 - (Date.now() - now)));
      assert.match(await reason(short), /expired/);
    });
  });

  test('key rotation at the IdP is picked up without a restart, unknown kids refetch at most once per cooldown', async () => {
    const before = idp.jwksFetches();
    await idp.rotateKey();
    const fresh = await idp.token({ claims: { sub: 'alice' } });
    assert.equal((await call({ headers: creds(KEY, fresh), body: CHAT_BODY })).status?.code, 0);
    assert.equal(idp.jwksFetches(), before + 1, 'one refetch for the new kid');
    // Tokens of the removed key stop validating at once (the verified-token cache is dropped).
    await denied({ headers: creds(KEY, token), body: CHAT_BODY }, 401, 'invalid_jwt');
    // Several tokens with unknown kids right away: no further fetch within the cooldown.
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const now = Math.floor(Date.now() / 1000);
    for (let i = 0; i < 3; i++) {
      const jwt = await new SignJWT({ iss: idp.issuer, aud: AUDIENCE, sub: 'x', exp: now + 60 })
        .setProtectedHeader({ alg: 'RS256', kid: `unknown-${i}` })
        .sign(stranger.privateKey);
      await denied({ headers: creds(KEY, jwt), body: CHAT_BODY }, 401, 'invalid_jwt');
    }
    assert.equal(idp.jwksFetches(), before + 1, 'no refetch storm');
    token = fresh;
  });

  test('grpc.health.v1.Health answers SERVING', async () => {
    const def = protoLoader.loadSync('grpc/health/v1/health.proto', { includeDirs: [PROTO_DIR], keepCase: true, enums: String });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client } } };
    };
    const client = new pkg.grpc.health.v1.Health(`127.0.0.1:${authz.port}`, grpc.credentials.createInsecure()) as unknown as {
      Check: (r: object, cb: (e: grpc.ServiceError | null, r: { status: string }) => void) => void;
      close(): void;
    };
    const check = (service: string): Promise<{ status: string }> =>
      new Promise((res, rej) => client.Check({ service }, (e, r) => (e ? rej(e) : res(r))));
    assert.equal((await check('')).status, 'SERVING');
    assert.equal((await check('envoy.service.auth.v3.Authorization')).status, 'SERVING');
    await assert.rejects(check('no.such.Service'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
    client.close();
  });

  test("through Envoy's local replies: the gateway down is OpenAI JSON without Envoy's text; a denial keeps tollgate's body", async () => {
    // Held for the test (a port merely closed could be taken meanwhile): every connection dropped at once.
    const refusing = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    const dead = (refusing.address() as AddressInfo).port;
    const front = await startEnvoyProxy({ authzPort: authz.port, gatewayPort: dead });
    const noAuthz = await startEnvoyProxy({ authzPort: dead, gatewayPort: dead });
    try {
      const post = (url: string, headers: Record<string, string>): Promise<Response> =>
        fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: CHAT_BODY,
        });
      // Allowed by Check; the gateway behind Envoy does not answer.
      const down = await post(front.url, creds());
      assert.equal(down.status, 503);
      assert.equal(down.headers.get('content-type'), 'application/json');
      const text = await down.text();
      assert.ok(!/upstream connect|reset reason/.test(text), text);
      assert.deepEqual(
        JSON.parse(text),
        JSON.parse(errorBody('gateway_unavailable', 'tollgate is not reachable right now: retry shortly.')),
      );
      // Denied by Check: tollgate's own status and body.
      const deniedReply = await post(front.url, creds('sk-nobody-has-this-key-0099'));
      assert.equal(deniedReply.status, 401);
      assert.equal(((await deniedReply.json()) as { error: { code: string } }).error.code, 'invalid_api_key');
      // Check unreachable: status_on_error (500, flagged UAEX like a denial), mapped to a 503 in OpenAI's shape.
      const failed = await post(noAuthz.url, creds());
      assert.equal(failed.status, 503);
      assert.equal(failed.headers.get('content-type'), 'application/json');
      assert.equal(((await failed.json()) as { error: { code: string } }).error.code, 'authz_unavailable');
    } finally {
      await front.close();
      await noAuthz.close();
      refusing.close();
    }
  });
});

describe('ext_authz Check when the identity provider is down', () => {
  test('a token needing a JWKS refetch fails the call with UNAVAILABLE (Envoy applies status_on_error), never allows', async () => {
    const idp = await startIdp({ audience: AUDIENCE });
    const authz = await startTestAuthz(config(idp.issuer), { TG_MASTER: MASTER, TG_KEY_LLAMA: KEY_LLAMA_ONLY });
    const envoy = new EnvoyCheckClient(authz.port);
    try {
      await idp.rotateKey();
      const fresh = await idp.token();
      await idp.close();
      // Past the unknown-kid refetch cooldown that the boot-time fetch started.
      await new Promise((r) => setTimeout(r, KID_REFETCH_COOLDOWN_MS + 100));
      await assert.rejects(
        envoy.check({ headers: { authorization: `Bearer ${KEY}`, 'x-cake-authorization': fresh }, body: CHAT_BODY }),
        (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE,
      );
      assert.ok(authz.logs.some((l) => l.includes('"reason":"idp_unavailable"')));
    } finally {
      envoy.close();
      await authz.close();
    }
  });
});

/** envoy.type.v3.StatusCode enum name → number, as proto-loader renders enums as strings. */
function httpStatus(name: string | undefined): number {
  const map: Record<string, number> = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    TooManyRequests: 429,
    ServiceUnavailable: 503,
  };
  return map[name ?? ''] ?? -1;
}
