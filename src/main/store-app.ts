/**
 * Composition root of the shared state: the counters (Redis with `redis_url`, else in-process), the
 * records database (PostgreSQL with `database_url`, else embedded PGlite) with its migrations, the spend
 * log, the limiter, and the background work that keeps them consistent (budget seeding, spend replay).
 */
import path from 'node:path';
import { calendarOf, type BudgetCalendar } from '../store/calendar.js';
import { isUrl, type Config } from '../config/schema.js';
import type { DeploymentGate } from '../gateway/forward.js';
import type { TeamRecord } from '../core/decide.js';
import { keyId, limitsOf, StaticKeyDirectory, type KeyDirectory, type Limits } from '../identity/keys.js';
import type { ModelCatalog } from '../routing/deployments.js';
import { Accounting, seedBudgets, startReplay, type BudgetSubject } from '../store/accounting.js';
import { bounded, LocalChangeBus, PgChangeBus, type ChangeBus } from '../store/change-bus.js';
import { subjectParts, type Counters, type StoreErrorHook } from '../store/counters.js';
import { openDb, type Db } from '../store/db.js';
import { Limiter } from '../store/limiter.js';
import { MemoryCounters } from '../store/memory-counters.js';
import { migrate } from '../store/migrate.js';
import { RecordCache, RecordStore, type StoredModel } from '../store/records.js';
import type { SpendRecorder } from '../store/spend.js';
import { SpendLog } from '../store/spend-log.js';
import type { Logger } from '../telemetry/logger.js';
import { teamsFromConfig } from './authz-app.js';

export interface StoreApp {
  readonly counters: Counters;
  readonly db: Db | undefined;
  readonly keys: KeyDirectory;
  readonly teams: ReadonlyMap<string, TeamRecord>;
  /** Writes of keys, teams and users, broadcast to every replica (absent without a records database). */
  readonly records: RecordStore | undefined;
  /** The replica's cache of records (config and database), which the admin API reads. */
  readonly cache: RecordCache;
  readonly limiter: Limiter;
  readonly accounting: Accounting;
  /** When budget periods reset (litellm_settings.timezone and budget_reset_time). */
  readonly calendar: BudgetCalendar;
  /** Why this replica cannot serve now (readiness), or undefined: the counters store answers, the spend log has room. */
  notReady(): string | undefined;
  /** Settles, flushes the spend log and closes the connections, all within `graceMs`; false if some did not close by then. */
  close(graceMs: number): Promise<boolean>;
}

export interface StoreOptions {
  readonly logger: Logger;
  /** Open the records database (the gateway writes the spend log; authz alone needs it only with database_url). */
  readonly withDb: boolean;
  /** The catalog the limiter reads deployment limits from (it may change: discovery, reload). */
  readonly catalog: () => ModelCatalog;
  /** `DATABASE_URL` and `REDIS_URL` are honoured when the config sets no URL, as LiteLLM does. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** authz or gateway alone (`serve` runs both in one process). */
  readonly split?: boolean;
  /** Tests: also record every spend entry here. */
  readonly mirror?: SpendRecorder | undefined;
  /** Told when the models added through the admin API change (at the first load too). */
  readonly onModels?: ((models: readonly StoredModel[]) => void) | undefined;
  /** Told of each failed store operation (metrics). */
  readonly onStoreError?: StoreErrorHook | undefined;
}

const REDIS_READY_MS = 3_000;
/** How long start-up waits for an unreachable PostgreSQL, and how often it tries meanwhile. */
const DB_START_WAIT_MS = 60_000;
const DB_START_RETRY_MS = 2_000;

