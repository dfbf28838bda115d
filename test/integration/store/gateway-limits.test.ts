/**
 * Limits at the standalone gateway (the in-process counters): `x-ratelimit-*` on allowed replies, the
 * contract's 429 with a real `retry-after`, and token reservations settled with the real usage, so a
 * key gets the tokens it really used, not its max_tokens.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzParts } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { gatewayStoreOptions, openStore, type StoreApp } from '../../../src/main/store-app.js';
import { ContextSigner, contextSecret, type ContextClaims } from '../../../src/identity/context-token.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { applyOkResponse, EnvoyCheckClient } from '../../support/envoy.js';

const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const RPM_KEY = 'sk-gateway-limits-rpm-01';
const TPM_KEY = 'sk-gateway-limits-tpm-01';
const BUDGET_KEY = 'sk-gateway-limits-bud-01';
const EMBED_KEY = 'sk-gateway-limits-emb-01';
const ALL_TIME_KEY = 'sk-gateway-limits-all-01';
const TEAM_KEY = 'sk-gateway-limits-team-01';
const NO_CAP_KEY = 'sk-gateway-limits-nocap-01';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** tollgate's gateway over `yaml`, its store in process and its authorizer on that store's limiter and records. */
async function limitsGateway(yaml: string, file: string): Promise<{ store: StoreApp; parts: AuthzParts; gw: GatewayApp; secret: Buffer }> {
  const prepared = prepareConfigText(yaml, file, {});
  const secret = contextSecret(prepared.config.general_settings.context_signing_key, undefined) as Buffer;
  const logger = createLogger('silent');
  const store = await openStore(prepared.config, { logger, withDb: false, catalog: () => parts.authorizer.rules.catalog });
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret, { keys: store.keys, teams: store.teams, limiter: store.limiter });
  const gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, ...gatewayStoreOptions(store) });
  return { store, parts, gw, secret };
}

/**
 * A gateway over a failing deployment and a spare one with `rpm: 1` (nearly no weight: the failing one is
 * tried first), its store in process; `chat()` sends one request and gives its reply.
 */
