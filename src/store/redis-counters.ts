/**
 * The counters of every replica, in Redis (or Valkey): each admission is one EVALSHA of a Lua script
 * (ioredis `defineCommand`), atomic across every subject's windows, leases and budget — the same
 * algorithm as memory-counters.ts, which the tests run side by side.
 *
 * Keys, per subject `S` under the prefix `P`: `P{S}:rq` (zset: lease id → admission time, the request
 * window), `P{S}:tk` (zset: lease id → time) with `P{S}:tkr` (hash: lease id → tokens, `#total`),
 * `P{S}:pl` (zset: lease id → lease expiry), `P{S}:br` (hash: lease id → `cost:expiry`, cost in flight),
 * `P{S}:bg:<period start>` (spend in that budget period), `P{S}:tko` (set: the lease ids whose tokens are
 * still a reservation, not settled); `Psettled:<lease id>` marks, for SETTLED_TTL_MS,
 * that a lease's cost reached the budgets. The subject is a hash tag, so one subject's
 * keys share a cluster slot; a script over several subjects still spans slots, so Redis Cluster is not
 * supported (one Redis or Valkey, with replicas for failover).
 *
 * Faults: every call has a short timeout and there is no offline queue, so a Redis that is down fails the
 * call at once (the caller applies `failure_mode`); ioredis reconnects in the background, and a connection
 * whose pings go unanswered is dropped so that it does.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  CLAIM_MARGIN_MS,
  LEASE_TTL_MS,
  WINDOW_MS,
  type Admission,
  type AdmitRequest,
  type BudgetPeriod,
  type Counters,
  type LimitSubject,
  type SettleRequest,
  type SpendItem,
} from './counters.js';
import { admissionDenied, type DeniedLimit } from './memory-counters.js';

const KEYS_PER_SUBJECT = 7;
const ARGS_PER_SUBJECT = 5;
/**
 * How long a lease's cost stays marked as added to the budgets. A settlement whose answer was lost (Redis
 * took longer than the call's timeout, and ran it) is logged uncounted and replayed from the spend log
 * within seconds once the log has it; the mark makes that replay, or a replay retried after its own answer
 * was lost, add nothing. A replay that can only run later than this (Redis or the database unreachable so
 * long) would count the cost again. One small key per request that carries cost to a budget.
 */
export const SETTLED_TTL_MS = 10 * 60_000;

/**
 * KEYS: seven per subject, then the `seeded` marker. Returns {ok, limit, subject index, retry-after ms, req
 * limit, req remaining, req reset, tok limit, tok remaining, tok reset}; -1 = none.
 */
