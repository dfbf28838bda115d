/**
 * DeploymentTracker: the gateway's per-deployment view for routing (strategies, cooldowns), with `now`
 * and `random` injected — no sleeping, no Math.random.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  firstBack,
  firstOrder,
  ModelCatalog,
  nextInOrder,
  weightedPick,
  type Deployment,
  type ModelGroup,
} from '../../../src/routing/deployments.js';
import { DeploymentTracker, MAX_RETRY_AFTER_COOLDOWN_MS, type RoutingStrategy } from '../../../src/routing/health.js';

const MIN = 60_000;
/** An instant well inside minute 1000, far from its edges. */
const T = 1000 * MIN + 10_000;

function dep(id: string, extra: Partial<Deployment> = {}): Deployment {
  return {
    id,
    alias: 'llama',
    provider: 'openai',
    backendModel: 'meta-llama/Llama-3.1-8B-Instruct',
    apiBase: `http://${id}:8000/v1`,
    origin: `http://${id}:8000`,
    basePath: '/v1',
    apiKey: undefined,
    rpm: undefined,
    tpm: undefined,
    weight: 1,
    timeoutMs: 600_000,
    streamTimeoutMs: undefined,
    maxParallelRequests: 1024,
    inputCostPerToken: 0,
    outputCostPerToken: 0,
    maxTokens: undefined,
    order: undefined,
    ...extra,
  };
}

function group(...deployments: Deployment[]): ModelGroup {
  const g = new ModelCatalog(deployments).group('llama');
  assert.ok(g);
  return g;
}

const NONE: ReadonlySet<string> = new Set();
const tracker = (allowedFails = 3, cooldownSeconds = 30): DeploymentTracker => new DeploymentTracker({ allowedFails, cooldownSeconds });
const pickId = (t: DeploymentTracker, g: ModelGroup, s: RoutingStrategy, now = T, random = 0, exclude = NONE): string | undefined =>
  t.pick(g, s, exclude, now, random)?.id;

describe('DeploymentTracker.pick: simple-shuffle', () => {
  test('weighted by weight: the random number falls into each deployment by its share', () => {
    const t = tracker();
    const g = group(dep('a', { weight: 1 }), dep('b', { weight: 3 }));
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0), 'a');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.24), 'a');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.25), 'b');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.999_999), 'b');
    const counts = { a: 0, b: 0 };
    for (let i = 0; i < 1000; i++) counts[pickId(t, g, 'simple-shuffle', T, i / 1000) as 'a' | 'b']++;
    assert.deepEqual(counts, { a: 250, b: 750 });
  });

  test('a single candidate is returned whatever the random number; none gives undefined', () => {
    const t = tracker();
    assert.equal(pickId(t, group(dep('a')), 'simple-shuffle', T, 0.9), 'a');
    assert.equal(pickId(t, group(dep('a')), 'simple-shuffle', T, 0, new Set(['a'])), undefined);
  });

  test('excluded ids are never picked, and the weights are shared among the rest', () => {
    const t = tracker();
    const g = group(dep('a', { weight: 1 }), dep('b', { weight: 1 }), dep('c', { weight: 2 }));
    const ex = new Set(['c']);
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.49, ex), 'a');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.5, ex), 'b');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.99, ex), 'b');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0, new Set(['a', 'b'])), 'c');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0, new Set(['a', 'b', 'c'])), undefined);
  });
});

