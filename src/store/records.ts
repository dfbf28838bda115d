/**
 * Keys, teams and users kept in the records database (made through the admin API), and the in-process
 * cache that Check reads: it never waits on the database. The cache is loaded at boot, reloads one record
 * when the change bus says it changed (every replica within milliseconds), and reloads everything after a
 * missed broadcast and every RELOAD_MS as a safety net. Records declared in the config file come first and
 * are read-only.
 */
import type { TeamRecord } from '../core/decide.js';
import { keyId, type KeyDirectory, type KeyRecord, type Limits } from '../identity/keys.js';
import type { StoreErrorHook } from './counters.js';
import type { Logger } from '../telemetry/logger.js';
import type { ChangeBus, RecordChange } from './change-bus.js';
import type { Queryable } from './db.js';

const RELOAD_MS = 30_000;

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

interface UserRow extends LimitColumns {
  user_id: string;
}

export const KEY_COLUMNS =
  'key_hash, key_alias, models, user_id, team_id, blocked, expires_at, metadata, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests';
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
    limits: limitsFrom(r),
    metadata: object(r.metadata),
    source: 'api',
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
  readonly #db: Queryable;
  readonly #bus: ChangeBus;
  constructor(db: Queryable, bus: ChangeBus) {
    this.#db = db;
    this.#bus = bus;
  }

  /** Inserts or updates a key; `keyName` (LiteLLM's `sk-...abcd`) is kept when not given. */
  async putKey(k: KeyRecord, keyName?: string): Promise<void> {
    const l = k.limits;
    await this.#db.query(
      `INSERT INTO keys (key_hash, key_id, key_alias, models, user_id, team_id, blocked, expires_at, metadata,
                         max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests, key_name)
       VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $14, $15)
       ON CONFLICT (key_hash) DO UPDATE SET key_alias = $3, models = $4::jsonb, user_id = $5, team_id = $6, blocked = $7,
         expires_at = $8, metadata = $9::jsonb, max_budget = $10, budget_duration = $11, rpm_limit = $12, tpm_limit = $13,
         max_parallel_requests = $14, key_name = COALESCE($15, keys.key_name), updated_at = now()`,
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
      ],
    );
    await this.#bus.publish({ kind: 'key', id: k.hash });
  }

  /** Gives a key a new secret (same record, new hash); false when the old one does not exist. */
  async rehashKey(oldHash: string, newHash: string, keyName: string): Promise<boolean> {
    const rows = await this.#db.query(
      'UPDATE keys SET key_hash = $2, key_id = $3, key_name = $4, updated_at = now() WHERE key_hash = $1 RETURNING key_hash',
      [oldHash, newHash, keyId(newHash), keyName],
    );
    // The old hash first: every replica refuses the old key before the new one works anywhere.
    await this.#bus.publish({ kind: 'key', id: oldHash });
    await this.#bus.publish({ kind: 'key', id: newHash });
    return rows.length > 0;
  }

  /** Inserts a team (`create`: false when it exists) or updates it. */
  async putTeam(t: TeamRecord, create: boolean): Promise<boolean> {
    const l = t.limits;
    const rows = await this.#db.query(
      `INSERT INTO teams (team_id, team_alias, models, blocked, metadata, max_budget, budget_duration, rpm_limit, tpm_limit,
                          max_parallel_requests)
       VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6, $7, $8, $9, $10)
       ON CONFLICT (team_id) DO ${
         create
           ? 'NOTHING'
           : `UPDATE SET team_alias = $2, models = $3::jsonb, blocked = $4, metadata = $5::jsonb,
         max_budget = $6, budget_duration = $7, rpm_limit = $8, tpm_limit = $9, max_parallel_requests = $10, updated_at = now()`
       }
       RETURNING team_id`,
      [
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
      ],
    );
    await this.#bus.publish({ kind: 'team', id: t.teamId });
    return rows.length > 0;
  }

  /** Adds a model; false when its id is taken. `litellm_params.api_key` must already be sealed or a reference. */
  async addModel(m: StoredModel): Promise<boolean> {
    const rows = await this.#db.query(
      `INSERT INTO models (model_id, model_name, litellm_params, model_info) VALUES ($1, $2, $3::jsonb, $4::jsonb)
       ON CONFLICT (model_id) DO NOTHING RETURNING model_id`,
      [m.id, m.modelName, JSON.stringify(m.litellmParams), JSON.stringify(m.modelInfo)],
    );
    await this.#bus.publish({ kind: 'model', id: m.id });
    return rows.length > 0;
  }

  async deleteModel(id: string): Promise<boolean> {
    const rows = await this.#db.query('DELETE FROM models WHERE model_id = $1 RETURNING model_id', [id]);
    await this.#bus.publish({ kind: 'model', id });
    return rows.length > 0;
  }

  async deleteKey(hash: string): Promise<boolean> {
    const rows = await this.#db.query('DELETE FROM keys WHERE key_hash = $1 RETURNING key_hash', [hash]);
    await this.#bus.publish({ kind: 'key', id: hash });
    return rows.length > 0;
  }

  async setKeyBlocked(hash: string, blocked: boolean): Promise<boolean> {
    const rows = await this.#db.query('UPDATE keys SET blocked = $2, updated_at = now() WHERE key_hash = $1 RETURNING key_hash', [
      hash,
      blocked,
    ]);
    await this.#bus.publish({ kind: 'key', id: hash });
    return rows.length > 0;
  }
}

