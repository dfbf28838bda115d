/**
 * A key deleted and generated again with the same value has the same key id (its hash's first 16 hex), so
 * the old record's spend-log rows carry the new record's key id. They stay (an audit record), but the new
 * record's budget starts at zero, as in LiteLLM, which keeps spend on the key row — also after a restart
 * (in-process counters seeded from the log), a fresh Redis (seeded) and the replay of uncounted rows. Run
 * against the real PostgreSQL (a schema of this test's own), embedded PGlite, and the real Redis (a key
 * prefix of this test's own).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { replayUncounted, seedBudgets, seedRedis, type BudgetSubject } from '../../../src/store/accounting.js';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { budgetPeriod, budgetPeriodOf, subjectOf } from '../../../src/store/counters.js';
import { openDb, type Db } from '../../../src/store/db.js';
import { MemoryCounters } from '../../../src/store/memory-counters.js';
import { migrate } from '../../../src/store/migrate.js';
import { RedisCounters } from '../../../src/store/redis-counters.js';
import { SpendLog } from '../../../src/store/spend-log.js';
import type { SpendEntry } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import type { Limits } from '../../../src/identity/keys.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const logger = createLogger('silent');
const NOW = Date.now();
/** The old record spent before this; the new record was made here. */
const MADE = NOW - 60_000;
const KEY_ID = 'aaaabbbbccccdddd';

const entry = (requestId: string, cost: number, at: number): SpendEntry => ({
  requestId,
  keyId: KEY_ID,
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
  at,
});

function limits(over: Partial<Limits> = {}): Limits {
  return {
    maxBudget: 1,
    budgetDuration: undefined,
    rpmLimit: undefined,
    tpmLimit: undefined,
    maxParallelRequests: undefined,
    budgetFrom: MADE,
    ...over,
  };
}

/** The old record's 0.75 (before MADE) and the new one's 0.1 (after), uncounted as `counted` says. */
async function logSpend(db: Db, counted: boolean): Promise<void> {
  const log = new SpendLog(db, logger);
  log.add(entry('old-1', 0.5, MADE - 3_600_000), `old-1-${randomUUID()}`, counted);
  log.add(entry('old-2', 0.25, MADE - 1_000), `old-2-${randomUUID()}`, counted);
  log.add(entry('new-1', 0.1, MADE + 1_000), `new-1-${randomUUID()}`, counted);
  await log.flush();
}

