/**
 * The record cache keeps revocation exact: reloads of one record land in the order they were asked for
 * (a slow, older read never puts a deleted key back), and a change whose broadcast was lost still reaches
 * the cache within a second through the change log in PostgreSQL. A key made on another replica works on
 * its first use here, before the broadcast.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { StaticKeyDirectory, type KeyRecord } from '../../../src/identity/keys.js';
import { LocalChangeBus, type ChangeBus } from '../../../src/store/change-bus.js';
import { openDb, type Db, type Queryable } from '../../../src/store/db.js';
import { migrate } from '../../../src/store/migrate.js';
import { RecordCache, RecordStore } from '../../../src/store/records.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { apiKeyRecord, NO_LIMITS } from '../../support/records.js';
import type { RequestFacts } from '../../../src/authorizer/authorizer.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { prepareConfigText } from '../../../src/main/config-source.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const logger = createLogger('silent');

const record = (key: string, over: Partial<KeyRecord> = {}): KeyRecord => apiKeyRecord(key, over);

const dbs: Db[] = [];
const schemas: string[] = [];
async function freshDb(): Promise<Db> {
  const schema = `tg_cache_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  schemas.push(schema);
  const db = await openDb({ url: PG, schema });
  dbs.push(db);
  await migrate(db);
  return db;
}

after(async () => {
  for (const db of dbs) await db.close();
  const admin = await openDb({ url: PG });
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await admin.close();
});

function newCache(db: Queryable, pollChanges: boolean): RecordCache {
  return new RecordCache({
    configKeys: new StaticKeyDirectory([]),
    configTeams: new Map(),
    configUsers: new Map(),
    db,
    logger,
    pollChanges,
  });
}

/** `db`, each read answered `delayMs(sql)` ms late (0: at once), as a busy pool connection may. */
function lagging(db: Queryable, delayMs: (sql: string) => number): Queryable {
  return {
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      const rows = await db.query<T>(sql, params);
      const ms = delayMs(sql);
      if (ms > 0) await new Promise((r) => setTimeout(r, ms));
      return rows;
    },
    exec: (sql) => db.exec(sql),
  };
}

