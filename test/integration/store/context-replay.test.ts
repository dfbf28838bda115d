/**
 * A signed `x-tollgate-context` serves one request: it is bound to its body (another body, even with the
 * same model, is not what Check allowed) and its limits lease is taken once, so a context sent again —
 * straight to the gateway, past Envoy — admits nothing more than the one request Check counted. With the
 * counters in process and in Redis (shared by every gateway replica).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { gatewayStoreOptions, openStore, type StoreApp } from '../../../src/main/store-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { applyOkResponse, EnvoyCheckClient } from '../../support/envoy.js';

const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const KEY = 'sk-context-replay-key-0001';
const SIGNING_KEY = 'context-replay-test-key-0123456789abcdef';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const body = (content: string): string => JSON.stringify({ model: 'llama', messages: [{ role: 'user', content }], max_tokens: 5 });

for (const counters of ['in process', 'Redis'] as const) {
  describe(`a context serves one request (counters ${counters})`, { timeout: 30_000 }, () => {
    let vllm: FakeVllm;
    let store: StoreApp;
    let authz: AuthzApp;
    let gateways: GatewayApp[];
    let envoy: EnvoyCheckClient;

    before(async () => {
      vllm = await startFakeVllm({ models: [MODEL], name: 'replay' });
      const redis = counters === 'Redis' ? `  redis_url: ${REDIS}\n  redis_key_prefix: "tg-replay-${randomUUID()}:"\n` : '';
      const prepared = prepareConfigText(
        `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${vllm.apiBase}" }
general_settings:
  context_signing_key: ${SIGNING_KEY}
${redis}keys:
  - key: sha256:${sha(KEY)}
    rpm_limit: 3
`,
        'replay.yaml',
        {},
      );
      const secret = contextSecret(SIGNING_KEY, undefined) as Buffer;
      const logger = createLogger('silent');
      store = await openStore(prepared.config, { logger, withDb: false, catalog: () => parts.authorizer.rules.catalog });
      const parts = buildAuthorizer(prepared.config, prepared.policy, secret, {
        keys: store.keys,
        teams: store.teams,
        limiter: store.limiter,
      });
      authz = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics: createMetrics({ defaultMetrics: false }) });
      // Two gateway replicas on the same counters: a context refused at one is refused at the other.
      gateways = [
        await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, ...gatewayStoreOptions(store) }),
        await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, ...gatewayStoreOptions(store) }),
      ];
      envoy = new EnvoyCheckClient(authz.port);
    });
    after(async () => {
      envoy.close();
      for (const g of gateways) await g.close(500);
      await authz.close(500);
      await store.close(500);
      await vllm.close();
    });

    /** Check for `text`, as Envoy sends it; the headers Envoy forwards. */
    async function checked(text: string): Promise<Record<string, string>> {
      const reqHeaders = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
      const check = await envoy.check({ headers: reqHeaders, body: text });
      assert.equal(check.status?.code, 0, 'Check allows');
      const headers: Record<string, string> = {};
      for (const [k, v] of applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>))
        if (!k.startsWith(':')) headers[k] = v.join(',');
      assert.equal(headers['authorization'], undefined, 'Envoy removed the key');
      return headers;
    }
    const send = (gw: GatewayApp, headers: Record<string, string>, text: string): Promise<Response> =>
      fetch(`http://127.0.0.1:${gw.port}/v1/chat/completions`, {
        method: 'POST',
        headers,
        body: text,
        signal: AbortSignal.timeout(10_000),
      });
    const [g0, g1] = [(): GatewayApp => gateways[0] as GatewayApp, (): GatewayApp => gateways[1] as GatewayApp];

    test('another body under a valid context is not trusted; the body Check saw then is', async () => {
      const headers = await checked(body('one'));
      const other = await send(g0(), headers, body('one, and then a much longer prompt'));
      assert.equal(other.status, 401, 'not the body Check allowed: authorized here, without the key Envoy removed');
      assert.equal(vllm.received.length, 0);
      const same = await send(g0(), headers, body('one'));
      assert.equal(same.status, 200, 'a refused binding took nothing');
      assert.equal(vllm.received.length, 1);
    });

    test('a context sent again is refused, at any replica; the key it carried is counted once per Check', async () => {
      vllm.received.length = 0;
      const text = body('two');
      const headers = await checked(text);
      assert.equal((await send(g0(), headers, text)).status, 200);
      for (const gw of [g0(), g1(), g1()]) {
        const again = await send(gw, headers, text);
        assert.equal(again.status, 401, 'the lease was taken: authorized here, without the key');
        const err = (await again.json()) as { error: { code: string } };
        assert.equal(err.error.code, 'missing_api_key');
      }
      assert.equal(vllm.received.length, 1, 'the backend served the one request Check admitted');
      // Sent again with the key itself, it is a new request, authorized and counted here: rpm_limit 3 holds
      // (two Checks before, and this one, admitted; the next, at any door, is over).
      const withKey = { ...headers, authorization: `Bearer ${KEY}` };
      assert.equal((await send(g1(), withKey, text)).status, 200);
      const over = await send(g0(), withKey, text);
      assert.equal(over.status, 429);
      const check = await envoy.check({ headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: text });
      assert.notEqual(check.status?.code, 0, 'Check too sees the limit reached');
    });
  });
}