/**
 * What Check reads: the config's keys, teams and users, then the database's. `teams` and `users` are live
 * maps (updated in place), so holders of them see changes without being handed new ones.
 */
export class RecordCache implements KeyDirectory {
  readonly teams = new Map<string, TeamRecord>();
  readonly users = new Map<string, Limits>();
  #configKeys: KeyDirectory;
  #configTeams: ReadonlyMap<string, TeamRecord>;
  #configUsers: ReadonlyMap<string, Limits>;
  #byHash = new Map<string, KeyRecord>();
  #byId = new Map<string, KeyRecord>();
  /** Models added through the admin API, in the order they were added. */
  #models: readonly StoredModel[] = [];
  #modelsJson = '[]';
  readonly #onModels: ((models: readonly StoredModel[]) => void) | undefined;
  readonly #db: Queryable | undefined;
  readonly #logger: Logger;
  readonly #onError: StoreErrorHook | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Changes seen while full reloads are running (one list per reload). */
  readonly #during = new Set<RecordChange[]>();
  #running: Promise<void> | undefined;
  #again = false;

  constructor(opts: {
    configKeys: KeyDirectory;
    configTeams: ReadonlyMap<string, TeamRecord>;
    configUsers: ReadonlyMap<string, Limits>;
    db: Queryable | undefined;
    logger: Logger;
    /** Told when the database's models change (each replica rebuilds its routing catalog). */
    onModels?: ((models: readonly StoredModel[]) => void) | undefined;
    onError?: StoreErrorHook | undefined;
  }) {
    this.#onError = opts.onError;
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

  /** A reloaded config file's keys, teams and users (SIGHUP), swapped in one synchronous step. */
  setConfig(keys: KeyDirectory, teams: ReadonlyMap<string, TeamRecord>, users: ReadonlyMap<string, Limits>): Promise<void> {
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

  isConfigTeam(id: string): boolean {
    return this.#configTeams.has(id);
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
      (c) => void this.#reload(c).catch((err: unknown) => this.#failed(err)),
      () => void this.reloadAll().catch((err: unknown) => this.#failed(err)),
    );
    await this.reloadAll();
    this.#timer = setInterval(() => void this.reloadAll().catch((err: unknown) => this.#failed(err)), RELOAD_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
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
      for (const r of keys) {
        if (changed('key', r.key_hash)) continue;
        const k = keyFromRow(r);
        byHash.set(k.hash, k);
        byId.set(k.id, k);
      }
      for (const c of during) {
        const current = c.kind === 'key' ? this.#byHash.get(c.id) : undefined;
        if (current !== undefined) {
          byHash.set(current.hash, current);
          byId.set(current.id, current);
        }
      }
      // Swapped whole, so a Check never sees half a reload.
      this.#byHash = byHash;
      this.#byId = byId;
      const seenTeams = new Set(teams.map((r) => r.team_id));
      for (const r of teams)
        if (!this.#configTeams.has(r.team_id) && !changed('team', r.team_id)) this.teams.set(r.team_id, teamFromRow(r));
      for (const id of [...this.teams.keys()])
        if (!this.#configTeams.has(id) && !seenTeams.has(id) && !changed('team', id)) this.teams.delete(id);
      const seenUsers = new Set(users.map((r) => r.user_id));
      for (const r of users) if (!this.#configUsers.has(r.user_id) && !changed('user', r.user_id)) this.users.set(r.user_id, limitsFrom(r));
      for (const id of [...this.users.keys()])
        if (!this.#configUsers.has(id) && !seenUsers.has(id) && !changed('user', id)) this.users.delete(id);
    } finally {
      this.#during.delete(during);
    }
    for (const c of during) await this.#reload(c);
    await this.#reloadModels(db);
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

  async #reload(c: RecordChange): Promise<void> {
    const db = this.#db;
    if (db === undefined) return;
    for (const list of this.#during) list.push(c);
    if (c.kind === 'key') {
      const rows = await db.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM keys WHERE key_hash = $1`, [c.id]);
      // Changed in place: one synchronous step, so a Check sees the old record or the new one.
      const old = this.#byHash.get(c.id);
      if (old !== undefined) this.#byId.delete(old.id);
      this.#byHash.delete(c.id);
      const row = rows[0];
      if (row !== undefined) {
        const k = keyFromRow(row);
        this.#byHash.set(k.hash, k);
        this.#byId.set(k.id, k);
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
