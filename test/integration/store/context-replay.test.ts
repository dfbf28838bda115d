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
import { ContextSigner, contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { applyOkResponse, EnvoyCheckClient } from '../../support/envoy.js';

const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const KEY = 'sk-context-replay-key-0001';
/** No limits: nothing is leased at Check, and its context is still used once. */
const FREE = 'sk-context-replay-free-001';
/** One request at a time: a lease not given back holds the key's only slot. */
const ONE = 'sk-context-replay-one-0001';
const MASTER = 'sk-context-replay-master-0123456789';
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
    const rows = new InMemorySpendLog();

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
  master_key: ${MASTER}
${redis}keys:
  - key: sha256:${sha(KEY)}
    rpm_limit: 3
  - key: sha256:${sha(FREE)}
  - key: sha256:${sha(ONE)}
    max_parallel_requests: 1
`,
        'replay.yaml',
        {},
      );
      const secret = contextSecret(SIGNING_KEY, undefined) as Buffer;
      const logger = createLogger('silent');
      store = await openStore(prepared.config, { logger, withDb: false, catalog: () => parts.authorizer.rules.catalog, mirror: rows });
      const parts = buildAuthorizer(prepared.config, prepared.policy, secret, {
        keys: store.keys,
        teams: store.teams,
        limiter: store.limiter,
      });
      authz = await startAuthz(parts, {
        host: '127.0.0.1',
        port: 0,
        logger,
        metrics: createMetrics({ defaultMetrics: false }),
        denials: store.accounting,
      });
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
    async function checked(text: string, key = KEY, path = '/v1/chat/completions'): Promise<Record<string, string>> {
      const reqHeaders = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const check = await envoy.check({ headers: reqHeaders, body: text, path });
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

    test('a context without a lease (a key without limits, the admin API) is used once too', async () => {
      vllm.received.length = 0;
      const text = body('free');
      const headers = await checked(text, FREE);
      assert.equal((await send(g0(), headers, text)).status, 200);
      assert.equal((await send(g1(), headers, text)).status, 401, 'sent again: authorized here, without the key');
      assert.equal(vllm.received.length, 1);
      // An admin call: the first use reaches the admin API (here without its database: 503), the second nothing.
      const admin = JSON.stringify({ models: ['llama'] });
      const adm = await checked(admin, MASTER, '/key/generate');
      const post = (gw: GatewayApp): Promise<Response> =>
        fetch(`http://127.0.0.1:${gw.port}/key/generate`, {
          method: 'POST',
          headers: adm,
          body: admin,
          signal: AbortSignal.timeout(10_000),
        });
      const first = await post(g0());
      assert.equal(((await first.json()) as { error: { code: string } }).error.code, 'store_unavailable', 'the admin API was reached');
      const again = await post(g1());
      assert.equal(again.status, 401);
    });

    test('a context the store cannot claim (failure_mode closed) is 503, and the lease Check took is given back at once', async () => {
      const counters = store.limiter.counters;
      const claim = counters.claim.bind(counters);
      const text = body('one');
      const headers = await checked(text, ONE);
      if (counters.kind === 'redis') counters.claim = () => Promise.reject(new Error('command timed out'));
      try {
        const r = await send(g0(), headers, text);
        if (counters.kind === 'redis') {
          assert.equal(r.status, 503);
          assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'store_unavailable');
          const row = rows.rows.at(-1);
          assert.deepEqual([row?.keyId, row?.status, row?.cost, row?.model], [sha(ONE).slice(0, 16), 503, 0, 'llama'], 'its denial row');
        } else assert.equal(r.status, 200, 'in process, the claim cannot fail');
      } finally {
        counters.claim = claim;
      }
      // The key's one slot is free again: the next Check is admitted at once, not after the lease's 30 s.
      await within(2_000, async () => {
        const check = await envoy.check({ headers: { authorization: `Bearer ${ONE}`, 'content-type': 'application/json' }, body: text });
        return check.status?.code === 0;
      });
    });

    test('a context from an authz of the version before (no body digest) is taken, for a rolling upgrade; one for no body is not taken with one', async () => {
      vllm.received.length = 0;
      const signer = new ContextSigner(contextSecret(SIGNING_KEY, undefined) as Buffer);
      const text = body('old signer');
      const claims = {
        r: `old-${Date.now()}`,
        p: 'POST /v1/chat/completions',
        m: 'llama',
        k: sha(FREE).slice(0, 16),
        x: Date.now() + 20_000,
      };
      const old = { 'content-type': 'application/json', 'x-tollgate-context': signer.sign(claims) };
      assert.equal((await send(g0(), old, text)).status, 200);
      const empty = { 'content-type': 'application/json', 'x-tollgate-context': signer.sign({ ...claims, b: '', n: 'fresh-nonce' }) };
      assert.equal((await send(g0(), empty, text)).status, 401, 'signed for a request without a body');
      assert.equal(vllm.received.length, 1);
    });

    test('a denial of a known key leaves a spend-log row of no cost, at Check and at the gateway; an unknown key none', async () => {
      const before = rows.rows.length;
      const nope = JSON.stringify({ model: 'nope', messages: [] });
      const denied = async (key: string): Promise<number | undefined> =>
        (await envoy.check({ headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: nope })).status?.code;
      assert.notEqual(await denied('sk-context-replay-unknown-1'), 0);
      assert.equal(rows.rows.length, before, 'an unknown key leaves no row');
      assert.notEqual(await denied(FREE), 0);
      const direct = await fetch(`http://127.0.0.1:${g0().port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${FREE}`, 'content-type': 'application/json' },
        body: nope,
      });
      assert.equal(direct.status, 404);
      const mine = rows.rows.slice(before);
      assert.equal(mine.length, 2, 'one row at Check, one at the gateway');
      for (const r of mine) {
        // A model the catalog does not have is not written: names a client makes up stay out of per-model views.
        assert.deepEqual(
          [r.keyId, r.model, r.status, r.cost, r.promptTokens + r.completionTokens],
          [sha(FREE).slice(0, 16), '', 404, 0, 0],
        );
      }
    });
  });
}

async function within(ms: number, ok: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    assert.ok(Date.now() < end, `not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