const ADMIT = `
local now = tonumber(ARGV[1]); local lid = ARGV[2]; local tokens = math.floor(tonumber(ARGV[3])); local cost = ARGV[4]
local W = tonumber(ARGV[5]); local ttl = tonumber(ARGV[6])
local n = (#KEYS - 1) / ${KEYS_PER_SUBJECT}
-- A Redis that restarted empty knows no spend until it is seeded from the log: a budget read there would
-- be 0. A request with a budget is refused as a store fault (failure_mode decides) until then.
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  for i = 0, n - 1 do
    if tonumber(ARGV[6 + i * ${ARGS_PER_SUBJECT} + 4]) >= 0 then return redis.error_reply('UNSEEDED counters not seeded yet') end
  end
end
local rq = {-1, -1, -1}; local tk = {-1, -1, -1}
-- After the subjects' arguments: the least a tpm window may take (-1: all of tokens). needs: what each takes.
local least = tonumber(ARGV[7 + n * ${ARGS_PER_SUBJECT}] or '-1'); local needs = {}
local function deny(limit, i, retry) return {0, limit, i, retry, rq[1], rq[2], rq[3], tk[1], tk[2], tk[3]} end
for i = 0, n - 1 do
  local k = i * ${KEYS_PER_SUBJECT}; local a = 6 + i * ${ARGS_PER_SUBJECT}
  local rpm = tonumber(ARGV[a + 1]); local tpm = tonumber(ARGV[a + 2]); local par = tonumber(ARGV[a + 3])
  local bmax = tonumber(ARGV[a + 4]); local bend = tonumber(ARGV[a + 5])
  if rpm >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now - W)
    local c = redis.call('ZCARD', KEYS[k + 1])
    local reset = W
    -- At most W: another replica's clock may have stamped the oldest entry a moment after this one's now.
    if c > 0 then reset = math.min(W, tonumber(redis.call('ZRANGE', KEYS[k + 1], 0, 0, 'WITHSCORES')[2]) + W - now) end
    if c + 1 > rpm then
      if rq[1] < 0 or 0 < rq[2] then rq = {rpm, 0, reset} end
      return deny('rpm', i, reset)
    end
    if rq[1] < 0 or rpm - c - 1 < rq[2] then rq = {rpm, rpm - c - 1, reset} end
  end
  if tpm >= 0 then
    local old = redis.call('ZRANGEBYSCORE', KEYS[k + 2], '-inf', now - W)
    if #old > 0 then
      local gone = 0
      for s = 1, #old, 500 do
        local chunk = {unpack(old, s, math.min(s + 499, #old))}
        local vals = redis.call('HMGET', KEYS[k + 3], unpack(chunk))
        for j = 1, #vals do gone = gone + (tonumber(vals[j]) or 0) end
        redis.call('HDEL', KEYS[k + 3], unpack(chunk))
        redis.call('SREM', KEYS[k + 7], unpack(chunk))
      end
      if gone ~= 0 then redis.call('HINCRBY', KEYS[k + 3], '#total', -gone) end
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', now - W)
    end
    local total = tonumber(redis.call('HGET', KEYS[k + 3], '#total') or '0')
    local full = math.min(tokens, tpm)
    local need = full
    if least >= 0 then need = math.min(least, full) end
    local first = redis.call('ZRANGE', KEYS[k + 2], 0, 0, 'WITHSCORES')
    local reset = W
    if #first > 0 then reset = math.min(W, tonumber(first[2]) + W - now) end
    if total + need > tpm then
      -- Held by requests in flight (their reservations), not used: room comes back as they end.
      local open = redis.call('SMEMBERS', KEYS[k + 7]); local held = 0
      for s = 1, #open, 500 do
        local vals = redis.call('HMGET', KEYS[k + 3], unpack(open, s, math.min(s + 499, #open)))
        for j = 1, #vals do held = held + (tonumber(vals[j]) or 0) end
      end
      if total - held + need <= tpm then
        if tk[1] < 0 or 0 < tk[2] then tk = {tpm, 0, reset} end
        return deny('tpm-in-flight', i, 1000)
      end
      local retry = W; local freed = 0
      local log = redis.call('ZRANGE', KEYS[k + 2], 0, 999, 'WITHSCORES')
      for j = 1, #log, 2 do
        freed = freed + (tonumber(redis.call('HGET', KEYS[k + 3], log[j])) or 0)
        if total - freed + need <= tpm then retry = math.min(W, tonumber(log[j + 1]) + W - now); break end
      end
      if tk[1] < 0 or 0 < tk[2] then tk = {tpm, 0, reset} end
      return deny('tpm', i, retry)
    end
    local take = math.min(full, tpm - total)
    needs[i] = take
    if tk[1] < 0 or tpm - total - take < tk[2] then tk = {tpm, tpm - total - take, reset} end
  end
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 4]) >= par then return deny('parallel', i, 1000) end
  end
  if bmax >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[k + 6]) or '0')
    local inflight = 0
    local res = redis.call('HGETALL', KEYS[k + 5])
    for j = 1, #res, 2 do
      local v = res[j + 1]; local sep = string.find(v, ':', 1, true)
      if tonumber(string.sub(v, sep + 1)) <= now then redis.call('HDEL', KEYS[k + 5], res[j])
      else inflight = inflight + tonumber(string.sub(v, 1, sep - 1)) end
    end
    if spent >= bmax then return deny('budget', i, bend - now) end
    if spent + inflight >= bmax then return deny('budget-in-flight', i, 1000) end
  end
end
for i = 0, n - 1 do
  local k = i * ${KEYS_PER_SUBJECT}; local a = 6 + i * ${ARGS_PER_SUBJECT}
  if tonumber(ARGV[a + 1]) >= 0 then
    redis.call('ZADD', KEYS[k + 1], now, lid); redis.call('PEXPIRE', KEYS[k + 1], W + 60000)
  end
  local tpm = tonumber(ARGV[a + 2])
  if tpm >= 0 then
    local need = needs[i]
    redis.call('ZADD', KEYS[k + 2], now, lid); redis.call('HSET', KEYS[k + 3], lid, need)
    redis.call('HINCRBY', KEYS[k + 3], '#total', need); redis.call('SADD', KEYS[k + 7], lid)
    redis.call('PEXPIRE', KEYS[k + 2], W + 60000); redis.call('PEXPIRE', KEYS[k + 3], W + 60000)
    redis.call('PEXPIRE', KEYS[k + 7], W + 60000)
  end
  if tonumber(ARGV[a + 3]) >= 0 then
    redis.call('ZADD', KEYS[k + 4], now + ttl, lid); redis.call('PEXPIRE', KEYS[k + 4], ttl * 2)
  end
  if tonumber(ARGV[a + 4]) >= 0 then
    redis.call('HSET', KEYS[k + 5], lid, cost .. ':' .. (now + ttl)); redis.call('PEXPIRE', KEYS[k + 5], ttl * 2)
  end
end
return {1, '', -1, 0, rq[1], rq[2], rq[3], tk[1], tk[2], tk[3]}
`;

