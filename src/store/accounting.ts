/**
 * What happens when a request ends: its usage settles the counters (the lease is released, the token
 * reservation replaced, the cost added to budgets) and its row goes to the spend log — marked `counted`
 * or not, so spend that could not reach Redis is replayed into the counters when it returns, from the
 * log in PostgreSQL. While requests are in flight their leases are renewed.
 *
 * Budgets also survive the counters losing their state (a restarted process with in-process counters, a
 * Redis that restarted empty): they are seeded from the spend log.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../telemetry/logger.js';
import {
  budgetPeriodOf,
  LEASE_RENEW_MS,
  subjectParts,
  type BudgetPeriod,
  type Counters,
  type SpendItem,
  type StoreErrorHook,
} from './counters.js';
import { bounded } from './change-bus.js';
import type { BudgetCalendar } from './calendar.js';
import type { Db, Queryable } from './db.js';
import type { RedisCounters } from './redis-counters.js';
import type { ClaimResult, Lease, Limiter } from './limiter.js';
import type { DeniedCaller, DenialRecorder, SpendEntry, SpendRecorder } from './spend.js';
import type { SpendLog } from './spend-log.js';
import type { Limits } from '../identity/keys.js';

/** A subject with a budget, as `seedBudgets` and the replay need it. */
export interface BudgetSubject {
  /** `key:<id>`, `user:<id>`, `team:<id>`. */
  readonly subject: string;
  readonly limits: Limits;
}

const REPLAY_MS = 2_000;
const COLUMN: Record<string, string> = { key: 'key_id', user: 'user_id', team: 'team_id' };

/**
 * Leases whose settlement failed (Redis unreachable) are released again this often until Redis takes it:
 * meanwhile they hold their parallel slots and token reservations on every replica. At most
 * MAX_UNRELEASED are kept; past that, a lease just expires (LEASE_TTL_MS).
 */
const RELEASE_RETRY_MS = 1_000;
const MAX_UNRELEASED = 10_000;

/** Denial rows a caller leaves in a minute (per process); the rest are counted in one warning line. */
const DENIED_ROWS_PER_MINUTE = 60;
/** Rows waiting for the database past which denials leave none: the rows that carry spend come first. */
const DENIED_MAX_PENDING = 10_000;

export class Accounting implements SpendRecorder, DenialRecorder {
  readonly #limiter: Limiter | undefined;
  readonly #log: SpendLog | undefined;
  readonly #mirror: SpendRecorder | undefined;
  readonly #logger: Logger;
  readonly #onError: StoreErrorHook | undefined;
  readonly #inFlight = new Set<Lease>();
  readonly #renewTimer: NodeJS.Timeout;
  /** Settlements still running (shutdown waits for them, so their rows reach the log). */
  readonly #settling = new Set<Promise<void>>();
  /** Leases a failed settlement left held: the tokens they used, and the deployment that served them. */
  readonly #unreleased = new Set<{ readonly lease: Lease; readonly tokens: number; readonly servedBy: string | undefined }>();
  readonly #releaseTimer: NodeJS.Timeout;
  #releasing = false;