describe('a key made again with the same value starts at zero spend', { timeout: 30_000 }, () => {
  const schemas: string[] = [];
  const dbs: Db[] = [];
  const redises: RedisCounters[] = [];
  after(async () => {
    for (const r of redises) await r.close();
    for (const db of dbs) {
      const schema = schemas.shift();
      if (schema !== undefined) await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await db.close();
    }
  });

  async function postgres(): Promise<Db> {
    const schema = `tg_recreated_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const db = await openDb({ url: PG, schema });
    schemas.push(schema);
    dbs.push(db);
    await migrate(db);
    return db;
  }

  /** A migrated database of this test's own: a PostgreSQL schema, or an embedded PGlite. */
  async function database(kind: 'postgres' | 'pglite'): Promise<Db> {
    if (kind === 'postgres') return postgres();
    const db = await openDb({});
    dbs.push(db);
    await migrate(db);
    return db;
  }

  test('the budget period of a key starts no earlier than its record (the counter is a new one)', () => {
    const day = budgetPeriod('1d', NOW, UTC_CALENDAR);
    assert.deepEqual(
      budgetPeriodOf(limits({ budgetDuration: '1d', budgetFrom: day.start - 5 }), NOW, UTC_CALENDAR),
      day,
      'made before this period',
    );
    assert.deepEqual(budgetPeriodOf(limits({ budgetDuration: '1d', budgetFrom: MADE }), NOW, UTC_CALENDAR), {
      start: Math.max(MADE, day.start),
      end: day.end,
    });
    assert.deepEqual(
      budgetPeriodOf(limits({ budgetFrom: undefined }), NOW, UTC_CALENDAR),
      budgetPeriod(undefined, NOW, UTC_CALENDAR),
      'keys made before spend_from',
    );
    assert.equal(subjectOf(`key:${KEY_ID}`, limits(), NOW, UTC_CALENDAR).budget?.period.start, MADE);
  });

  for (const kind of ['postgres', 'pglite'] as const) {
    test(`a restart seeds in-process counters with the new record's spend only (${kind})`, async () => {
      const db = await database(kind);
      await logSpend(db, true);
      const counters = new MemoryCounters();
      const subject: BudgetSubject = { subject: `key:${KEY_ID}`, limits: limits() };
      await seedBudgets(db, counters, [subject], NOW, UTC_CALENDAR);
      assert.equal(await counters.spend(`key:${KEY_ID}`, budgetPeriodOf(subject.limits, NOW, UTC_CALENDAR)), 0.1);
      // The budget of 1 is far from spent: the request is admitted (0.85 with the old rows would be past 0.8).
      const admitted = counters.admitNow({
        requestId: 'r',
        subjects: [subjectOf(`key:${KEY_ID}`, limits({ maxBudget: 0.8 }), NOW, UTC_CALENDAR)],
        tokens: 0,
        cost: 0,
        now: NOW,
      });
      assert.equal(admitted.ok, true);
      // The old rows are still there.
      const rows = await db.query<{ n: string | number }>('SELECT count(*) AS n FROM spend_logs WHERE key_id = $1', [KEY_ID]);
      assert.equal(Number(rows[0]?.n), 3);
    });
  }

  for (const kind of ['postgres', 'pglite'] as const) {
    test(`a regenerated key's rows still under its past id count for it when counters are seeded (${kind})`, async () => {
      const db = await database(kind);
      const past = 'eeeeffff00001111';
      await db.query(`INSERT INTO keys (key_hash, key_id, previous_key_ids) VALUES ($1, $2, $3::jsonb)`, [
        `${KEY_ID}${'0'.repeat(48)}`,
        KEY_ID,
        JSON.stringify([past]),
      ]);
      const log = new SpendLog(db, logger);
      log.add(entry('now-1', 0.1, MADE + 1_000), `now-1-${randomUUID()}`, true);
      // Landed under the past id after the regenerate's move (another replica's buffer), before the sweep.
      log.add({ ...entry('late-1', 0.3, MADE + 2_000), keyId: past }, `late-1-${randomUUID()}`, true);
      // Another key's row, which must not count.
      log.add({ ...entry('other-1', 0.5, MADE + 2_000), keyId: '9999888877776666' }, `other-1-${randomUUID()}`, true);
      await log.flush();
      const counters = new MemoryCounters();
      const subject: BudgetSubject = { subject: `key:${KEY_ID}`, limits: limits() };
      await seedBudgets(db, counters, [subject], NOW, UTC_CALENDAR);
      const spent = await counters.spend(subject.subject, budgetPeriodOf(subject.limits, NOW, UTC_CALENDAR));
      assert.ok(Math.abs(spent - 0.4) < 1e-9, `seeded ${spent}, not the 0.4 of both ids`);
    });
  }

  test("a fresh Redis is seeded with the new record's spend only, and the replay adds none of the old rows", async () => {
    const db = await postgres();
    const redis = new RedisCounters({ url: REDIS, prefix: `tg-recreated-${randomUUID()}:` });
    redises.push(redis);
    assert.equal(await redis.ready(5000), true);
    const subject: BudgetSubject = { subject: `key:${KEY_ID}`, limits: limits() };
    await logSpend(db, true);
    assert.equal(await seedRedis(db, redis, [subject], logger, UTC_CALENDAR), true);
    const period = budgetPeriodOf(subject.limits, NOW, UTC_CALENDAR);
    assert.equal(await redis.spend(subject.subject, period), 0.1);

    // Rows Redis never saw (it was down): the old record's are not the new record's spend.
    await logSpend(db, false);
    assert.equal(await replayUncounted(db, redis, () => subject.limits, UTC_CALENDAR), 3);
    assert.ok(Math.abs((await redis.spend(subject.subject, period)) - 0.2) < 1e-9, 'only the new row replayed');
  });
});
