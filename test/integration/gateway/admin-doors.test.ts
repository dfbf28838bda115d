/**
 * The admin API refused on both doors, Envoy's Check and the standalone gateway, where `auth.jwt` is required:
 * a call with no credentials at all — what a LiteLLM operator's script sends before it has the master key — is
 * 401 missing_jwt, and the message says what opens these routes (the master key as a Bearer key; a token of
 * an admin group where `auth.admin_groups` is set), the same words on both doors, and the same whether a master
 * key is configured or not. A real IdP issues the tokens.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { EnvoyCheckClient } from '../../support/envoy.js';
import { startIdp, type TestIdp } from '../../support/idp.js';

const AUDIENCE = 'https://tollgate.internal';
const SECRET = 'admin-doors-context-key-0123456789abcdef';
const MASTER = 'sk-admin-doors-master-0123456789';

/** LiteLLM's admin calls, each with the method it takes. */
const ROUTES: readonly (readonly [string, string])[] = [
  ['GET', '/key/list'],
  ['GET', '/health'],
  ['GET', '/spend/logs'],
  ['POST', '/key/generate'],
];

interface Doors {
  readonly authz: AuthzApp;
  readonly gateway: GatewayApp;
  readonly envoy: EnvoyCheckClient;
}

interface Refusal {
  readonly status: number;
  readonly code: string;
  readonly message: string;
}

describe('admin routes without credentials, auth.jwt required: both doors say what opens them', () => {
  let idp: TestIdp;
  const opened: Doors[] = [];

  before(async () => {
    idp = await startIdp({ audience: AUDIENCE });
  });
  after(async () => {
    for (const d of opened) {
      d.envoy.close();
      await d.gateway.close(500);
      await d.authz.close(500);
    }
    await idp.close();
  });

  async function doors(settings: { master: boolean; adminGroups: boolean }): Promise<Doors> {
    const yaml = `
model_list:
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  context_signing_key: ${SECRET}
${settings.master ? `  master_key: ${MASTER}` : ''}
auth:
  jwt: { issuer: "${idp.issuer}", audience: ${AUDIENCE}, algorithms: [RS256], allow_insecure_http: true }
${settings.adminGroups ? '  admin_groups: [platform-admins]' : ''}
`;
    const prepared = prepareConfigText(yaml, 'admin-doors.yaml', {});
    const secret = contextSecret(SECRET, undefined) as Buffer;
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
    const logger = createLogger('silent');
    // Check loads the IdP's keys as it starts; the gateway shares its verifier.
    const authz = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics: createMetrics({ defaultMetrics: false }) });
    const gateway = await startGateway(prepared.config, parts, secret, {
      host: '127.0.0.1',
      port: 0,
      logger,
      spend: new InMemorySpendLog(),
    });
    const d = { authz, gateway, envoy: new EnvoyCheckClient(authz.port) };
    opened.push(d);
    return d;
  }

  /** The refusal the gateway answers itself (standalone). */
  async function standalone(d: Doors, method: string, path: string, headers: Record<string, string> = {}): Promise<Refusal> {
    const res = await fetch(`http://127.0.0.1:${d.gateway.port}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: method === 'POST' ? '{}' : undefined,
    });
    const body = (await res.json()) as { error: { code: string; message: string } };
    return { status: res.status, code: body.error.code, message: body.error.message };
  }

  /** The refusal Check sends Envoy (its DeniedHttpResponse). */
  async function check(d: Doors, method: string, path: string, headers: Record<string, string> = {}): Promise<Refusal> {
    const res = await d.envoy.check({ method, path, headers, body: method === 'POST' ? '{}' : undefined });
    const denied = res.denied_response;
    assert.ok(denied, `Check allowed ${method} ${path}`);
    const body = JSON.parse(denied.body) as { error: { code: string; message: string } };
    // envoy.type.v3.StatusCode, loaded as its name.
    const status = { Unauthorized: 401, Forbidden: 403 }[String(denied.status?.code)] ?? NaN;
    return { status, code: body.error.code, message: body.error.message };
  }

  /** Both doors refuse every admin route alike; the one message they give. */
  async function refusedAlike(d: Doors, headers: Record<string, string> = {}): Promise<string> {
    const messages = new Set<string>();
    for (const [method, path] of ROUTES) {
      for (const refusal of [await standalone(d, method, path, headers), await check(d, method, path, headers)]) {
        assert.deepEqual([refusal.status, refusal.code], [401, 'missing_jwt'], `${method} ${path}: ${refusal.message}`);
        messages.add(refusal.message);
      }
    }
    assert.equal(messages.size, 1, `one message on every route and both doors: ${[...messages].join(' | ')}`);
    return [...messages][0] as string;
  }

  test('regression: a master key and admin groups: the message names the master key as Bearer and the admin-group token', async () => {
    const d = await doors({ master: true, adminGroups: true });
    const message = await refusedAlike(d);
    assert.match(message, /^No credentials: /);
    assert.ok(message.includes('"Authorization: Bearer <master key>"'), message);
    assert.match(message, /admin group .*X-Cake-Authorization/);
    assert.ok(!message.includes(MASTER));
    // What it says works: the master key alone (Check allows; the gateway gets past authorization to the admin
    // API, which this process has no database for), and a token of an admin group alone.
    for (const [method, path] of ROUTES) {
      assert.equal((await d.envoy.check({ method, path, headers: { authorization: `Bearer ${MASTER}` } })).status?.code, 0);
      assert.equal((await standalone(d, method, path, { authorization: `Bearer ${MASTER}` })).status, 503, `${method} ${path}`);
    }
    const admin = await idp.token({ claims: { sub: 'pat', groups: ['platform-admins'] } });
    assert.equal((await d.envoy.check({ method: 'GET', path: '/key/list', headers: { 'x-cake-authorization': admin } })).status?.code, 0);
    // A model route without the token still asks for the token.
    const chat = await standalone(d, 'POST', '/v1/chat/completions', { authorization: `Bearer ${MASTER}` });
    assert.deepEqual([chat.status, chat.code], [401, 'missing_jwt']);
    assert.match(chat.message, /^No identity token: send an OAuth 2.0 access token/);
  });

  test('a wrong key and no token: the same 401, saying what opens the admin API', async () => {
    const d = await doors({ master: true, adminGroups: true });
    const message = await refusedAlike(d, { authorization: 'Bearer sk-not-the-master-key-0000' });
    assert.ok(message.includes('"Authorization: Bearer <master key>"'), message);
    assert.ok(!message.includes('sk-not-the-master-key-0000'));
  });

  test('admin groups with or without a master key: the same words (whether one is configured is not said)', async () => {
    const both = await refusedAlike(await doors({ master: true, adminGroups: true }));
    const groupsOnly = await refusedAlike(await doors({ master: false, adminGroups: true }));
    assert.equal(groupsOnly, both);
  });

  test('a master key without admin groups: the master key only, no token offered', async () => {
    const message = await refusedAlike(await doors({ master: true, adminGroups: false }));
    assert.ok(message.includes('"Authorization: Bearer <master key>"'), message);
    assert.ok(!/admin group|X-Cake-Authorization/.test(message), message);
  });

  test('neither a master key nor admin groups: the admin API says it is disabled (as the README documents)', async () => {
    const message = await refusedAlike(await doors({ master: false, adminGroups: false }));
    assert.match(message, /admin API is disabled: configure general_settings\.master_key or auth\.admin_groups/);
  });
});