describe('DeploymentTracker.pick: least-busy', () => {
  test('the deployment with the fewest requests in flight; started/finished move the counts', () => {
    const t = tracker();
    const g = group(dep('a'), dep('b'), dep('c'));
    t.started('a', T);
    t.started('a', T);
    t.started('b', T);
    t.started('c', T);
    assert.equal(t.inFlight('a'), 2);
    assert.equal(pickId(t, g, 'least-busy', T, 0), 'b', 'tie between b and c, random 0 → first');
    assert.equal(pickId(t, g, 'least-busy', T, 0.99), 'c', 'tie between b and c, random 0.99 → last');
    t.finished('a');
    t.finished('a');
    assert.equal(t.inFlight('a'), 0);
    assert.equal(pickId(t, g, 'least-busy', T, 0.99), 'a');
    t.finished('a');
    assert.equal(t.inFlight('a'), 0, 'never below zero');
  });

  test('excluded ids are skipped even when they are the least busy', () => {
    const t = tracker();
    const g = group(dep('a'), dep('b'));
    t.started('b', T);
    assert.equal(pickId(t, g, 'least-busy', T, 0, new Set(['a'])), 'b');
  });
});

describe('DeploymentTracker.pick: latency-based-routing', () => {
  test('untried deployments first, then the lowest latency EWMA', () => {
    const t = tracker();
    const g = group(dep('a'), dep('b'), dep('c'));
    t.latency('a', 100);
    t.latency('b', 50);
    assert.equal(pickId(t, g, 'latency-based-routing', T, 0.99), 'c', 'c was never measured');
    t.latency('c', 200);
    assert.equal(pickId(t, g, 'latency-based-routing', T, 0.99), 'b');
    // EWMA (α = 0.3): 50 × 0.7 + 250 × 0.3 = 110 > a's 100.
    t.latency('b', 250);
    assert.equal(pickId(t, g, 'latency-based-routing', T, 0.99), 'a');
    // One fast sample does not erase the history: a = 100 × 0.7 + 10 × 0.3 = 73; b 110 × 0.7 + 0 × 0.3 = 77.
    t.latency('a', 10);
    t.latency('b', 0);
    assert.equal(pickId(t, g, 'latency-based-routing', T, 0.99), 'a');
    assert.equal(pickId(t, g, 'latency-based-routing', T, 0, new Set(['a'])), 'b');
  });
});

describe('DeploymentTracker.pick: usage-based-routing', () => {
  for (const strategy of ['usage-based-routing', 'usage-based-routing-v2'] as const) {
    test(`${strategy}: skips a deployment past its rpm this minute; the minute rolls over`, () => {
      const t = tracker();
      const g = group(dep('a', { rpm: 2 }), dep('b'));
      assert.equal(pickId(t, g, strategy, T, 0), 'a');
      t.started('a', T);
      t.finished('a');
      assert.equal(pickId(t, g, strategy, T, 0), 'a', 'one request of two');
      t.started('a', T + 1000);
      t.finished('a');
      assert.equal(pickId(t, g, strategy, T + 2000, 0), 'b', 'a is at its rpm');
      assert.equal(pickId(t, g, strategy, T + 49_999, 0), 'b', 'still the same minute');
      assert.equal(pickId(t, g, strategy, T + MIN, 0), 'a', 'next minute: a has room again');
    });

    test(`${strategy}: skips a deployment past its tpm this minute, and prefers the one with fewer tokens`, () => {
      const t = tracker();
      const g = group(dep('a', { tpm: 100 }), dep('b'), dep('c'));
      t.started('a', T);
      t.addTokens('a', 100);
      t.finished('a');
      t.started('b', T);
      t.addTokens('b', 40);
      t.finished('b');
      t.started('c', T);
      t.addTokens('c', 30);
      t.finished('c');
      assert.equal(pickId(t, g, strategy, T, 0), 'c', 'a is at its tpm; c used fewer tokens than b');
      t.started('c', T);
      t.addTokens('c', 20);
      t.finished('c');
      assert.equal(pickId(t, g, strategy, T, 0), 'b');
      // Next minute: everyone starts from zero, a (first) wins the tie.
      assert.equal(pickId(t, g, strategy, T + MIN, 0), 'a');
      assert.equal(pickId(t, g, strategy, T + MIN, 0, new Set(['a'])), 'b');
    });
  }
});