async function failingAndSpare(
  allowedFails: number,
  spareLimit = 'rpm: 1',
  keyLimits = 'rpm_limit: 100',
  /** Each request's max_tokens; null: none sent (tollgate's default cap applies). */
  sentMaxTokens: number | null = spareLimit.startsWith('tpm') ? 90 : 5,
): Promise<{
  failing: FakeVllm;
  spare: FakeVllm;
  chat(): Promise<Response>;
  close(): Promise<void>;
}> {
  const maxTokens = sentMaxTokens ?? undefined;
  const failing = await startFakeVllm({ models: [MODEL], name: 'failing' });
  failing.setFault({ kind: 'status', status: 500 });
  const spare = await startFakeVllm({ models: [MODEL], name: 'spare' });
  const { store, gw } = await limitsGateway(
    `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${failing.apiBase}" }
    model_info: { id: failing }
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${spare.apiBase}", ${spareLimit}, weight: 1.0e-9 }
    model_info: { id: spare }
router_settings: { num_retries: 1, allowed_fails: ${allowedFails}, cooldown_time: 60 }
general_settings:
  context_signing_key: gateway-limits-context-key-0123456789abcdef
keys:
  - key: sha256:${sha(RPM_KEY)}
    ${keyLimits}
`,
    'retries.yaml',
  );
  return {
    failing,
    spare,
    chat: () =>
      fetch(`http://127.0.0.1:${gw.port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${RPM_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: maxTokens }),
        signal: AbortSignal.timeout(10_000),
      }),
    async close() {
      await gw.close(500);
      await store.close(500);
      await Promise.all([failing.close(), spare.close()]);
    },
  };
}

describe('deployment limits on retries', { timeout: 30_000 }, () => {
  test("a retry to another deployment counts against that deployment's own rpm", async () => {
    const s = await failingAndSpare(100);
    try {
      const status = async (): Promise<number> => {
        const r = await s.chat();
        await r.text();
        return r.status;
      };
      assert.equal(await status(), 200, 'the retry lands on the spare deployment');
      assert.equal(await status(), 502, 'the first deployment fails again, and the spare has used its one request per minute');
      assert.equal(s.spare.received.filter((r) => r.path === '/v1/chat/completions').length, 1);
    } finally {
      await s.close();
    }
  });

  test("a retry counts its max_tokens against the other deployment's tpm, though nothing limits the key", async () => {
    // The key has no limits (Check reserves nothing); the spare's tpm of 100 holds one request of 90 tokens.
    const s = await failingAndSpare(100, 'tpm: 100', 'key_alias: unlimited');
    try {
      const statuses = await Promise.all(Array.from({ length: 10 }, async () => (await s.chat()).status));
      assert.equal(statuses.filter((x) => x === 200).length, 1, statuses.join(','));
    } finally {
      await s.close();
    }
  });

  test("a retry without max_tokens takes the room the other deployment's tpm has left, as Check's admission does", async () => {
    // The spare's tpm of 3000 is under the default cap (4096): a request without max_tokens fits it only on
    // the room left, which it may take once the window holds the first request's usage.
    const s = await failingAndSpare(100, 'tpm: 3000', 'key_alias: unlimited', null);
    try {
      for (let i = 0; i < 3; i++) {
        const r = await s.chat();
        assert.equal(r.status, 200, `request ${i}: ${await r.text()}`);
      }
      assert.equal(s.spare.received.length, 3);
    } finally {
      await s.close();
    }
  });

  test("every deployment cooling down or at its own rpm: the contract's 429 with retry-after and x-ratelimit-*", async () => {
    const s = await failingAndSpare(0);
    try {
      const first = await s.chat();
      await first.text();
      assert.equal(first.status, 200, 'the failing deployment cools down; the spare answers and uses its one request');
      const r = await s.chat();
      const body = (await r.json()) as { error: { type: string; code: string; message: string } };
      assert.equal(r.status, 429);
      assert.deepEqual([body.error.type, body.error.code], ['rate_limit_error', 'rate_limit_exceeded']);
      assert.match(body.error.message, /Every deployment of this model is at its rate limit/);
      const retryAfter = Number(r.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}: when the spare's minute ends`);
      assert.equal(r.headers.get('x-ratelimit-limit-requests'), '1');
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), '0');
      assert.ok(r.headers.get('x-ratelimit-reset-requests') !== null);
      assert.equal(s.spare.received.filter((q) => q.path === '/v1/chat/completions').length, 1);
    } finally {
      await s.close();
    }
  });

  test("backends answering 429 after retries: the client's 429 carries the key's x-ratelimit-* beside the retry-after", async () => {
    const s = await failingAndSpare(0, 'rpm: 100');
    try {
      s.failing.setFault({ kind: 'status', status: 429, headers: { 'retry-after': '3' } });
      s.spare.setFault({ kind: 'status', status: 429, headers: { 'retry-after': '3' } });
      for (const round of ['the request whose 429s cooled both']) {
        const r = await s.chat();
        const body = (await r.json()) as { error: { code: string } };
        assert.equal(r.status, 429, round);
        assert.equal(body.error.code, 'rate_limit_exceeded', round);
        assert.ok(Number(r.headers.get('retry-after')) >= 1, round);
        assert.equal(r.headers.get('x-ratelimit-limit-requests'), '100', round);
        assert.ok(r.headers.get('x-ratelimit-remaining-requests') !== null, round);
      }
    } finally {
      await s.close();
    }
  });
});

