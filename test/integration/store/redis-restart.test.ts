/**
 * The Redis counters across a restart and a stall, on redis-servers of this test's own (a restart flushes
 * them, a stall blocks them: the shared one at 6379 would stall every other test): a budget is never read
 * from a Redis that lost it, a lease is released even when its settlement is refused, and an admission that
 * timed out here takes nothing that stays.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import type { KeyRecord } from '../../../src/identity/keys.js';
import { ModelCatalog } from '../../../src/routing/deployments.js';
import { budgetPeriod, type LimitSubject } from '../../../src/store/counters.js';
import { Limiter } from '../../../src/store/limiter.js';
import { RedisCounters } from '../../../src/store/redis-counters.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { apiKeyRecord } from '../../support/records.js';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

const servers: ChildProcess[] = [];
const opened: RedisCounters[] = [];
after(async () => {
  await Promise.all(opened.map((c) => c.close()));
  for (const s of servers) s.kill('SIGKILL');
});

/** A redis-server of this test's own, nothing kept on disk. */
async function ownRedis(): Promise<string> {
  const port = await freePort();
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--enable-debug-command', 'yes'],
    {
      stdio: 'ignore',
    },
  );
  servers.push(server);
  return `redis://127.0.0.1:${port}`;
}

async function counters(url: string, commandTimeoutMs = 2_000): Promise<RedisCounters> {
  const c = new RedisCounters({ url, prefix: `tg-restart-${randomUUID()}:`, commandTimeoutMs });
  opened.push(c);
  assert.equal(await c.ready(5_000), true, `redis-server at ${url}`);
  return c;
}

const NOW = Date.now();
const budgeted = (id: string): LimitSubject => ({
  id,
  rpm: undefined,
  tpm: undefined,
  parallel: 1,
  budget: { max: 1, period: budgetPeriod('1d', NOW, UTC_CALENDAR) },
});

describe('Redis counters across a restart and a stall', { timeout: 30_000 }, () => {
  test('a Redis that lost its spend admits nothing with a budget until it is seeded (a store fault: failure_mode decides)', async () => {
    const c = await counters(await ownRedis());
    await assert.rejects(c.admit({ requestId: 'r1', subjects: [budgeted('key:a')], tokens: 1, cost: 0.1, now: NOW }), /UNSEEDED/);
    const noBudget = { ...budgeted('key:b'), budget: undefined };
    assert.equal(
      (await c.admit({ requestId: 'r2', subjects: [noBudget], tokens: 1, cost: 0, now: NOW })).ok,
      true,
      'no budget: nothing to lose',
    );
    await c.seed([]);
    assert.equal((await c.admit({ requestId: 'r3', subjects: [budgeted('key:a')], tokens: 1, cost: 0.1, now: NOW })).ok, true);
  });

  test('a settlement refused by a Redis that restarted still releases its lease (its parallel slot)', async () => {
    // Restarted empty and not seeded yet: a key without a budget is admitted (there is no spend to lose).
    const c = await counters(await ownRedis());
    const sub = { ...budgeted('key:p'), budget: undefined };
    assert.equal((await c.admit({ requestId: 'l1', subjects: [sub], tokens: 1, cost: 0, now: NOW })).ok, true);
    assert.equal((await c.admit({ requestId: 'l2', subjects: [sub], tokens: 1, cost: 0, now: NOW })).ok, false, 'the one slot is taken');
    await assert.rejects(c.settle({ requestId: 'l1', subjects: [sub], reservedTokens: 1, tokens: 1, cost: 0, now: NOW }), /UNSEEDED/);
    assert.equal((await c.admit({ requestId: 'l3', subjects: [sub], tokens: 1, cost: 0, now: NOW })).ok, true, 'the slot was released');
  });

  test('a settlement refused while unseeded adds no cost, and is added by the replay after the seed', async () => {
    const c = await counters(await ownRedis());
    await c.seed([]);
    const sub = budgeted('key:q');
    const period = sub.budget?.period as ReturnType<typeof budgetPeriod>;
    assert.equal((await c.admit({ requestId: 'q1', subjects: [sub], tokens: 1, cost: 0.1, now: NOW })).ok, true);
    await c.redis.del(...(await c.redis.keys('*seeded')));
    await assert.rejects(c.settle({ requestId: 'q1', subjects: [sub], reservedTokens: 1, tokens: 1, cost: 0.1, now: NOW }), /UNSEEDED/);
    await c.seed([]);
    assert.equal(await c.spend('key:q', period), 0, 'not added while unseeded');
    assert.equal(await c.replaySpend([{ leaseId: 'q1', items: [{ subject: 'key:q', period, cost: 0.1 }] }]), 1);
    assert.equal(await c.spend('key:q', period), 0.1);
  });

  test('an admission that timed out here takes no lease when Redis runs it late', async () => {
    const url = await ownRedis();
    const c = await counters(url, 100);
    await c.seed([]);
    const key: KeyRecord = apiKeyRecord(`sk-late-${randomUUID()}`, {
      limits: { maxBudget: undefined, budgetDuration: undefined, rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: 1 },
    });
    const who = { keyId: key.id, userId: undefined, teamId: undefined };
    const dirs = { keys: { get: () => key, byId: () => key }, teams: new Map(), users: new Map(), catalog: () => new ModelCatalog([]) };
    const slow = new Limiter({
      counters: c,
      dirs,
      failureMode: 'closed',
      logger: createLogger('silent'),
      defaultMaxTokens: 16,
      calendar: UTC_CALENDAR,
    });
    const body = { maxTokens: 1, choices: 1, bytes: 10 };
    // Redis stalls for 400 ms (one connection of its own asks it to): the admission's answer times out at 100 ms.
    const stall = await counters(url);
    void stall.redis.call('DEBUG', 'SLEEP', '0.4');
    await new Promise((r) => setTimeout(r, 20));
    const refused = await slow.admit(who, undefined, body, Date.now());
    assert.equal(refused.ok, false);
    assert.equal(refused.ok ? '' : refused.code, 'store_unavailable');
    await new Promise((r) => setTimeout(r, 600)); // Redis awake: the late admission ran, then the release
    const next = await slow.admit(who, undefined, body, Date.now());
    assert.equal(next.ok, true, 'the one parallel slot is free');
  });
});