describe('DeploymentTracker cooldowns', () => {
  test('a failure past allowed_fails within a minute cools the deployment down for cooldown_time, as LiteLLM counts', () => {
    const t = tracker(1, 30);
    const g = group(dep('a', { weight: 1000 }), dep('b', { weight: 1 }));
    assert.equal(t.failed('a', T), false, 'the one failure allowed');
    assert.equal(t.isAvailable('a', T), true);
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0), 'a');
    assert.equal(t.failed('a', T + 1000), true, 'the second failure within the minute');
    const cooled = T + 1000;
    assert.equal(t.isAvailable('a', cooled), false);
    assert.equal(t.cooling('a', cooled), true);
    for (const strategy of ['simple-shuffle', 'least-busy', 'latency-based-routing', 'usage-based-routing'] as const) {
      assert.equal(pickId(t, g, strategy, cooled + 1, 0), 'b', strategy);
    }
    assert.equal(t.isAvailable('a', cooled + 29_999), false);
    assert.equal(pickId(t, g, 'simple-shuffle', cooled + 29_999, 0), 'b');
    // The cooldown ends after cooldown_time.
    assert.equal(t.isAvailable('a', cooled + 30_000), true);
    assert.equal(t.cooling('a', cooled + 30_000), false);
    assert.equal(pickId(t, g, 'simple-shuffle', cooled + 30_000, 0), 'a');
    // The count starts over after a cooldown: one new failure does not cool it again.
    assert.equal(t.failed('a', cooled + 31_000), false);
    assert.equal(t.isAvailable('a', cooled + 31_000), true);
  });

  test('allowed_fails: 0 cools down at the first failure; 3 at the fourth', () => {
    const t = tracker(0, 30);
    assert.equal(t.failed('a', T), true);
    assert.equal(t.isAvailable('a', T), false);
    assert.equal(t.isAvailable('b', T), true, 'other deployments are unaffected');
    const three = tracker(3, 30);
    assert.deepEqual(
      [1, 2, 3, 4].map(() => three.failed('c', T)),
      [false, false, false, true],
    );
  });

  test('failures in different minutes do not add up', () => {
    const t = tracker(1, 30);
    const first = 1000 * MIN + 10_000;
    assert.equal(t.failed('a', first), false);
    // 65 s later: a new minute (and more than a minute after the first failure).
    assert.equal(t.failed('a', first + 65_000), false);
    assert.equal(t.isAvailable('a', first + 65_000), true);
    assert.equal(t.failed('a', first + 66_000), true, 'two failures in the same minute');
    assert.equal(t.isAvailable('a', first + 66_000), false);
  });

  test('cooldown_time 0 never cools a deployment down', () => {
    const t = tracker(1, 0);
    assert.equal(t.failed('a', T), false);
    assert.equal(t.failed('a', T), false);
    assert.equal(t.isAvailable('a', T), true);
  });

  test('every deployment cooling: pick gives undefined', () => {
    const t = tracker(0, 30);
    const g = group(dep('a'), dep('b'));
    t.failed('a', T);
    t.failed('b', T);
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0), undefined);
    assert.equal(pickId(t, g, 'least-busy', T, 0), undefined);
    assert.equal(pickId(t, g, 'simple-shuffle', T + 30_000, 0), 'a');
  });

  test('cooldown(): when it ends and whether a 429 caused it; undefined while available', () => {
    const t = tracker(0, 30);
    assert.equal(t.cooldown('a', T), undefined);
    t.failed('a', T);
    assert.deepEqual(t.cooldown('a', T + 1), { untilMs: T + 30_000, rateLimited: false });
    t.failed('b', T, { rateLimited: true, waitMs: undefined });
    assert.deepEqual(t.cooldown('b', T + 1), { untilMs: T + 30_000, rateLimited: true });
    assert.equal(t.cooldown('b', T + 30_000), undefined, 'over at its end');
    // A fault that cools it down again is a fault's cooldown, whatever the one before was.
    t.failed('b', T + 31_000);
    assert.deepEqual(t.cooldown('b', T + 31_000), { untilMs: T + 61_000, rateLimited: false });
  });

  test('a 429 counts towards allowed_fails as any failure does: the first ones cool nothing, whatever their retry-after', () => {
    const t = tracker(2, 30);
    const busy = { rateLimited: true, waitMs: 90_000 } as const;
    assert.equal(t.failed('a', T, busy), false);
    assert.equal(t.failed('a', T, busy), false);
    assert.equal(t.isAvailable('a', T), true);
    assert.equal(t.failed('a', T, busy), true);
    assert.deepEqual(t.cooldown('a', T), { untilMs: T + 90_000, rateLimited: true });
  });

  test("a 429's retry-after longer than cooldown_time keeps the deployment out until then; a shorter one, for cooldown_time", () => {
    const t = tracker(0, 30);
    t.failed('long', T, { rateLimited: true, waitMs: 90_000 });
    assert.equal(t.isAvailable('long', T + 89_999), false);
    assert.equal(t.isAvailable('long', T + 90_000), true);
    t.failed('short', T, { rateLimited: true, waitMs: 5_000 });
    assert.equal(t.isAvailable('short', T + 29_999), false, 'never shorter than cooldown_time');
    assert.equal(t.isAvailable('short', T + 30_000), true);
    // A fault's cooldown is cooldown_time, however it is described.
    t.failed('fault', T, { rateLimited: false });
    assert.deepEqual(t.cooldown('fault', T), { untilMs: T + 30_000, rateLimited: false });
  });

  test('a failure during a cooldown (a request that was in flight) never ends it sooner nor changes its cause', () => {
    const t = tracker(0, 30);
    assert.equal(t.failed('a', T, { rateLimited: true, waitMs: 300_000 }), true);
    assert.equal(t.failed('a', T + 1_000, { rateLimited: false }), false);
    assert.deepEqual(t.cooldown('a', T + 1_000), { untilMs: T + 300_000, rateLimited: true });
    // One that ends later does take over, with its cause.
    t.failed('b', T, { rateLimited: false });
    t.failed('b', T + 10_000, { rateLimited: true, waitMs: 60_000 });
    assert.deepEqual(t.cooldown('b', T + 10_000), { untilMs: T + 70_000, rateLimited: true });
  });

  test('a retry-after past MAX_RETRY_AFTER_COOLDOWN_MS stretches the cooldown that far only; a cooldown_time longer than that stays', () => {
    const t = tracker(0, 30);
    t.failed('a', T, { rateLimited: true, waitMs: 86_400_000 });
    assert.equal(MAX_RETRY_AFTER_COOLDOWN_MS, 300_000);
    assert.deepEqual(t.cooldown('a', T), { untilMs: T + MAX_RETRY_AFTER_COOLDOWN_MS, rateLimited: true });
    const long = tracker(0, 600);
    long.failed('a', T, { rateLimited: true, waitMs: 86_400_000 });
    assert.deepEqual(long.cooldown('a', T), { untilMs: T + 600_000, rateLimited: true });
  });

  test('cooldown_time 0 never cools a deployment down, not even for a 429 asking for a long wait', () => {
    const t = tracker(0, 0);
    assert.equal(t.failed('a', T, { rateLimited: true, waitMs: 90_000 }), false);
    assert.equal(t.isAvailable('a', T), true);
  });

  test('an unknown deployment is available', () => {
    assert.equal(tracker().isAvailable('never-seen', T), true);
    assert.equal(tracker().inFlight('never-seen'), 0);
  });
});

