/**
 * The model listing behind Envoy for a long catalog: Check signs which aliases the policy hides into the
 * context, as names while they are few and as a bitmap over the catalog's sorted aliases past that, so a
 * policy hiding half of 600 aliases still fits the header; a bitmap made over another catalog lists nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { aliasBitmap, aliasesOfBitmap, ModelCatalog } from '../../../src/routing/deployments.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { applyOkResponse, EnvoyCheckClient } from '../../support/envoy.js';

const SECRET = 'listing-test-context-key-0123456789abcdef';
const GUEST = 'sk-listing-guest-00000001';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
/** 600 aliases of 27 characters: `open-model-family-a-000` … and `b-`. */
const ALIASES = Array.from({ length: 600 }, (_, i) => `open-model-family-${i % 2 === 0 ? 'a' : 'b'}-${String(i).padStart(6, '0')}`);

describe('the model listing of a long catalog behind Envoy', { timeout: 30_000 }, () => {
  let authz: AuthzApp;
  let gw: GatewayApp;
  let envoy: EnvoyCheckClient;

  before(async () => {
    const models = ALIASES.map(
      (a) => `  - model_name: ${a}\n    litellm_params: { model: openai/m, api_base: "http://127.0.0.1:9/v1" }`,
    ).join('\n');
    const prepared = prepareConfigText(
      `model_list:\n${models}\ngeneral_settings:\n  context_signing_key: ${SECRET}\nkeys:\n  - key: sha256:${sha(GUEST)}\n    key_alias: guest\npolicy:\n  rules:\n    - name: guests-family-a\n      when: "key.alias == 'guest' && model.contains('-b-')"\n      deny: guests use family a\n`,
      'listing.yaml',
      {},
    );
    const secret = contextSecret(SECRET, undefined) as Buffer;
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
    const logger = createLogger('silent');
    authz = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics: createMetrics({ defaultMetrics: false }) });
    gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, spend: new InMemorySpendLog() });
    envoy = new EnvoyCheckClient(authz.port);
  });
  after(async () => {
    envoy.close();
    await gw.close(500);
    await authz.close(500);
  });

  test('half of 600 aliases hidden: the context fits, and the gateway lists the other half', async () => {
    const reqHeaders = { authorization: `Bearer ${GUEST}` };
    const check = await envoy.check({ method: 'GET', path: '/v1/models', headers: reqHeaders });
    assert.equal(check.status?.code, 0);
    const headers: Record<string, string> = {};
    for (const [k, v] of applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>))
      if (!k.startsWith(':')) headers[k] = v.join(',');
    const context = String(headers['x-tollgate-context']);
    assert.ok(context.length < 1024, `context of ${context.length} characters`);
    const claims = JSON.parse(Buffer.from(context.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
    assert.equal(typeof claims['hb'], 'string');
    assert.deepEqual(claims['v'], [], 'beside the bitmap, for a gateway that reads only names: nothing listed, not everything');
    const r = await fetch(`http://127.0.0.1:${gw.port}/v1/models`, { headers });
    assert.equal(r.status, 200);
    const ids = ((await r.json()) as { data: { id: string }[] }).data.map((m) => m.id).sort();
    assert.deepEqual(ids, ALIASES.filter((a) => a.includes('-a-')).sort());
  });
});

test('aliasBitmap: a set round-trips over the same catalog; over another it is unknown', () => {
  const catalog = (names: string[]): ModelCatalog =>
    ModelCatalog.fromConfig(
      names.map((n) => ({
        model_name: n,
        litellm_params: { model: 'openai/m', api_base: 'http://h/v1', weight: 1 },
        model_info: {},
      })),
    );
  const a = catalog(['zeta', 'alpha', 'mid', 'beta', 'q1', 'q2', 'q3', 'q4', 'q5']);
  const hidden = new Set(['zeta', 'beta', 'q5']);
  const bits = aliasBitmap(a.listing, hidden);
  assert.deepEqual(aliasesOfBitmap(a.listing, a.listing.digest, bits)?.sort(), [...hidden].sort());
  const b = catalog(['zeta', 'alpha', 'mid', 'beta', 'q1', 'q2', 'q3', 'q4', 'q5', 'new']);
  assert.notEqual(b.listing.digest, a.listing.digest);
  assert.equal(aliasesOfBitmap(b.listing, a.listing.digest, bits), undefined);
  assert.equal(aliasesOfBitmap(a.listing, a.listing.digest, 'AAAAAAAA'), undefined, 'a bitmap of another length');
});
