/**
 * Keys, teams and users kept in the records database (made through the admin API), and the in-process
 * cache that Check reads: it never waits on the database. The cache is loaded at boot, reloads one record
 * when the change bus says it changed (every replica within milliseconds), and reloads everything after a
 * missed broadcast and every RELOAD_MS as a safety net. Records declared in the config file come first and
 * are read-only.
 */
import type { TeamRecord } from '../core/decide.js';
import { keyId, type KeyDirectory, type KeyRecord, type Limits, type StaticKeyDirectory } from '../identity/keys.js';
import type { StoreErrorHook } from './counters.js';
import type { Logger } from '../telemetry/logger.js';
import { bounded, type ChangeBus, type RecordChange } from './change-bus.js';
import type { Db, Queryable } from './db.js';

const RELOAD_MS = 30_000;
/** Lookups of unknown keys in flight at most (each one query), and how long a hash found nowhere is not asked again. */
const MISS_LOOKUPS = 32;
const MISS_MEMORY_MS = 1_000;
const MISS_MEMORY_MAX = 10_000;
/** How long a request waits for such a lookup (a slow database): then it is answered as before, 401. */
const MISS_WAIT_MS = 500;
/**
 * When the rows of a regenerated key are moved to its new id a second time: rows of requests that ended on
 * another replica before it heard of the regenerate, still in its spend-log buffer then (flushed within a
 * second, or retried), land under the old id after the regenerate's own move.
 */
const REGENERATE_SWEEP_MS = 5_000;
/** Ids a key keeps of its past secrets (KeyRecord.previousIds). */
const PREVIOUS_IDS_KEPT = 20;
/**
 * How long Check waits for a changed record being read (RecordCache.settling): a read takes a millisecond
 * or two; past this the cached record decides, well within Envoy's Check timeout (1 s shipped) even if a
 * lookup of an unknown key follows.
 */
const SETTLE_WAIT_MS = 200;

/** How often replicas on PostgreSQL read the change log, and how far back each read looks. */
const POLL_MS = 500;
const POLL_WINDOW = "interval '3 seconds'";
/** A record whose reload failed is tried again this often, this many times (then the full reload covers it). */
const RETRY_MS = 1_000;
const RETRIES = 5;

interface LimitColumns {
  max_budget: number | null;
  budget_duration: string | null;
  rpm_limit: number | null;
  tpm_limit: number | null;
  max_parallel_requests: number | null;
}

export interface KeyRow extends LimitColumns {
  key_hash: string;
  key_alias: string | null;
  models: unknown;
  user_id: string | null;
  team_id: string | null;
  blocked: boolean;
  expires_at: Date | string | null;
  metadata: unknown;
  /** When this record's spend starts counting (migrations/005); null for keys made before it. */
  spend_from: Date | string | null;
  /** Ids before /key/regenerate (migrations/007). */
  previous_key_ids: unknown;
}

export interface TeamRow extends LimitColumns {
  team_id: string;
  team_alias: string | null;
  models: unknown;
  blocked: boolean;
  metadata: unknown;
}

/** A model added through the admin API, as stored (its api_key sealed or an os.environ/ reference). */
export interface StoredModel {
  readonly id: string;
  readonly modelName: string;
  readonly litellmParams: Readonly<Record<string, unknown>>;
  readonly modelInfo: Readonly<Record<string, unknown>>;
}

interface ModelRow {
  model_id: string;
  model_name: string;
  litellm_params: unknown;
  model_info: unknown;
}

export interface UserRow extends LimitColumns {
  user_id: string;
}