/**
 * KEYS: seven per subject, then the lease's `settled` mark, then the `seeded` marker. ARGV: now, lease id,
 * real tokens, cost, then per subject: tpm on, parallel on, budget on, budget key expiry (ms, 0: none).
 * Returns the counters' generation (the `seeded` marker's value): the spend log compares it with the one
 * on record when the row is written (a Redis seeded again meanwhile did not get this cost).
 */
const SETTLE = `
local now = tonumber(ARGV[1]); local lid = ARGV[2]; local tokens = math.floor(tonumber(ARGV[3]) or 0); local cost = ARGV[4]
if tonumber(cost) == nil then return redis.error_reply('cost is not a number') end
-- A Redis that restarted empty takes no spend until it is seeded from the log (the row is replayed after);
-- the lease is released all the same, or it would hold its parallel slot and reservations until it expires.
local generation = redis.call('GET', KEYS[#KEYS])
local seeded = generation ~= false
local n = (#KEYS - 2) / ${KEYS_PER_SUBJECT}
-- Cost goes to the budgets once per lease: this call repeated, or arriving after the replay of its row,
-- adds none. The rest of a settlement (the lease released, the tokens corrected) sets values: done again,
-- it changes nothing, and it must be done however late the call comes.
local addCost = seeded and tonumber(cost) > 0
if addCost then
  for i = 0, n - 1 do
    if ARGV[4 + i * 4 + 3] == '1' then
      if not redis.call('SET', KEYS[#KEYS - 1], '1', 'NX', 'PX', ${SETTLED_TTL_MS}) then addCost = false end
      break
    end
  end
end
for i = 0, n - 1 do
  local k = i * ${KEYS_PER_SUBJECT}; local a = 4 + i * 4
  if ARGV[a + 1] == '1' then
    redis.call('SREM', KEYS[k + 7], lid)
    local held = redis.call('HGET', KEYS[k + 3], lid)
    if held then
      redis.call('HSET', KEYS[k + 3], lid, tokens)
      local delta = tokens - math.floor(tonumber(held))
      if delta ~= 0 then redis.call('HINCRBY', KEYS[k + 3], '#total', delta) end
    end
  end
  if ARGV[a + 2] == '1' then redis.call('ZREM', KEYS[k + 4], lid) end
  if ARGV[a + 3] == '1' then
    redis.call('HDEL', KEYS[k + 5], lid)
    if addCost then
      redis.call('INCRBYFLOAT', KEYS[k + 6], cost)
      if tonumber(ARGV[a + 4]) > 0 then redis.call('PEXPIREAT', KEYS[k + 6], ARGV[a + 4]) end
    end
  end
end
if not seeded then return redis.error_reply('UNSEEDED counters not seeded yet') end
return generation
`;

/**
 * Spend replayed from the log, once per lease (the `settled` mark, as SETTLE sets it). KEYS: per lease, its
 * mark then its budget keys; last, the `seeded` marker. ARGV: per lease, how many budget keys, then a cost
 * and an expiry (ms, 0: none) for each. Returns how many leases were added.
 */
