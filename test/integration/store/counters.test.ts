/**
 * The counters' semantics, run against both implementations with injected clocks: the in-process one,
 * and the Redis Lua scripts on the real redis-server at 127.0.0.1:6379 (each test its own key prefix).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { randomUUID } from 'node:crypto';
import {
  afterDuration,
  budgetPeriod,
  LEASE_TTL_MS,
  rateHeaders,
  WINDOW_MS,
  type Counters,
  type LimitSubject,
} from '../../../src/store/counters.js';
import { MemoryCounters } from '../../../src/store/memory-counters.js';
import { RedisCounters } from '../../../src/store/redis-counters.js';

const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
/**
 * Noon (UTC) today: counters are written at this time, so their budget keys' expiry (a day after the period
 * ends) lies ahead. A fixed date would age out: Redis drops a key whose PEXPIREAT has passed at once.
 */
const T0 = new Date().setUTCHours(12, 0, 0, 0);
/** A fixed instant, for the calendar arithmetic of budget periods (no Redis). */
const FIXED = Date.UTC(2026, 10, 23, 12, 0, 0);

const subject = (id: string, l: Partial<Omit<LimitSubject, 'id'>>): LimitSubject => ({
  id,
  rpm: l.rpm,
  tpm: l.tpm,
  parallel: l.parallel,
  budget: l.budget,
});

const opened: Counters[] = [];
after(async () => {
  await Promise.all(opened.map((c) => c.close()));
});

const kinds: [string, () => Promise<Counters>][] = [
  ['memory', async () => new MemoryCounters()],
  [
    'redis',
    async () => {
      const c = new RedisCounters({ url: REDIS, prefix: `tg-test-${randomUUID()}:`, commandTimeoutMs: 2000 });
      opened.push(c);
      assert.equal(await c.ready(5000), true, `redis-server at ${REDIS}`);
      await c.seed([]); // a fresh prefix is a fresh Redis: it takes settlements once seeded
      return c;
    },
  ],
];

