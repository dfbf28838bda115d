/**
 * The admin API, LiteLLM-compatible in its paths and fields (../shared/CONTRACT.md, "HTTP gateway"): keys,
 * teams, spend and models. The caller was authorized before it gets here (the master key, or a JWT in an
 * admin group: core/decide.ts). Every body and query string is validated strictly; writes go to the records
 * database and are broadcast, so every replica's Check sees them within milliseconds. A generated key is
 * shown once; only its sha256 is stored, and no answer or log line carries a key.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { TeamRecord } from '../core/decide.js';
import { formatPath } from '../config/issues.js';
import { setAsideLiteLlmKeys } from '../config/litellm-compat.js';
import type { ErrorCode } from '../errors/codes.js';
import { keyId, sha256Hex, type KeyRecord, type Limits } from '../identity/keys.js';
import type { SecretBox } from '../identity/secret-box.js';
import type { ModelCatalog } from '../routing/deployments.js';
import {
  boundedReads,
  findKey,
  findTeam,
  keyCounts,
  keysOfTeams,
  listKeys,
  listTeams,
  listUsers,
  spendLogs,
  dailySpend,
  type DailySpendRow,
  spendOf,
  spendOfEach,
  spendOfKeys,
  topKeySpend,
  totalSpend,
  type AdminKeyRow,
  type KeyFilter,
  type UserFilter,
} from '../store/admin-queries.js';
import { afterDuration, budgetPeriod, budgetPeriodOf } from '../store/counters.js';
import type { BudgetCalendar } from '../store/calendar.js';
import type { Db, Queryable } from '../store/db.js';
import { findUser, keyFromRow, teamFromRow, userFromRow, type RecordStore, type StoredModel, type StoredUser } from '../store/records.js';
import type { Logger } from '../telemetry/logger.js';
import { modelView, prepareModel, probeDeployments } from './admin-models.js';
import * as S from './admin-schemas.js';
import { sendError } from './forward.js';
import type { HttpResponse } from './http-response.js';

export interface AdminDeps {
  readonly db: Db;
  readonly records: RecordStore;
  /** The replica's cache: config records (read-only here) and the database's models. */
  readonly cache: {
    get(hash: string): KeyRecord | undefined;
    byId(id: string): KeyRecord | undefined;
    /** By id, or the key a regenerate gave that id's spend (KeyRecord.previousIds). */
    current(id: string): KeyRecord | undefined;
    isConfigKey(hash: string): boolean;
    /** The keys declared in the config file, in the order declared. */
    configKeys(): readonly KeyRecord[];
    isConfigTeam(id: string): boolean;
    isConfigUser(id: string): boolean;
    readonly users: ReadonlyMap<string, Limits>;
    readonly teams: ReadonlyMap<string, TeamRecord>;
    readonly models: readonly StoredModel[];
  };
  readonly catalog: () => ModelCatalog;
  readonly allowedApiBases: () => readonly string[];
  /** Seals backend api_keys; absent when this process has no shared secret (no master_key nor context_signing_key). */
  readonly box: SecretBox | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly logger: Logger;
  readonly now?: () => number;
  /** When budget periods reset (litellm_settings.timezone, budget_reset_time): `budget_reset_at`, period spend. */
  readonly calendar: BudgetCalendar;
  /** True for a value tollgate holds as its own secret: never accepted as a backend api_key reference. */
  readonly ownSecret?: ((value: string) => boolean) | undefined;
  /**
   * Writes this replica's spend rows of requests that have ended (their settlements, then the spend log), so
   * a regenerate moves them with the key in its transaction rather than finding them under the old id later.
   */
  readonly flushSpend?: (() => Promise<void>) | undefined;
  /** Moves the budget spend counted this period from one key id to another (regenerate). */
  readonly carrySpend?: ((fromKeyId: string, toKeyId: string, limits: Limits) => Promise<void>) | undefined;
  /**
   * A subject's limits changed (`key:<id>`, `team:<id>`, `user:<id>`): a budget set where there was none, or
   * in another period, starts from this period's logged spend (seedChangedBudget).
   */
  readonly budgetChanged?: ((subject: string, before: Limits | undefined, after: Limits) => Promise<void>) | undefined;
}

/** Who called (for the audit line): never a key. */
export interface AdminCaller {
  readonly requestId: string;
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  /** The master key or an admin group; otherwise a virtual key reading its own record, `key`. */
  readonly admin: boolean;
  /** The caller's own key, for GET /key/info about itself. */
  readonly key: KeyRecord | undefined;
}

type Reply =
  | { status: number; body: unknown; ignored?: readonly string[]; truncated?: boolean }
  | { error: ErrorCode; message: string; param?: string };

const KEY_BYTES = 24; // 192 random bits, base64url: `sk-` + 32 characters
const TAKEN = (field: string): string => `${field}: this key exists already: choose another value, or leave it out`;
/** The most (day, key, user, model) sums one summarized /spend/logs adds up. */
const SUMMARY_ROWS = 100_000;
/**
 * /team/info and /user/info list the first this many keys (config keys, then the newest), with `keys_total`
 * counting them all (LiteLLM lists every one; a team of thousands would make one answer of megabytes):
 * /key/list?team_id= or ?user_id= pages.
 */
const INFO_KEYS = 100;
/** /team/list shows each team's first this many keys, with `keys_total` (/team/info and /key/list show the rest). */
const LIST_KEYS = 10;
/** The most teams /team/list reads from the database (every replica holds them all in memory besides). */
const TEAM_LIST_MAX = 10_000;

/** A key in a listing: declared in the config file, or a row of the records database. */
type ListedKey = { readonly config: KeyRecord } | { readonly row: AdminKeyRow };

interface DaySpend {
  spend: number;
  readonly keys: Map<string, number>;
  readonly users: Map<string, number>;
  readonly models: Map<string, number>;
}

/** LiteLLM's 400 for an alias another key has (aliases name one key, for /key/delete and /key/list). */
const ALIAS_TAKEN: Reply = {
  error: 'invalid_body',
  param: 'key_alias',
  message: 'key_alias: another key has this alias: choose another (aliases are unique across keys, as in LiteLLM)',
};

/**
 * LiteLLM's fields each family of POST routes accepts and names in x-tollgate-ignored-fields: the label-only
 * ones, and the restrictions and spend that got this far only empty (`{}`, `[]`, 0: no-ops).
 */
const IGNORED_FIELDS: readonly (readonly [string, readonly string[]])[] = [
  ['POST /key/', [...S.IGNORED_KEY_FIELDS, ...S.REFUSED_KEY_FIELDS, 'spend']],
  ['POST /team/', [...S.IGNORED_TEAM_FIELDS, ...S.REFUSED_TEAM_FIELDS]],
  ['POST /user/', [...S.IGNORED_USER_FIELDS, ...S.REFUSED_USER_FIELDS, 'spend']],
];

/** The admin routes: `METHOD /path` → handler. */
const ROUTES = new Set([
  'POST /key/generate',
  'GET /key/info',
  'GET /key/list',
  'POST /key/update',
  'POST /key/delete',
  'POST /key/block',
  'POST /key/unblock',
  'POST /key/regenerate',
  'POST /team/new',
  'GET /team/info',
  'POST /team/update',
  'POST /team/delete',
  'GET /team/list',
  'POST /user/new',
  'GET /user/info',
  'GET /user/list',
  'POST /user/update',
  'POST /user/delete',
  'GET /spend/keys',
  'GET /spend/logs',
  'GET /global/spend',
  'GET /model/info',
  'POST /model/new',
  'POST /model/delete',
  'GET /health',
]);

/** LiteLLM's `POST /key/{key}/regenerate` (the path is normalised: lower-case, as tokens are). */
const REGENERATE_PATH = /^\/key\/([^/]+)\/regenerate$/;

export function isAdminRoute(method: string, path: string): boolean {
  return ROUTES.has(`${method} ${path}`) || (method === 'POST' && REGENERATE_PATH.test(path));
}

/** Each admin path and the methods it takes (`GET`, `POST`), for the Allow header of a 405. */
const METHODS = new Map<string, string>();
for (const route of ROUTES) {
  const [method = '', path = ''] = route.split(' ');
  METHODS.set(path, METHODS.has(path) ? `${METHODS.get(path)}, ${method}` : method);
}

