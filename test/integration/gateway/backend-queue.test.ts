/**
 * A deployment's max_parallel_requests (its connection pool's size, per replica) and the requests past it,
 * which wait in tollgate's queue for a free connection. Regression of a review's repro: with 128
 * connections per origin hard-coded, a backend answering after 8 s and `timeout: 10`, 200 concurrent
 * requests — the 72 past the cap were dispatched at 8 s, cut at 10 s as the backend's timeout (counted
 * toward its cooldown) and sent again. The wait in the queue is tollgate's: it is not charged to the
 * backend's `timeout`, a request that waited in vain was never sent (sent elsewhere, or 503), and it says
 * nothing of the deployment's health.
 *
 * Deployment weights: the one a test needs asked first has weight 1, the other 1e-9 (as faults.test.ts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, type AuthzParts } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';

const KEY = 'sk-backend-queue-test-key-01';
const SECRET = 'backend-queue-test-context-key-0123456789';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
/** Every test is bounded: a hang fails the test instead of the run. */
const T = { timeout: 20_000 };
const HI = [{ role: 'user' as const, content: 'hi' }];

interface Stack {
  readonly gw: GatewayApp;
  readonly base: string;
  readonly spend: InMemorySpendLog;
  readonly parts: AuthzParts;
  readonly metrics: ReturnType<typeof createMetrics>;
}

async function startStack(yaml: string): Promise<Stack> {
  const prepared = prepareConfigText(yaml, 'backend-queue.yaml', {});
  assert.ok(prepared.config);
  const secret = contextSecret(SECRET, undefined) as Buffer;
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const spend = new InMemorySpendLog();
  const metrics = createMetrics({ defaultMetrics: false });
  const gw = await startGateway(prepared.config, parts, secret, {
    host: '127.0.0.1',
    port: 0,
    logger: createLogger('silent'),
    spend,
    metrics,
  });
  return { gw, base: `http://127.0.0.1:${gw.port}`, spend, parts, metrics };
}

function post(base: string, body: unknown): Promise<Response> {
  return fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
}

/** The inference requests a fake received (POST /v1/...). */
const posts = (f: FakeVllm): number => f.received.filter((r) => r.method === 'POST').length;