const REPLAY = `
-- A Redis that restarted empty is seeded from the whole log, these rows included: adding them first would
-- count them twice (the replay's transaction rolls back, and the seed counts them).
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then return redis.error_reply('UNSEEDED counters not seeded yet') end
local k = 1; local a = 1; local added = 0
while k < #KEYS do
  local n = tonumber(ARGV[a]); a = a + 1
  local fresh = redis.call('SET', KEYS[k], '1', 'NX', 'PX', ${SETTLED_TTL_MS})
  if fresh then added = added + 1 end
  for j = 1, n do
    if fresh then
      redis.call('INCRBYFLOAT', KEYS[k + j], ARGV[a])
      if tonumber(ARGV[a + 1]) > 0 then redis.call('PEXPIREAT', KEYS[k + j], ARGV[a + 1]) end
    end
    a = a + 2
  end
  k = k + n + 1
end
return added
`;

/** ARGV: new expiry, key TTL, then lease ids, one per (parallel zset, reservation hash) pair of KEYS. */
const RENEW = `
local exp = tonumber(ARGV[1]); local keyTtl = tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
  local lid = ARGV[(i + 1) / 2 + 2]
  redis.call('ZADD', KEYS[i], 'XX', exp, lid)
  -- The keys live as long as their longest lease: a stream longer than the first TTL keeps its lease.
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], keyTtl) end
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then redis.call('PEXPIRE', KEYS[i + 1], keyTtl) end
  local v = redis.call('HGET', KEYS[i + 1], lid)
  if v then
    local sep = string.find(v, ':', 1, true)
    redis.call('HSET', KEYS[i + 1], lid, string.sub(v, 1, sep) .. exp)
  end
end
return 1
`;

type CountersRedis = Redis & {
  tgAdmit(...args: (string | number)[]): Promise<[number, string, number, number, number, number, number, number, number, number]>;
  tgSettle(...args: (string | number)[]): Promise<string>;
  tgReplay(...args: (string | number)[]): Promise<number>;
  tgRenew(...args: (string | number)[]): Promise<number>;
};

export interface RedisCountersOptions {
  readonly url: string;
  /** Prepended to every key: one deployment (or one test) per prefix. */
  readonly prefix: string;
  /** Each call fails after this long (ms). */
  readonly commandTimeoutMs?: number;
}

/** Builds the ioredis client the way the hot path needs it: fail fast, reconnect in the background. */
export function connectRedis(url: string, commandTimeoutMs: number): Redis {
  return new Redis(url, {
    commandTimeout: commandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.max(1000, commandTimeoutMs * 4),
    // Keep trying, at most every 2 s; a Redis that comes back is used again without a restart.
    retryStrategy: (n: number) => Math.min(100 * n, 2000),
    lazyConnect: false,
    // The commands of one event-loop turn go out in one write (a claim and a settlement per request, from
    // many requests at once): bench/gateway.ts --envoy-path --redis, the Redis row less the in-process one,
    // 37 and 29 µs a request before, 23 and 17 after; bench/check.ts --redis unchanged (0.58 against 0.59).
    enableAutoPipelining: true,
  });
}

/** How often Redis is pinged: readiness, and a connection that stopped answering found without traffic. */
const PING_MS = 1_000;
/**
 * Pings in a row unanswered on an open connection before it is dropped and made again. A peer that went away
 * without a reset (a partition, a node lost) leaves the socket open: ioredis would wait on it for ever, every
 * command timing out, and never reconnect. Five, so that a Redis answering late for a few seconds (a slow
 * command, a fork for a snapshot) keeps its connection and the answers on their way.
 */
const DEAD_AFTER_PINGS = 5;

export class RedisCounters implements Counters {
  readonly kind = 'redis';
  readonly redis: CountersRedis;
  readonly #prefix: string;
  readonly #pinger: NodeJS.Timeout;
  #pinging = false;
  #answered = false;
  #missed = 0;