/** A user made through the admin API (LiteLLM's internal user): limits on everything its keys do. */
export interface StoredUser {
  readonly userId: string;
  readonly limits: Limits;
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** A user of the records database, or undefined. */
export async function findUser(db: Queryable, userId: string): Promise<StoredUser | undefined> {
  const [row] = await db.query<UserRow & { metadata: unknown }>(`SELECT ${USER_COLUMNS}, metadata FROM users WHERE user_id = $1`, [userId]);
  return row === undefined ? undefined : userFromRow(row);
}

export function userFromRow(row: UserRow & { metadata: unknown }): StoredUser {
  return { userId: row.user_id, limits: limitsFrom(row), metadata: object(row.metadata) };
}

/** A user's columns as query parameters $1–$7: id, the five limits, metadata. */
function userParams(u: StoredUser): unknown[] {
  const l = u.limits;
  return [
    u.userId,
    l.maxBudget ?? null,
    l.budgetDuration ?? null,
    l.rpmLimit ?? null,
    l.tpmLimit ?? null,
    l.maxParallelRequests ?? null,
    JSON.stringify(u.metadata),
  ];
}

/** A team's columns as query parameters $1–$10: id, alias, models, blocked, metadata, the five limits. */
function teamParams(t: TeamRecord): unknown[] {
  const l = t.limits;
  return [
    t.teamId,
    t.alias ?? null,
    JSON.stringify(t.models),
    t.blocked,
    JSON.stringify(t.metadata),
    l.maxBudget ?? null,
    l.budgetDuration ?? null,
    l.rpmLimit ?? null,
    l.tpmLimit ?? null,
    l.maxParallelRequests ?? null,
  ];
}

export const KEY_COLUMNS =
  'key_hash, key_alias, models, user_id, team_id, blocked, expires_at, metadata, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests, spend_from, previous_key_ids';
export const TEAM_COLUMNS =
  'team_id, team_alias, models, blocked, metadata, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests';
const USER_COLUMNS = 'user_id, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests';

function limitsFrom(r: LimitColumns): Limits {
  return {
    maxBudget: r.max_budget ?? undefined,
    budgetDuration: r.budget_duration ?? undefined,
    rpmLimit: r.rpm_limit ?? undefined,
    tpmLimit: r.tpm_limit ?? undefined,
    maxParallelRequests: r.max_parallel_requests ?? undefined,
  };
}

const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const object = (v: unknown): Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

export function keyFromRow(r: KeyRow): KeyRecord {
  return {
    hash: r.key_hash,
    id: keyId(r.key_hash),
    alias: r.key_alias ?? undefined,
    models: strings(r.models),
    userId: r.user_id ?? undefined,
    teamId: r.team_id ?? undefined,
    expiresAt: r.expires_at === null ? undefined : new Date(r.expires_at).getTime(),
    blocked: r.blocked,
    limits: r.spend_from === null ? limitsFrom(r) : { ...limitsFrom(r), budgetFrom: new Date(r.spend_from).getTime() },
    metadata: object(r.metadata),
    source: 'api',
    previousIds: strings(r.previous_key_ids),
  };
}

export function teamFromRow(r: TeamRow): TeamRecord {
  return {
    teamId: r.team_id,
    alias: r.team_alias ?? undefined,
    models: strings(r.models),
    blocked: r.blocked,
    limits: limitsFrom(r),
    metadata: object(r.metadata),
  };
}

/** Writes of records, each followed by the broadcast (the admin API's path; tests use it too). */
export class RecordStore {
  readonly #db: Db;
  readonly #bus: ChangeBus;
  readonly #cache: Pick<RecordCache, 'refresh'> | undefined;
  readonly #logger: Logger | undefined;
  readonly #onError: StoreErrorHook | undefined;
  #writes = 0;

  constructor(
    db: Db,
    bus: ChangeBus,
    opts: {
      logger?: Logger;
      onError?: StoreErrorHook;
      /** This replica's cache: it applies a change before the call that made it returns. */
      cache?: Pick<RecordCache, 'refresh'> | undefined;
    } = {},
  ) {
    this.#db = db;
    this.#bus = bus;
    this.#logger = opts.logger;
    this.#onError = opts.onError;
    this.#cache = opts.cache;
  }

