/**
 * A Redis that restarts empty is seeded from the spend log; a request whose cost settled into the old Redis
 * but whose row was still in a replica's buffer at the seed is in neither: its row is written uncounted
 * (the old generation) and replayed into the new Redis. Real Redis (this test's own key prefix; a restart
 * of it is its keys gone) and PostgreSQL (a schema of its own).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { replayUncounted, seedRedis, type BudgetSubject } from '../../../src/store/accounting.js';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { budgetPeriodOf, subjectOf } from '../../../src/store/counters.js';
import { openDb, type CopyData, type Db } from '../../../src/store/db.js';
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
const KEY_ID = '5eed5eed5eed5eed';
const LIMITS: Limits = {
  maxBudget: 10,
  budgetDuration: '1d',
  rpmLimit: undefined,
  tpmLimit: undefined,
  maxParallelRequests: undefined,
  budgetFrom: undefined,
};
const SUBJECT: BudgetSubject = { subject: `key:${KEY_ID}`, limits: LIMITS };
const PERIOD = budgetPeriodOf(LIMITS, NOW, UTC_CALENDAR);

const entry = (requestId: string, cost: number): SpendEntry => ({
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
  at: NOW,
});

/** A database whose spend-log writes wait until `open()`: a row kept in the buffer meanwhile. */
function held(db: Db): { db: Db; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  return {
    db: {
      ...db,
      async copyIn(before: string, copy: string, data: CopyData): Promise<void> {
        await gate;
        return db.copyIn(before, copy, data);
      },
    },
    open,
  };
}