  constructor(opts: RedisCountersOptions) {
    this.#prefix = opts.prefix;
    const redis = connectRedis(opts.url, opts.commandTimeoutMs ?? 250);
    redis.defineCommand('tgAdmit', { lua: ADMIT });
    redis.defineCommand('tgSettle', { lua: SETTLE });
    redis.defineCommand('tgReplay', { lua: REPLAY });
    redis.defineCommand('tgRenew', { lua: RENEW });
    // Errors surface on the calls; the connection's own error events are expected while Redis is down.
    redis.on('error', () => undefined);
    redis.on('ready', () => {
      this.#answered = true;
      this.#missed = 0;
    });
    this.redis = redis as CountersRedis;
    this.#pinger = setInterval(() => void this.#ping(), PING_MS).unref();
  }

  /** Connected, and the last ping answered (readiness). */
  get answering(): boolean {
    return this.redis.status === 'ready' && this.#answered;
  }

  async #ping(): Promise<void> {
    if (this.#pinging) return;
    this.#pinging = true;
    try {
      await this.redis.ping();
      this.#answered = true;
      this.#missed = 0;
    } catch {
      this.#answered = false;
      // Connected (or stuck in the handshake) yet unanswered: the socket is dropped; ioredis makes a new one.
      const open = this.redis.status === 'ready' || this.redis.status === 'connect';
      if (open && ++this.#missed >= DEAD_AFTER_PINGS) {
        this.#missed = 0;
        this.redis.disconnect(true);
      }
    } finally {
      this.#pinging = false;
    }
  }