  /**
   * Runs `write` and records its changes in `record_changes` in one transaction, applies them to this
   * replica's cache, then broadcasts them. So a key deleted or blocked through this replica is refused by it
   * as soon as the call returns, not once its own broadcast has come back. A failed broadcast is logged, not
   * thrown: the write happened, and replicas learn of it from the change log.
   */
  async #write<T>(changes: readonly RecordChange[], write: (tx: Queryable) => Promise<T>): Promise<T> {
    const result = await this.#db.transaction(async (tx) => {
      const r = await write(tx);
      for (const c of changes) await tx.query('INSERT INTO record_changes (kind, id) VALUES ($1, $2)', [c.kind, c.id]);
      if (++this.#writes % 100 === 1) await tx.query("DELETE FROM record_changes WHERE at < now() - interval '1 hour'");
      return r;
    });
    for (const c of changes) await this.#cache?.refresh(c);
    for (const c of changes) {
      try {
        await this.#bus.publish(c);
      } catch (err) {
        this.#onError?.('redis', 'publish');
        this.#logger?.warn(
          { err: (err as Error).message, kind: c.kind },
          'broadcast failed; replicas apply the change from the change log',
        );
      }
    }
    return result;
  }

  /**
   * Changes a key from its record as stored when the write runs (`change`), so a block, a delete or a
   * regenerate that committed since the caller read it is neither undone nor brought back: 'missing' when
   * the key is gone. An alias new to it must be no other key's ('alias-taken', nothing changed).
   */
  async updateKey(hash: string, change: (stored: KeyRecord) => KeyRecord): Promise<'done' | 'missing' | 'alias-taken'> {
    return this.#keyWrite([{ kind: 'key', id: hash }], async (tx): Promise<'done' | 'missing'> => {
      const [row] = await tx.query<KeyRow>('SELECT * FROM keys WHERE key_hash = $1 FOR UPDATE', [hash]);
      if (row === undefined) return 'missing';
      const next = change(keyFromRow(row));
      if (next.alias !== undefined && next.alias !== row.key_alias) await claimKeyAlias(tx, next.alias, hash);
      await upsertKey(tx, next, undefined, false);
      return 'done';
    });
  }

  /** A new key: 'taken' when a key with its hash exists already, 'alias-taken' when another has its alias; nothing changed then. */
  async createKey(k: KeyRecord, keyName: string): Promise<'done' | 'taken' | 'alias-taken'> {
    return this.#keyWrite([{ kind: 'key', id: k.hash }], async (tx): Promise<'done' | 'taken'> => {
      if ((await upsertKey(tx, k, keyName, true)).length === 0) return 'taken';
      if (k.alias !== undefined) await claimKeyAlias(tx, k.alias, k.hash);
      return 'done';
    });
  }

  /** A key write whose transaction a taken alias rolls back, answered as such. */
  async #keyWrite<T>(changes: readonly RecordChange[], write: (tx: Queryable) => Promise<T>): Promise<T | 'alias-taken'> {
    try {
      return await this.#write(changes, write);
    } catch (err) {
      if (err instanceof AliasTaken) return 'alias-taken';
      throw err;
    }
  }

  async deleteKey(hash: string): Promise<boolean> {
    const rows = await this.#write([{ kind: 'key', id: hash }], (tx) =>
      tx.query('DELETE FROM keys WHERE key_hash = $1 RETURNING key_hash', [hash]),
    );
    return rows.length > 0;
  }

  async setKeyBlocked(hash: string, blocked: boolean): Promise<boolean> {
    const rows = await this.#write([{ kind: 'key', id: hash }], (tx) =>
      tx.query('UPDATE keys SET blocked = $2, updated_at = now() WHERE key_hash = $1 RETURNING key_hash', [hash, blocked]),
    );
    return rows.length > 0;
  }

  /**
   * Gives a key a new secret: its record as stored when the write runs, changed by `change` (the new hash
   * among the changes), under a new key id, in one transaction, so a block that committed meanwhile holds
   * for the new secret too. The key's spend-log rows move to the new id, so its spend and budget carry over
   * (LiteLLM keeps spend on regenerate). The new record, or why there is none (nothing changed then).
   */
  async regenerateKey(
    oldHash: string,
    newHash: string,
    change: (stored: KeyRecord) => KeyRecord,
    keyName: string,
  ): Promise<KeyRecord | 'missing' | 'taken' | 'alias-taken'> {
    let next: KeyRecord | 'missing' | 'alias-taken';
    try {
      next = await this.#keyWrite(
        // The old hash first: every replica refuses the old key before the new one works anywhere.
        [
          { kind: 'key', id: oldHash },
          { kind: 'key', id: newHash },
        ],
        async (tx): Promise<KeyRecord | 'missing'> => {
          const [gone] = await tx.query<KeyRow>('DELETE FROM keys WHERE key_hash = $1 RETURNING *', [oldHash]);
          if (gone === undefined) return 'missing';
          const before = keyFromRow(gone);
          // The last ids kept: enough for the requests in flight at any regenerate of the last while.
          const previousIds = [...(before.previousIds ?? []), before.id].slice(-PREVIOUS_IDS_KEPT);
          const next = { ...change(before), hash: newHash, id: keyId(newHash), previousIds };
          if (next.alias !== undefined && next.alias !== gone.key_alias) await claimKeyAlias(tx, next.alias, next.hash);
          // A new secret chosen by the caller may be another key's: nothing changes then (the throw rolls back).
          if ((await upsertKey(tx, next, keyName, true)).length === 0) throw new KeyTaken();
          await tx.query('UPDATE spend_logs SET key_id = $2 WHERE key_id = $1', [keyId(oldHash), next.id]);
          return next;
        },
      );
    } catch (err) {
      if (err instanceof KeyTaken) return 'taken';
      throw err;
    }
    if (typeof next === 'object') {
      const [from, to] = [keyId(oldHash), next.id];
      setTimeout(() => {
        this.#db.query('UPDATE spend_logs SET key_id = $2 WHERE key_id = $1', [from, to]).catch((err: unknown) => {
          this.#logger?.warn(
            { err: (err as Error).message, key_id: to },
            "could not move a regenerated key's last spend-log rows to its new id",
          );
        });
      }, REGENERATE_SWEEP_MS).unref();
    }
    return next;
  }

  /** A new team; false, and nothing changed, when a team with its id exists already. */
  async createTeam(t: TeamRecord): Promise<boolean> {
    const rows = await this.#write([{ kind: 'team', id: t.teamId }], (tx) =>
      tx.query(
        `INSERT INTO teams (team_id, team_alias, models, blocked, metadata, max_budget, budget_duration, rpm_limit, tpm_limit,
                            max_parallel_requests)
         VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8, $9, $10) ON CONFLICT (team_id) DO NOTHING RETURNING team_id`,
        teamParams(t),
      ),
    );
    return rows.length > 0;
  }

  /**
   * Changes a team from its record as stored when the write runs (`change`), so a field another update set
   * since the caller read it, a block above all, is not undone: the team as written, or undefined (nothing
   * changed) when there is none.
   */
  async updateTeam(teamId: string, change: (stored: TeamRecord) => TeamRecord): Promise<TeamRecord | undefined> {
    return this.#write([{ kind: 'team', id: teamId }], async (tx) => {
      const [row] = await tx.query<TeamRow>(`SELECT ${TEAM_COLUMNS} FROM teams WHERE team_id = $1 FOR UPDATE`, [teamId]);
      if (row === undefined) return undefined;
      const t = { ...change(teamFromRow(row)), teamId };
      await tx.query(
        `UPDATE teams SET team_alias = $2, models = $3::jsonb, blocked = $4, metadata = $5::jsonb, max_budget = $6,
           budget_duration = $7, rpm_limit = $8, tpm_limit = $9, max_parallel_requests = $10, updated_at = now()
         WHERE team_id = $1`,
        teamParams(t),
      );
      return t;
    });
  }

  /**
   * Deletes a team and, in the same transaction, the keys made for it through the API, as LiteLLM's
   * /team/delete does: a key left behind would be refused anyway (core/decide.ts: its team exists nowhere),
   * and would come back to life with a new team of the same id. The team's change is applied and broadcast
   * first, so every replica refuses its keys from that moment. The tokens of the keys deleted; undefined when
   * there was no team.
   */
  async deleteTeam(teamId: string): Promise<string[] | undefined> {
    const changes: RecordChange[] = [{ kind: 'team', id: teamId }];
    return this.#write(changes, async (tx) => {
      const gone = await tx.query('DELETE FROM teams WHERE team_id = $1 RETURNING team_id', [teamId]);
      if (gone.length === 0) return undefined;
      const keys = await tx.query<{ key_hash: string }>('DELETE FROM keys WHERE team_id = $1 RETURNING key_hash', [teamId]);
      // Each key's change is logged and broadcast after the team's (#write reads the list after this).
      for (const k of keys) changes.push({ kind: 'key', id: k.key_hash });
      return keys.map((k) => k.key_hash);
    });
  }

  /** A new user (LiteLLM's /user/new); false, and nothing changed, when a user with its id exists already. */
  async createUser(u: StoredUser): Promise<boolean> {
    const rows = await this.#write([{ kind: 'user', id: u.userId }], (tx) =>
      tx.query(
        `INSERT INTO users (user_id, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (user_id) DO NOTHING RETURNING user_id`,
        userParams(u),
      ),
    );
    return rows.length > 0;
  }

  /**
   * Changes a user (LiteLLM's /user/update) from its record as stored when the write runs: the user as
   * written, or undefined (nothing changed) when there is none.
   */
  async updateUser(userId: string, change: (stored: StoredUser) => StoredUser): Promise<StoredUser | undefined> {
    return this.#write([{ kind: 'user', id: userId }], async (tx) => {
      const [row] = await tx.query<UserRow & { metadata: unknown }>(
        `SELECT ${USER_COLUMNS}, metadata FROM users WHERE user_id = $1 FOR UPDATE`,
        [userId],
      );
      if (row === undefined) return undefined;
      const u = { ...change(userFromRow(row)), userId };
      await tx.query(
        `UPDATE users SET max_budget = $2, budget_duration = $3, rpm_limit = $4, tpm_limit = $5, max_parallel_requests = $6,
           metadata = $7::jsonb, updated_at = now() WHERE user_id = $1`,
        userParams(u),
      );
      return u;
    });
  }

  /**
   * Deletes a user and, in the same transaction, the keys made for it through the API, as LiteLLM does: a
   * user who leaves takes their keys along (`withKeys` false: the user alone). The tokens of the keys
   * deleted; undefined when there was no user.
   */
  async deleteUser(userId: string, withKeys = true): Promise<string[] | undefined> {
    const changes: RecordChange[] = [{ kind: 'user', id: userId }];
    return this.#write(changes, async (tx) => {
      const gone = await tx.query('DELETE FROM users WHERE user_id = $1 RETURNING user_id', [userId]);
      if (gone.length === 0) return undefined;
      if (!withKeys) return [];
      const keys = await tx.query<{ key_hash: string }>('DELETE FROM keys WHERE user_id = $1 RETURNING key_hash', [userId]);
      // Each key's change is logged and broadcast with the user's (#write reads the list after this).
      for (const k of keys) changes.push({ kind: 'key', id: k.key_hash });
      return keys.map((k) => k.key_hash);
    });
  }

  /** Adds a model; false when its id is taken. `litellm_params.api_key` must already be sealed or a reference. */
  async addModel(m: StoredModel): Promise<boolean> {
    const rows = await this.#write([{ kind: 'model', id: m.id }], (tx) =>
      tx.query(
        `INSERT INTO models (model_id, model_name, litellm_params, model_info) VALUES ($1, $2, $3::jsonb, $4::jsonb)
         ON CONFLICT (model_id) DO NOTHING RETURNING model_id`,
        [m.id, m.modelName, JSON.stringify(m.litellmParams), JSON.stringify(m.modelInfo)],
      ),
    );
    return rows.length > 0;
  }

  async deleteModel(id: string): Promise<boolean> {
    const rows = await this.#write([{ kind: 'model', id }], (tx) =>
      tx.query('DELETE FROM models WHERE model_id = $1 RETURNING model_id', [id]),
    );
    return rows.length > 0;
  }
}