describe('spend settled into a Redis that then restarted empty', { timeout: 30_000 }, () => {
  const schemas: string[] = [];
  const dbs: Db[] = [];
  const redises: RedisCounters[] = [];
  const pglites: Db[] = [];
  const roles: string[] = [];
  after(async () => {
    for (const r of redises) await r.close();
    // Roles' own connections first (they hold no schema of their own).
    for (const db of dbs.filter((d) => d.connectionUrl?.includes('tg_rr_'))) {
      dbs.splice(dbs.indexOf(db), 1);
      await db.close();
    }
    const admin = dbs.find((d) => !pglites.includes(d));
    for (const role of roles) await admin?.exec(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    for (const db of dbs) {
      const schema = pglites.includes(db) ? undefined : schemas.shift();
      if (schema !== undefined) await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await db.close();
    }
  });

  async function setup(
    kind: 'postgres' | 'pglite' = 'postgres',
  ): Promise<{ db: Db; redis: RedisCounters; restart: () => Promise<void>; schema: string }> {
    const schema = `tg_seedgap_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const db = kind === 'postgres' ? await openDb({ url: PG, schema }) : await openDb({});
    if (kind === 'postgres') schemas.push(schema);
    else pglites.push(db);
    dbs.push(db);
    await migrate(db);
    const prefix = `tg-seedgap-${randomUUID()}:`;
    const redis = new RedisCounters({ url: REDIS, prefix });
    redises.push(redis);
    assert.equal(await redis.ready(5000), true);
    const restart = async (): Promise<void> => {
      const keys = await redis.redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.redis.del(...keys);
      assert.equal(await redis.isSeeded(), false);
    };
    return { db, redis, restart, schema };
  }

  /** One request's settlement in Redis (its lease, its cost): the generation it went into. */
  function settle(redis: RedisCounters, id: string, cost: number): Promise<string | undefined> {
    return redis.settle({
      requestId: id,
      subjects: [subjectOf(SUBJECT.subject, LIMITS, NOW, UTC_CALENDAR)],
      reservedTokens: 0,
      tokens: 15,
      cost,
      now: NOW,
    });
  }

  async function counted(db: Db, requestId: string): Promise<boolean> {
    const rows = await db.query<{ counted: boolean }>('SELECT counted FROM spend_logs WHERE request_id = $1', [requestId]);
    assert.equal(rows.length, 1, `one row of ${requestId}`);
    return (rows[0] as { counted: boolean }).counted;
  }

  for (const kind of ['postgres', 'pglite'] as const)
    test(`a row still buffered at the seed is written uncounted and replayed: the new Redis has every cost once (${kind})`, async () => {
      const { db, redis, restart } = await setup(kind);
      assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
      const { db: slow, open } = held(db);
      const log = new SpendLog(slow, logger, undefined, { countersPrefix: redis.prefix });
      // Written before the restart: the seed counts it.
      const early = new SpendLog(db, logger, undefined, { countersPrefix: redis.prefix });
      early.add(entry('written', 0.5), 'lease-written', true, await settle(redis, 'lease-written', 0.5));
      assert.equal(await early.close(5000), 0);
      // Settled into the old Redis, its row not yet written when Redis restarts and is seeded.
      const oldGeneration = await settle(redis, 'lease-buffered', 0.25);
      assert.equal(typeof oldGeneration, 'string');
      log.add(entry('buffered', 0.25), 'lease-buffered', true, oldGeneration);
      await restart();
      assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
      assert.equal(await redis.spend(SUBJECT.subject, PERIOD), 0.5, 'the seed: what the log held');
      // After the seed: settled into the new Redis.
      const newGeneration = await settle(redis, 'lease-after', 1);
      assert.notEqual(newGeneration, oldGeneration);
      log.add(entry('after', 1), 'lease-after', true, newGeneration);
      open();
      assert.equal(await log.close(5000), 0);
      assert.equal(await counted(db, 'buffered'), false, 'its cost is in no Redis that counts');
      assert.equal(await counted(db, 'after'), true);
      assert.equal(await replayUncounted(db, redis, () => LIMITS, UTC_CALENDAR), 1);
      assert.ok(Math.abs((await redis.spend(SUBJECT.subject, PERIOD)) - 1.75) < 1e-9, 'every cost, once');
      assert.equal(await replayUncounted(db, redis, () => LIMITS, UTC_CALENDAR), 0);
    });

  test('a replica that takes the seed lock after another replica seeded does not seed again', async () => {
    const { db, redis, restart } = await setup();
    assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
    const log = new SpendLog(db, logger, undefined, { countersPrefix: redis.prefix });
    log.add(entry('seeded-once', 0.5), 'lease-seeded-once', true, await settle(redis, 'lease-seeded-once', 0.5));
    assert.equal(await log.close(5000), 0);
    await restart();
    // Both replicas saw it unseeded; they seed one after the other.
    assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
    assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
    assert.equal(await redis.spend(SUBJECT.subject, PERIOD), 0.5);
  });

  test('without a generation on record (seeded before there was one), rows are written as they settled', async () => {
    const { db, redis } = await setup();
    await redis.seed([]); // as an earlier version seeded it: no generation in the database
    const log = new SpendLog(db, logger, undefined, { countersPrefix: redis.prefix });
    log.add(entry('plain', 0.5), 'lease-plain', true, await settle(redis, 'lease-plain', 0.5));
    assert.equal(await log.close(5000), 0);
    assert.equal(await counted(db, 'plain'), true);
  });

  test("a row written while the seed holds its lock waits for it and is judged by the new generation, whatever the server's default isolation", async () => {
    const { db, redis, restart, schema } = await setup();
    assert.equal(await seedRedis(db, redis, [SUBJECT], logger, UTC_CALENDAR), true);
    const generation = await settle(redis, 'lease-racing', 0.5);
    await restart();
    // The log writes as a role whose transactions default to REPEATABLE READ: a snapshot taken before the lock
    // was granted would still see the old generation.
    const role = `tg_rr_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    await db.exec(
      `CREATE ROLE ${role} LOGIN; ALTER ROLE ${role} SET default_transaction_isolation = 'repeatable read'; ` +
        `DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO ${role}', current_database()); END $$; GRANT USAGE ON SCHEMA ${schema} TO ${role}; GRANT ALL ON ALL TABLES IN SCHEMA ${schema} TO ${role}`,
    );
    roles.push(role);
    const asRole = await openDb({ url: PG.replace('postgres@', `${role}@`), schema });
    dbs.push(asRole);
    assert.deepEqual(await asRole.query('SHOW transaction_isolation'), [{ transaction_isolation: 'repeatable read' }]);
    // The seed's transaction holds spend_logs; the write starts while it does.
    let written: Promise<number> | undefined;
    const seeded = db.transaction(async (tx) => {
      await tx.query('LOCK TABLE spend_logs IN SHARE ROW EXCLUSIVE MODE');
      const log = new SpendLog(asRole, logger, undefined, { countersPrefix: redis.prefix });
      log.add(entry('racing', 0.5), 'lease-racing', true, generation);
      written = log.close(10_000);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await tx.query(
        'INSERT INTO counter_generations (prefix, generation) VALUES ($1, $2) ON CONFLICT (prefix) DO UPDATE SET generation = EXCLUDED.generation',
        [redis.prefix, 'next'],
      );
    });
    await seeded;
    assert.equal(await written, 0);
    assert.equal(await counted(db, 'racing'), false, 'read after the seed committed');
  });
});