async function until(what: string, ok: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('requests past max_parallel_requests wait for a connection, not charged to the backend', () => {
  let slow: FakeVllm;
  let stack: Stack;

  before(async () => {
    slow = await startFakeVllm({ models: [MODEL], name: 'slow' });
    // Every reply after 1 s; at most 2 at once; 1.6 s for each. Two deployments, so a failure would count
    // toward a cooldown (allowed_fails: 0 — the only deployment of an alias is never cooled down).
    slow.setFault({ kind: 'delay-headers', ms: 1_000 });
    stack = await startStack(`
model_list:
  - model_name: capped
    litellm_params: { model: openai/${MODEL}, api_base: "${slow.apiBase}", timeout: 1.6, max_parallel_requests: 2 }
    model_info: { id: capped-a }
  - model_name: capped
    litellm_params: { model: openai/${MODEL}, api_base: "${slow.apiBase}", timeout: 1.6, max_parallel_requests: 2, weight: 1.0e-9 }
    model_info: { id: capped-b }
router_settings:
  num_retries: 2
  allowed_fails: 0
  cooldown_time: 30
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
  });
  after(async () => {
    await stack.gw.close(500);
    await slow.close();
  });

  test('4 at once on a cap of 2: the 2 that waited 1 s are answered after 2 s, past the 1.6 s timeout; each sent once', T, async () => {
    const t0 = performance.now();
    const replies = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const res = await post(stack.base, { model: 'capped', messages: HI });
        const text = await res.text();
        return { status: res.status, text, ms: performance.now() - t0 };
      }),
    );
    for (const r of replies) assert.equal(r.status, 200, r.text);
    const last = Math.max(...replies.map((r) => r.ms));
    assert.ok(last >= 1_900, `the last answered after ${Math.round(last)} ms: the cap of 2 was not applied`);
    assert.equal(posts(slow), 4, 'each request reached the backend once: none was cut at its timeout and sent again');
    const rows = stack.spend.rows;
    assert.equal(rows.length, 4);
    for (const row of rows) {
      assert.equal(row.status, 200);
      assert.equal(row.upstream, undefined, `no attempt failed: ${row.upstream}`);
    }
    // Nothing failed, so nothing cooled down (with allowed_fails: 0, one timeout would have).
    const health = stack.parts.authorizer.rules.health;
    assert.ok(health.isAvailable('capped-a', Date.now()));
    assert.ok(health.isAvailable('capped-b', Date.now()));
  });
});

describe('a request that waited for a connection in vain was never sent: another deployment, or 503', () => {
  let held: FakeVllm;
  let other: FakeVllm;
  let stack: Stack;

  before(async () => {
    // A stream of 15 chunks 100 ms apart holds its connection 1.5 s, well within its stream_timeout
    // (each silence) and timeout; a stream waiting for that connection gives up after stream_timeout.
    [held, other] = await Promise.all([
      startFakeVllm({ models: [MODEL], name: 'held', chunks: 15, chunkDelayMs: 100 }),
      startFakeVllm({ models: [MODEL], name: 'other' }),
    ]);
    stack = await startStack(`
model_list:
  - model_name: pair
    litellm_params: { model: openai/${MODEL}, api_base: "${held.apiBase}", timeout: 10, stream_timeout: 0.5, max_parallel_requests: 1 }
    model_info: { id: pair-held }
  - model_name: pair
    litellm_params: { model: openai/${MODEL}, api_base: "${other.apiBase}", timeout: 10, weight: 1.0e-9 }
    model_info: { id: pair-other }
  - model_name: solo
    litellm_params: { model: openai/${MODEL}, api_base: "${held.apiBase}", timeout: 10, stream_timeout: 0.5, max_parallel_requests: 1 }
    model_info: { id: solo-held }
router_settings:
  num_retries: 2
  allowed_fails: 0
  cooldown_time: 30
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
  });
  after(async () => {
    await stack.gw.close(500);
    await Promise.all([held.close(), other.close()]);
  });

  /** Starts a stream on `model` that holds its deployment's one connection; resolves with its whole text once it ends. */
  async function holding(model: string): Promise<{ done: Promise<string> }> {
    const before = posts(held);
    const res = await post(stack.base, { model, messages: HI, stream: true });
    assert.equal(res.status, 200);
    await until('the holding stream reached the backend', () => posts(held) === before + 1);
    return { done: res.text() };
  }

  test('it goes to the other deployment, and the one it waited for is not cooled down', T, async () => {
    const first = await holding('pair');
    const waited = await post(stack.base, { model: 'pair', messages: HI, stream: true });
    const text = await waited.text();
    assert.equal(waited.status, 200, text);
    assert.match(text, /Hello from other/);
    assert.match(await first.done, /data: \[DONE\]/);
    assert.equal(posts(held), 1, 'the request that waited was never sent to the deployment it waited for');
    assert.equal(posts(other), 1);
    const row = stack.spend.rows.find((r) => r.deployment === 'pair-other');
    assert.match(row?.upstream ?? '', /^pair-held: QUEUE_TIMEOUT/);
    // allowed_fails: 0 — a failure would have cooled it down; the wait was tollgate's, not the backend's.
    assert.ok(stack.parts.authorizer.rules.health.isAvailable('pair-held', Date.now()), 'pair-held is not cooling down');
    const metrics = await stack.metrics.registry.metrics();
    assert.ok(metrics.includes('tollgate_deployment_queue_timeouts_total{deployment="pair-held"} 1'), metrics);
  });

  test('with no other deployment: 503 no_healthy_deployment naming the connection limit, after stream_timeout, not sent', T, async () => {
    const first = await holding('solo');
    const sent = posts(held);
    const t0 = performance.now();
    const res = await post(stack.base, { model: 'solo', messages: HI, stream: true });
    const took = performance.now() - t0;
    const text = await res.text();
    assert.equal(res.status, 503, text);
    const err = (JSON.parse(text) as { error: { type: string; code: string; message: string } }).error;
    assert.equal(err.type, 'service_unavailable');
    assert.equal(err.code, 'no_healthy_deployment');
    assert.match(err.message, /max_parallel_requests/);
    assert.match(err.message, /not sent/);
    // Once, not once per retry: a deployment it waited for in vain is not asked again by the same request.
    assert.ok(took >= 450 && took < 1_400, `answered after ${Math.round(took)} ms`);
    assert.equal(posts(held), sent, 'never sent');
    assert.match(await first.done, /data: \[DONE\]/);
  });

  test('the wait is exposed: tollgate_deployment_queued counts the requests waiting now', T, async () => {
    const first = await holding('solo');
    const waiting = post(stack.base, { model: 'solo', messages: HI, stream: true });
    let scraped = '';
    await until('one request queued for solo-held', () => {
      void stack.metrics.registry.metrics().then((m) => (scraped = m));
      return scraped.includes('tollgate_deployment_queued{model="solo",deployment="solo-held"} 1');
    });
    assert.equal((await waiting).status, 503);
    await first.done;
    const after = await stack.metrics.registry.metrics();
    assert.ok(after.includes('tollgate_deployment_queued{model="solo",deployment="solo-held"} 0'), after);
  });
});