class KeyTaken extends Error {}
class AliasTaken extends Error {}

/**
 * Aliases are unique across the keys made through the API, as LiteLLM makes them, so /key/delete and
 * /key/list by alias name one key. A write claiming an alias takes a transaction-scoped advisory lock on it,
 * after its own row (every key write locks its row first, then the alias, so two cannot wait on each other
 * in opposite order), and then checks: the check sees what a previous holder committed (READ COMMITTED,
 * db.ts). AliasTaken, rolling the write back, when a key other than `hash` has it.
 */
async function claimKeyAlias(tx: Queryable, alias: string, hash: string): Promise<void> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tollgate key_alias ${alias}`]);
  const rows = await tx.query('SELECT 1 FROM keys WHERE key_alias = $1 AND key_hash <> $2 LIMIT 1', [alias, hash]);
  if (rows.length > 0) throw new AliasTaken();
}

/**
 * Writes a key record; `create`: only when its hash is new (the rows returned say whether it was). Its
 * spend_from (limits.budgetFrom) is written when the row is inserted, never changed by an update. A create
 * names no conflict target: two writers inserting one key at once may collide on key_id's unique index
 * before key_hash's, and a target of key_hash alone would raise that as a unique violation.
 */
function upsertKey(tx: Queryable, k: KeyRecord, keyName: string | undefined, create: boolean): Promise<unknown[]> {
  const l = k.limits;
  return tx.query(
    `INSERT INTO keys (key_hash, key_id, key_alias, models, user_id, team_id, blocked, expires_at, metadata,
                       max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests, key_name, spend_from,
                       previous_key_ids)
     VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15, $16, $17::jsonb)
     ON CONFLICT ${
       create
         ? 'DO NOTHING'
         : `(key_hash) DO UPDATE SET key_alias = $3, models = $4::jsonb, user_id = $5, team_id = $6, blocked = $7,
       expires_at = $8, metadata = $9::jsonb, max_budget = $10, budget_duration = $11, rpm_limit = $12, tpm_limit = $13,
       max_parallel_requests = $14, key_name = COALESCE($15, keys.key_name), updated_at = now()`
     }
     RETURNING key_hash`,
    [
      k.hash,
      k.id,
      k.alias ?? null,
      JSON.stringify(k.models),
      k.userId ?? null,
      k.teamId ?? null,
      k.blocked,
      k.expiresAt === undefined ? null : new Date(k.expiresAt).toISOString(),
      JSON.stringify(k.metadata),
      l.maxBudget ?? null,
      l.budgetDuration ?? null,
      l.rpmLimit ?? null,
      l.tpmLimit ?? null,
      l.maxParallelRequests ?? null,
      keyName ?? null,
      l.budgetFrom === undefined ? null : new Date(l.budgetFrom).toISOString(),
      JSON.stringify(k.previousIds ?? []),
    ],
  );
}

/**
 * What Check reads: the config's keys, teams and users, then the database's. `teams` and `users` are live
 * maps (updated in place), so holders of them see changes without being handed new ones.
 */
export class RecordCache implements KeyDirectory {
  readonly teams = new Map<string, TeamRecord>();
  readonly users = new Map<string, Limits>();
  #configKeys: StaticKeyDirectory;
  #configTeams: ReadonlyMap<string, TeamRecord>;
  #configUsers: ReadonlyMap<string, Limits>;
  #byHash = new Map<string, KeyRecord>();
  #byId = new Map<string, KeyRecord>();
  /** Config keys and teams that hide a stored record (#noteShadowed), and who they are for the log. */
  #shadowed = new Map<string, Record<string, string>>();
  /** A regenerated key's past ids → its current record (KeyRecord.previousIds). */
  #byPreviousId = new Map<string, KeyRecord>();
  /** Models added through the admin API, in the order they were added. */
  #models: readonly StoredModel[] = [];
  #modelsJson = '[]';
  readonly #onModels: ((models: readonly StoredModel[]) => void) | undefined;
  readonly #db: Queryable | undefined;
  readonly #logger: Logger;
  readonly #onError: StoreErrorHook | undefined;
  readonly #pollChanges: boolean;
  #timer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  /** Change-log rows already applied (seq → when seen), kept while they are inside the poll window. */
  readonly #seen = new Map<string, number>();
  #polling = false;
  /** The reload of each record in flight: a record's reloads run one after another, so the last read lands last. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Changes seen while full reloads are running (one list per reload). */
  readonly #during = new Set<RecordChange[]>();
  #running: Promise<void> | undefined;
  #again = false;
  /** Unknown keys being looked up (hash → the lookup), and those found nowhere (hash → until when not asked again). */
  readonly #missing = new Map<string, Promise<KeyRecord | undefined>>();
  readonly #absent = new Map<string, number>();

  constructor(opts: {
    configKeys: StaticKeyDirectory;
    configTeams: ReadonlyMap<string, TeamRecord>;
    configUsers: ReadonlyMap<string, Limits>;
    db: Queryable | undefined;
    logger: Logger;
    /** Told when the database's models change (each replica rebuilds its routing catalog). */
    onModels?: ((models: readonly StoredModel[]) => void) | undefined;
    onError?: StoreErrorHook | undefined;
    /** Read the change log (record_changes) as well as the broadcast: PostgreSQL, several replicas. */
    pollChanges?: boolean | undefined;
  }) {
    this.#onError = opts.onError;
    this.#pollChanges = opts.pollChanges === true;
    this.#onModels = opts.onModels;
    this.#configKeys = opts.configKeys;
    this.#configTeams = opts.configTeams;
    this.#configUsers = opts.configUsers;
    this.#db = opts.db;
    this.#logger = opts.logger;
    for (const [id, t] of this.#configTeams) this.teams.set(id, t);
    for (const [id, u] of this.#configUsers) this.users.set(id, u);
  }

  get(hash: string): KeyRecord | undefined {
    return this.#configKeys.get(hash) ?? this.#byHash.get(hash);
  }

  byId(id: string): KeyRecord | undefined {
    return this.#configKeys.byId(id) ?? this.#byId.get(id);
  }

  current(id: string): KeyRecord | undefined {
    return this.byId(id) ?? this.#byPreviousId.get(id);
  }

  /**
   * A key made on another replica a moment ago is in the database before its broadcast reaches this one:
   * read it now (as the broadcast would: the same per-record chain, so a deletion broadcast after it still
   * lands last), rather than answer 401 to a client that uses its new key at once. Bounded, so a flood of
   * made-up keys costs the database at most MISS_LOOKUPS queries at a time and one per hash a second.
   */
  lookupMissing(hash: string): Promise<KeyRecord | undefined> | undefined {
    // Only where other replicas may write (PostgreSQL): embedded PGlite has one process, which knows its keys.
    const db = this.#db;
    if (db === undefined || !this.#pollChanges) return undefined;
    const running = this.#missing.get(hash);
    if (running !== undefined) return bounded(running, MISS_WAIT_MS);
    const now = Date.now();
    const until = this.#absent.get(hash);
    if (until !== undefined) {
      if (now < until) return undefined;
      this.#absent.delete(hash);
    }
    if (this.#missing.size >= MISS_LOOKUPS) return undefined;
    const lookup = (async (): Promise<KeyRecord | undefined> => {
      const [row] = await db.query<{ team_id: string | null; user_id: string | null }>(
        'SELECT team_id, user_id FROM keys WHERE key_hash = $1',
        [hash],
      );
      if (row === undefined) return undefined;
      // Its team and user first (made there just before it, perhaps): the key enters the cache only with
      // their allow-lists and limits beside it, for this request and every one after.
      if (row.team_id !== null && !this.teams.has(row.team_id)) await this.#reload({ kind: 'team', id: row.team_id });
      if (row.user_id !== null && !this.users.has(row.user_id)) await this.#reload({ kind: 'user', id: row.user_id });
      await this.#reload({ kind: 'key', id: hash });
      return this.get(hash);
    })().catch((err: unknown) => {
      this.#failed(err);
      return undefined;
    });
    this.#missing.set(hash, lookup);
    void lookup.then((found) => {
      this.#missing.delete(hash);
      if (found !== undefined) return;
      if (this.#absent.size >= MISS_MEMORY_MAX) this.#absent.clear();
      this.#absent.set(hash, Date.now() + MISS_MEMORY_MS);
    });
    return bounded(lookup, MISS_WAIT_MS);
  }

  /**
   * The reloads in flight of this key's record, its team's and its user's. A change broadcast by another
   * replica is read from the database before it replaces the cached record; meanwhile the old record would
   * still decide — a deleted or blocked key admitted for a few milliseconds after the admin call returned.
   * Check waits for these reads instead (bounded: SETTLE_WAIT_MS).
   */
  settling(key: KeyRecord): Promise<void> | undefined {
    if (this.#chains.size === 0) return undefined;
    const waits: Promise<void>[] = [];
    const add = (k: string): void => {
      const chain = this.#chains.get(k);
      if (chain !== undefined) waits.push(chain);
    };
    add(`key:${key.hash}`);
    if (key.teamId !== undefined) add(`team:${key.teamId}`);
    if (key.userId !== undefined) add(`user:${key.userId}`);
    if (waits.length === 0) return undefined;
    return bounded(Promise.all(waits), SETTLE_WAIT_MS).then(() => undefined);
  }

  /** A reloaded config file's keys, teams and users (SIGHUP), swapped in one synchronous step. */
  setConfig(keys: StaticKeyDirectory, teams: ReadonlyMap<string, TeamRecord>, users: ReadonlyMap<string, Limits>): Promise<void> {
    for (const id of this.#configTeams.keys()) if (!teams.has(id)) this.teams.delete(id);
    for (const id of this.#configUsers.keys()) if (!users.has(id)) this.users.delete(id);
    this.#configKeys = keys;
    this.#configTeams = teams;
    this.#configUsers = users;
    for (const [id, t] of teams) this.teams.set(id, t);
    for (const [id, u] of users) this.users.set(id, u);
    // A database record that a removed config record shadowed comes back.
    return this.reloadAll();
  }

  /** The record of a key declared in the config file (read-only through the admin API). */
  isConfigKey(hash: string): boolean {
    return this.#configKeys.get(hash) !== undefined;
  }

  /** The keys declared in the config file, in the order declared. */
  configKeys(): readonly KeyRecord[] {
    return this.#configKeys.records;
  }

  isConfigTeam(id: string): boolean {
    return this.#configTeams.has(id);
  }

  /** A user declared in the config file (read-only through the admin API). */
  isConfigUser(id: string): boolean {
    return this.#configUsers.has(id);
  }

  /** The models added through the admin API. */
  get models(): readonly StoredModel[] {
    return this.#models;
  }

  /** Every database key (for budgets and admin views). */
  apiKeys(): IterableIterator<KeyRecord> {
    return this.#byHash.values();
  }

  /** Follows the bus, then loads everything (in that order, so no change falls between the two). */
  async start(bus: ChangeBus | undefined): Promise<void> {
    await bus?.subscribe(
      (c) => this.#apply(c, 0),
      () => void this.reloadAll().catch((err: unknown) => this.#failed(err)),
    );
    if (this.#pollChanges) await this.#poll();
    await this.reloadAll();
    this.#timer = setInterval(() => void this.reloadAll().catch((err: unknown) => this.#failed(err)), RELOAD_MS);
    this.#timer.unref();
    if (this.#pollChanges) {
      this.#pollTimer = setInterval(() => void this.#poll(), POLL_MS);
      this.#pollTimer.unref();
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    clearInterval(this.#pollTimer);
  }

  /**
   * Applies a change this replica just made (RecordStore), before the call that made it returns. Never
   * throws: a failed read is retried as a broadcast change is, and the broadcast reaches this cache too.
   */
  async refresh(c: RecordChange): Promise<void> {
    try {
      await this.#reload(c);
    } catch (err) {
      this.#failed(err);
      this.#apply(c, 1);
    }
  }

  /** Reloads one record; a failure is retried after RETRY_MS, RETRIES times. */
  #apply(c: RecordChange, attempt: number): void {
    this.#reload(c).catch((err: unknown) => {
      this.#failed(err);
      if (attempt < RETRIES) setTimeout(() => this.#apply(c, attempt + 1), RETRY_MS).unref();
    });
  }

  /** Applies the change-log rows of the last few seconds not applied yet (a lost broadcast is caught here). */
  async #poll(): Promise<void> {
    const db = this.#db;
    if (db === undefined || this.#polling) return;
    this.#polling = true;
    try {
      const rows = await db.query<{ seq: string; kind: RecordChange['kind']; id: string }>(
        `SELECT seq::text AS seq, kind, id FROM record_changes WHERE at > now() - ${POLL_WINDOW} ORDER BY seq`,
      );
      const now = Date.now();
      for (const r of rows) {
        if (this.#seen.has(r.seq)) continue;
        this.#seen.set(r.seq, now);
        this.#apply({ kind: r.kind, id: r.id }, 0);
      }
      for (const [seq, at] of this.#seen) if (now - at > 10_000) this.#seen.delete(seq);
    } catch {
      // The database is unreachable: the records cannot change meanwhile either; the next poll catches up.
    } finally {
      this.#polling = false;
    }
  }

  /** Reloads everything; calls that overlap run one after the other, so an older snapshot never lands last. */
  reloadAll(): Promise<void> {
    const db = this.#db;
    if (db === undefined) return Promise.resolve();
    if (this.#running !== undefined) {
      this.#again = true;
      return this.#running;
    }
    const run = async (): Promise<void> => {
      do {
        this.#again = false;
        await this.#reloadOnce(db);
      } while (this.#again);
    };
    this.#running = run().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #reloadOnce(db: Queryable): Promise<void> {
    // A record changed while the snapshot was read keeps its cached state (the broadcast already applied
    // it, or is applying it), and is read again after: the snapshot may be older.
    const during: RecordChange[] = [];
    this.#during.add(during);
    try {
      const [keys, teams, users] = await Promise.all([
        db.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys`),
        db.query<TeamRow>(`SELECT ${TEAM_COLUMNS} FROM teams`),
        db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users`),
      ]);
      const changed = (kind: RecordChange['kind'], id: string): boolean => during.some((c) => c.kind === kind && c.id === id);
      const byHash = new Map<string, KeyRecord>();
      const byId = new Map<string, KeyRecord>();
      const byPreviousId = new Map<string, KeyRecord>();
      const add = (k: KeyRecord): void => {
        byHash.set(k.hash, k);
        byId.set(k.id, k);
        for (const id of k.previousIds ?? []) byPreviousId.set(id, k);
      };
      for (const r of keys) if (!changed('key', r.key_hash)) add(keyFromRow(r));
      for (const c of during) {
        const current = c.kind === 'key' ? this.#byHash.get(c.id) : undefined;
        if (current !== undefined) add(current);
      }
      // Swapped whole, so a Check never sees half a reload.
      this.#byHash = byHash;
      this.#byId = byId;
      this.#byPreviousId = byPreviousId;
      const seenTeams = new Set(teams.map((r) => r.team_id));
      for (const r of teams)
        if (!this.#configTeams.has(r.team_id) && !changed('team', r.team_id)) this.teams.set(r.team_id, teamFromRow(r));
      for (const id of [...this.teams.keys()])
        if (!this.#configTeams.has(id) && !seenTeams.has(id) && !changed('team', id)) this.teams.delete(id);
      const seenUsers = new Set(users.map((r) => r.user_id));
      for (const r of users) if (!this.#configUsers.has(r.user_id) && !changed('user', r.user_id)) this.users.set(r.user_id, limitsFrom(r));
      for (const id of [...this.users.keys()])
        if (!this.#configUsers.has(id) && !seenUsers.has(id) && !changed('user', id)) this.users.delete(id);
      this.#noteShadowed(byHash.values(), seenTeams);
    } finally {
      this.#during.delete(during);
    }
    for (const c of during) await this.#reload(c);
    await this.#reloadModels(db);
  }

  /**
   * A key or team the config file declares with the id of one stored in the database: the config record
   * decides, and the stored one — its own models and limits — decides again once the config entry goes.
   * Neither is what an operator expects silently: each overlap is logged when it appears, and when a
   * config entry that hid a stored record is removed.
   */
  #noteShadowed(stored: Iterable<KeyRecord>, storedTeams: ReadonlySet<string>): void {
    const now = new Map<string, Record<string, string>>();
    for (const k of stored) if (this.#configKeys.get(k.hash) !== undefined) now.set(`key:${k.hash}`, { key_id: k.id });
    for (const id of storedTeams) if (this.#configTeams.has(id)) now.set(`team:${id}`, { team_id: id });
    for (const [k, who] of now) {
      if (this.#shadowed.has(k)) continue;
      this.#logger.warn(
        who,
        'declared in the config file and also stored in the database: the config entry decides, and the stored record applies again if the entry is removed; to retire the key or team, keep its entry with blocked: true',
      );
    }
    for (const [k, who] of this.#shadowed) {
      const stillStored = k.startsWith('key:') ? this.#byHash.has(k.slice(4)) : this.teams.has(k.slice(5));
      if (!now.has(k) && stillStored)
        this.#logger.warn(who, 'no longer declared in the config file: its record stored in the database applies again');
    }
    this.#shadowed = now;
  }

  /** Models are few: any change reloads them all, and the catalog is rebuilt only when they differ. */
  async #reloadModels(db: Queryable): Promise<void> {
    const rows = await db.query<ModelRow>(
      'SELECT model_id, model_name, litellm_params, model_info FROM models ORDER BY created_at, model_id',
    );
    const models = rows.map((r) => ({
      id: r.model_id,
      modelName: r.model_name,
      litellmParams: object(r.litellm_params),
      modelInfo: object(r.model_info),
    }));
    const json = JSON.stringify(models);
    if (json === this.#modelsJson) return;
    this.#models = models;
    this.#modelsJson = json;
    this.#onModels?.(models);
  }

  /** Reloads one record after any reload of it already in flight, so an older read never lands after a newer one. */
  #reload(c: RecordChange): Promise<void> {
    const db = this.#db;
    if (db === undefined) return Promise.resolve();
    for (const list of this.#during) list.push(c);
    const k = `${c.kind}:${c.id}`;
    const next = (this.#chains.get(k) ?? Promise.resolve()).then(
      () => this.#reloadOne(db, c),
      () => this.#reloadOne(db, c),
    );
    this.#chains.set(k, next);
    const done = (): void => {
      if (this.#chains.get(k) === next) this.#chains.delete(k);
    };
    next.then(done, done);
    return next;
  }

  async #reloadOne(db: Queryable, c: RecordChange): Promise<void> {
    if (c.kind === 'key') {
      const rows = await db.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys WHERE key_hash = $1`, [c.id]);
      // Changed in place: one synchronous step, so a Check sees the old record or the new one.
      const old = this.#byHash.get(c.id);
      if (old !== undefined) {
        this.#byId.delete(old.id);
        for (const id of old.previousIds ?? []) if (this.#byPreviousId.get(id) === old) this.#byPreviousId.delete(id);
      }
      this.#byHash.delete(c.id);
      const row = rows[0];
      if (row !== undefined) {
        const k = keyFromRow(row);
        this.#byHash.set(k.hash, k);
        this.#byId.set(k.id, k);
        for (const id of k.previousIds ?? []) this.#byPreviousId.set(id, k);
      }
    } else if (c.kind === 'team' && !this.#configTeams.has(c.id)) {
      const row = (await db.query<TeamRow>(`SELECT ${TEAM_COLUMNS} FROM teams WHERE team_id = $1`, [c.id]))[0];
      if (row === undefined) this.teams.delete(c.id);
      else this.teams.set(c.id, teamFromRow(row));
    } else if (c.kind === 'model') {
      await this.#reloadModels(db);
    } else if (c.kind === 'user' && !this.#configUsers.has(c.id)) {
      const row = (await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE user_id = $1`, [c.id]))[0];
      if (row === undefined) this.users.delete(c.id);
      else this.users.set(c.id, limitsFrom(row));
    }
  }

  #failed(err: unknown): void {
    this.#onError?.('database', 'reload');
    this.#logger.warn({ err: (err as Error).message }, 'could not reload records from the database; keeping the cached ones');
  }
}