for (const [kind, make] of kinds) {
  describe(`counters (${kind})`, () => {
    let seq = 0;
    const admit = (c: Counters, subjects: LimitSubject[], now: number, tokens = 0, cost = 0) =>
      c.admit({ requestId: `r${++seq}`, subjects, tokens, cost, now });

    test('a lease is claimed once: the first claim wins, every later one is refused', async () => {
      const c = await make();
      const id = `claim-${randomUUID()}`;
      const claims = await Promise.all([0, 1, 2, 3].map(() => c.claim(id, T0 + 30_000, T0)));
      assert.deepEqual(claims.filter(Boolean).length, 1, 'one of four concurrent claims');
      assert.equal(await c.claim(id, T0 + 30_000, T0 + 1), false);
      assert.equal(await c.claim(`${id}-other`, T0 + 30_000, T0), true, 'another lease is its own');
    });

    test('rpm N: exactly N of a burst are admitted, the next is told the real wait', async () => {
      const c = await make();
      const s = [subject('key:a', { rpm: 5 })];
      const results = [];
      for (let i = 0; i < 8; i++) results.push(await admit(c, s, T0));
      assert.equal(results.filter((r) => r.ok).length, 5);
      const denied = results[5];
      assert.ok(denied !== undefined && !denied.ok);
      assert.equal(denied.code, 'rate_limit_exceeded');
      assert.equal(denied.limit, 'rpm');
      assert.equal(denied.retryAfterMs, WINDOW_MS);
      assert.deepEqual(denied.rate.requests, { limit: 5, remaining: 0, resetMs: WINDOW_MS });
      const first = results[0];
      assert.ok(first?.ok === true);
      assert.equal(first.rate.requests?.remaining, 4);
    });

    test('the window slides: when the oldest request ages out, exactly one more is admitted', async () => {
      const c = await make();
      const s = [subject('key:b', { rpm: 3 })];
      for (let i = 0; i < 3; i++) assert.equal((await admit(c, s, T0 + i * 1000)).ok, true);
      const early = await admit(c, s, T0 + WINDOW_MS - 1);
      assert.ok(!early.ok);
      assert.equal(early.retryAfterMs, 1, 'the oldest ages out 1 ms later');
      assert.equal((await admit(c, s, T0 + WINDOW_MS)).ok, true);
      assert.equal((await admit(c, s, T0 + WINDOW_MS)).ok, false);
      assert.equal((await admit(c, s, T0 + WINDOW_MS + 1000)).ok, true, 'the second one ages out a second later');
    });

    test('tpm: tokens are reserved at admission and settled with the real usage', async () => {
      const c = await make();
      const s = [subject('key:c', { tpm: 1000 })];
      const a = await c.admit({ requestId: 'a', subjects: s, tokens: 400, cost: 0, now: T0 });
      const b = await c.admit({ requestId: 'b', subjects: s, tokens: 400, cost: 0, now: T0 + 10 });
      assert.ok(a.ok && b.ok);
      assert.equal(b.rate.tokens?.remaining, 200);
      const third = await c.admit({ requestId: 'c', subjects: s, tokens: 400, cost: 0, now: T0 + 20 });
      assert.ok(!third.ok);
      assert.equal(third.limit, 'tpm');
      // Nothing is used yet: the two requests in flight hold the rest, and give it back when they end.
      assert.equal(third.held, true);
      assert.equal(third.retryAfterMs, 1000, 'held by requests in flight: try again shortly, not when the window turns');
      await c.settle({ requestId: 'a', subjects: s, reservedTokens: 400, tokens: 100, cost: 0, now: T0 + 30 });
      assert.equal((await c.admit({ requestId: 'd', subjects: s, tokens: 400, cost: 0, now: T0 + 40 })).ok, true);
      assert.equal(
        (await c.admit({ requestId: 'e', subjects: s, tokens: 200, cost: 0, now: T0 + 50 })).ok,
        false,
        '100 + 400 + 400 + 200 > 1000',
      );
      assert.equal((await c.admit({ requestId: 'f', subjects: s, tokens: 100, cost: 0, now: T0 + 60 })).ok, true, 'exactly 1000');
      // A reservation larger than the whole tpm is cut to it, so a big max_tokens is not refused forever.
      const big = [subject('key:c2', { tpm: 50 })];
      assert.equal((await c.admit({ requestId: 'g', subjects: big, tokens: 4096, cost: 0, now: T0 })).ok, true);
      assert.equal((await c.admit({ requestId: 'h', subjects: big, tokens: 1, cost: 0, now: T0 })).ok, false);
      // Used, not held: the wait is until the window lets enough go.
      await c.settle({ requestId: 'g', subjects: big, reservedTokens: 50, tokens: 50, cost: 0, now: T0 + 10 });
      const used = await c.admit({ requestId: 'i', subjects: big, tokens: 1, cost: 0, now: T0 + 20 });
      assert.ok(!used.ok);
      assert.equal(used.held, false);
      assert.equal(used.retryAfterMs, WINDOW_MS - 20, 'the used tokens age out then');
    });

    test('tpm: a denial tells apart tokens used (wait for the window) from tokens held by requests in flight (retry shortly)', async () => {
      const c = await make();
      const s = [subject('key:c3', { tpm: 1000 })];
      // 600 used, then 300 held by a request in flight.
      assert.equal((await c.admit({ requestId: 'u', subjects: s, tokens: 600, cost: 0, now: T0 })).ok, true);
      await c.settle({ requestId: 'u', subjects: s, reservedTokens: 600, tokens: 600, cost: 0, now: T0 + 5 });
      assert.equal((await c.admit({ requestId: 'v', subjects: s, tokens: 300, cost: 0, now: T0 + 10 })).ok, true);
      // 200 more fits once the request in flight ends (600 + 200 <= 1000): held.
      const soon = await c.admit({ requestId: 'w', subjects: s, tokens: 200, cost: 0, now: T0 + 20 });
      assert.ok(!soon.ok);
      assert.equal(soon.held, true);
      assert.equal(soon.retryAfterMs, 1000);
      // 500 more would not fit even then (600 + 500 > 1000): the window's wait.
      const later = await c.admit({ requestId: 'x', subjects: s, tokens: 500, cost: 0, now: T0 + 20 });
      assert.ok(!later.ok);
      assert.equal(later.held, false);
      assert.equal(later.retryAfterMs, WINDOW_MS - 20);
      // The request in flight ends using 100: 200 fits now; and an entry that ages out while open frees its hold.
      await c.settle({ requestId: 'v', subjects: s, reservedTokens: 300, tokens: 100, cost: 0, now: T0 + 30 });
      assert.equal((await c.admit({ requestId: 'y', subjects: s, tokens: 200, cost: 0, now: T0 + 40 })).ok, true);
      assert.equal((await c.admit({ requestId: 'z', subjects: s, tokens: 1000, cost: 0, now: T0 + WINDOW_MS + 50 })).ok, true);
      const after = await c.admit({ requestId: 'z2', subjects: s, tokens: 1, cost: 0, now: T0 + WINDOW_MS + 60 });
      assert.ok(!after.ok);
      assert.equal(after.held, true, 'only the request in flight holds the window now');
      // y aged out while still open: its hold went with it, so once z used its 1000 nothing is held.
      await c.settle({ requestId: 'z', subjects: s, reservedTokens: 1000, tokens: 1000, cost: 0, now: T0 + WINDOW_MS + 70 });
      const full = await c.admit({ requestId: 'z3', subjects: s, tokens: 1, cost: 0, now: T0 + WINDOW_MS + 80 });
      assert.ok(!full.ok);
      assert.equal(full.held, false);
    });

    test('tpm: a request without max_tokens (leastTokens) takes the room left, down to its least, instead of waiting for its whole cap', async () => {
      const c = await make();
      const s = [subject('key:flex', { tpm: 1000 })];
      assert.equal((await c.admit({ requestId: 'f1', subjects: s, tokens: 600, cost: 0, now: T0 })).ok, true);
      await c.settle({ requestId: 'f1', subjects: s, reservedTokens: 600, tokens: 600, cost: 0, now: T0 + 1 });
      // 4106 asked (a 4096 cap and its prompt), 11 at least: it takes the 400 left.
      const flex = await c.admit({ requestId: 'f2', subjects: s, tokens: 4106, leastTokens: 11, cost: 0, now: T0 + 2 });
      assert.ok(flex.ok);
      assert.equal(flex.rate.tokens?.remaining, 0);
      // The same without a least waits for room for all of it (cut to the limit): the window's wait.
      const strict = await c.admit({ requestId: 'f3', subjects: s, tokens: 4106, cost: 0, now: T0 + 3 });
      assert.ok(!strict.ok);
      assert.equal(strict.held, false);
      // Another flexible one finds the 400 held by the first, in flight: retry shortly.
      const next = await c.admit({ requestId: 'f4', subjects: s, tokens: 4106, leastTokens: 11, cost: 0, now: T0 + 4 });
      assert.ok(!next.ok);
      assert.equal(next.held, true);
      assert.equal(next.retryAfterMs, 1000);
      // The first used 50 of its 400: the next takes the 350 left.
      await c.settle({ requestId: 'f2', subjects: s, reservedTokens: 4106, tokens: 50, cost: 0, now: T0 + 5 });
      const after = await c.admit({ requestId: 'f5', subjects: s, tokens: 4106, leastTokens: 11, cost: 0, now: T0 + 6 });
      assert.ok(after.ok);
      assert.equal(after.rate.tokens?.remaining, 0);
      await c.settle({ requestId: 'f5', subjects: s, reservedTokens: 4106, tokens: 345, cost: 0, now: T0 + 7 });
      // 995 used: less room than the least is the window's wait, whoever asks.
      const none = await c.admit({ requestId: 'f6', subjects: s, tokens: 4106, leastTokens: 11, cost: 0, now: T0 + 8 });
      assert.ok(!none.ok);
      assert.equal(none.held, false);
      assert.equal(none.retryAfterMs, WINDOW_MS - 8, 'the 600 used first age out at T0 + 60 s');
    });

    test('parallel leases: released when the request ends, and expiring when nobody renews them', async () => {
      const c = await make();
      const s = [subject('key:d', { parallel: 2 })];
      assert.equal((await c.admit({ requestId: 'p1', subjects: s, tokens: 0, cost: 0, now: T0 })).ok, true);
      assert.equal((await c.admit({ requestId: 'p2', subjects: s, tokens: 0, cost: 0, now: T0 })).ok, true);
      const third = await c.admit({ requestId: 'p3', subjects: s, tokens: 0, cost: 0, now: T0 });
      assert.ok(!third.ok);
      assert.equal(third.limit, 'parallel');
      // The contract's 429 carries x-ratelimit-*: for a parallel limit, how many may be in flight, none left.
      assert.deepEqual(rateHeaders(third.rate).slice(0, 2), [
        ['x-ratelimit-limit-requests', '2'],
        ['x-ratelimit-remaining-requests', '0'],
      ]);
      await c.settle({ requestId: 'p1', subjects: s, reservedTokens: 0, tokens: 0, cost: 0, now: T0 + 5 });
      assert.equal((await c.admit({ requestId: 'p4', subjects: s, tokens: 0, cost: 0, now: T0 + 6 })).ok, true);
      // p2 is renewed, p4 is not: only p4's lease expires.
      await c.renew([{ requestId: 'p2', subjects: s }], T0 + LEASE_TTL_MS - 1000);
      assert.equal((await c.admit({ requestId: 'p5', subjects: s, tokens: 0, cost: 0, now: T0 + LEASE_TTL_MS + 10 })).ok, true);
      assert.equal((await c.admit({ requestId: 'p6', subjects: s, tokens: 0, cost: 0, now: T0 + LEASE_TTL_MS + 20 })).ok, false);
    });

    test('budget: in-flight cost counts, so concurrency passes the budget by one request at most; spend past it waits for the period', async () => {
      const c = await make();
      const period = budgetPeriod('30d', T0, UTC_CALENDAR);
      const s = [subject('key:e', { budget: { max: 1, period } })];
      const admitted: string[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await c.admit({ requestId: `b${i}`, subjects: s, tokens: 0, cost: 0.4, now: T0 });
        if (r.ok) admitted.push(`b${i}`);
        else {
          assert.equal(r.code, 'rate_limit_exceeded', 'cost in flight is a wait, not an exhausted budget');
          assert.equal(r.limit, 'budget');
        }
      }
      assert.deepEqual(admitted, ['b0', 'b1', 'b2'], '0 + 0.4 + 0.4 < 1 admits the third; it may cross the budget');
      for (const id of admitted) await c.settle({ requestId: id, subjects: s, reservedTokens: 0, tokens: 10, cost: 0.4, now: T0 + 1 });
      assert.ok(Math.abs((await c.spend('key:e', period)) - 1.2) < 1e-9);
      const over = await c.admit({ requestId: 'b9', subjects: s, tokens: 0, cost: 0, now: T0 + 2 });
      assert.ok(!over.ok);
      assert.equal(over.code, 'budget_exceeded');
      assert.equal(over.retryAfterMs, period.end - (T0 + 2));
      // The next period starts from zero.
      const next = { ...s[0], budget: { max: 1, period: budgetPeriod('30d', period.end, UTC_CALENDAR) } } as LimitSubject;
      assert.equal((await c.admit({ requestId: 'b10', subjects: [next], tokens: 0, cost: 0.1, now: period.end })).ok, true);
    });

    test('all or nothing: a request denied by its team takes nothing from its key', async () => {
      const c = await make();
      const key = subject('key:f', { rpm: 10 });
      const team = subject('team:f', { rpm: 1 });
      assert.equal((await admit(c, [key, team], T0)).ok, true);
      const r = await admit(c, [key, team], T0);
      assert.ok(!r.ok);
      assert.equal(r.subject, 'team:f');
      const keyOnly = await admit(c, [key], T0);
      assert.ok(keyOnly.ok);
      assert.equal(keyOnly.rate.requests?.remaining, 8, 'the key counted two admissions, not three');
    });

    test('regression: reservations of 0 tokens that age out do not break the next admission (HINCRBY -0)', async () => {
      const c = await make();
      const s = [subject('key:h', { tpm: 100 })];
      assert.equal((await c.admit({ requestId: 'z1', subjects: s, tokens: 0, cost: 0, now: T0 })).ok, true);
      await c.settle({ requestId: 'z1', subjects: s, reservedTokens: 0, tokens: 0, cost: 0, now: T0 + 1 });
      assert.equal((await c.admit({ requestId: 'z2', subjects: s, tokens: 10, cost: 0, now: T0 + WINDOW_MS + 5 })).ok, true);
    });

    test('spend added from the log (replay) counts against the budget', async () => {
      const c = await make();
      const period = budgetPeriod('1d', T0, UTC_CALENDAR);
      await c.addSpend([{ subject: 'team:g', period, cost: 2 }]);
      const r = await admit(c, [subject('team:g', { budget: { max: 2, period } })], T0);
      assert.ok(!r.ok);
      assert.equal(r.code, 'budget_exceeded');
    });
  });
}