/** The methods an admin path takes (`GET`, `POST`, comma-separated as in Allow); undefined for a path that is none. */
export function adminMethods(path: string): string | undefined {
  return METHODS.get(path) ?? (REGENERATE_PATH.test(path) ? 'POST' : undefined);
}

export class AdminApi {
  readonly #d: Omit<AdminDeps, 'db'> & { readonly db: Queryable };
  constructor(deps: AdminDeps) {
    // Reads and writes alike go through here; writes go through RecordStore. Every read is time-bounded.
    this.#d = { ...deps, db: boundedReads(deps.db) };
  }

  /** Answers one admin request (path normalised; `search` the raw query string; `body` as received). */
  async handle(
    res: HttpResponse,
    method: string,
    path: string,
    search: string,
    body: Buffer | undefined,
    caller: AdminCaller,
  ): Promise<void> {
    let reply: Reply;
    try {
      reply = await this.#route(method, path, new URLSearchParams(search), body, caller);
    } catch (err) {
      const refused = inputRefused(err);
      if (refused !== undefined) {
        this.#d.logger.warn(
          { err: (err as Error).message, sqlstate: refused, path, request_id: caller.requestId },
          'admin input refused by the database',
        );
        reply = {
          error: 'invalid_body',
          message: `A value in this request does not fit the records database (SQLSTATE ${refused}: out of range, too long or not valid text): check the numbers, dates and text sent.`,
        };
      } else {
        this.#d.logger.error({ err: (err as Error).message, path, request_id: caller.requestId }, 'admin request failed');
        reply = { error: 'store_unavailable', message: 'The records database did not answer: retry shortly.' };
      }
    }
    if ('error' in reply) return sendError(res, reply.error, reply.message, caller.requestId, undefined, undefined, reply.param);
    const text = JSON.stringify(reply.body);
    const headers: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      'x-tollgate-request-id': caller.requestId,
      'x-request-id': caller.requestId,
    };
    if (reply.ignored !== undefined && reply.ignored.length > 0)
      headers['x-tollgate-ignored-fields'] = headerSafe(reply.ignored.join(', '));
    // LiteLLM's header for a spend-log list cut at its limit, so a script can tell it got only the newest rows.
    if (reply.truncated === true) headers['x-litellm-spend-logs-truncated'] = 'true';
    res.writeHead(reply.status, headers);
    res.end(text);
  }

  #route(method: string, path: string, query: URLSearchParams, body: Buffer | undefined, caller: AdminCaller): Promise<Reply> | Reply {
    const route = `${method} ${path}`;
    if (method === 'GET') {
      const bad = S.unstorableText(Object.fromEntries(query));
      if (bad !== undefined) return { error: 'invalid_body', param: bad.field, message: bad.message };
      switch (route) {
        case 'GET /key/info':
          return withQuery(S.keyInfoQuery, query, (q) => this.#keyInfo(q.key, caller));
        case 'GET /key/list':
          return withQuery(S.keyListQuery, query, (q) => this.#keyList(q));
        case 'GET /team/info':
          return withQuery(S.teamInfoQuery, query, (q) => this.#teamInfo(q.team_id));
        case 'GET /team/list':
          return withQuery(S.teamListQuery, query, () => this.#teamList());
        case 'GET /user/list':
          return withQuery(S.userListQuery, query, (q) => this.#userList(q));
        case 'GET /user/info':
          return withQuery(S.userInfoQuery, query, (q) => this.#userInfo(q.user_id));
        case 'GET /spend/keys':
          return withQuery(S.spendKeysQuery, query, (q) => this.#spendKeys(q.limit));
        case 'GET /spend/logs':
          return withQuery(S.spendLogsQuery, query, (q) => this.#spendLogs(q));
        case 'GET /global/spend':
          return withQuery(S.globalSpendQuery, query, async (q) => ({
            status: 200,
            body: { ...(await totalSpend(this.#d.db, q.start_date, q.end_date)), max_budget: null },
          }));
        case 'GET /model/info':
          return withQuery(S.modelInfoQuery, query, (q) => this.#modelInfo(q.litellm_model_id));
        case 'GET /health':
          return withQuery(S.emptyQuery, query, async () => ({ status: 200, body: await probeDeployments(this.#d.catalog()) }));
        default:
          return notFound(route);
      }
    }
    const json = parseJson(body);
    if (!('value' in json)) return json;
    const bad = S.unstorableText(json.value);
    if (bad !== undefined) return { error: 'invalid_body', param: bad.field, message: bad.message };
    const regenerated = REGENERATE_PATH.exec(path);
    if (method === 'POST' && regenerated !== null) {
      // LiteLLM's POST /key/{key}/regenerate: by token only, since a path lands in access logs.
      const ref = regenerated[1] ?? '';
      if (!/^[0-9a-f]{64}$/.test(ref))
        return {
          error: 'invalid_body',
          param: 'key',
          message:
            'key: name the key in this path by its token (64 hex characters, as /key/list returns it), or send it in the body of POST /key/regenerate: a key in a path lands in access logs',
        };
      if (typeof json.value !== 'object' || json.value === null || Array.isArray(json.value))
        return { error: 'invalid_body', message: 'The request body must be a JSON object.' };
      return this.#post('POST /key/regenerate', { ...json.value, key: ref }, caller);
    }
    return this.#post(route, json.value, caller);
  }

  /** A POST route's answer, naming the LiteLLM fields it accepted and ignored. */
  async #post(route: string, value: unknown, caller: AdminCaller): Promise<Reply> {
    const reply = await this.#postRoute(route, value, caller);
    const names = IGNORED_FIELDS.find(([prefix]) => route.startsWith(prefix))?.[1] ?? [];
    const given = typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
    const ignored = names.filter((f) => given[f] !== undefined && given[f] !== null);
    return 'status' in reply && ignored.length > 0 ? { ...reply, ignored: [...ignored, ...(reply.ignored ?? [])] } : reply;
  }

  #postRoute(route: string, value: unknown, caller: AdminCaller): Promise<Reply> | Reply {
    switch (route) {
      case 'POST /key/generate':
        return withBody(S.keyGenerate, value, (b) => this.#keyGenerate(b, caller));
      case 'POST /key/update':
        return withBody(S.keyUpdate, value, (b) => this.#keyUpdate(b, caller));
      case 'POST /key/delete':
        return withBody(S.keyDelete, value, (b) => this.#keyDelete(b, caller));
      case 'POST /key/block':
        return withBody(S.keyAction, value, (b) => this.#keyBlock(b.key, true, caller));
      case 'POST /key/unblock':
        return withBody(S.keyAction, value, (b) => this.#keyBlock(b.key, false, caller));
      case 'POST /key/regenerate':
        return withBody(S.keyRegenerate, value, (b) => this.#keyRegenerate(b, caller));
      case 'POST /team/new':
        return withBody(S.teamNew, value, (b) => this.#teamPut(b.team_id ?? randomUUID(), b, true, caller));
      case 'POST /team/update':
        return withBody(S.teamUpdate, value, (b) => this.#teamPut(b.team_id, b, false, caller));
      case 'POST /team/delete':
        return withBody(S.teamDelete, value, (b) => this.#teamDelete(b.team_ids, caller));
      case 'POST /user/new':
        return withBody(S.userNew, value, (b) => this.#userNew(b, caller));
      case 'POST /user/update':
        return withBody(S.userUpdate, value, (b) => this.#userUpdate(b, caller));
      case 'POST /user/delete':
        return withBody(S.userDelete, value, (b) => this.#userDelete(b.user_ids, caller));
      case 'POST /model/new':
        return this.#modelNewCompat(value, caller);
      case 'POST /model/delete':
        return withBody(S.modelDelete, value, (b) => this.#modelDelete(b.id, caller));
      default:
        return notFound(route);
    }
  }

  #now(): number {
    return this.#d.now?.() ?? Date.now();
  }

  #audit(caller: AdminCaller, action: string, target: Record<string, unknown>): void {
    this.#d.logger.info(
      { admin_action: action, ...target, by_key: caller.keyId, by_user: caller.userId, request_id: caller.requestId },
      'admin',
    );
  }

  // -------------------------------------------------------------------------------------------- keys

  /**
   * A chosen key value that is a config key's or one of tollgate's own secrets (the master key above all: as
   * a virtual key it would no longer open the admin API), or a secret a key had before a regenerate (its id
   * still names that key's spend: A → B → A would count it twice). Answered as a taken value, saying no more.
   */
  #taken(key: string): boolean {
    const hash = sha256Hex(key);
    const holder = this.#d.cache.current(keyId(hash));
    return this.#d.cache.isConfigKey(hash) || this.#d.ownSecret?.(key) === true || (holder !== undefined && holder.hash !== hash);
  }

  /** The key a reference names: database (or config) record, by hash. */
  async #resolveKey(ref: string, field = 'key'): Promise<{ hash: string; row: AdminKeyRow } | Reply> {
    const hash = hashOfRef(ref);
    if (this.#d.cache.isConfigKey(hash)) {
      return {
        error: 'conflict',
        param: field,
        message: `${field}: this key is declared in the config file: change it there (the admin API cannot)`,
      };
    }
    const row = await findKey(this.#d.db, hash);
    if (row === undefined) return { error: 'not_found', param: field, message: `${field}: no such key` };
    return { hash, row };
  }

  async #teamMissing(teamId: string | null | undefined): Promise<Reply | undefined> {
    if (teamId === undefined || teamId === null || this.#d.cache.teams.has(teamId)) return undefined;
    if ((await findTeam(this.#d.db, teamId)) !== undefined) return undefined;
    return { error: 'invalid_body', param: 'team_id', message: 'team_id: no such team: create it with POST /team/new first' };
  }

  async #keyGenerate(b: z.output<typeof S.keyGenerate>, caller: AdminCaller): Promise<Reply> {
    const missing = await this.#teamMissing(b.team_id);
    if (missing !== undefined) return missing;
    const key = b.key ?? `sk-${randomBytes(KEY_BYTES).toString('base64url')}`;
    const hash = sha256Hex(key);
    const record = applyKeyFields(blankKey(hash, this.#now()), b, this.#now());
    const teamless = teamModelsWithoutTeam(record, b);
    if (teamless !== undefined) return teamless;
    if (this.#taken(key)) return { error: 'conflict', param: 'key', message: TAKEN('key') };
    const created = await this.#d.records.createKey(record, keyName(key));
    if (created === 'taken') return { error: 'conflict', param: 'key', message: TAKEN('key') };
    if (created === 'alias-taken') return ALIAS_TAKEN;
    this.#audit(caller, 'key.generate', { key_id: record.id, key_alias: record.alias, chosen: b.key != null });
    const row = await findKey(this.#d.db, hash);
    return { status: 200, body: { key, ...(row === undefined ? {} : keyView(row, 0, this.#now(), this.#d.calendar)) } };
  }

  /**
   * One key's record and spend. Without `key`, the caller's own (LiteLLM's); a caller that is not an admin
   * gets only its own. The master key, or an admin token sent without a virtual key, has no record: 404, as
   * LiteLLM answers when the calling key is not in its database (key_management_endpoints.py, info_key_fn).
   */
  async #keyInfo(ref: string | undefined, caller: AdminCaller): Promise<Reply> {
    const hash = ref === undefined ? caller.key?.hash : hashOfRef(ref);
    if (hash === undefined)
      return {
        error: 'not_found',
        param: 'key',
        message:
          'key: the calling credential (the master key, or an admin token without a virtual key) is no virtual key and has no record: name the key with ?key= and the sk-... key or its token (64 hex characters, as /key/list returns it)',
      };
    if (!caller.admin && hash !== caller.key?.hash)
      return {
        error: 'policy_denied',
        param: 'key',
        message: "key: a key may read only its own info (leave key out); another key's needs the master key or an admin group",
      };
    const configured = this.#d.cache.isConfigKey(hash) ? this.#d.cache.get(hash) : undefined;
    if (configured !== undefined) {
      const spend = (await this.#keySpend([configured])).get(configured.id) ?? 0;
      return {
        status: 200,
        body: { key: hash, info: { ...recordView(configured, this.#now(), this.#d.calendar), spend, source: 'config' } },
      };
    }
    const row = await findKey(this.#d.db, hash);
    if (row === undefined) return { error: 'not_found', param: 'key', message: 'key: no such key' };
    const spend = (await this.#keySpend([keyFromRow(row)])).get(keyId(hash)) ?? 0;
    const { token, ...info } = keyView(row, spend, this.#now(), this.#d.calendar);
    return { status: 200, body: { key: token, info } };
  }

  async #keyList(q: z.output<typeof S.keyListQuery>): Promise<Reply> {
    const { keys, total } = await this.#listKeys(
      { userId: q.user_id, teamId: q.team_id, keyAlias: q.key_alias, keyHash: q.key_hash },
      q.page,
      q.size,
    );
    return {
      status: 200,
      body: {
        keys: q.return_full_object ? await this.#listedViews(keys) : keys.map((k) => listedRecord(k).hash),
        total_count: total,
        current_page: q.page,
        total_pages: Math.ceil(total / q.size),
      },
    };
  }

  async #keyUpdate(b: z.output<typeof S.keyUpdate>, caller: AdminCaller): Promise<Reply> {
    const found = await this.#resolveKey(b.key);
    if (!('row' in found)) return found;
    const missing = await this.#teamMissing(b.team_id);
    if (missing !== undefined) return missing;
    const now = this.#now();
    const teamless = teamModelsWithoutTeam(applyKeyFields(keyFromRow(found.row), b, now), b);
    if (teamless !== undefined) return teamless;
    // Applied to the record as stored when the write runs: a block or regenerate meanwhile is not undone.
    let limits: { before: Limits; after: Limits } | undefined;
    const done = await this.#d.records.updateKey(found.hash, (stored) => {
      const next = applyKeyFields(stored, b, now);
      limits = { before: stored.limits, after: next.limits };
      return next;
    });
    if (done === 'missing') return { error: 'not_found', param: 'key', message: 'key: no such key' };
    if (done === 'alias-taken') return ALIAS_TAKEN;
    if (limits !== undefined) await this.#d.budgetChanged?.(`key:${keyId(found.hash)}`, limits.before, limits.after);
    this.#audit(caller, 'key.update', { key_id: keyId(found.hash) });
    return this.#keyAfterWrite(found.hash);
  }

  async #keyBlock(ref: string, blocked: boolean, caller: AdminCaller): Promise<Reply> {
    const found = await this.#resolveKey(ref);
    if (!('row' in found)) return found;
    await this.#d.records.setKeyBlocked(found.hash, blocked);
    this.#audit(caller, blocked ? 'key.block' : 'key.unblock', { key_id: keyId(found.hash) });
    return this.#keyAfterWrite(found.hash);
  }

  async #keyDelete(b: z.output<typeof S.keyDelete>, caller: AdminCaller): Promise<Reply> {
    const hashes: string[] = [];
    for (const [i, ref] of (b.keys ?? []).entries()) {
      const found = await this.#resolveKey(ref, `keys[${i}]`);
      if (!('row' in found)) return found;
      hashes.push(found.hash);
    }
    for (const [i, a] of (b.key_aliases ?? []).entries()) {
      const { keys } = await this.#listKeys({ keyAlias: a }, 1, 2);
      if (keys.length === 0) return { error: 'not_found', param: `key_aliases[${i}]`, message: `key_aliases[${i}]: no key has this alias` };
      if (keys.some((k) => 'config' in k))
        return {
          error: 'conflict',
          param: `key_aliases[${i}]`,
          message: `key_aliases[${i}]: this key is declared in the config file: change it there (the admin API cannot)`,
        };
      if (keys.length > 1)
        return {
          error: 'invalid_body',
          param: `key_aliases[${i}]`,
          message: `key_aliases[${i}]: several keys have this alias: delete them by key (GET /key/list?key_alias=... lists their tokens)`,
        };
      hashes.push(...keys.map((k) => listedRecord(k).hash));
    }
    // A key named twice (by two references, or by key and by alias) is deleted, and listed, once.
    const deleted = [...new Set(hashes)];
    for (const hash of deleted) await this.#d.records.deleteKey(hash);
    this.#audit(caller, 'key.delete', { key_ids: deleted.map(keyId) });
    return { status: 200, body: { deleted_keys: deleted } };
  }

  async #keyRegenerate(b: z.output<typeof S.keyRegenerate>, caller: AdminCaller): Promise<Reply> {
    const found = await this.#resolveKey(b.key);
    if (!('row' in found)) return found;
    const missing = await this.#teamMissing(b.team_id);
    if (missing !== undefined) return missing;
    const key = b.new_key ?? `sk-${randomBytes(KEY_BYTES).toString('base64url')}`;
    const hash = sha256Hex(key);
    const { key: _ref, new_key: _new, ...fields } = b;
    const teamless = teamModelsWithoutTeam(applyKeyFields(keyFromRow(found.row), fields, this.#now()), fields);
    if (teamless !== undefined) return teamless;
    // The current value too: "regenerated" into itself, its spend would be carried onto itself, twice.
    if (hash === found.hash || this.#taken(key)) return { error: 'conflict', param: 'new_key', message: TAKEN('new_key') };
    // One transaction: the old secret stops working everywhere as the new one starts, with the record's
    // fields (as stored then) and its spend carried over; the budget already counted this period follows
    // the new key id.
    // This replica's requests of the key that ended a moment ago are in the log before the move (another
    // replica's land under the old id within a second: #keySpend counts them there).
    await this.#d.flushSpend?.();
    const now = this.#now();
    const next = await this.#d.records.regenerateKey(found.hash, hash, (stored) => applyKeyFields(stored, fields, now), keyName(key));
    if (next === 'missing') return { error: 'not_found', param: 'key', message: 'key: no such key' };
    if (next === 'taken') return { error: 'conflict', param: 'new_key', message: TAKEN('new_key') };
    if (next === 'alias-taken') return ALIAS_TAKEN;
    await this.#d.carrySpend?.(keyId(found.hash), next.id, next.limits);
    this.#audit(caller, 'key.regenerate', { key_id: next.id, previous_key_id: keyId(found.hash) });
    const row = await findKey(this.#d.db, hash);
    const spend = (await this.#keySpend([next])).get(next.id) ?? 0;
    // LiteLLM names the new token `token_id` here.
    return { status: 200, body: { key, token_id: hash, ...(row === undefined ? {} : keyView(row, spend, this.#now(), this.#d.calendar)) } };
  }

  async #keyAfterWrite(hash: string): Promise<Reply> {
    const row = await findKey(this.#d.db, hash);
    if (row === undefined) return { error: 'not_found', param: 'key', message: 'key: no such key' };
    const spend = (await this.#keySpend([keyFromRow(row)])).get(keyId(hash)) ?? 0;
    return { status: 200, body: keyView(row, spend, this.#now(), this.#d.calendar) };
  }

  /**
   * Each key's spend as LiteLLM reports it: in its current budget period when it has a budget_duration
   * (LiteLLM resets spend when the period ends), else all of it; what it spent under the ids it had before a
   * regenerate included.
   */
  #keySpend(keys: readonly KeyRecord[]): Promise<Map<string, number>> {
    const now = this.#now();
    return spendOfKeys(
      this.#d.db,
      keys.map((k) => ({ id: k.id, since: periodStart(k.limits, now, this.#d.calendar), previousIds: k.previousIds })),
    );
  }

  /**
   * One page of the keys a filter matches, and how many match in all: the config file's first, in the order
   * declared, then the database's, newest first (a database key with a config key's value is the config key,
   * as Check sees it).
   */
  async #listKeys(f: KeyFilter, page: number, size: number): Promise<{ keys: ListedKey[]; total: number }> {
    const declared = this.#d.cache.configKeys();
    const matching = declared.filter(
      (k) =>
        (f.userId === undefined || k.userId === f.userId) &&
        (f.teamId === undefined || k.teamId === f.teamId) &&
        (f.keyAlias === undefined || k.alias === f.keyAlias) &&
        (f.keyHash === undefined || k.hash === f.keyHash),
    );
    const start = (page - 1) * size;
    const fromConfig = matching.slice(start, start + size);
    const { rows, total } = await listKeys(
      this.#d.db,
      { ...f, notHashes: declared.map((k) => k.hash) },
      Math.max(0, start - matching.length),
      size - fromConfig.length,
    );
    return {
      keys: [...fromConfig.map((config) => ({ config })), ...rows.map((row) => ({ row }))],
      total: matching.length + total,
    };
  }

  /** Listed keys as /key/list's full objects show them, each with its spend. */
  async #listedViews(keys: readonly ListedKey[]): Promise<Record<string, unknown>[]> {
    const now = this.#now();
    const spend = await this.#keySpend(keys.map(listedRecord));
    return keys.map((k) => {
      const s = spend.get(listedRecord(k).id) ?? 0;
      return 'row' in k ? keyView(k.row, s, now, this.#d.calendar) : configKeyView(k.config, s, now, this.#d.calendar);
    });
  }

  // ------------------------------------------------------------------------------------------- teams

  async #teamPut(teamId: string, b: z.output<typeof S.teamNew>, create: boolean, caller: AdminCaller): Promise<Reply> {
    if (this.#d.cache.isConfigTeam(teamId)) {
      return {
        error: 'conflict',
        param: 'team_id',
        message: 'team_id: this team is declared in the config file: change it there (the admin API cannot)',
      };
    }
    // An update applies to the team as stored when the write runs: a block or budget set meanwhile is not undone.
    let before: Limits | undefined;
    let team: TeamRecord | undefined;
    if (create) {
      team = applyTeamFields({ teamId, alias: undefined, models: [], blocked: false, limits: NO_LIMITS, metadata: {} }, b);
      if (!(await this.#d.records.createTeam(team)))
        return { error: 'conflict', param: 'team_id', message: 'team_id: a team with this id exists already: use POST /team/update' };
    } else {
      team = await this.#d.records.updateTeam(teamId, (stored) => {
        before = stored.limits;
        return applyTeamFields(stored, b);
      });
      if (team === undefined)
        return { error: 'not_found', param: 'team_id', message: 'team_id: no such team: create it with POST /team/new' };
    }
    await this.#d.budgetChanged?.(`team:${teamId}`, before, team.limits);
    this.#audit(caller, create ? 'team.new' : 'team.update', { team_id: teamId });
    const row = await findTeam(this.#d.db, teamId);
    const now = this.#now();
    return {
      status: 200,
      body:
        row === undefined
          ? teamView(team, now, this.#d.calendar)
          : { ...teamView(teamFromRow(row), now, this.#d.calendar), created_at: iso(row.created_at) },
    };
  }

  async #teamInfo(teamId: string): Promise<Reply> {
    const configured = this.#d.cache.isConfigTeam(teamId) ? this.#d.cache.teams.get(teamId) : undefined;
    const row = configured === undefined ? await findTeam(this.#d.db, teamId) : undefined;
    const team = configured ?? (row === undefined ? undefined : teamFromRow(row));
    if (team === undefined) return { error: 'not_found', param: 'team_id', message: 'team_id: no such team' };
    const now = this.#now();
    const [spend, keys] = await Promise.all([
      spendOf(this.#d.db, 'team_id', teamId, periodStart(team.limits, now, this.#d.calendar)),
      this.#listKeys({ teamId }, 1, INFO_KEYS),
    ]);
    return {
      status: 200,
      body: {
        team_id: teamId,
        team_info: { ...teamView(team, now, this.#d.calendar), spend, source: configured === undefined ? 'api' : 'config' },
        keys: await this.#listedViews(keys.keys),
        keys_total: keys.total,
      },
    };
  }

  /**
   * LiteLLM's /team/delete: the teams and, as there, the keys made for them through the API (left behind, a
   * key of a team that exists nowhere is refused anyway, core/decide.ts, and a new team with the same id would
   * bring it back). All or nothing: a team declared in the config file, or one that does not exist, and
   * nothing is deleted. A key declared in the config file with one of these team_ids stays, and is refused
   * (403 key_blocked) until its team is back or the key is moved. Every replica refuses the team's keys as
   * soon as this returns (RecordStore: applied here, then broadcast).
   */
  async #teamDelete(teamIds: readonly string[], caller: AdminCaller): Promise<Reply> {
    const missing: string[] = [];
    let firstMissing: number | undefined;
    for (const [i, id] of teamIds.entries()) {
      if (this.#d.cache.isConfigTeam(id))
        return {
          error: 'conflict',
          param: `team_ids[${i}]`,
          message: `team_ids[${i}]: team ${JSON.stringify(id)} is declared in the config file: remove it from teams: there and reload (the admin API cannot delete it); nothing was deleted`,
        };
      if ((await findTeam(this.#d.db, id)) === undefined) {
        missing.push(JSON.stringify(id));
        firstMissing ??= i;
      }
    }
    if (firstMissing !== undefined)
      return {
        error: 'not_found',
        param: `team_ids[${firstMissing}]`,
        message: `team_ids[${firstMissing}]: no such team: ${missing.join(', ')}; nothing was deleted`,
      };
    const deletedTeams: string[] = [];
    const deletedKeys: string[] = [];
    for (const id of teamIds) {
      const keys = await this.#d.records.deleteTeam(id);
      if (keys === undefined) continue; // deleted meanwhile, or named twice
      deletedTeams.push(id);
      deletedKeys.push(...keys);
    }
    this.#audit(caller, 'team.delete', { team_ids: deletedTeams, key_ids: deletedKeys.map(keyId) });
    return { status: 200, body: { deleted_teams: deletedTeams, deleted_keys: deletedKeys } };
  }

  /**
   * LiteLLM's /team/list: every team, the config file's (`source: "config"`) and the database's (`"api"`),
   * sorted by team_alias as LiteLLM sorts them, each with its spend and its first LIST_KEYS keys.
   */
  async #teamList(): Promise<Reply> {
    const now = this.#now();
    const cal = this.#d.calendar;
    const cache = this.#d.cache;
    const stored = (await listTeams(this.#d.db, TEAM_LIST_MAX)).filter((r) => !cache.isConfigTeam(r.team_id));
    const teams = [
      ...[...cache.teams.values()].filter((t) => cache.isConfigTeam(t.teamId)).map((team) => ({ team, row: undefined })),
      ...stored.map((row) => ({ team: teamFromRow(row), row })),
    ];
    // LiteLLM's order: by team_alias (none sorts as ""), then by id.
    teams.sort((x, y) => {
      const [ax, ay] = [x.team.alias ?? '', y.team.alias ?? ''];
      if (ax !== ay) return ax < ay ? -1 : 1;
      return x.team.teamId < y.team.teamId ? -1 : x.team.teamId > y.team.teamId ? 1 : 0;
    });
    const declared = cache.configKeys();
    const [spend, fromDb] = await Promise.all([
      spendOfEach(
        this.#d.db,
        'team_id',
        teams.map((t) => ({ id: t.team.teamId, since: periodStart(t.team.limits, now, cal) })),
      ),
      keysOfTeams(
        this.#d.db,
        teams.map((t) => t.team.teamId),
        declared.map((k) => k.hash),
        LIST_KEYS,
      ),
    ]);
    // Each team's keys as /key/list orders them: the config file's as declared, then the database's newest first.
    const keysOf = new Map<string, ListedKey[]>();
    const totals = new Map(fromDb.totals);
    const add = (teamId: string, k: ListedKey): void => {
      const list = keysOf.get(teamId) ?? [];
      if (list.length < LIST_KEYS) list.push(k);
      keysOf.set(teamId, list);
    };
    for (const config of declared) {
      if (config.teamId === undefined) continue;
      add(config.teamId, { config });
      totals.set(config.teamId, (totals.get(config.teamId) ?? 0) + 1);
    }
    for (const row of fromDb.rows) if (row.team_id !== null) add(row.team_id, { row });
    const listed = teams.flatMap((t) => keysOf.get(t.team.teamId) ?? []);
    const views = await this.#listedViews(listed);
    let at = 0;
    const body = teams.map(({ team, row }) => {
      const n = keysOf.get(team.teamId)?.length ?? 0;
      const keys = views.slice(at, at + n);
      at += n;
      return {
        ...teamView(team, now, cal),
        spend: spend.get(team.teamId) ?? 0,
        source: row === undefined ? 'config' : 'api',
        created_at: row === undefined ? null : iso(row.created_at),
        updated_at: row === undefined ? null : iso(row.updated_at),
        keys,
        keys_total: totals.get(team.teamId) ?? 0,
        // LiteLLM's; tollgate keeps no team members.
        team_memberships: [],
      };
    });
    return { status: 200, body };
  }

  // ------------------------------------------------------------------------------------------- users

  #configUser(userId: string, field = 'user_id'): Reply | undefined {
    if (!this.#d.cache.isConfigUser(userId)) return undefined;
    return {
      error: 'conflict',
      param: field,
      message: `${field}: this user is declared in the config file: change it there (the admin API cannot)`,
    };
  }

  /**
   * LiteLLM's /user/new: a user with limits on everything its keys do and, unless auto_create_key is false
   * (LiteLLM's default is true), a key for it, made as /key/generate makes one.
   */
  async #userNew(b: z.output<typeof S.userNew>, caller: AdminCaller): Promise<Reply> {
    const userId = b.user_id ?? randomUUID();
    const configured = this.#configUser(userId);
    if (configured !== undefined) return configured;
    // LiteLLM's user-level models restrict every key of the user; tollgate restricts models per key or team.
    if (b.models != null)
      return {
        error: 'invalid_body',
        param: 'models',
        message:
          "models: tollgate restricts models per key or team, not per user (a user's other keys would be allowed more than you asked): give keys their models with /key/generate and user_id, or put the user's keys in a team",
      };
    const keyFields = { key_alias: b.key_alias, duration: b.duration, team_id: b.team_id };
    if (!b.auto_create_key) {
      const given = Object.entries(keyFields).find(([, v]) => v != null)?.[0];
      if (given !== undefined)
        return {
          error: 'invalid_body',
          param: given,
          message: `${given}: a field of the key /user/new makes, and auto_create_key is false: drop it, or make the key with /key/generate and user_id`,
        };
    }
    const missing = await this.#teamMissing(b.team_id);
    if (missing !== undefined) return missing;
    const now = this.#now();
    const user: StoredUser = { userId, limits: applyLimits(NO_LIMITS, b), metadata: b.metadata ?? {} };
    if (!(await this.#d.records.createUser(user)))
      return { error: 'conflict', param: 'user_id', message: 'user_id: a user with this id exists already: use POST /user/update' };
    this.#audit(caller, 'user.new', { user_id: userId });
    const view = { ...userView(user, now, this.#d.calendar), spend: 0 };
    if (!b.auto_create_key) return { status: 200, body: view };
    let made: Reply;
    try {
      made = await this.#keyGenerate({ ...keyFields, user_id: userId }, caller);
    } catch (err) {
      made = { error: 'store_unavailable', message: 'The records database did not answer: retry shortly.' };
      this.#d.logger.error({ err: (err as Error).message, user_id: userId }, 'the key of a new user was not made');
    }
    if ('error' in made) {
      // The user alone is not what was asked for: it goes again (only the user: keys made before for this
      // user_id with /key/generate stay).
      await this.#d.records.deleteUser(userId, false);
      return made;
    }
    return { status: 200, body: { ...(made.body as Record<string, unknown>), ...view } };
  }

  async #userUpdate(b: z.output<typeof S.userUpdate>, caller: AdminCaller): Promise<Reply> {
    const configured = this.#configUser(b.user_id);
    if (configured !== undefined) return configured;
    let before: Limits | undefined;
    const user = await this.#d.records.updateUser(b.user_id, (stored) => {
      before = stored.limits;
      return { ...stored, limits: applyLimits(stored.limits, userLimitFields(b)), metadata: b.metadata ?? stored.metadata };
    });
    if (user === undefined)
      return { error: 'not_found', param: 'user_id', message: 'user_id: no such user: create it with POST /user/new' };
    await this.#d.budgetChanged?.(`user:${b.user_id}`, before, user.limits);
    this.#audit(caller, 'user.update', { user_id: b.user_id });
    const now = this.#now();
    const spend = await spendOf(this.#d.db, 'user_id', b.user_id, periodStart(user.limits, now, this.#d.calendar));
    return { status: 200, body: { ...userView(user, now, this.#d.calendar), spend } };
  }

  /** LiteLLM's /user/info: the user, its spend (this budget period's), and its keys. */
  async #userInfo(userId: string): Promise<Reply> {
    const now = this.#now();
    const configured = this.#d.cache.isConfigUser(userId);
    const user: StoredUser | undefined = configured
      ? { userId, limits: this.#d.cache.users.get(userId) ?? NO_LIMITS, metadata: {} }
      : await findUser(this.#d.db, userId);
    if (user === undefined) return { error: 'not_found', param: 'user_id', message: 'user_id: no such user' };
    const [spend, keys] = await Promise.all([
      spendOf(this.#d.db, 'user_id', userId, periodStart(user.limits, now, this.#d.calendar)),
      this.#listKeys({ userId }, 1, INFO_KEYS),
    ]);
    return {
      status: 200,
      body: {
        user_id: userId,
        user_info: { ...userView(user, now, this.#d.calendar), spend, source: configured ? 'config' : 'api' },
        keys: await this.#listedViews(keys.keys),
        keys_total: keys.total,
        teams: [],
      },
    };
  }

  /**
   * LiteLLM's /user/list: a page of users, the config file's first (`source: "config"`), then the database's
   * newest first, each with its spend (this budget period's) and key_count.
   */
  async #userList(q: z.output<typeof S.userListQuery>): Promise<Reply> {
    const empty = { users: [], total: 0, page: q.page, page_size: q.page_size, total_pages: 0 };
    // Every user here is LiteLLM's internal_user.
    if (q.role !== undefined && q.role !== 'internal_user') return { status: 200, body: empty };
    const ids = (q.user_ids ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    const filter: Omit<UserFilter, 'notIds'> = ids.length === 0 ? {} : ids.length === 1 ? { idContains: ids[0] } : { ids };
    const cache = this.#d.cache;
    const configIds = [...cache.users.keys()].filter((id) => cache.isConfigUser(id));
    const needle = filter.idContains?.toLowerCase();
    const matching = configIds.filter(
      (id) => (needle === undefined || id.toLowerCase().includes(needle)) && (filter.ids === undefined || filter.ids.includes(id)),
    );
    const start = (q.page - 1) * q.page_size;
    const fromConfig = matching.slice(start, start + q.page_size);
    const { rows, total } = await listUsers(
      this.#d.db,
      { ...filter, notIds: configIds },
      Math.max(0, start - matching.length),
      q.page_size - fromConfig.length,
    );
    const users: { user: StoredUser; row: (typeof rows)[number] | undefined }[] = [
      ...fromConfig.map((userId) => ({ user: { userId, limits: cache.users.get(userId) ?? NO_LIMITS, metadata: {} }, row: undefined })),
      ...rows.map((row) => ({ user: userFromRow(row), row })),
    ];
    const now = this.#now();
    const declared = cache.configKeys();
    const userIds = users.map((u) => u.user.userId);
    const [spend, counts] = await Promise.all([
      spendOfEach(
        this.#d.db,
        'user_id',
        users.map((u) => ({ id: u.user.userId, since: periodStart(u.user.limits, now, this.#d.calendar) })),
      ),
      keyCounts(
        this.#d.db,
        userIds,
        declared.map((k) => k.hash),
      ),
    ]);
    const all = matching.length + total;
    return {
      status: 200,
      body: {
        users: users.map(({ user, row }) => ({
          ...userView(user, now, this.#d.calendar),
          spend: spend.get(user.userId) ?? 0,
          key_count: (counts.get(user.userId) ?? 0) + declared.filter((k) => k.userId === user.userId).length,
          source: row === undefined ? 'config' : 'api',
          created_at: row === undefined ? null : iso(row.created_at),
          updated_at: row === undefined ? null : iso(row.updated_at),
        })),
        total: all,
        page: q.page,
        page_size: q.page_size,
        total_pages: Math.ceil(all / q.page_size),
      },
    };
  }

  /** LiteLLM's /user/delete: the users, and the keys made for them (a user who leaves takes their keys along). */
  async #userDelete(userIds: readonly string[], caller: AdminCaller): Promise<Reply> {
    for (const [i, id] of userIds.entries()) {
      const configured = this.#configUser(id, `user_ids[${i}]`);
      if (configured !== undefined) return configured;
      if ((await findUser(this.#d.db, id)) === undefined)
        return { error: 'not_found', param: `user_ids[${i}]`, message: `user_ids[${i}]: no such user` };
    }
    const deletedUsers: string[] = [];
    const deletedKeys: string[] = [];
    for (const id of userIds) {
      const keys = await this.#d.records.deleteUser(id);
      if (keys === undefined) continue; // deleted meanwhile
      deletedUsers.push(id);
      deletedKeys.push(...keys);
    }
    this.#audit(caller, 'user.delete', { user_ids: deletedUsers, key_ids: deletedKeys.map(keyId) });
    return { status: 200, body: { deleted_users: deletedUsers, deleted_keys: deletedKeys } };
  }

  // ------------------------------------------------------------------------------------------- spend

  async #spendKeys(limit: number): Promise<Reply> {
    const rows = await topKeySpend(this.#d.db, limit);
    return {
      status: 200,
      body: rows.map((r) => {
        // A config key has no database row to join (or one its declaration shadows): the config names it.
        const configured = this.#d.cache.byId(r.key_id);
        return configured?.source === 'config'
          ? {
              token: configured.hash,
              key_id: r.key_id,
              key_alias: configured.alias ?? null,
              spend: r.spend,
              requests: r.requests,
              source: 'config',
            }
          : { token: r.token ?? this.#tokenOf(r.key_id), key_id: r.key_id, key_alias: r.key_alias, spend: r.spend, requests: r.requests };
      }),
    };
  }

  /** A key id's token (sha256): LiteLLM's `api_key` in spend rows, which /key/list also returns. */
  #tokenOf(id: string | null): string | null {
    return id === null ? null : (this.#d.cache.byId(id)?.hash ?? null);
  }

  async #spendLogs(q: z.output<typeof S.spendLogsQuery>): Promise<Reply> {
    const ref = q.api_key;
    const filter = {
      keyId: ref === undefined ? undefined : /^[0-9a-f]{16}$/.test(ref) ? ref : keyId(hashOfRef(ref)),
      requestId: q.request_id,
      userId: q.user_id,
      teamId: q.team_id,
      start: q.start_date,
      end: q.end_date,
    };
    // LiteLLM answers a date range with spend per day unless told summarize=false.
    if (q.summarize && q.start_date !== undefined && q.end_date !== undefined) {
      const days = await dailySpend(this.#d.db, filter, SUMMARY_ROWS);
      if (days.length > SUMMARY_ROWS)
        return {
          error: 'invalid_body',
          param: 'start_date',
          message: 'start_date: too much spend to sum up per day in this range: narrow the dates, or filter by api_key or user_id',
        };
      return { status: 200, body: this.#daySummary(days, q.end_date) };
    }
    // One row past the limit says whether there were more.
    const fetched = await spendLogs(this.#d.db, { ...filter, limit: q.limit + 1 });
    const rows = fetched.slice(0, q.limit);
    return {
      status: 200,
      truncated: fetched.length > q.limit,
      body: rows.map((r) => {
        const end = new Date(r.created_at);
        return {
          request_id: r.request_id,
          api_key: r.token ?? this.#tokenOf(r.key_id) ?? r.key_id,
          key_id: r.key_id,
          user: r.user_id,
          team_id: r.team_id,
          model: r.model,
          model_id: r.deployment,
          prompt_tokens: r.prompt_tokens,
          completion_tokens: r.completion_tokens,
          total_tokens: r.prompt_tokens + r.completion_tokens,
          // Twelve significant digits, as x-tollgate-response-cost: 0.000025, not 0.000024999999999999998.
          spend: Number(r.cost.toPrecision(12)),
          status: r.status,
          estimated: r.estimated,
          startTime: new Date(end.getTime() - r.latency_ms).toISOString(),
          endTime: end.toISOString(),
        };
      }),
    };
  }

  /**
   * LiteLLM's summarized /spend/logs: one entry a day from the first day with spend, oldest first, each with
   * its `spend`, the spend of each key under its token, `users` and `models`; days without spend, up to
   * end_date's day, are there with zeros (LiteLLM leaves out those between days with spend). No spend at
   * all: an empty list.
   */
  #daySummary(rows: readonly DailySpendRow[], end: Date): Record<string, unknown>[] {
    // Maps, not objects: a user or model named `constructor` or `__proto__` is a name like any other.
    const days = new Map<string, DaySpend>();
    const add = (m: Map<string, number>, k: string, v: number): void => void m.set(k, (m.get(k) ?? 0) + v);
    for (const r of rows) {
      let d = days.get(r.day);
      if (d === undefined) {
        d = { spend: 0, keys: new Map(), users: new Map(), models: new Map() };
        days.set(r.day, d);
      }
      d.spend += r.spend;
      add(d.keys, r.token ?? this.#tokenOf(r.key_id) ?? r.key_id ?? 'null', r.spend);
      add(d.users, r.user_id ?? 'null', r.spend);
      add(d.models, r.model, r.spend);
    }
    const first = rows[0]?.day;
    const lastSpent = rows.at(-1)?.day;
    if (first === undefined || lastSpent === undefined) return [];
    // Through the range's last day, end_date's when it is a date alone (LiteLLM's too). At most ten years of days.
    const rangeEnd = new Date(end.getTime() - 1).toISOString().slice(0, 10);
    const stop = rangeEnd > lastSpent ? rangeEnd : lastSpent;
    const out: Record<string, unknown>[] = [];
    for (let t = Date.parse(`${first}T00:00:00Z`); out.length < 3660; t += 86_400_000) {
      const day = new Date(t).toISOString().slice(0, 10);
      const d = days.get(day);
      out.push(
        d === undefined
          ? { startTime: day, spend: 0, users: {}, models: {} }
          : {
              ...Object.fromEntries(d.keys),
              spend: d.spend,
              users: Object.fromEntries(d.users),
              models: Object.fromEntries(d.models),
              startTime: day,
            },
      );
      if (day >= stop) break;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------ models

  #modelInfo(id: string | undefined): Reply {
    const catalog = this.#d.catalog();
    const fromDb = new Set(this.#d.cache.models.map((m) => m.id));
    const data = [...catalog.aliases()]
      .sort()
      .flatMap((a) => catalog.group(a)?.deployments ?? [])
      .filter((d) => id === undefined || d.id === id)
      .map((d) => modelView(d, fromDb.has(d.id)));
    return { status: 200, body: { data } };
  }

  /**
   * /model/new takes what a config file's model_list entry takes: LiteLLM's litellm_params and model_info
   * keys that tollgate does not use (custom_llm_provider, supports_function_calling…) are set aside by the
   * config loader's own compatibility pass and named in x-tollgate-ignored-fields; keys neither knows stay,
   * for the strict schema to refuse.
   */
  async #modelNewCompat(value: unknown, caller: AdminCaller): Promise<Reply> {
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return { error: 'invalid_body', message: 'The request body must be a JSON object.' };
    const compat = setAsideLiteLlmKeys({ model_list: [value] });
    const entry = (compat.config['model_list'] as unknown[] | undefined)?.[0] ?? value;
    // The compat pass reports paths under model_list[0]; the request's own fields are what the caller sent.
    const refused = compat.errors[0];
    // A LiteLLM setting that would allow more than asked (access_groups, max_parallel_requests…) is refused, as in a config file.
    if (refused !== undefined) return { error: 'invalid_body', message: `${formatPath(refused.path.slice(2))}: ${refused.message}` };
    const ignored = compat.warnings.map((w) => formatPath(w.path.slice(2)));
    const reply = await withBody(S.modelNew, entry, (b) => this.#modelNew(b, caller));
    return 'status' in reply && ignored.length > 0 ? { ...reply, ignored: [...(reply.ignored ?? []), ...ignored] } : reply;
  }

  async #modelNew(b: z.output<typeof S.modelNew>, caller: AdminCaller): Promise<Reply> {
    const prepared = prepareModel(b, {
      allowed: this.#d.allowedApiBases(),
      catalog: this.#d.catalog(),
      box: this.#d.box,
      env: this.#d.env,
      ownSecret: this.#d.ownSecret,
    });
    if ('field' in prepared)
      return { error: prepared.conflict ? 'conflict' : 'invalid_body', param: prepared.field, message: prepared.message };
    if (!(await this.#d.records.addModel(prepared)))
      return { error: 'conflict', param: 'model_info.id', message: 'model_info.id: a model with this id exists already' };
    this.#audit(caller, 'model.new', { model_id: prepared.id, model_name: prepared.modelName });
    const { api_key: _secret, ...params } = prepared.litellmParams;
    return {
      status: 200,
      body: { model_id: prepared.id, model_name: prepared.modelName, litellm_params: params, model_info: prepared.modelInfo },
    };
  }

  async #modelDelete(id: string, caller: AdminCaller): Promise<Reply> {
    if (!this.#d.cache.models.some((m) => m.id === id) && this.#d.catalog().deployment(id) !== undefined) {
      return { error: 'conflict', param: 'id', message: 'id: this model is declared in the config file: remove it there' };
    }
    if (!(await this.#d.records.deleteModel(id)))
      return { error: 'not_found', param: 'id', message: 'id: no model added through the API has this id' };
    this.#audit(caller, 'model.delete', { model_id: id });
    return { status: 200, body: { message: 'model deleted', id } };
  }
}

// ------------------------------------------------------------------------------------------ helpers

const NO_LIMITS: Limits = {
  maxBudget: undefined,
  budgetDuration: undefined,
  rpmLimit: undefined,
  tpmLimit: undefined,
  maxParallelRequests: undefined,
};

/**
 * The SQLSTATE of a database error the request's values caused, not the database's state: class 22 (data
 * exception: numeric value out of range 22003, string too long 22001, datetime out of range 22008, invalid
 * text 22P02/22P05/22021) and 54000 (a value past a program limit). PostgreSQL and PGlite both set `code`
 * (https://www.postgresql.org/docs/current/errcodes-appendix.html). Undefined for anything else.
 */
function inputRefused(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^(22[0-9A-Z]{3}|54000)$/.test(code) ? code : undefined;
}

function notFound(route: string): Reply {
  return { error: 'not_found', message: `No admin endpoint ${route}: see GET /key/info, POST /key/generate and the rest in the README.` };
}

function parseJson(body: Buffer | undefined): { value: unknown } | Reply {
  if (body === undefined || body.length === 0) return { value: {} };
  try {
    return { value: JSON.parse(body.toString('utf8')) as unknown };
  } catch {
    return { error: 'invalid_body', message: 'The request body is not valid JSON.' };
  }
}

function withBody<T extends z.ZodType>(schema: T, value: unknown, fn: (v: z.output<T>) => Promise<Reply> | Reply): Promise<Reply> | Reply {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { error: 'invalid_body', message: 'The request body must be a JSON object.' };
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const p = S.firstProblem(parsed.error);
    return { error: 'invalid_body', param: p.field, message: p.message };
  }
  return fn(parsed.data);
}

function withQuery<T extends z.ZodType>(
  schema: T,
  query: URLSearchParams,
  fn: (v: z.output<T>) => Promise<Reply> | Reply,
): Promise<Reply> | Reply {
  const obj: Record<string, string> = {};
  for (const [k, v] of query) {
    if (k in obj) return { error: 'invalid_body', param: k, message: `${k}: given twice` };
    obj[k] = v;
  }
  return withBody(schema, obj, fn);
}

/** The sha256 a key reference names: the `sk-` key hashed, or its token as it is. */
function hashOfRef(ref: string): string {
  return ref.startsWith('sk-') ? sha256Hex(ref) : ref;
}

/**
 * A field absent keeps its value; `null` clears it. LiteLLM's /key/update and /team/update apply the fields
 * set in the request (pydantic `model_dump(exclude_unset=True)`, in prepare_key_update_data and
 * update_team), an explicit null among them.
 */
function pick<T>(v: T | null | undefined, old: T | undefined): T | undefined {
  return v === undefined ? old : (v ?? undefined);
}

interface LimitFields {
  max_budget?: number | null | undefined;
  budget_duration?: string | null | undefined;
  rpm_limit?: number | null | undefined;
  tpm_limit?: number | null | undefined;
  max_parallel_requests?: number | null | undefined;
}

/** The limits after an update (`null` clears one); when the key's spend counts from is kept. */
function applyLimits(l: Limits, b: LimitFields): Limits {
  return {
    maxBudget: pick(b.max_budget, l.maxBudget),
    budgetDuration: pick(b.budget_duration, l.budgetDuration),
    rpmLimit: pick(b.rpm_limit, l.rpmLimit),
    tpmLimit: pick(b.tpm_limit, l.tpmLimit),
    maxParallelRequests: pick(b.max_parallel_requests, l.maxParallelRequests),
    ...(l.budgetFrom === undefined ? {} : { budgetFrom: l.budgetFrom }),
  };
}

/**
 * LiteLLM's /user/update applies only the fields given a value (`_update_internal_user_params` skips None),
 * but for max_budget, which an explicit null clears: the other nulls are dropped here.
 */
function userLimitFields(b: LimitFields): LimitFields {
  return {
    max_budget: b.max_budget,
    budget_duration: b.budget_duration ?? undefined,
    rpm_limit: b.rpm_limit ?? undefined,
    tpm_limit: b.tpm_limit ?? undefined,
    max_parallel_requests: b.max_parallel_requests ?? undefined,
  };
}

/** A new key record; its spend counts from `now` (a key once deleted with the same value starts at zero). */
function blankKey(hash: string, now: number): KeyRecord {
  return {
    hash,
    id: keyId(hash),
    alias: undefined,
    models: [],
    userId: undefined,
    teamId: undefined,
    expiresAt: undefined,
    blocked: false,
    limits: { ...NO_LIMITS, budgetFrom: now },
    metadata: {},
    source: 'api',
  };
}

type KeyFields = Omit<z.output<typeof S.keyGenerate>, never>;

/**
 * The key after a generate, update or regenerate: a field absent keeps its value, `null` clears it (models:
 * [], every model, as LiteLLM's empty list; metadata: {}; blocked: false). `duration: null` leaves the
 * expiry as it is, as in LiteLLM (which sets `expires` only for a duration given).
 */
function applyKeyFields(k: KeyRecord, b: KeyFields, now: number): KeyRecord {
  return {
    ...k,
    alias: pick(b.key_alias, k.alias),
    models: b.models === undefined ? k.models : (b.models ?? []),
    userId: pick(b.user_id, k.userId),
    teamId: pick(b.team_id, k.teamId),
    expiresAt: b.duration == null ? k.expiresAt : afterDuration(b.duration, now),
    blocked: b.blocked === undefined ? k.blocked : (b.blocked ?? false),
    metadata: b.metadata === undefined ? k.metadata : (b.metadata ?? {}),
    limits: applyLimits(k.limits, b),
  };
}

/** The team after a /team/new or /team/update: a field absent keeps its value, `null` clears it (as for keys). */
function applyTeamFields(t: TeamRecord, b: z.output<typeof S.teamNew>): TeamRecord {
  return {
    ...t,
    alias: pick(b.team_alias, t.alias),
    models: b.models === undefined ? t.models : (b.models ?? []),
    blocked: b.blocked === undefined ? t.blocked : (b.blocked ?? false),
    metadata: b.metadata === undefined ? t.metadata : (b.metadata ?? {}),
    limits: applyLimits(t.limits, b),
  };
}

/**
 * LiteLLM's `all-team-models` on a key means its team's models: a key without a team_id would be allowed
 * nothing by it (core/decide.ts, keyAllows), so such a write is refused, naming what to change.
 */
function teamModelsWithoutTeam(k: KeyRecord, b: { team_id?: string | null | undefined }): Reply | undefined {
  if (k.teamId !== undefined || !k.models.includes('all-team-models')) return undefined;
  const field = b.team_id === null ? 'team_id' : 'models';
  return {
    error: 'invalid_body',
    param: field,
    message: `${field}: "all-team-models" means the models of the key's team, and the key would have no team_id: give it a team_id, or list its models`,
  };
}

/** LiteLLM's key_name: enough of the key to recognise it, never enough to use it. */
function keyName(key: string): string {
  return `sk-...${key.slice(-4)}`;
}

/** A time as ISO 8601, or null past what a Date holds. */
function isoOrNull(ms: number): string | null {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : null;
}

function iso(v: Date | string | null): string | null {
  return v === null ? null : new Date(v).toISOString();
}

/**
 * Where the current budget period began (ms), or 0 without a budget_duration (spend is then all of it); for a
 * key, never before its record was made.
 */
function periodStart(l: Limits, now: number, cal: BudgetCalendar): number {
  return budgetPeriodOf(l, now, cal).start;
}

function userView(u: StoredUser, now: number, cal: BudgetCalendar): Record<string, unknown> {
  return { user_id: u.userId, user_role: 'internal_user', metadata: u.metadata, ...limitsView(u.limits, now, cal) };
}

function limitsView(l: Limits, now: number, cal: BudgetCalendar): Record<string, unknown> {
  return {
    max_budget: l.maxBudget ?? null,
    budget_duration: l.budgetDuration ?? null,
    // LiteLLM's: when spend starts again from zero.
    budget_reset_at: l.budgetDuration === undefined ? null : isoOrNull(budgetPeriod(l.budgetDuration, now, cal).end),
    rpm_limit: l.rpmLimit ?? null,
    tpm_limit: l.tpmLimit ?? null,
    max_parallel_requests: l.maxParallelRequests ?? null,
  };
}

function recordView(k: KeyRecord, now: number, cal: BudgetCalendar): Record<string, unknown> {
  return {
    key_id: k.id,
    key_alias: k.alias ?? null,
    models: k.models,
    user_id: k.userId ?? null,
    team_id: k.teamId ?? null,
    expires: k.expiresAt === undefined ? null : new Date(k.expiresAt).toISOString(),
    blocked: k.blocked,
    metadata: k.metadata,
    ...limitsView(k.limits, now, cal),
  };
}

/** A database key as the API shows it: its token (sha256), id and display name; never the key. */
function keyView(row: AdminKeyRow, spend: number, now: number, cal: BudgetCalendar): { token: string } & Record<string, unknown> {
  return {
    token: row.key_hash,
    key_name: row.key_name,
    ...recordView(keyFromRow(row), now, cal),
    spend,
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at),
  };
}

/**
 * A config key in a listing: keyView's fields, marked `source: 'config'` as /key/info marks it; it has no
 * key_name (the config holds only its sha256) nor database times.
 */
function configKeyView(k: KeyRecord, spend: number, now: number, cal: BudgetCalendar): Record<string, unknown> {
  return {
    token: k.hash,
    key_name: null,
    ...recordView(k, now, cal),
    spend,
    created_at: null,
    updated_at: null,
    source: 'config',
  };
}

function listedRecord(k: ListedKey): KeyRecord {
  return 'config' in k ? k.config : keyFromRow(k.row);
}

function teamView(t: TeamRecord, now: number, cal: BudgetCalendar): Record<string, unknown> {
  return {
    team_id: t.teamId,
    team_alias: t.alias ?? null,
    models: t.models,
    blocked: t.blocked,
    metadata: t.metadata,
    ...limitsView(t.limits, now, cal),
  };
}

/**
 * A header value of names the client chose (fields it sent): what a header may not hold (a control character,
 * a line break, anything past ASCII) escaped as `\uXXXX`, so the reply of a write that succeeded is sent.
 */
function headerSafe(v: string): string {
  return v.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