  /** Resolves once connected (boot waits for it, so the first Check does not fail for nothing). */
  async ready(timeoutMs: number): Promise<boolean> {
    if (this.redis.status === 'ready') return true;
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.redis.off('ready', on);
        resolve(false);
      }, timeoutMs);
      const on = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.redis.once('ready', on);
    });
  }

  #keys(sub: LimitSubject, out: string[], periodStart: number): void {
    const base = `${this.#prefix}{${sub.id}}`;
    out.push(`${base}:rq`, `${base}:tk`, `${base}:tkr`, `${base}:pl`, `${base}:br`, this.#budgetKey(sub.id, periodStart), `${base}:tko`);
  }

  async admit(req: AdmitRequest): Promise<Admission> {
    const keys: string[] = [];
    const args: (string | number)[] = [req.now, req.requestId, req.tokens, String(req.cost), WINDOW_MS, LEASE_TTL_MS];
    for (const sub of req.subjects) {
      this.#keys(sub, keys, sub.budget?.period.start ?? 0);
      args.push(sub.rpm ?? -1, sub.tpm ?? -1, sub.parallel ?? -1, sub.budget?.max ?? -1, sub.budget?.period.end ?? 0);
    }
    args.push(req.leastTokens ?? -1);
    keys.push(`${this.#prefix}seeded`);
    const r = await this.redis.tgAdmit(keys.length, ...keys, ...args);
    const rate = {
      requests: r[4] < 0 ? undefined : { limit: r[4], remaining: r[5], resetMs: r[6] },
      tokens: r[7] < 0 ? undefined : { limit: r[7], remaining: r[8], resetMs: r[9] },
    };
    if (r[0] === 1) return { ok: true, rate };
    const sub = req.subjects[r[2]] as LimitSubject;
    return admissionDenied(r[1] as DeniedLimit, sub, r[3], rate);
  }

  async settle(req: SettleRequest): Promise<string> {
    const keys: string[] = [];
    const args: (string | number)[] = [req.now, req.requestId, req.tokens, String(req.cost)];
    for (const sub of req.subjects) {
      this.#keys(sub, keys, sub.budget?.period.start ?? 0);
      args.push(
        sub.tpm === undefined ? 0 : 1,
        sub.parallel === undefined ? 0 : 1,
        sub.budget === undefined ? 0 : 1,
        sub.budget === undefined ? 0 : budgetExpiry(sub.budget.period),
      );
    }
    keys.push(this.#settledKey(req.requestId), `${this.#prefix}seeded`);
    return String(await this.redis.tgSettle(keys.length, ...keys, ...args));
  }

  async claim(id: string, untilMs: number, now: number): Promise<boolean> {
    const ttl = Math.max(1, untilMs - now) + CLAIM_MARGIN_MS;
    return (await this.redis.set(`${this.#prefix}claimed:${id}`, '1', 'PX', ttl, 'NX')) === 'OK';
  }

  #settledKey(leaseId: string): string {
    return `${this.#prefix}settled:${leaseId}`;
  }

  async renew(leases: readonly { readonly requestId: string; readonly subjects: readonly LimitSubject[] }[], now: number): Promise<void> {
    const keys: string[] = [];
    const ids: string[] = [];
    for (const l of leases) {
      for (const sub of l.subjects) {
        if (sub.parallel === undefined && sub.budget === undefined) continue;
        const base = `${this.#prefix}{${sub.id}}`;
        keys.push(`${base}:pl`, `${base}:br`);
        ids.push(l.requestId);
      }
    }
    if (keys.length > 0) await this.redis.tgRenew(keys.length, ...keys, now + LEASE_TTL_MS, LEASE_TTL_MS * 2, ...ids);
  }

  async addSpend(items: readonly SpendItem[]): Promise<void> {
    if (items.length === 0) return;
    await this.#spendTransaction(items, undefined);
  }

  /** Adds `items` to their budget keys in one MULTI (and marks the counters seeded with `generation`). */
  async #spendTransaction(items: readonly SpendItem[], generation: string | undefined): Promise<void> {
    const multi = this.redis.multi();
    for (const it of items) {
      const key = this.#budgetKey(it.subject, it.period.start);
      multi.incrbyfloat(key, it.cost);
      const expiry = budgetExpiry(it.period);
      if (expiry > 0) multi.pexpireat(key, expiry);
    }
    if (generation !== undefined) multi.set(`${this.#prefix}seeded`, generation);
    const results = await multi.exec();
    const failed = results?.find(([err]) => err !== null);
    if (results === null || failed !== undefined) throw failed?.[0] ?? new Error('redis transaction aborted');
  }

  /** A subject's spend in the budget period starting at `periodStart`. */
  #budgetKey(subject: string, periodStart: number): string {
    return `${this.#prefix}{${subject}}:bg:${periodStart}`;
  }

  /**
   * Adds spend logged uncounted (the settlement failed, or its answer was lost), once per lease: a lease
   * whose cost already reached the budgets adds nothing. Resolves to how many leases were added.
   */
  async replaySpend(leases: readonly { readonly leaseId: string; readonly items: readonly SpendItem[] }[]): Promise<number> {
    const keys: string[] = [];
    const args: (string | number)[] = [];
    for (const l of leases) {
      if (l.items.length === 0) continue;
      keys.push(this.#settledKey(l.leaseId));
      args.push(l.items.length);
      for (const it of l.items) {
        keys.push(this.#budgetKey(it.subject, it.period.start));
        args.push(String(it.cost), budgetExpiry(it.period));
      }
    }
    if (keys.length === 0) return 0;
    keys.push(`${this.#prefix}seeded`);
    return this.redis.tgReplay(keys.length, ...keys, ...args);
  }

  /** Seeded once per Redis lifetime with the logged spend; until then it refuses settlements (SETTLE). */
  async isSeeded(): Promise<boolean> {
    return (await this.redis.exists(`${this.#prefix}seeded`)) === 1;
  }

  /** One replica seeds at a time; the lock expires if it dies while seeding. */
  async trySeedLock(): Promise<boolean> {
    return (await this.redis.set(`${this.#prefix}seeding`, '1', 'PX', 60_000, 'NX')) === 'OK';
  }

  async releaseSeedLock(): Promise<void> {
    await this.redis.del(`${this.#prefix}seeding`);
  }

  /** Adds the seed and marks the counters seeded with a new `generation` (random), in one transaction. */
  async seed(items: readonly SpendItem[], generation: string = randomUUID()): Promise<void> {
    await this.#spendTransaction(items, generation);
  }

  /** Prepended to every key: the spend log's generations are kept per prefix. */
  get prefix(): string {
    return this.#prefix;
  }

  async spend(subject: string, period: BudgetPeriod): Promise<number> {
    const v = await this.redis.get(this.#budgetKey(subject, period.start));
    return v === null ? 0 : Number(v);
  }

  async close(): Promise<void> {
    clearInterval(this.#pinger);
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }
}

/** When a budget period's key may go (a day after the period ends), in ms; 0 for a period without end. */
function budgetExpiry(period: BudgetPeriod): number {
  return period.end >= Number.MAX_SAFE_INTEGER ? 0 : period.end + 86_400_000;
}