async function until(what: string, ms: number, probe: () => boolean): Promise<number> {
  const started = Date.now();
  while (!probe()) {
    if (Date.now() - started > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - started;
}

describe('record cache', { timeout: 30_000 }, () => {
  test('an update or a regenerate changes the key as stored when it runs: a block meanwhile holds, a deleted key is not brought back', async () => {
    const db = await freshDb();
    const bus = new LocalChangeBus();
    const store = new RecordStore(db, bus);
    const k = record(`sk-stale-${randomUUID()}`);
    await store.createKey(k, 'sk-...test');
    const read = { ...k }; // what an admin call read before the block below
    assert.equal(await store.setKeyBlocked(k.hash, true), true);
    assert.equal(await store.updateKey(k.hash, (stored) => ({ ...stored, models: ['llama'] })), 'done');
    const [updated] = await db.query<{ blocked: boolean; models: string[] }>('SELECT blocked, models FROM keys WHERE key_hash = $1', [
      k.hash,
    ]);
    assert.deepEqual(updated, { blocked: true, models: ['llama'] }, 'the block holds; the change applies');
    assert.equal(read.blocked, false, 'the stale read was not what was written');

    const renewed = record(`sk-stale-new-${randomUUID()}`);
    const next = await store.regenerateKey(k.hash, renewed.hash, (stored) => stored, 'sk-...new');
    assert.ok(typeof next === 'object');
    assert.equal(next.blocked, true, 'a blocked key regenerated stays blocked');

    assert.equal(await store.deleteKey(renewed.hash), true);
    assert.equal(await store.updateKey(renewed.hash, (stored) => stored), 'missing');
    assert.equal(await store.regenerateKey(renewed.hash, record(`sk-x-${randomUUID()}`).hash, (s) => s, 'sk-...x'), 'missing');
    assert.deepEqual(await db.query('SELECT key_hash FROM keys'), [], 'nothing brought back');
  });

  test('a slow read of an older state never lands after the delete that followed it', async () => {
    const db = await freshDb();
    // The first single-key read returns what it read 300 ms late.
    let delayed = false;
    const slow = lagging(db, (sql) => {
      if (delayed || !sql.includes('WHERE key_hash = $1')) return 0;
      delayed = true;
      return 300;
    });
    const bus = new LocalChangeBus();
    const cache = newCache(slow, false);
    await cache.start(bus);
    const store = new RecordStore(db, bus);
    const k = record(`sk-order-${randomUUID()}`);
    await store.createKey(k, 'sk-...test'); // its reload reads the key, then is held back
    await store.deleteKey(k.hash); // its reload reads nothing, and finishes first without the ordering
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(cache.get(k.hash), undefined, 'the deleted key stays deleted');
    cache.stop();
  });

  test('a change another replica made decides the next request here once its broadcast arrived, though its read is slow', async () => {
    const db = await freshDb();
    // This replica reads single records 120 ms late (a busy pool connection), within the bound Check waits for it.
    let slow = false;
    const late = lagging(db, (sql) => (slow && /WHERE (key_hash|team_id) = \$1/.test(sql) ? 120 : 0));
    const bus = new LocalChangeBus();
    const cache = newCache(late, false);
    await cache.start(bus);
    const other = new RecordStore(db, bus); // another replica: its changes reach this cache by the broadcast only
    const limits = NO_LIMITS;
    await other.createTeam({ teamId: 'lagging-team', alias: undefined, models: [], blocked: false, limits, metadata: {} });
    const key = `sk-lagging-${randomUUID()}`;
    const teamKey = `sk-lagging-team-${randomUUID()}`;
    await other.createKey(record(key), 'sk-...test');
    await other.createKey(record(teamKey, { teamId: 'lagging-team', alias: 'lagging-team-key' }), 'sk-...test');
    await until('keys seen', 2_000, () => cache.get(record(key).hash) !== undefined && cache.get(record(teamKey).hash) !== undefined);
    // A model the keys may use, so a request is allowed unless a block decides it.
    const prepared = prepareConfigText(
      'model_list:\n  - model_name: m1\n    litellm_params: { model: openai/m1, api_base: "http://127.0.0.1:9/v1" }\n',
      'c.yaml',
      {},
    );
    const parts = buildAuthorizer(prepared.config, prepared.policy, Buffer.alloc(32, 1), { keys: cache, teams: cache.teams });
    const decide = async (bearer: string): Promise<string> => {
      const a = await parts.authorizer.authorize(
        {
          method: 'POST',
          path: '/v1/chat/completions',
          headers: { authorization: `Bearer ${bearer}` },
          body: JSON.stringify({ model: 'm1', messages: [] }),
          json: undefined,
          partialBody: false,
          contextExtensions: {},
          signContext: false,
        },
        Date.now(),
      );
      return a.decision.allow ? 'allowed' : a.decision.code;
    };
    assert.deepEqual([await decide(key), await decide(teamKey)], ['allowed', 'allowed']);
    slow = true;
    assert.equal(await other.setKeyBlocked(record(key).hash, true), true);
    assert.equal(await decide(key), 'key_blocked', 'the block decides the very next request');
    assert.equal((await other.updateTeam('lagging-team', (t) => ({ ...t, blocked: true })))?.blocked, true);
    assert.equal(await decide(teamKey), 'key_blocked', "the team's block too");
    assert.equal(await other.deleteKey(record(key).hash), true);
    assert.equal(await decide(key), 'invalid_api_key', 'and a delete');
    cache.stop();
  });

  test('a config key or team with the id of a stored one is logged, and again when the config entry goes', async () => {
    const db = await freshDb();
    const store = new RecordStore(db, new LocalChangeBus());
    const key = `sk-shadowed-${randomUUID()}`;
    const stored = record(key);
    await store.createKey(stored, 'sk-...test');
    const limits = NO_LIMITS;
    await store.createTeam({ teamId: 'shadowed-team', alias: undefined, models: ['m1'], blocked: false, limits, metadata: {} });
    const prepared = prepareConfigText(
      `keys:\n  - key: sha256:${stored.hash}\n    key_alias: from-config\nteams:\n  - team_id: shadowed-team\n`,
      'c.yaml',
      {},
    );
    const lines: string[] = [];
    const capture = createLogger('info', { write: (s: string) => void lines.push(s) });
    const cache = new RecordCache({
      configKeys: new StaticKeyDirectory(prepared.config.keys),
      configTeams: new Map([
        ['shadowed-team', { teamId: 'shadowed-team', alias: undefined, models: [], blocked: false, limits, metadata: {} }],
      ]),
      configUsers: new Map(),
      db,
      logger: capture,
    });
    await cache.start(undefined);
    const warned = (): Array<Record<string, unknown>> =>
      lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['level'] === 40);
    assert.deepEqual(
      warned().map((l) => [l['key_id'] ?? l['team_id'], /the config entry decides/.test(String(l['msg']))]),
      [
        [stored.id, true],
        ['shadowed-team', true],
      ],
    );
    assert.ok(!lines.join('').includes(key), 'never the key');
    await cache.reloadAll();
    assert.equal(warned().length, 2, 'said once, not on every reload');
    await cache.setConfig(new StaticKeyDirectory([]), new Map(), new Map());
    assert.deepEqual(
      warned()
        .slice(2)
        .map((l) => [l['key_id'] ?? l['team_id'], /applies again/.test(String(l['msg']))]),
      [
        [stored.id, true],
        ['shadowed-team', true],
      ],
    );
    cache.stop();
  });

  test('a change made through this replica is in its cache when the call returns, before any broadcast comes back', async () => {
    const db = await freshDb();
    // A broker that delivers nothing, not even to the replica that published: only the writer's own refresh applies.
    const deaf: ChangeBus = { publish: () => Promise.resolve(), subscribe: () => Promise.resolve(), close: () => Promise.resolve() };
    const cache = newCache(db, false);
    await cache.start(deaf);
    const store = new RecordStore(db, deaf, { logger, cache });
    const k = record(`sk-local-${randomUUID()}`);
    await store.createKey(k, 'sk-...test');
    assert.equal(cache.get(k.hash)?.id, k.id, 'a new key works at once');
    assert.equal(await store.setKeyBlocked(k.hash, true), true);
    assert.equal(cache.get(k.hash)?.blocked, true, 'a block applies at once');
    assert.equal(await store.deleteKey(k.hash), true);
    assert.equal(cache.get(k.hash), undefined, 'a delete applies at once');
    cache.stop();
  });

  test('a lost broadcast: the change log brings a new, blocked and deleted key to the cache within a second', async () => {
    const db = await freshDb();
    const silent: ChangeBus = {
      publish: () => Promise.reject(new Error('Redis is down')),
      subscribe: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const cache = newCache(db, true);
    await cache.start(silent);
    const store = new RecordStore(db, silent, { logger });
    const k = record(`sk-lost-${randomUUID()}`);
    await store.createKey(k, 'sk-...test'); // the publish fails: not an error for the writer
    assert.ok((await until('new key seen', 1_000, () => cache.get(k.hash) !== undefined)) <= 1_000);
    assert.equal(await store.setKeyBlocked(k.hash, true), true);
    await until('block seen', 1_000, () => cache.get(k.hash)?.blocked === true);
    assert.equal(await store.deleteKey(k.hash), true);
    await until('delete seen', 1_000, () => cache.get(k.hash) === undefined);
    cache.stop();
  });

  test("a team deleted with a lost broadcast: the change log takes the team and its keys out of another replica's cache", async () => {
    const db = await freshDb();
    const silent: ChangeBus = {
      publish: () => Promise.reject(new Error('Redis is down')),
      subscribe: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const cache = newCache(db, true);
    await cache.start(silent);
    const store = new RecordStore(db, silent, { logger });
    const teamId = `gone-${randomUUID()}`;
    assert.equal(await store.createTeam({ teamId, alias: undefined, models: [], blocked: false, limits: NO_LIMITS, metadata: {} }), true);
    const member = record(`sk-member-${randomUUID()}`, { teamId, alias: 'member' });
    const outsider = record(`sk-outsider-${randomUUID()}`, { alias: 'outsider' });
    assert.equal(await store.createKey(member, 'sk-...test'), 'done');
    assert.equal(await store.createKey(outsider, 'sk-...test'), 'done');
    await until(
      'team and keys seen',
      1_000,
      () => cache.teams.has(teamId) && cache.get(member.hash) !== undefined && cache.get(outsider.hash) !== undefined,
    );
    assert.deepEqual(await store.deleteTeam(teamId), [member.hash]);
    await until('team and its key gone', 1_000, () => !cache.teams.has(teamId) && cache.get(member.hash) === undefined);
    assert.equal(cache.get(outsider.hash)?.id, outsider.id, 'a key of no team stays');
    assert.equal(await store.deleteTeam(teamId), undefined, 'a team deleted already');
    cache.stop();
  });

  test('a key another replica made a moment ago is read from the database on its first use, before its broadcast', async () => {
    const db = await freshDb();
    const deaf: ChangeBus = { publish: () => Promise.resolve(), subscribe: () => Promise.resolve(), close: () => Promise.resolve() };
    // This replica's cache hears nothing and polls nothing in this test's time: only the lookup can find the key.
    // Its lookups are counted.
    let lookups = 0;
    let slowMs = 0;
    const counted: Queryable = {
      query: async (sql, params) => {
        if (sql.startsWith('SELECT team_id, user_id FROM keys')) {
          lookups++;
          if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
        }
        return db.query(sql, params);
      },
      exec: (sql) => db.exec(sql),
    };
    const cache = newCache(counted, true);
    await cache.start(deaf);
    cache.stop();
    const other = new RecordStore(db, deaf, { logger });
    const key = `sk-elsewhere-${randomUUID()}`;
    const k = record(key);
    await other.createKey(k, 'sk-...test');
    assert.equal(cache.get(k.hash), undefined, 'not in the cache yet');

    const prepared = prepareConfigText(
      'general_settings: { context_signing_key: record-cache-context-key-0123456789abcdef }\n',
      'c.yaml',
      {},
    );
    const parts = buildAuthorizer(prepared.config, prepared.policy, Buffer.alloc(32, 1), { keys: cache, teams: cache.teams });
    const facts = (bearer: string): RequestFacts => ({
      method: 'GET',
      path: '/v1/models',
      headers: { authorization: `Bearer ${bearer}` },
      body: undefined,
      json: undefined,
      partialBody: false,
      contextExtensions: {},
      signContext: false,
    });
    const found = await parts.authorizer.authorize(facts(key), Date.now());
    assert.equal(found.decision.allow, true, JSON.stringify(found.decision));
    assert.equal(cache.get(k.hash)?.id, k.id, 'and kept in the cache');

    // A key in a team made on the other replica just before it: the team's allow-list holds from the first request.
    const limits = NO_LIMITS;
    await other.createTeam({ teamId: 'restricted', alias: undefined, models: ['m1'], blocked: false, limits, metadata: {} });
    const inTeam = `sk-in-team-${randomUUID()}`;
    assert.equal(await other.createKey(record(inTeam, { teamId: 'restricted', alias: 'in-team' }), 'sk-...test'), 'done');
    assert.equal(cache.teams.has('restricted'), false);
    const chat = (bearer: string, model: string): RequestFacts => ({
      ...facts(bearer),
      method: 'POST',
      path: '/v1/chat/completions',
      body: JSON.stringify({ model, messages: [] }),
    });
    const denied = await parts.authorizer.authorize(chat(inTeam, 'm2'), Date.now());
    assert.equal(denied.decision.allow ? 'allowed' : denied.decision.code, 'model_not_allowed');
    assert.deepEqual(cache.teams.get('restricted')?.models, ['m1'], 'the team came with its key');

    // A made-up key: one query, then refused without one for a second; lookups of one hash share a query.
    const made = `sk-made-up-${randomUUID()}`;
    const hash = record(made).hash;
    const before = lookups;
    assert.deepEqual(await Promise.all([cache.lookupMissing(hash), cache.lookupMissing(hash)]), [undefined, undefined]);
    assert.equal(lookups - before, 1, 'one lookup per hash in flight');
    assert.equal(cache.lookupMissing(hash), undefined, 'not asked again at once');
    const refused = await parts.authorizer.authorize(facts(made), Date.now());
    assert.equal(refused.decision.allow ? '' : refused.decision.code, 'invalid_api_key');

    // A slow database: the request is answered as before (401) after half a second; the lookup goes on and
    // the key works on the next request.
    slowMs = 1_500;
    const late = `sk-late-${randomUUID()}`;
    assert.equal(await other.createKey(record(late, { alias: 'late' }), 'sk-...test'), 'done');
    const t0 = Date.now();
    assert.equal(await cache.lookupMissing(record(late).hash), undefined);
    const waited = Date.now() - t0;
    assert.ok(waited >= 450 && waited < 1_200, `answered after ${waited} ms`);
    await until('the slow lookup fills the cache', 3_000, () => cache.get(record(late).hash) !== undefined);
    slowMs = 0;

    // Deleted meanwhile: the delete's reload lands after the lookup's, never the other way round.
    const gone = record(`sk-gone-${randomUUID()}`);
    await other.createKey(gone, 'sk-...test');
    const lookup = cache.lookupMissing(gone.hash);
    await other.deleteKey(gone.hash);
    await cache.refresh({ kind: 'key', id: gone.hash }); // the delete's broadcast, as it arrives
    await lookup;
    assert.equal(cache.get(gone.hash), undefined, 'a deleted key is not brought back by a lookup');
  });

  test('embedded PGlite (one process) looks nothing up: it knows every key it has', async () => {
    const lite = await openDb({});
    dbs.push(lite);
    await migrate(lite);
    const cache = newCache(lite, false);
    assert.equal(cache.lookupMissing(record(`sk-x-${randomUUID()}`).hash), undefined);
  });
});