describe('firstBack: when a client may come back to a model whose every deployment is cooling down', () => {
  const llama = group(dep('a'), dep('b'));
  const qwen = new ModelCatalog([dep('q', { alias: 'qwen' })]).group('qwen') as ModelGroup;

  test('the cooldown that ends first, over the groups given (the model and its fallbacks)', () => {
    const t = tracker(0, 30);
    t.failed('a', T, { rateLimited: true, waitMs: 90_000 });
    t.failed('b', T + 1000);
    t.failed('q', T + 2000, { rateLimited: true, waitMs: undefined });
    assert.deepEqual(firstBack([llama, qwen], t, T + 3000), { untilMs: T + 31_000, rateLimited: false });
    assert.deepEqual(firstBack([llama], t, T + 3000), { untilMs: T + 31_000, rateLimited: false });
    // Once b is back, one is available: nothing to wait for.
    assert.equal(firstBack([llama, qwen], t, T + 31_000), undefined);
  });

  test('a tie goes to the cooldown a 429 caused', () => {
    const t = tracker(0, 30);
    t.failed('a', T);
    t.failed('b', T, { rateLimited: true, waitMs: undefined });
    assert.deepEqual(firstBack([llama], t, T), { untilMs: T + 30_000, rateLimited: true });
  });

  test('one deployment available, or no groups at all: undefined', () => {
    const t = tracker(0, 30);
    t.failed('a', T);
    assert.equal(firstBack([llama], t, T), undefined);
    assert.equal(firstBack([], t, T), undefined);
  });

  test("a health view that does not know cooldowns (Check's): undefined, whatever it says is unavailable", () => {
    assert.equal(firstBack([llama], { isAvailable: () => false }, T), undefined);
  });
});