describe('limits at the standalone gateway', { timeout: 30_000 }, () => {
  let vllm: FakeVllm;
  let store: StoreApp;
  let gw: GatewayApp;

  before(async () => {
    // 11 prompt + 5 completion tokens per reply.
    vllm = await startFakeVllm({ models: [MODEL] });
    ({ store, gw } = await limitsGateway(
      `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${vllm.apiBase}", input_cost_per_token: 0.01, output_cost_per_token: 0.02 }
general_settings:
  context_signing_key: gateway-limits-context-key-0123456789abcdef
keys:
  - key: sha256:${sha(RPM_KEY)}
    rpm_limit: 2
  - key: sha256:${sha(TPM_KEY)}
    tpm_limit: 400
  - key: sha256:${sha(EMBED_KEY)}
    tpm_limit: 400
  - key: sha256:${sha(NO_CAP_KEY)}
    tpm_limit: 3000
  - key: sha256:${sha(BUDGET_KEY)}
    max_budget: 0.5
    budget_duration: 1d
  - key: sha256:${sha(ALL_TIME_KEY)}
    max_budget: 0.3
  - key: sha256:${sha(TEAM_KEY)}
    team_id: capped
teams:
  - team_id: capped
    max_budget: 0.3
litellm_settings:
  timezone: Asia/Tokyo
`,
      'limits.yaml',
    ));
  });

  after(async () => {
    await gw.close(500);
    await store.close(500);
    await vllm.close();
  });

  /** `maxTokens` undefined: the request sends none (tollgate's default cap, 4096, applies). */
  const chat = (key: string, maxTokens: number | undefined): Promise<Response> =>
    fetch(`http://127.0.0.1:${gw.port}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: maxTokens }),
      signal: AbortSignal.timeout(10_000),
    });

  test('rpm: x-ratelimit-* on allowed replies, then 429 rate_limit_exceeded with a real retry-after', async () => {
    const first = await chat(RPM_KEY, 5);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get('x-ratelimit-limit-requests'), '2');
    assert.equal(first.headers.get('x-ratelimit-remaining-requests'), '1');
    await first.text();
    const second = await chat(RPM_KEY, 5);
    assert.equal(second.headers.get('x-ratelimit-remaining-requests'), '0');
    await second.text();
    const third = await chat(RPM_KEY, 5);
    assert.equal(third.status, 429);
    const retry = Number(third.headers.get('retry-after'));
    assert.ok(retry >= 59 && retry <= 60, `retry-after ${retry}`);
    assert.equal(third.headers.get('x-ratelimit-remaining-requests'), '0');
    const body = (await third.json()) as { error: { type: string; code: string; message: string } };
    assert.equal(body.error.type, 'rate_limit_error');
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.doesNotMatch(body.error.message, /sk-/);
  });

  test('tpm: a reply settles its reservation to the real usage, so more requests fit than max_tokens suggests', async () => {
    // Each request reserves ~15 + 150 tokens but uses 16: sequential requests keep fitting in 400.
    let allowed = 0;
    for (let i = 0; i < 10; i++) {
      const r = await chat(TPM_KEY, 150);
      if (r.status === 200) allowed++;
      await r.text();
    }
    assert.equal(allowed, 10, 'settled usage (16 tokens each) leaves room; reservations alone would stop at 2');
    // Concurrent requests hold their reservations at once: the tpm stops them.
    const burst = await Promise.all(Array.from({ length: 6 }, () => chat(TPM_KEY, 150)));
    const statuses = await Promise.all(burst.map(async (r) => (await r.text(), r.status)));
    assert.ok(statuses.includes(429), `a concurrent burst past the tpm is refused: ${statuses.join(',')}`);
    // What stops them is held by the requests in flight, not used (160 used of 400): come back shortly, not in 60 s.
    const held = await Promise.all(Array.from({ length: 6 }, () => chat(TPM_KEY, 150)));
    const refused = held.find((r) => r.status === 429);
    assert.ok(refused !== undefined, 'a second burst is refused too');
    assert.equal(refused.headers.get('retry-after'), '1');
    const body = (await refused.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.match(body.error.message, /Requests in flight hold the rest of the tokens per minute of this key .*send a smaller max_tokens/);
    await Promise.all(held.filter((r) => r !== refused).map((r) => r.text()));
  });

  test('tpm under the default cap: a request without max_tokens is served while the window has room, not refused for 60 s', async () => {
    // 3000 a minute against a 4096 cap: before, such a request fitted only in an empty window.
    for (const maxTokens of [100, 100, undefined, 100, undefined, undefined]) {
      const r = await chat(NO_CAP_KEY, maxTokens);
      assert.equal(r.status, 200, `max_tokens ${String(maxTokens)}: ${await r.text()}`);
      assert.equal(Number(r.headers.get('x-ratelimit-limit-tokens')), 3000);
    }
    // At once, several without max_tokens: the first takes the room, the others are told it is held, briefly.
    const burst = await Promise.all(Array.from({ length: 3 }, () => chat(NO_CAP_KEY, undefined)));
    const refused = burst.filter((r) => r.status === 429);
    assert.ok(burst.some((r) => r.status === 200));
    for (const r of refused) assert.equal(r.headers.get('retry-after'), '1');
    await Promise.all(burst.map((r) => r.text()));
  });

  test('tpm: an embedding reserves its input only, not the default completion cap (4096, past this tpm alone)', async () => {
    const embed = (): Promise<Response> =>
      fetch(`http://127.0.0.1:${gw.port}/v1/embeddings`, {
        method: 'POST',
        headers: { authorization: `Bearer ${EMBED_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'llama', input: 'the sea' }),
        signal: AbortSignal.timeout(10_000),
      });
    const burst = await Promise.all(Array.from({ length: 6 }, embed));
    const statuses = await Promise.all(burst.map(async (r) => (await r.text(), r.status)));
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200]);
  });

  test('budget: spend of each reply counts; past the budget, 429 insufficient_quota with x-should-retry: false', async () => {
    // 11 × 0.01 + 5 × 0.02 = 0.21 a reply: the third crosses 0.5 and the fourth is refused.
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await chat(BUDGET_KEY, 5);
      statuses.push(r.status);
      if (r.status !== 200) {
        assert.equal(r.headers.get('x-should-retry'), 'false');
        // The day is Tokyo's (litellm_settings.timezone): it starts again at 15:00 UTC.
        const day = 86_400_000;
        const tokyoMidnight = Date.now() - ((Date.now() - 15 * 3_600_000) % day) + day;
        const retry = Number(r.headers.get('retry-after'));
        assert.ok(Math.abs(retry - (tokyoMidnight - Date.now()) / 1000) <= 2, `retry-after ${retry} s: until midnight in Tokyo`);
        const body = (await r.json()) as { error: { type: string; code: string; message: string } };
        assert.deepEqual([body.error.type, body.error.code], ['insufficient_quota', 'budget_exceeded']);
        assert.match(body.error.message, /^The budget of this key is spent for this period; it resets in \d+ s\.$/);
      } else {
        assert.equal(r.headers.get('x-tollgate-response-cost'), '0.21');
        await r.text();
      }
      // Settlement runs as the reply ends; give it the moment it takes.
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.deepEqual(statuses, [200, 200, 200, 429]);
  });

  // An all-time budget (no budget_duration) never resets: no retry-after, and the message says what to do.
  for (const [key, whose, what] of [
    [
      ALL_TIME_KEY,
      'this key',
      /an admin can raise its max_budget \(POST \/key\/update, or keys\[\]\.max_budget .*\), or use another key\.$/,
    ],
    [
      TEAM_KEY,
      "this key's team",
      /an admin can raise the team's max_budget \(POST \/team\/update, or teams\[\]\.max_budget .*\), or use a key of another team\.$/,
    ],
  ] as const) {
    test(`regression: an all-time budget of ${whose} spent: 429 budget_exceeded saying what to do, not only that it is spent`, async () => {
      // 0.21 a reply: the second crosses 0.3 and the third is refused.
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await chat(key, 5);
        statuses.push(r.status);
        if (r.status === 200) await r.text();
        else {
          assert.equal(r.headers.get('x-should-retry'), 'false');
          assert.equal(r.headers.get('retry-after'), null, 'it never resets: no time to come back at');
          const body = (await r.json()) as { error: { type: string; code: string; message: string } };
          assert.deepEqual([body.error.type, body.error.code], ['insufficient_quota', 'budget_exceeded']);
          assert.ok(body.error.message.startsWith(`The budget of ${whose} is spent and does not reset`), body.error.message);
          assert.match(body.error.message, what);
          assert.ok(!body.error.message.includes(key));
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      assert.deepEqual(statuses, [200, 200, 429]);
    });
  }
});

describe('behind Envoy: a context that expired on its way to the gateway', { timeout: 30_000 }, () => {
  test('gives back the lease Check took, once, so the request sent again is admitted', async () => {
    const KEY = 'sk-gateway-limits-expired-01';
    const vllm = await startFakeVllm({ models: [MODEL] });
    const yaml = `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${vllm.apiBase}" }
general_settings:
  context_signing_key: gateway-limits-context-key-0123456789abcdef
keys:
  - key: sha256:${sha(KEY)}
    max_parallel_requests: 1
`;
    const { store, parts, gw, secret } = await limitsGateway(yaml, 'expired.yaml');
    const authz = await startAuthz(parts, {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('silent'),
      metrics: createMetrics({ defaultMetrics: false }),
    });
    const envoy = new EnvoyCheckClient(authz.port);
    const signer = new ContextSigner(secret);
    try {
      const body = JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] });
      const reqHeaders = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
      /** Check allows the request: the headers Envoy forwards, with its context expired as after 30 s in a queue. */
      const checkedThenExpired = async (): Promise<Record<string, string>> => {
        const check = await envoy.check({ headers: reqHeaders, body });
        assert.equal(check.status?.code, 0, 'Check admits it (the one parallel slot is free)');
        const headers: Record<string, string> = {};
        for (const [k, v] of applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>))
          if (!k.startsWith(':')) headers[k] = v.join(',');
        const claims = JSON.parse(
          Buffer.from(String(headers['x-tollgate-context']).split('.')[1] ?? '', 'base64url').toString('utf8'),
        ) as ContextClaims;
        return { ...headers, 'x-tollgate-context': signer.sign({ ...claims, x: Date.now() - 1_000 }) };
      };
      const send = (headers: Record<string, string>): Promise<Response> =>
        fetch(`http://127.0.0.1:${gw.port}/v1/chat/completions`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) });
      const first = await checkedThenExpired();
      const late = await send(first);
      assert.equal(late.status, 503, await late.text());
      // Sent again (as its SDK would), it gets the slot the first Check took: given back at once, not in 30 s.
      await checkedThenExpired();
      // The first context again gives back nothing more: the second Check's lease still holds the one slot.
      assert.equal((await send(first)).status, 503);
      await new Promise((r) => setTimeout(r, 50));
      const third = await envoy.check({ headers: reqHeaders, body });
      assert.notEqual(third.status?.code, 0, 'the second lease still holds the one parallel slot');
      assert.equal(vllm.received.length, 0, 'nothing was served');
    } finally {
      envoy.close();
      await gw.close(500);
      await authz.close(500);
      await store.close(500);
      await vllm.close();
    }
  });
});