describe('a Redis that has not been seeded', () => {
  test('refuses settlements (they are logged uncounted and replayed once it is seeded)', async () => {
    const c = new RedisCounters({ url: REDIS, prefix: `tg-test-${randomUUID()}:`, commandTimeoutMs: 2000 });
    opened.push(c);
    assert.equal(await c.ready(5000), true);
    const s = [subject('key:u', { budget: { max: 1, period: budgetPeriod('1d', T0, UTC_CALENDAR) } })];
    await assert.rejects(c.settle({ requestId: 'u1', subjects: s, reservedTokens: 0, tokens: 1, cost: 0.5, now: T0 }), /UNSEEDED/);
    assert.equal(await c.isSeeded(), false);
    await c.seed([{ subject: 'key:u', period: budgetPeriod('1d', T0, UTC_CALENDAR), cost: 0.25 }]);
    assert.equal(await c.isSeeded(), true);
    await c.settle({ requestId: 'u1', subjects: s, reservedTokens: 0, tokens: 1, cost: 0.5, now: T0 });
    assert.equal(await c.spend('key:u', budgetPeriod('1d', T0, UTC_CALENDAR)), 0.75);
  });
});

describe('budget periods and headers', () => {
  test('periods are aligned, so every replica and a restarted one agree', () => {
    const day = 86_400_000;
    const p = budgetPeriod('10d', FIXED, UTC_CALENDAR);
    assert.equal(p.start % (10 * day), 0);
    assert.equal(p.end - p.start, 10 * day);
    assert.ok(p.start <= FIXED && FIXED < p.end);
    assert.deepEqual(budgetPeriod('1d', FIXED, UTC_CALENDAR), { start: Date.UTC(2026, 10, 23), end: Date.UTC(2026, 10, 24) });
    assert.deepEqual(budgetPeriod('mo', FIXED, UTC_CALENDAR), { start: Date.UTC(2026, 10, 1), end: Date.UTC(2026, 11, 1) });
    assert.deepEqual(budgetPeriod('1mo', Date.UTC(2026, 11, 31, 23), UTC_CALENDAR), {
      start: Date.UTC(2026, 11, 1),
      end: Date.UTC(2027, 0, 1),
    });
    assert.deepEqual(budgetPeriod('3mo', FIXED, UTC_CALENDAR), { start: Date.UTC(2026, 9, 1), end: Date.UTC(2027, 0, 1) });
    assert.deepEqual(budgetPeriod('h', FIXED + 1234, UTC_CALENDAR), { start: FIXED, end: FIXED + 3_600_000 });
    // LiteLLM's calendar resets: 30d is a calendar month, a week (1w or 7d) starts on a Monday (2026-11-23 is one).
    assert.deepEqual(budgetPeriod('30d', FIXED, UTC_CALENDAR), { start: Date.UTC(2026, 10, 1), end: Date.UTC(2026, 11, 1) });
    for (const w of ['1w', 'w', '7d']) {
      assert.deepEqual(budgetPeriod(w, FIXED, UTC_CALENDAR), { start: Date.UTC(2026, 10, 23), end: Date.UTC(2026, 10, 30) }, w);
      assert.deepEqual(
        budgetPeriod(w, Date.UTC(2026, 10, 23) - 1, UTC_CALENDAR),
        { start: Date.UTC(2026, 10, 16), end: Date.UTC(2026, 10, 23) },
        w,
      );
    }
    const two = budgetPeriod('2w', FIXED, UTC_CALENDAR);
    assert.equal(new Date(two.start).getUTCDay(), 1, 'two weeks from a Monday');
    assert.ok(two.end - two.start === 14 * day && two.start <= FIXED && FIXED < two.end);
    // A key's lifetime is not a budget period: 30d is thirty days from now.
    assert.equal(afterDuration('30d', FIXED), FIXED + 30 * day);
    assert.equal(afterDuration('2w', FIXED), FIXED + 14 * day);
    assert.deepEqual(budgetPeriod(undefined, FIXED, UTC_CALENDAR), { start: 0, end: Number.MAX_SAFE_INTEGER });
  });

  test("a key's month from the 31st ends on the next month's last day, as LiteLLM's, not days into the month after", () => {
    assert.equal(afterDuration('1mo', Date.UTC(2027, 0, 31, 12)), Date.UTC(2027, 1, 28, 12));
    assert.equal(afterDuration('1mo', Date.UTC(2028, 0, 31, 12)), Date.UTC(2028, 1, 29, 12));
    assert.equal(afterDuration('1mo', Date.UTC(2027, 2, 31, 12)), Date.UTC(2027, 3, 30, 12));
    assert.equal(afterDuration('2mo', Date.UTC(2026, 11, 31, 12)), Date.UTC(2027, 1, 28, 12));
    assert.equal(afterDuration('mo', Date.UTC(2026, 11, 31, 12)), Date.UTC(2027, 0, 31, 12));
    assert.equal(afterDuration('13mo', Date.UTC(2027, 0, 15)), Date.UTC(2028, 1, 15));
  });

  test('x-ratelimit headers in OpenAI names', () => {
    assert.deepEqual(
      rateHeaders({ requests: { limit: 60, remaining: 59, resetMs: 1500 }, tokens: { limit: 1000, remaining: -5, resetMs: 60000 } }),
      [
        ['x-ratelimit-limit-requests', '60'],
        ['x-ratelimit-remaining-requests', '59'],
        ['x-ratelimit-reset-requests', '1.5s'],
        ['x-ratelimit-limit-tokens', '1000'],
        ['x-ratelimit-remaining-tokens', '0'],
        ['x-ratelimit-reset-tokens', '60s'],
      ],
    );
  });
});