/**
 * LiteLLM's `order` (litellm/utils.py, _get_order_filtered_deployments): among the deployments that may take
 * the request, those of the lowest order; ones without an order only when no ordered one is left.
 */
describe('deployment order: the lowest order available takes the traffic, under every strategy', () => {
  const STRATEGIES: readonly RoutingStrategy[] = [
    'simple-shuffle',
    'least-busy',
    'latency-based-routing',
    'usage-based-routing',
    'usage-based-routing-v2',
  ];
  /** primary p1, p2 (order 1); backup b (order 2, heavier: it would win most shuffles without order); spare s (none). */
  const ordered = (): ModelGroup =>
    group(dep('b', { order: 2, weight: 10 }), dep('s', { weight: 10 }), dep('p1', { order: 1 }), dep('p2', { order: 1 }));

  for (const strategy of STRATEGIES) {
    test(`${strategy}: order 1 only while one of it is available; then order 2; then those without an order; order 1 again once back`, () => {
      const t = tracker(0, 30);
      const g = ordered();
      // Make the backup look best to every strategy: idle, fast, unused.
      t.started('p1', T);
      t.started('p2', T);
      t.latency('p1', 900);
      t.latency('p2', 900);
      t.latency('b', 1);
      t.latency('s', 1);
      t.addTokens('p1', 500);
      t.addTokens('p2', 500);
      for (let i = 0; i < 100; i++) assert.match(pickId(t, g, strategy, T, i / 100) ?? '', /^p[12]$/, `random ${i / 100}`);
      t.failed('p1', T);
      assert.equal(pickId(t, g, strategy, T, 0.99), 'p2', 'the other of order 1 while p1 is cooling down');
      t.failed('p2', T);
      for (let i = 0; i < 10; i++) assert.equal(pickId(t, g, strategy, T, i / 10), 'b', 'every order-1 deployment cooling down');
      t.failed('b', T);
      assert.equal(pickId(t, g, strategy, T, 0), 's', 'no ordered one left: the one without an order');
      assert.equal(pickId(t, g, strategy, T + 30_000, 0.99)?.startsWith('p'), true, 'order 1 back from its cooldown');
    });
  }

  test('a retry (the tried excluded) goes to another of the same order first, then to the next order', () => {
    const t = tracker();
    const g = ordered();
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0, new Set(['p1'])), 'p2');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0, new Set(['p2'])), 'p1');
    assert.equal(pickId(t, g, 'simple-shuffle', T, 0.99, new Set(['p1', 'p2'])), 'b');
    assert.equal(pickId(t, g, 'least-busy', T, 0.99, new Set(['p1', 'p2', 'b'])), 's');
  });

  test('weights share the traffic within an order, never across orders', () => {
    const t = tracker();
    const g = group(dep('p1', { order: 1, weight: 1 }), dep('p2', { order: 1, weight: 3 }), dep('b', { order: 2, weight: 100 }));
    const counts: Record<string, number> = {};
    for (let i = 0; i < 1000; i++) {
      const id = pickId(t, g, 'simple-shuffle', T, i / 1000) ?? '';
      counts[id] = (counts[id] ?? 0) + 1;
    }
    assert.deepEqual(counts, { p1: 250, p2: 750 });
  });

  for (const strategy of ['usage-based-routing', 'usage-based-routing-v2'] as const) {
    test(`${strategy}: order 1 past its rpm this minute is passed over for order 2; the next minute it is back`, () => {
      const t = tracker();
      const g = group(dep('p', { order: 1, rpm: 2 }), dep('b', { order: 2 }));
      t.started('p', T);
      t.addTokens('p', 10);
      t.finished('p');
      assert.equal(pickId(t, g, strategy, T, 0), 'p', 'order 1, though b used fewer tokens');
      t.started('p', T);
      t.finished('p');
      assert.equal(pickId(t, g, strategy, T + 1000, 0), 'b', 'p is at its rpm');
      assert.equal(pickId(t, g, strategy, T + MIN, 0), 'p');
    });
  }

  test("Check's pick (weightedPick): order 1 whatever the weights, order 2 when every order 1 is unavailable", () => {
    const g = ordered();
    const healthy = { isAvailable: () => true };
    for (let i = 0; i < 100; i++) assert.match(weightedPick(g, healthy, T, i / 100)?.id ?? '', /^p[12]$/);
    const down = (ids: string[]) => ({ isAvailable: (id: string) => !ids.includes(id) });
    assert.equal(weightedPick(g, down(['p1']), T, 0.99)?.id, 'p2');
    assert.equal(weightedPick(g, down(['p1', 'p2']), T, 0.99)?.id, 'b');
    assert.equal(weightedPick(g, down(['p1', 'p2', 'b']), T, 0)?.id, 's');
    assert.equal(weightedPick(g, down(['p1', 'p2', 'b', 's']), T, 0), undefined);
  });

  test('a group without orders, or all of one order, is not "ordered": its picks are unchanged', () => {
    assert.equal(group(dep('a'), dep('b')).ordered, false);
    assert.equal(group(dep('a', { order: 3 }), dep('b', { order: 3 })).ordered, false);
    assert.equal(group(dep('a', { order: 1 }), dep('b')).ordered, true);
    const same = [dep('a', { order: 2 }), dep('b', { order: 2 })];
    assert.equal(firstOrder(same), same);
    assert.deepEqual(
      firstOrder([dep('x'), dep('c', { order: 3 }), dep('d', { order: 2 })]).map((d) => d.id),
      ['d'],
    );
  });

  test('nextInOrder (a deployment at its rpm/tpm at Check): another of its order, then the next order up, never a lower one', () => {
    const g = ordered();
    const at = (id: string): Deployment => g.deployments.find((d) => d.id === id) as Deployment;
    assert.equal(nextInOrder(g, at('p1'), new Set(['p1']))?.id, 'p2');
    assert.equal(nextInOrder(g, at('p2'), new Set(['p1', 'p2']))?.id, 'b');
    assert.equal(nextInOrder(g, at('b'), new Set(['p1', 'p2', 'b']))?.id, 's');
    assert.equal(nextInOrder(g, at('b'), new Set(['b']))?.id, 's', 'order 1 is not gone back to (it was passed over)');
    assert.equal(nextInOrder(g, at('s'), new Set(['s'])), undefined);
  });
});