export async function openStore(config: Config, opts: StoreOptions): Promise<StoreApp> {
  const env = opts.env ?? {};
  const gs = { ...config.general_settings, ...storeUrls(config, env) };
  const { logger } = opts;
  // DATABASE_URL and REDIS_URL from the environment have not been through the config's checks.
  if (gs.database_url !== undefined && !isUrl(gs.database_url))
    throw new Error('DATABASE_URL is not a PostgreSQL URL (it does not parse): write postgres://user:password@host:5432/db');
  if (gs.redis_url !== undefined && (!/^rediss?:\/\//.test(gs.redis_url) || !isUrl(gs.redis_url)))
    throw new Error('REDIS_URL is not a Redis URL (it does not parse): write redis://[:password@]host:6379[/db]');
  // Where the state lives, said once: DATABASE_URL and REDIS_URL left in a shell (LiteLLM's) are used silently otherwise.
  const where = storeLocations(config, env, opts.withDb);
  logger.info(where, `records: ${where.records}; counters: ${where.counters}`);
  const calendar = calendarOf(config.litellm_settings);
  const configKeys = new StaticKeyDirectory(config.keys);
  const configUsers = new Map<string, Limits>(config.users.map((u) => [u.user_id, limitsOf(u)]));

  let db: Db | undefined;
  if (opts.withDb) {
    const started = Date.now();
    for (;;) {
      try {
        db = await openDb({ url: gs.database_url, dataDir: gs.data_dir === undefined ? undefined : `${gs.data_dir}/pglite` });
        break;
      } catch (err) {
        // A database not reachable yet (a blip during a rollout) is waited for, not turned into a crash loop;
        // a refusal (password, missing database) or a bad URL will not change by waiting.
        if (gs.database_url === undefined || !unreachable(err) || Date.now() - started >= DB_START_WAIT_MS)
          throw new Error(`cannot open the database: ${(err as Error).message}`, { cause: err });
        logger.error({ err: (err as Error).message }, 'the database is not reachable yet; retrying (not ready meanwhile)');
        await new Promise((r) => setTimeout(r, DB_START_RETRY_MS));
      }
    }
    try {
      const applied = await migrate(db);
      if (applied.length > 0) logger.info({ applied, database: db.kind }, 'database migrated');
    } catch (err) {
      await db.close();
      throw new Error(`cannot open the database: ${(err as Error).message}`, { cause: err });
    }
  }

  // Keys, teams and users: the config's, then the database's, cached here and kept current by the broadcast.
  let bus: ChangeBus | undefined;
  if (db !== undefined) {
    const notifyDb = db;
    try {
      // ioredis (here and for the counters below) loads only with a redis_url.
      bus =
        gs.redis_url !== undefined
          ? new (await import('../store/redis-change-bus.js')).RedisChangeBus(gs.redis_url, gs.redis_key_prefix)
          : db.kind === 'postgres' && gs.database_url !== undefined
            ? new PgChangeBus(db.connectionUrl ?? gs.database_url, db.schema, async (channel, payload) => {
                await notifyDb.query('SELECT pg_notify($1, $2)', [channel, payload]);
              })
            : new LocalChangeBus();
    } catch (err) {
      await db.close();
      throw err;
    }
  }
  const cache = new RecordCache({
    configKeys,
    configTeams: teamsFromConfig(config),
    configUsers,
    db,
    logger,
    onModels: opts.onModels,
    onError: opts.onStoreError,
    // With PostgreSQL several replicas may share the records: the change log backs the broadcast.
    pollChanges: db?.kind === 'postgres',
  });
  try {
    await cache.start(bus);
  } catch (err) {
    await bus?.close();
    await db?.close();
    throw err;
  }
  const records =
    db === undefined || bus === undefined ? undefined : new RecordStore(db, bus, { logger, onError: opts.onStoreError, cache });
  const keys: KeyDirectory = cache;
  const teams = cache.teams;
  const users = cache.users;
  /** Subjects with a budget, now (config and database records). */
  const budgetSubjects = (): BudgetSubject[] =>
    [
      ...config.keys.map((k) => ({ subject: `key:${keyId(k.key.slice('sha256:'.length))}`, limits: limitsOf(k) })),
      ...[...cache.apiKeys()].map((k) => ({ subject: `key:${k.id}`, limits: k.limits })),
      ...[...teams.values()].map((t) => ({ subject: `team:${t.teamId}`, limits: t.limits })),
      ...[...users].map(([id, limits]) => ({ subject: `user:${id}`, limits })),
    ].filter((b) => b.limits.maxBudget !== undefined);
  const budgetOf = (subject: string): Limits | undefined => {
    const { kind, id } = subjectParts(subject);
    if (kind === 'key') return keys.byId(id)?.limits;
    if (kind === 'team') return teams.get(id)?.limits;
    if (kind === 'user') return users.get(id);
    return undefined;
  };

  const cleanups: (() => void)[] = [() => cache.stop()];
  let counters: Counters;
  /** Whether Redis answers; absent with in-process counters. */
  let redisAnswers: (() => boolean) | undefined;
  if (gs.redis_url !== undefined) {
    const { RedisCounters } = await import('../store/redis-counters.js');
    const redis = new RedisCounters({ url: gs.redis_url, prefix: gs.redis_key_prefix });
    counters = redis;
    redisAnswers = () => redis.answering;
    if (!(await redis.ready(REDIS_READY_MS))) {
      logger.error({ failure_mode: gs.failure_mode }, 'Redis is not reachable yet; retrying in the background');
    }
    // A fresh Redis is seeded from the spend log; spend that could not reach Redis is replayed.
    cleanups.push(startReplay(db, redis, budgetSubjects, budgetOf, logger, calendar));
  } else {
    counters = new MemoryCounters();
    if (opts.split === true) {
      // authz admits and the gateway settles: in separate processes, in-process counters never meet.
      logger.error(
        'no redis_url: authz and the gateway each count limits in their own process, so leases taken at Check are never released ' +
          'and spend never reaches authz — set redis_url, or run `tollgate serve`',
      );
    } else logger.warn('no redis_url: rate limits and budgets are counted in this process only (run one replica, or set redis_url)');
    if (db !== undefined) await seedBudgets(db, counters, budgetSubjects(), Date.now(), calendar);
  }

  const limiter = new Limiter({
    calendar,
    counters,
    dirs: { keys, teams, users, catalog: opts.catalog },
    failureMode: gs.failure_mode,
    logger,
    defaultMaxTokens: gs.default_max_tokens,
    onError: opts.onStoreError,
  });
  const log =
    db === undefined
      ? undefined
      : new SpendLog(db, logger, opts.onStoreError, { countersPrefix: gs.redis_url === undefined ? undefined : gs.redis_key_prefix });
  const accounting = new Accounting({ limiter, log, mirror: opts.mirror, logger, onError: opts.onStoreError });
  return {
    calendar,
    counters,
    db,
    keys,
    teams,
    records,
    cache,
    limiter,
    accounting,
    // Readiness is whether this replica can serve. Without Redis, failure_mode: closed refuses every request
    // (open serves through the outage, by the operator's choice). Without PostgreSQL requests are served and
    // their rows wait in memory: every replica shares the database, so taking them all out would serve
    // nothing — a replica steps out only when its buffer is about to drop rows.
    notReady: () => {
      if (redisAnswers !== undefined && gs.failure_mode === 'closed' && !redisAnswers())
        return 'Redis (the counters store) does not answer';
      if (log?.nearlyFull === true) return `the spend log is nearly full: PostgreSQL has not taken its ${log.pending} rows`;
      return undefined;
    },
    async close(graceMs: number) {
      const until = Date.now() + graceMs;
      for (const c of cleanups) c();
      await accounting.close(graceMs);
      // A store that does not answer would hold its connection's close for ever: it gets what is left of the bound.
      const closed = async (): Promise<true> => {
        await counters.close();
        await bus?.close();
        await db?.close();
        return true;
      };
      return (await bounded(closed(), Math.max(0, until - Date.now()))) === true;
    },
  };
}

/** The records database's and Redis's URLs: the config's, else DATABASE_URL and REDIS_URL (not empty) from the environment. */
export function storeUrls(
  config: Config,
  env: Readonly<Record<string, string | undefined>>,
): { database_url: string | undefined; redis_url: string | undefined } {
  const gs = config.general_settings;
  return { database_url: gs.database_url ?? nonEmpty(env['DATABASE_URL']), redis_url: gs.redis_url ?? nonEmpty(env['REDIS_URL']) };
}

/**
 * Where records and counters live, for the start-up log: the URLs without their passwords (nor query
 * parameters, which may carry one; `?schema=` is kept) and where each came from.
 */
export function storeLocations(
  config: Config,
  env: Readonly<Record<string, string | undefined>>,
  withDb: boolean,
): { records: string; counters: string } {
  const gs = config.general_settings;
  const { database_url: dbUrl, redis_url: redisUrl } = storeUrls(config, env);
  const origin = (inConfig: string | undefined, name: string): string => (inConfig !== undefined ? 'config' : name);
  const records = !withDb
    ? 'none (no database_url)'
    : dbUrl !== undefined
      ? `PostgreSQL ${shownUrl(dbUrl)} (from ${origin(gs.database_url, 'DATABASE_URL')})`
      : gs.data_dir !== undefined
        ? `embedded PGlite in ${path.join(gs.data_dir, 'pglite')}`
        : 'embedded PGlite in memory (lost at exit)';
  const counters =
    redisUrl !== undefined ? `Redis ${shownUrl(redisUrl)} (from ${origin(gs.redis_url, 'REDIS_URL')})` : 'this process (no redis_url)';
  return { records, counters };
}

/** A database or Redis URL without its password or query (but `schema`). */
function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    const schema = u.searchParams.get('schema');
    u.search = '';
    if (schema !== null) u.searchParams.set('schema', schema);
    return u.toString();
  } catch {
    return '(a URL that does not parse)';
  }
}

/** A connection that could not be made or was lost (no answer from PostgreSQL), as opposed to one it refused. */
function unreachable(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') return /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|57P03)$/.test(code);
  return /timeout|Connection terminated/i.test((err as Error).message);
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

/** What the gateway takes from the store: spend recording, lease renewal, the deployment gate, readiness. */
export function gatewayStoreOptions(store: StoreApp): {
  spend: SpendRecorder;
  leases: Accounting;
  denials: Accounting;
  gate: DeploymentGate;
  storeNotReady: () => string | undefined;
} {
  const keys = store.keys;
  return {
    // A request that ends after its key was regenerated leaves its row under the key's new id, so the
    // key's spend (/key/info, budgets seeded from the log) keeps it; the regenerate moved the older rows.
    spend: {
      record: (e) => {
        const now = e.keyId === undefined ? undefined : keys.current?.(e.keyId)?.id;
        store.accounting.record(now === undefined || now === e.keyId ? e : { ...e, keyId: now });
      },
    },
    leases: store.accounting,
    denials: store.accounting,
    gate: { admit: (d, tokens, now, leastTokens) => store.limiter.admitDeployment(d, tokens, now, leastTokens) },
    storeNotReady: () => store.notReady(),
  };
}