  constructor(opts: {
    limiter: Limiter | undefined;
    log: SpendLog | undefined;
    mirror?: SpendRecorder | undefined;
    logger: Logger;
    onError?: StoreErrorHook | undefined;
  }) {
    this.#onError = opts.onError;
    this.#limiter = opts.limiter;
    this.#log = opts.log;
    this.#mirror = opts.mirror;
    this.#logger = opts.logger;
    this.#renewTimer = setInterval(() => void this.#renew(), LEASE_RENEW_MS).unref();
    this.#releaseTimer = setInterval(() => void this.#releaseAgain(), RELEASE_RETRY_MS).unref();
    // An admission whose answer was lost in an outage: its late release failed too.
    opts.limiter?.onUnreleased((lease, err) => this.#keepUnreleased(lease, 0, undefined, err));
  }

  /** A request with a lease started being served here: keep its lease alive until it is recorded. */
  begin(lease: Lease): void {
    this.#inFlight.add(lease);
  }

  /** Takes a signed context's one use (Limiter.claim); `strict` for the admin API. */
  claim(id: string, untilMs: number, strict: boolean): ClaimResult | Promise<ClaimResult> {
    return this.#limiter === undefined ? 'claimed' : this.#limiter.claim(id, untilMs, Date.now(), strict);
  }

  /** A lease taken at Check whose request will not be served here: released at once (Limiter.release). */
  release(lease: Lease): void {
    this.#limiter?.settle(lease, 0, 0, Date.now())?.catch((err: unknown) => this.#keepUnreleased(lease, 0, undefined, err));
  }

  /** The request is over, recorded or not (a fault): stop renewing its lease. */
  end(lease: Lease): void {
    this.#inFlight.delete(lease);
  }

  /** Denial rows written per caller this minute (a key id, or the master key): DENIED_ROWS_PER_MINUTE each. */
  #deniedMinute = 0;
  readonly #deniedRows = new Map<string, number>();
  #deniedSkipped = 0;

  /**
   * A request denied before it was served (at Check, or by the gateway's own decision): a row of no cost —
   * up to DENIED_ROWS_PER_MINUTE a caller, and only while the log is not backed up, so a blocked key sending
   * on, or a database that is slow, never turns denials into a write load nor pushes out rows that carry spend.
   */
  denied(requestId: string, who: DeniedCaller, status: number, latencyMs: number): void {
    const minute = Math.floor(Date.now() / 60_000);
    if (minute !== this.#deniedMinute) {
      if (this.#deniedSkipped > 0)
        this.#logger.warn({ skipped: this.#deniedSkipped }, 'denials past the per-caller cap left no spend-log row');
      this.#deniedMinute = minute;
      this.#deniedRows.clear();
      this.#deniedSkipped = 0;
    }
    const caller = who.keyId ?? 'master';
    const n = this.#deniedRows.get(caller) ?? 0;
    if (n >= DENIED_ROWS_PER_MINUTE || (this.#log !== undefined && this.#log.pending >= DENIED_MAX_PENDING)) {
      this.#deniedSkipped++;
      return;
    }
    this.#deniedRows.set(caller, n + 1);
    const entry: SpendEntry = {
      requestId,
      keyId: who.keyId,
      userId: who.userId,
      teamId: who.teamId,
      model: who.model ?? '',
      deployment: undefined,
      promptTokens: 0,
      completionTokens: 0,
      cost: 0,
      status,
      latencyMs,
      estimated: false,
      at: Date.now(),
    };
    this.#mirror?.record(entry);
    this.#log?.add(entry, `denied:${randomUUID()}`, true);
  }

  record(entry: SpendEntry): void {
    this.#mirror?.record(entry);
    if (this.#limiter === undefined) {
      this.#log?.add(entry, entry.lease?.id ?? `unleased:${randomUUID()}`, true);
      return;
    }
    // Admitted without a lease (nothing limited it, or the store failed open): its cost still counts toward
    // budgets, through a settlement that has nothing to release.
    const lease = entry.lease ?? {
      id: `unleased:${randomUUID()}`,
      reservedTokens: 0,
      keyId: entry.keyId,
      userId: entry.userId,
      teamId: entry.teamId,
      deploymentId: entry.deployment,
    };
    this.#inFlight.delete(lease);
    // Deployments tried on the way: the one that answered is charged the tokens, the others only the attempt.
    for (const extra of entry.extraLeases ?? []) {
      const used = extra.deploymentId === entry.deployment ? entry.promptTokens + entry.completionTokens : 0;
      this.#limiter.settle(extra, used, 0, Date.now())?.catch((err: unknown) => this.#keepUnreleased(extra, used, undefined, err));
    }
    const tokens = entry.promptTokens + entry.completionTokens;
    const settled = this.#limiter.settle(lease, tokens, entry.cost, Date.now(), entry.deployment);
    if (settled === undefined) {
      this.#log?.add(entry, lease.id, true);
      return;
    }
    const p = settled
      .then(
        (generation) => this.#log?.add(entry, lease.id, true, generation),
        (err: unknown) => {
          this.#onError?.('redis', 'settle');
          this.#logger.warn(
            { err: (err as Error).message, request_id: entry.requestId },
            'counters unreachable: spend kept in the log for replay',
          );
          this.#log?.add(entry, lease.id, false);
          this.#keepUnreleased(lease, tokens, entry.deployment, err);
        },
      )
      .finally(() => this.#settling.delete(p));
    this.#settling.add(p);
  }

  /** A settlement failed: its lease is released again later (its cost comes back through the spend log's replay). */
  #keepUnreleased(lease: Lease, tokens: number, servedBy: string | undefined, err: unknown): void {
    // A Redis not seeded yet refuses the cost but releases the lease all the same (SETTLE).
    if (/UNSEEDED/.test((err as Error).message) || this.#unreleased.size >= MAX_UNRELEASED) return;
    this.#unreleased.add({ lease, tokens, servedBy });
  }

  /**
   * Settles the leases kept by #keepUnreleased again with no cost: SETTLE's release and token correction set
   * values, so one that did run (its answer lost) changes nothing. Stops at the first failure: Redis is still away.
   */
  async #releaseAgain(): Promise<void> {
    const limiter = this.#limiter;
    if (limiter === undefined || this.#unreleased.size === 0 || this.#releasing) return;
    this.#releasing = true;
    try {
      for (const held of this.#unreleased) {
        try {
          await limiter.settle(held.lease, held.tokens, 0, Date.now(), held.servedBy);
        } catch (err) {
          if (!/UNSEEDED/.test((err as Error).message)) return;
        }
        this.#unreleased.delete(held);
      }
    } finally {
      this.#releasing = false;
    }
  }

  async #renew(): Promise<void> {
    if (this.#limiter === undefined || this.#inFlight.size === 0) return;
    try {
      await this.#limiter.renew(this.#inFlight, Date.now());
    } catch (err) {
      this.#onError?.('redis', 'renew');
      this.#logger.warn({ err: (err as Error).message }, 'could not renew leases of requests in flight');
    }
  }

  /**
   * Writes the rows of requests that have ended: waits for their settlements, then flushes the spend log,
   * within `deadlineMs` (a store that does not answer keeps them buffered, as before). Never rejects.
   */
  async flush(deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    await bounded(Promise.all(this.#settling), deadlineMs);
    if (this.#log !== undefined) await bounded(this.#log.flush(), Math.max(0, until - Date.now()));
  }

  /** Shutdown: waits for settlements, then flushes the spend log, both within `deadlineMs`. Returns rows that could not be written. */
  async close(deadlineMs: number): Promise<number> {
    const until = Date.now() + deadlineMs;
    clearInterval(this.#renewTimer);
    clearInterval(this.#releaseTimer);
    await bounded(Promise.all(this.#settling), deadlineMs);
    return this.#log === undefined ? 0 : this.#log.close(Math.max(0, until - Date.now()));
  }
}

/** Spend in the log for a subject in `period`. */
async function loggedSpend(q: Queryable, b: BudgetSubject, period: BudgetPeriod): Promise<number> {
  const { kind, id } = subjectParts(b.subject);
  const column = COLUMN[kind];
  if (column === undefined) return 0;
  // A period without end (no budget_duration) has no upper bound: the latest date a JavaScript Date holds
  // (+275760) is past what PostgreSQL's timestamptz does, which refused it (22009) and failed the seed.
  const bounded = period.end < Number.MAX_SAFE_INTEGER;
  // A key's rows under the ids it had before a regenerate count for it too: one that reached the log after
  // the regenerate's move (another replica's buffer, a database outage) stays under the old id until the sweep.
  const subject =
    kind === 'key'
      ? // One array, so the (key_id, created_at) index serves it: an OR with a subquery read the whole log.
        `key_id = ANY (array_append(ARRAY(SELECT jsonb_array_elements_text(previous_key_ids) FROM keys WHERE key_id = $1), $1::text))`
      : `${column} = $1`;
  const rows = await q.query<{ total: number | null }>(
    `SELECT sum(cost) AS total FROM spend_logs WHERE ${subject} AND created_at >= $2${bounded ? ' AND created_at < $3' : ''}`,
    [id, new Date(period.start).toISOString(), ...(bounded ? [new Date(period.end).toISOString()] : [])],
  );
  return Number(rows[0]?.total ?? 0);
}

async function periodSpend(q: Queryable, subjects: readonly BudgetSubject[], now: number, calendar: BudgetCalendar): Promise<SpendItem[]> {
  const out: SpendItem[] = [];
  for (const b of subjects) {
    if (b.limits.maxBudget === undefined) continue;
    // From the key record's creation on: rows of a deleted key with the same key id count for it no more.
    const period = budgetPeriodOf(b.limits, now, calendar);
    const cost = await loggedSpend(q, b, period);
    if (cost > 0) out.push({ subject: b.subject, period, cost });
  }
  return out;
}

/**
 * A budget set where there was none, or moved to another period (a new budget_duration): the counters may
 * hold less than was spent — cost reaches them only for subjects that had a budget when they settled — so
 * they are raised to what the log holds for this period, as LiteLLM, which keeps spend on the record, would
 * count it (raised, not added to: a budget removed and set again in one period keeps what it counted).
 * Returns the cost added.
 */
export async function seedChangedBudget(
  db: Queryable,
  counters: Counters,
  subject: string,
  before: Limits | undefined,
  after: Limits,
  now: number,
  calendar: BudgetCalendar,
): Promise<number> {
  if (after.maxBudget === undefined) return 0;
  if (before?.maxBudget !== undefined && budgetPeriodOf(before, now, calendar).start === budgetPeriodOf(after, now, calendar).start)
    return 0;
  const [logged] = await periodSpend(db, [{ subject, limits: after }], now, calendar);
  if (logged === undefined) return 0;
  const missing = logged.cost - (await counters.spend(subject, logged.period));
  if (missing <= 0) return 0;
  await counters.addSpend([{ ...logged, cost: missing }]);
  return missing;
}

/** In-process counters start empty at every boot: they get the current periods' spend from the log. */
export async function seedBudgets(
  db: Db,
  counters: Counters,
  subjects: readonly BudgetSubject[],
  now: number,
  calendar: BudgetCalendar,
): Promise<number> {
  const items = await periodSpend(db, subjects, now, calendar);
  await counters.addSpend(items);
  return items.length;
}

/**
 * A Redis without persistence restarts empty. The first replica to notice seeds it with every row the log
 * holds for the current periods, counted or not, and marks the uncounted ones counted in the same
 * transaction, which also records the new Redis's generation. Nothing is counted twice, and nothing is lost:
 * the new Redis refuses settlements until it is seeded (those rows are logged uncounted and replayed after),
 * and a row settled into the old Redis but still in some replica's buffer is written after the seed with
 * the old generation, so uncounted, and replayed (SpendLog). Redis is seeded once the transaction committed:
 * a seed whose Redis part fails is simply done again, under a new generation. Without a database the seed is
 * empty. Returns false when another replica holds the lock.
 */
export async function seedRedis(
  db: Db | undefined,
  redis: RedisCounters,
  subjects: readonly BudgetSubject[],
  logger: Logger,
  calendar: BudgetCalendar,
): Promise<boolean> {
  if (!(await redis.trySeedLock())) return false;
  try {
    // Seeded by another replica between this one's look and its lock: seeding again would count it all twice.
    if (await redis.isSeeded()) return true;
    if (db === undefined) {
      await redis.seed([]);
      return true;
    }
    const generation = randomUUID();
    const items = await db.transaction(async (tx) => {
      // No row is written while the seed is taken, so each row is either in it or written (and replayed) after.
      await tx.query('LOCK TABLE spend_logs IN SHARE ROW EXCLUSIVE MODE');
      await tx.query('UPDATE spend_logs SET counted = true WHERE NOT counted');
      await tx.query(
        'INSERT INTO counter_generations (prefix, generation) VALUES ($1, $2) ON CONFLICT (prefix) DO UPDATE SET generation = EXCLUDED.generation',
        [redis.prefix, generation],
      );
      return periodSpend(tx, subjects, Date.now(), calendar);
    });
    await redis.seed(items, generation);
    logger.info({ subjects: items.length }, 'Redis counters seeded with the spend log');
    return true;
  } finally {
    await redis.releaseSeedLock().catch(() => undefined);
  }
}

/**
 * Adds the cost of rows that may not have reached the counters (Redis was down, or its answer was lost) and
 * marks them counted, in one transaction that locks the rows (SKIP LOCKED: replicas replay different rows).
 * Once per lease: a row whose settlement did run, or whose replay ran before the transaction failed, adds
 * nothing. Returns the rows replayed.
 */
export async function replayUncounted(
  db: Db,
  counters: Pick<RedisCounters, 'replaySpend'>,
  budgets: (subject: string) => Limits | undefined,
  calendar: BudgetCalendar,
): Promise<number> {
  return db.transaction(async (tx) => {
    const rows = await tx.query<{
      lease_id: string;
      key_id: string | null;
      user_id: string | null;
      team_id: string | null;
      cost: number;
      created_at: Date | string;
    }>(
      'SELECT lease_id, key_id, user_id, team_id, cost, created_at FROM spend_logs WHERE NOT counted ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED',
    );
    if (rows.length === 0) return 0;
    const leases = rows.map((r) => {
      const at = new Date(r.created_at).getTime();
      const items: SpendItem[] = [];
      for (const subject of [r.key_id && `key:${r.key_id}`, r.user_id && `user:${r.user_id}`, r.team_id && `team:${r.team_id}`]) {
        if (!subject || r.cost <= 0) continue;
        const limits = budgets(subject);
        if (limits?.maxBudget === undefined) continue;
        // A row from before the key record was made (a deleted key with the same key id) is not its spend.
        if (limits.budgetFrom !== undefined && at < limits.budgetFrom) continue;
        items.push({ subject, period: budgetPeriodOf(limits, at, calendar), cost: Number(r.cost) });
      }
      return { leaseId: r.lease_id, items };
    });
    await counters.replaySpend(leases);
    // The partial index on uncounted rows finds them (lease_id has no index of its own).
    await tx.query('UPDATE spend_logs SET counted = true WHERE NOT counted AND lease_id = ANY($1::text[])', [rows.map((r) => r.lease_id)]);
    return rows.length;
  });
}

/** Seeds a fresh Redis, then replays uncounted spend, every few seconds; stops with the returned function. */
export function startReplay(
  db: Db | undefined,
  redis: RedisCounters,
  subjects: () => readonly BudgetSubject[],
  budgets: (subject: string) => Limits | undefined,
  logger: Logger,
  calendar: BudgetCalendar,
): () => void {
  let running = false;
  const tick = async (): Promise<void> => {
    if (!(await redis.isSeeded())) {
      await seedRedis(db, redis, subjects(), logger, calendar);
      return;
    }
    if (db === undefined) return;
    const n = await replayUncounted(db, redis, budgets, calendar);
    if (n > 0) logger.info({ rows: n }, 'spend replayed into the counters');
  };
  const run = (): void => {
    if (running) return;
    running = true;
    tick()
      .catch(() => undefined) // Redis or the database still down: next round
      .finally(() => {
        running = false;
      });
  };
  run();
  const timer = setInterval(run, REPLAY_MS).unref();
  // A Redis back after a restart is seeded at once: until then, requests with a budget are store faults.
  redis.redis.on('ready', run);
  return () => {
    clearInterval(timer);
    redis.redis.off('ready', run);
  };
}
