/**
 * A lease's cost reaches the budgets once. A settlement whose answer is lost — Redis ran it but answered
 * after the call's timeout — is logged uncounted like one that never ran, and the replay from the spend log
 * must then add nothing; a settlement repeated, or a replay retried after its own answer was lost, neither.
 * The answer is delayed by a TCP relay of this test's own in front of the real redis-server; the spend log
 * is in the real PostgreSQL (a schema of this test's own).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { replayUncounted } from '../../../src/store/accounting.js';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { budgetPeriod, type LimitSubject } from '../../../src/store/counters.js';
import { openDb, type Db } from '../../../src/store/db.js';
import { migrate } from '../../../src/store/migrate.js';
import { RedisCounters } from '../../../src/store/redis-counters.js';
import { SpendLog } from '../../../src/store/spend-log.js';
import type { SpendEntry } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import type { Limits } from '../../../src/identity/keys.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = new URL(process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379');
const SCHEMA = `tg_settle_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const logger = createLogger('silent');
const NOW = Date.now();
const PERIOD = budgetPeriod('1d', NOW, UTC_CALENDAR);
const LIMITS: Limits = { maxBudget: 10, budgetDuration: '1d', rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: undefined };

/** Relays a Redis connection; while `delayMs` is set, Redis's answers reach the client that much later. */
class SlowAnswers {
  delayMs = 0;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Answers held back and not yet passed on. */
  #held = 0;
  #drained: (() => void) | undefined;

  constructor() {
    this.#server = createServer((client) => {
      const redis = connect(Number(REDIS.port || 6379), REDIS.hostname);
      for (const s of [client, redis]) {
        this.#sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          client.destroy();
          redis.destroy();
        });
      }
      client.pipe(redis);
      // Answers keep their order: each waits the same delay, and timers of one delay fire in order.
      redis.on('data', (chunk: Buffer) => {
        if (this.delayMs === 0) {
          client.write(chunk);
          return;
        }
        this.#held++;
        setTimeout(() => {
          client.write(chunk);
          if (--this.#held === 0) this.#drained?.();
        }, this.delayMs);
      });
    });
  }

  /** Resolves once every held answer was passed on. */
  drained(): Promise<void> {
    return this.#held === 0 ? Promise.resolve() : new Promise((resolve) => (this.#drained = resolve));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `redis://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const entry = (requestId: string, cost: number): SpendEntry => ({
  requestId,
  keyId: 'k1',
  userId: undefined,
  teamId: undefined,
  model: 'llama',
  deployment: 'd1',
  promptTokens: 10,
  completionTokens: 5,
  cost,
  status: 200,
  latencyMs: 1,
  estimated: false,
  at: NOW,
});

describe('a lease is counted once', { timeout: 30_000 }, () => {
  const relay = new SlowAnswers();
  let db: Db | undefined;
  let counters: RedisCounters | undefined;
  after(async () => {
    await counters?.close();
    await relay.close();
    await db?.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await db?.close();
  });

  test('a settlement Redis ran but answered too late is not added again by the replay; a lost one is', async () => {
    db = await openDb({ url: PG, schema: SCHEMA });
    await migrate(db);
    // A second per call: this test's own event loop relays every answer, and a loaded machine is slow.
    const c = new RedisCounters({ url: await relay.listen(), prefix: `tg-settle-${randomUUID()}:`, commandTimeoutMs: 1000 });
    counters = c;
    assert.equal(await c.ready(5000), true);
    await assert.rejects(c.replaySpend([{ leaseId: 'early', items: [{ subject: 'key:k1', period: PERIOD, cost: 1 }] }]), /UNSEEDED/);
    await c.seed([]);
    const subjects: LimitSubject[] = [
      { id: 'key:k1', rpm: undefined, tpm: undefined, parallel: undefined, budget: { max: 10, period: PERIOD } },
    ];
    for (const id of ['late', 'lost']) assert.equal((await c.admit({ requestId: id, subjects, tokens: 0, cost: 1, now: NOW })).ok, true);

    // Redis runs the settlement; its answer comes after the call gave up.
    relay.delayMs = 3000;
    await assert.rejects(c.settle({ requestId: 'late', subjects, reservedTokens: 0, tokens: 15, cost: 0.5, now: NOW }), /timed out/i);
    relay.delayMs = 0;
    await relay.drained();
    assert.equal(await c.spend('key:k1', PERIOD), 0.5, 'the settlement ran');

    // Both are logged uncounted, as Accounting logs a settlement that failed; 'lost' never reached Redis.
    const log = new SpendLog(db, logger);
    log.add(entry('late', 0.5), 'late', false);
    log.add(entry('lost', 0.25), 'lost', false);
    await log.flush();
    assert.equal(await replayUncounted(db, c, () => LIMITS, UTC_CALENDAR), 2);
    assert.equal(await c.spend('key:k1', PERIOD), 0.75, "the late one's cost once, the lost one's added");
    const rows = await db.query<{ n: string }>('SELECT count(*) AS n FROM spend_logs WHERE NOT counted');
    assert.equal(Number(rows[0]?.n), 0);

    // A replay whose transaction failed after Redis ran it is replayed again: nothing more is added.
    const again = [{ leaseId: 'lost', items: [{ subject: 'key:k1', period: PERIOD, cost: 0.25 }] }];
    assert.equal(await c.replaySpend(again), 0);
    // The same settlement sent twice (its caller tried again) adds its cost once.
    assert.equal((await c.admit({ requestId: 'twice', subjects, tokens: 0, cost: 1, now: NOW })).ok, true);
    for (let i = 0; i < 2; i++) await c.settle({ requestId: 'twice', subjects, reservedTokens: 0, tokens: 15, cost: 1, now: NOW });
    assert.equal(await c.spend('key:k1', PERIOD), 1.75);

    // A settlement that arrives after its row was replayed adds no cost, but still releases the lease.
    const one: LimitSubject[] = [{ id: 'key:k2', rpm: undefined, tpm: undefined, parallel: 1, budget: { max: 10, period: PERIOD } }];
    assert.equal((await c.admit({ requestId: 'slow', subjects: one, tokens: 0, cost: 1, now: NOW })).ok, true);
    assert.equal((await c.admit({ requestId: 'next', subjects: one, tokens: 0, cost: 1, now: NOW })).ok, false, 'one at a time');
    assert.equal(await c.replaySpend([{ leaseId: 'slow', items: [{ subject: 'key:k2', period: PERIOD, cost: 2 }] }]), 1);
    await c.settle({ requestId: 'slow', subjects: one, reservedTokens: 0, tokens: 15, cost: 2, now: NOW });
    assert.equal(await c.spend('key:k2', PERIOD), 2);
    assert.equal((await c.admit({ requestId: 'next', subjects: one, tokens: 0, cost: 1, now: NOW + 1 })).ok, true, 'the slot was released');
  });
});
