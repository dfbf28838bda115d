/**
 * What the admin API reads from the records database: keys (never their secret: only the hash, the key id
 * and LiteLLM's `key_name`), teams, spend sums and spend-log rows. Reads go to the database, not the cache,
 * so an admin sees what was just written. SQL only with parameters; every list is bounded.
 */
import { KEY_COLUMNS, TEAM_COLUMNS, type KeyRow, type TeamRow, type UserRow } from './records.js';
import type { Db, Queryable } from './db.js';

/** The longest an admin read may take: a dashboard polling spend never holds the pool the spend log needs. */
const ADMIN_STATEMENT_TIMEOUT = '5s';

/** `db` for the admin API's reads: each in its own transaction with a statement timeout. */
export function boundedReads(db: Db): Queryable {
  return {
    query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      return db.transaction(async (tx) => {
        await tx.query(`SET LOCAL statement_timeout = '${ADMIN_STATEMENT_TIMEOUT}'`);
        return tx.query<T>(sql, params);
      });
    },
    exec(sql: string): Promise<void> {
      return db.exec(sql);
    },
  };
}

export interface AdminKeyRow extends KeyRow {
  key_name: string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

export interface AdminTeamRow extends TeamRow {
  created_at: Date | string;
  updated_at: Date | string;
}

export interface KeyFilter {
  readonly userId?: string | undefined;
  readonly teamId?: string | undefined;
  readonly keyAlias?: string | undefined;
  /** The key's token (sha256). */
  readonly keyHash?: string | undefined;
  /** Tokens left out: the config file's keys, which shadow a database key with the same value. */
  readonly notHashes?: readonly string[] | undefined;
}

export interface SpendLogFilter {
  readonly keyId?: string | undefined;
  readonly requestId?: string | undefined;
  readonly userId?: string | undefined;
  readonly teamId?: string | undefined;
  readonly start?: Date | undefined;
  readonly end?: Date | undefined;
  readonly limit: number;
}

export interface SpendLogRow {
  request_id: string;
  /** The key's sha256 while the key exists in the database. */
  token: string | null;
  key_id: string | null;
  user_id: string | null;
  team_id: string | null;
  model: string;
  deployment: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cost: number;
  status: number;
  latency_ms: number;
  estimated: boolean;
  created_at: Date | string;
}

const ADMIN_KEY_COLUMNS = `${KEY_COLUMNS}, key_name, created_at, updated_at`;

export async function findKey(db: Queryable, hash: string): Promise<AdminKeyRow | undefined> {
  return (await db.query<AdminKeyRow>(`SELECT ${ADMIN_KEY_COLUMNS} FROM keys WHERE key_hash = $1`, [hash]))[0];
}

/** Builds `WHERE a = $1 AND b = $2` from the filters that are set. */
function where(conds: readonly (readonly [string, unknown])[], first = 1): { sql: string; params: unknown[] } {
  const set = conds.filter(([, v]) => v !== undefined);
  return {
    sql: set.length === 0 ? '' : `WHERE ${set.map(([c], i) => `${c} $${i + first}`).join(' AND ')}`,
    params: set.map(([, v]) => v),
  };
}

function keyWhere(f: KeyFilter): { sql: string; params: unknown[] } {
  const w = where([
    ['user_id =', f.userId],
    ['team_id =', f.teamId],
    ['key_alias =', f.keyAlias],
    ['key_hash =', f.keyHash],
  ]);
  if (f.notHashes === undefined || f.notHashes.length === 0) return w;
  return {
    sql: `${w.sql === '' ? 'WHERE' : `${w.sql} AND`} NOT (key_hash = ANY($${w.params.length + 1}::text[]))`,
    params: [...w.params, f.notHashes],
  };
}

/** Keys newest first, `limit` of them from `offset`, and how many match in all. */
export async function listKeys(
  db: Queryable,
  f: KeyFilter,
  offset: number,
  limit: number,
): Promise<{ rows: AdminKeyRow[]; total: number }> {
  const w = keyWhere(f);
  const [rows, count] = await Promise.all([
    db.query<AdminKeyRow>(
      `SELECT ${ADMIN_KEY_COLUMNS} FROM keys ${w.sql} ORDER BY created_at DESC, key_hash LIMIT $${w.params.length + 1} OFFSET $${w.params.length + 2}`,
      [...w.params, limit, offset],
    ),
    db.query<{ n: string | number }>(`SELECT count(*) AS n FROM keys ${w.sql}`, w.params),
  ]);
  return { rows, total: Number(count[0]?.n ?? 0) };
}

export async function findTeam(db: Queryable, id: string): Promise<AdminTeamRow | undefined> {
  return (await db.query<AdminTeamRow>(`SELECT ${TEAM_COLUMNS}, created_at, updated_at FROM teams WHERE team_id = $1`, [id]))[0];
}

/**
 * Spend of each key since its `since` (ms: the start of its budget period, or 0 for all time), from the spend
 * log: the rows under its id and under the ids it had before a regenerate (`previousIds`). A request that ended
 * on a replica still buffering its row when the key was regenerated lands under the old id (the regenerate's
 * own move is done by then, and its later sweep moves it seconds after): counted from the moment it lands,
 * not from the sweep. Keyed by the key's current id.
 */
export async function spendOfKeys(
  db: Queryable,
  keys: readonly { readonly id: string; readonly since: number; readonly previousIds?: readonly string[] | undefined }[],
): Promise<Map<string, number>> {
  if (keys.length === 0) return new Map();
  const owners: string[] = [];
  const ids: string[] = [];
  const since: string[] = [];
  for (const k of keys) {
    const from = new Date(k.since).toISOString();
    for (const id of [k.id, ...(k.previousIds ?? [])]) {
      owners.push(k.id);
      ids.push(id);
      since.push(from);
    }
  }
  const rows = await db.query<{ owner: string; spend: number }>(
    `SELECT k.owner, sum(s.cost) AS spend
     FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(owner, key_id, since)
     JOIN spend_logs s ON s.key_id = k.key_id AND s.created_at >= k.since
     GROUP BY k.owner`,
    [owners, ids, since],
  );
  return new Map(rows.map((r) => [r.owner, Number(r.spend)]));
}

/** Spend of a team or user since `since` (ms; 0: all time). */
export async function spendOf(db: Queryable, column: 'team_id' | 'user_id', id: string, since = 0): Promise<number> {
  const rows = await db.query<{ spend: number | null }>(
    `SELECT sum(cost) AS spend FROM spend_logs WHERE ${column} = $1 AND created_at >= $2`,
    [id, new Date(since).toISOString()],
  );
  return Number(rows[0]?.spend ?? 0);
}

/**
 * Spend of each team or user since its `since` (ms; 0: all time), in one pass over the spend log; keyed by id,
 * absent when nothing was spent.
 */
export async function spendOfEach(
  db: Queryable,
  column: 'team_id' | 'user_id',
  subjects: readonly { readonly id: string; readonly since: number }[],
): Promise<Map<string, number>> {
  if (subjects.length === 0) return new Map();
  const rows = await db.query<{ id: string; spend: number }>(
    `SELECT t.id, sum(s.cost) AS spend
     FROM unnest($1::text[], $2::timestamptz[]) AS t(id, since)
     JOIN spend_logs s ON s.${column} = t.id AND s.created_at >= t.since
     GROUP BY t.id`,
    [subjects.map((s) => s.id), subjects.map((s) => new Date(s.since).toISOString())],
  );
  return new Map(rows.map((r) => [r.id, Number(r.spend)]));
}

/** Every team of the records database, at most `limit`, by id. */
export function listTeams(db: Queryable, limit: number): Promise<AdminTeamRow[]> {
  return db.query<AdminTeamRow>(`SELECT ${TEAM_COLUMNS}, created_at, updated_at FROM teams ORDER BY team_id LIMIT $1`, [limit]);
}

/**
 * The first `perTeam` database keys of each team (newest first, as listKeys orders them), but for the tokens
 * in `notHashes` (config keys), and how many each team has in all.
 */
export async function keysOfTeams(
  db: Queryable,
  teamIds: readonly string[],
  notHashes: readonly string[],
  perTeam: number,
): Promise<{ rows: AdminKeyRow[]; totals: Map<string, number> }> {
  if (teamIds.length === 0) return { rows: [], totals: new Map() };
  const rows = await db.query<AdminKeyRow & { n: string | number; total: string | number }>(
    `SELECT * FROM (
       SELECT ${ADMIN_KEY_COLUMNS},
              row_number() OVER (PARTITION BY team_id ORDER BY created_at DESC, key_hash) AS n,
              count(*) OVER (PARTITION BY team_id) AS total
       FROM keys WHERE team_id = ANY($1::text[]) AND NOT (key_hash = ANY($2::text[]))
     ) k WHERE n <= $3 ORDER BY team_id, n`,
    [teamIds, notHashes, perTeam],
  );
  const totals = new Map<string, number>();
  for (const r of rows) if (r.team_id !== null) totals.set(r.team_id, Number(r.total));
  return { rows, totals };
}

export interface AdminUserRow extends UserRow {
  metadata: unknown;
  created_at: Date | string;
  updated_at: Date | string;
}

export interface UserFilter {
  /** LiteLLM's `user_ids` of one id: the users whose id contains it, case aside. */
  readonly idContains?: string | undefined;
  /** LiteLLM's `user_ids` of several: exactly these. */
  readonly ids?: readonly string[] | undefined;
  /** Users left out: those the config file declares, which shadow a database user with the same id. */
  readonly notIds: readonly string[];
}

/** Database users newest first, `limit` of them from `offset`, and how many match in all. */
export async function listUsers(
  db: Queryable,
  f: UserFilter,
  offset: number,
  limit: number,
): Promise<{ rows: AdminUserRow[]; total: number }> {
  const conds: string[] = ['NOT (user_id = ANY($1::text[]))'];
  const params: unknown[] = [f.notIds];
  if (f.idContains !== undefined) {
    params.push(f.idContains.toLowerCase());
    conds.push(`strpos(lower(user_id), $${params.length}) > 0`);
  }
  if (f.ids !== undefined) {
    params.push(f.ids);
    conds.push(`user_id = ANY($${params.length}::text[])`);
  }
  const w = `WHERE ${conds.join(' AND ')}`;
  const [rows, count] = await Promise.all([
    db.query<AdminUserRow>(
      `SELECT user_id, max_budget, budget_duration, rpm_limit, tpm_limit, max_parallel_requests, metadata, created_at, updated_at
       FROM users ${w} ORDER BY created_at DESC, user_id LIMIT $${params.length + 1} OFFSET $${params.length + 2}`,
      [...params, limit, offset],
    ),
    db.query<{ n: string | number }>(`SELECT count(*) AS n FROM users ${w}`, params),
  ]);
  return { rows, total: Number(count[0]?.n ?? 0) };
}

/** How many database keys each user has (LiteLLM's key_count), but for the tokens in `notHashes`; absent: none. */
export async function keyCounts(db: Queryable, userIds: readonly string[], notHashes: readonly string[]): Promise<Map<string, number>> {
  if (userIds.length === 0) return new Map();
  const rows = await db.query<{ user_id: string; n: string | number }>(
    'SELECT user_id, count(*) AS n FROM keys WHERE user_id = ANY($1::text[]) AND NOT (key_hash = ANY($2::text[])) GROUP BY user_id',
    [userIds, notHashes],
  );
  return new Map(rows.map((r) => [r.user_id, Number(r.n)]));
}

/**
 * `past (old_id, key_id)`: each id a key had before a regenerate, and the key it is now. Rows still under a
 * past id (until the regenerate's sweep has moved them) are shown as the key's.
 */
const PAST_IDS = `past AS (
       SELECT DISTINCT ON (p.old_id) p.old_id, k.key_id
       FROM keys k CROSS JOIN LATERAL jsonb_array_elements_text(k.previous_key_ids) AS p(old_id)
       WHERE k.previous_key_ids <> '[]'::jsonb
       ORDER BY p.old_id, k.updated_at DESC
     )`;

/**
 * Keys by total spend, highest first (LiteLLM's /spend/keys). Rows under an id a key had before a regenerate
 * count for that key (as spendOfKeys), so a key does not show less, and its past id as a key of its own, until
 * the regenerate's sweep has moved them.
 */
export async function topKeySpend(
  db: Queryable,
  limit: number,
): Promise<{ key_id: string; token: string | null; key_alias: string | null; spend: number; requests: number }[]> {
  const rows = await db.query<{ key_id: string; token: string | null; key_alias: string | null; spend: number; requests: string | number }>(
    `WITH per_id AS (
       SELECT key_id, sum(cost) AS spend, count(*) AS requests FROM spend_logs WHERE key_id IS NOT NULL GROUP BY key_id
     ), ${PAST_IDS}
     SELECT s.key_id, k.key_hash AS token, k.key_alias, s.spend, s.requests
     FROM (SELECT coalesce(past.key_id, per_id.key_id) AS key_id, sum(per_id.spend) AS spend, sum(per_id.requests) AS requests
           FROM per_id LEFT JOIN past ON past.old_id = per_id.key_id
           GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $1) s
     LEFT JOIN keys k ON k.key_id = s.key_id
     ORDER BY s.spend DESC, s.key_id`,
    [limit],
  );
  return rows.map((r) => ({
    key_id: r.key_id,
    token: r.token,
    key_alias: r.key_alias,
    spend: Number(r.spend),
    requests: Number(r.requests),
  }));
}

/**
 * The spend-log rows a filter names (its key, request, user, team and time range). A key's rows include those
 * still under an id it had before a regenerate (the key_id index serves the list of ids).
 */
function spendWhere(f: Omit<SpendLogFilter, 'limit'>): { sql: string; params: unknown[] } {
  const w = where([
    ['request_id =', f.requestId],
    ['user_id =', f.userId],
    ['team_id =', f.teamId],
    ['created_at >=', f.start],
    ['created_at <', f.end],
  ]);
  if (f.keyId === undefined) return w;
  const n = w.params.length + 1;
  return {
    sql:
      `${w.sql === '' ? 'WHERE' : `${w.sql} AND`} key_id = ANY (array_append(ARRAY(` +
      `SELECT jsonb_array_elements_text(previous_key_ids) FROM keys WHERE key_id = $${n}), $${n}::text))`,
    params: [...w.params, f.keyId],
  };
}

export async function spendLogs(db: Queryable, f: SpendLogFilter): Promise<SpendLogRow[]> {
  const w = spendWhere(f);
  return db.query<SpendLogRow>(
    `WITH ${PAST_IDS}
     SELECT s.request_id, coalesce(past.key_id, s.key_id) AS key_id, s.user_id, s.team_id, s.model, s.deployment,
            s.prompt_tokens, s.completion_tokens, s.cost, s.status, s.latency_ms, s.estimated, s.created_at, k.key_hash AS token
     FROM (SELECT request_id, key_id, user_id, team_id, model, deployment, prompt_tokens, completion_tokens, cost, status,
                  latency_ms, estimated, created_at
           FROM spend_logs ${w.sql} ORDER BY created_at DESC LIMIT $${w.params.length + 1}) s
     LEFT JOIN past ON past.old_id = s.key_id
     LEFT JOIN keys k ON k.key_id = coalesce(past.key_id, s.key_id)
     ORDER BY s.created_at DESC`,
    [...w.params, f.limit],
  );
}

export interface DailySpendRow {
  /** `YYYY-MM-DD`, UTC. */
  readonly day: string;
  readonly key_id: string | null;
  /** The key's token (sha256), while the key exists. */
  readonly token: string | null;
  readonly user_id: string | null;
  readonly model: string;
  readonly spend: number;
}

/** Spend per UTC day, key, user and model, oldest day first (LiteLLM's summarized /spend/logs); at most `limit` + 1 rows. */
export async function dailySpend(db: Queryable, f: Omit<SpendLogFilter, 'limit'>, limit: number): Promise<DailySpendRow[]> {
  const w = spendWhere(f);
  const rows = await db.query<DailySpendRow>(
    `WITH ${PAST_IDS}
     SELECT s.day, s.key_id, k.key_hash AS token, s.user_id, s.model, s.spend
     FROM (SELECT d.day, coalesce(past.key_id, d.key_id) AS key_id, d.user_id, d.model, sum(d.spend) AS spend
           FROM (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, key_id, user_id, model, sum(cost) AS spend
                 FROM spend_logs ${w.sql} GROUP BY 1, 2, 3, 4) d
           LEFT JOIN past ON past.old_id = d.key_id
           GROUP BY 1, 2, 3, 4 ORDER BY 1 LIMIT $${w.params.length + 1}) s
     LEFT JOIN keys k ON k.key_id = s.key_id
     ORDER BY s.day`,
    [...w.params, limit + 1],
  );
  return rows.map((r) => ({ ...r, spend: Number(r.spend) }));
}

/** Spend and request count over a time range (all time when open). */
export async function totalSpend(
  db: Queryable,
  start: Date | undefined,
  end: Date | undefined,
): Promise<{ spend: number; requests: number }> {
  const w = where([
    ['created_at >=', start],
    ['created_at <', end],
  ]);
  const rows = await db.query<{ spend: number | null; requests: string | number }>(
    `SELECT sum(cost) AS spend, count(*) AS requests FROM spend_logs ${w.sql}`,
    w.params,
  );
  return { spend: Number(rows[0]?.spend ?? 0), requests: Number(rows[0]?.requests ?? 0) };
}
