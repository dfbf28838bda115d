/**
 * The counters of one process (no `redis_url`): the same algorithm as the Redis Lua scripts
 * (redis-counters.ts), over plain maps and arrays. Exact for one replica; said at startup.
 */
import { hash } from 'node:crypto';
import {
  CLAIM_MARGIN_MS,
  LEASE_TTL_MS,
  WINDOW_MS,
  tighter,
  type Admission,
  type AdmitRequest,
  type BudgetPeriod,
  type Counters,
  type LimitSubject,
  type RateView,
  type SettleRequest,
  type SpendItem,
} from './counters.js';

interface TokenEntry {
  readonly id: string;
  readonly at: number;
  tokens: number;
  /** Still a reservation (its request in flight), not the tokens it used. */
  open: boolean;
}

interface SubjectState {
  /** Admission times in the request window, oldest first (from `head`). */
  requests: number[];
  requestsHead: number;
  tokenLog: TokenEntry[];
  tokenHead: number;
  tokenById: Map<string, TokenEntry>;
  tokenTotal: number;
  /** Of tokenTotal, what open entries hold. */
  tokenOpen: number;
  /** Lease id → expiry. */
  leases: Map<string, number>;
  /** Lease id → reserved cost and its expiry. */
  reserved: Map<string, { cost: number; until: number }>;
  /** Period start → spend. */
  spent: Map<number, number>;
}

type Window = { limit: number; remaining: number; resetMs: number };

/** Retry-after when a lease or an in-flight reservation is in the way: nothing says when it ends. */
const BUSY_RETRY_MS = 1_000;

/** The longest a claimed context is taken to stay valid (they are signed for 30 s). */
const MAX_CLAIM_MS = 5 * 60_000;

export class MemoryCounters implements Counters {
  readonly kind = 'memory';
  readonly #subjects = new Map<string, SubjectState>();

  #state(id: string): SubjectState {
    let s = this.#subjects.get(id);
    if (s === undefined) {
      s = {
        requests: [],
        requestsHead: 0,
        tokenLog: [],
        tokenHead: 0,
        tokenById: new Map(),
        tokenTotal: 0,
        tokenOpen: 0,
        leases: new Map(),
        reserved: new Map(),
        spent: new Map(),
      };
      this.#subjects.set(id, s);
    }
    return s;
  }

  admit(req: AdmitRequest): Promise<Admission> {
    return Promise.resolve(this.admitNow(req));
  }

  /**
   * Contexts claimed (Counters.claim), as 52-bit fingerprints in two generations of `#claimGeneration` ms:
   * a claim is remembered at least one generation, and forgotten with the older one. Every request claims,
   * so this is requests per second × up to two generations: numbers in a Set take 46 bytes each, where a
   * Map of the ids took over 500 (8 MB for 175 000 claims, against 94).
   */
  #claimsNow = new Set<number>();
  #claimsBefore = new Set<number>();
  #claimsSince = 0;
  /** The longest time a context stays valid after it is claimed, and the margin: grown if a context asks more. */
  #claimGeneration = CLAIM_MARGIN_MS;

  claim(id: string, untilMs: number, now: number): Promise<boolean> {
    return Promise.resolve(this.claimNow(id, untilMs, now));
  }

  claimNow(id: string, untilMs: number, now: number): boolean {
    // Bounded: a context is valid for seconds; a clock far ahead, or a value that is not a time, must not stop
    // the generations from turning.
    const valid = Number.isFinite(untilMs - now) ? Math.min(Math.max(untilMs - now, 0), MAX_CLAIM_MS) : MAX_CLAIM_MS;
    this.#claimGeneration = Math.max(this.#claimGeneration, valid + CLAIM_MARGIN_MS);
    const age = now - this.#claimsSince;
    if (age >= this.#claimGeneration) {
      this.#claimsBefore = age >= 2 * this.#claimGeneration ? new Set() : this.#claimsNow;
      this.#claimsNow = new Set();
      this.#claimsSince = now;
    }
    // A fingerprint of 52 bits: two ids of the claims held share one with odds under 1 in 10^10.
    const f = parseInt(hash('sha256', id, 'hex').slice(0, 13), 16);
    if (this.#claimsNow.has(f) || this.#claimsBefore.has(f)) return false;
    this.#claimsNow.add(f);
    return true;
  }

  /** Synchronous admission (the in-process store needs no promise). */
  admitNow(req: AdmitRequest): Admission {
    const { now } = req;
    let requests: Window | undefined;
    let tokens: Window | undefined;
    const states: SubjectState[] = [];
    /** Tokens each subject's tpm window takes (what it has room for, down to leastTokens). */
    const needs: number[] = [];
    for (const sub of req.subjects) {
      const s = this.#state(sub.id);
      states.push(s);
      if (sub.rpm !== undefined) {
        prune(s, now);
        const count = s.requests.length - s.requestsHead;
        const reset = count > 0 ? (s.requests[s.requestsHead] as number) + WINDOW_MS - now : WINDOW_MS;
        if (count + 1 > sub.rpm)
          return denied('rpm', sub, reset, { requests: tighter(requests, { limit: sub.rpm, remaining: 0, resetMs: reset }), tokens });
        requests = tighter(requests, { limit: sub.rpm, remaining: sub.rpm - count - 1, resetMs: reset });
      }
      if (sub.tpm !== undefined) {
        pruneTokens(s, now);
        const full = Math.min(req.tokens, sub.tpm);
        const need = req.leastTokens === undefined ? full : Math.min(req.leastTokens, full);
        const oldest = s.tokenLog[s.tokenHead];
        const reset = oldest !== undefined ? oldest.at + WINDOW_MS - now : WINDOW_MS;
        if (s.tokenTotal + need > sub.tpm) {
          // Held by requests in flight (their reservations), not used: room comes back as they end.
          if (s.tokenTotal - s.tokenOpen + need <= sub.tpm)
            return denied('tpm-in-flight', sub, BUSY_RETRY_MS, {
              requests,
              tokens: tighter(tokens, { limit: sub.tpm, remaining: 0, resetMs: reset }),
            });
          let freed = 0;
          let retry = WINDOW_MS;
          for (let i = s.tokenHead; i < s.tokenLog.length; i++) {
            const e = s.tokenLog[i] as TokenEntry;
            freed += e.tokens;
            if (s.tokenTotal - freed + need <= sub.tpm) {
              retry = e.at + WINDOW_MS - now;
              break;
            }
          }
          return denied('tpm', sub, retry, { requests, tokens: tighter(tokens, { limit: sub.tpm, remaining: 0, resetMs: reset }) });
        }
        const take = Math.min(full, sub.tpm - s.tokenTotal);
        needs[states.length - 1] = take;
        tokens = tighter(tokens, { limit: sub.tpm, remaining: sub.tpm - s.tokenTotal - take, resetMs: reset });
      }
      if (sub.parallel !== undefined) {
        for (const [id, until] of s.leases) if (until <= now) s.leases.delete(id);
        if (s.leases.size >= sub.parallel) return denied('parallel', sub, BUSY_RETRY_MS, { requests, tokens });
      }
      if (sub.budget !== undefined) {
        const spent = s.spent.get(sub.budget.period.start) ?? 0;
        let inFlight = 0;
        for (const [id, r] of s.reserved) {
          if (r.until <= now) s.reserved.delete(id);
          else inFlight += r.cost;
        }
        if (spent >= sub.budget.max) return denied('budget', sub, sub.budget.period.end - now, { requests, tokens });
        if (spent + inFlight >= sub.budget.max) return denied('budget-in-flight', sub, BUSY_RETRY_MS, { requests, tokens });
      }
    }
    // Every subject has room: take it everywhere at once.
    for (let i = 0; i < req.subjects.length; i++) {
      const sub = req.subjects[i] as LimitSubject;
      const s = states[i] as SubjectState;
      if (sub.rpm !== undefined) s.requests.push(now);
      if (sub.tpm !== undefined) {
        const e = { id: req.requestId, at: now, tokens: needs[i] ?? Math.min(req.tokens, sub.tpm), open: true };
        s.tokenLog.push(e);
        s.tokenById.set(e.id, e);
        s.tokenTotal += e.tokens;
        s.tokenOpen += e.tokens;
      }
      if (sub.parallel !== undefined) s.leases.set(req.requestId, now + LEASE_TTL_MS);
      if (sub.budget !== undefined) s.reserved.set(req.requestId, { cost: req.cost, until: now + LEASE_TTL_MS });
    }
    return { ok: true, rate: { requests, tokens } };
  }

  settle(req: SettleRequest): Promise<string | undefined> {
    this.settleNow(req);
    return Promise.resolve(undefined);
  }

  settleNow(req: SettleRequest): void {
    for (const sub of req.subjects) {
      const s = this.#state(sub.id);
      const e = s.tokenById.get(req.requestId);
      if (e !== undefined) {
        if (e.open) s.tokenOpen -= e.tokens;
        e.open = false;
        s.tokenTotal += req.tokens - e.tokens;
        e.tokens = req.tokens;
      }
      s.leases.delete(req.requestId);
      s.reserved.delete(req.requestId);
      if (sub.budget !== undefined && req.cost > 0) addSpent(s, sub.budget.period, req.cost);
    }
  }

  renew(leases: readonly { readonly requestId: string; readonly subjects: readonly LimitSubject[] }[], now: number): Promise<void> {
    for (const l of leases) {
      for (const sub of l.subjects) {
        const s = this.#subjects.get(sub.id);
        if (s === undefined) continue;
        if (s.leases.has(l.requestId)) s.leases.set(l.requestId, now + LEASE_TTL_MS);
        const r = s.reserved.get(l.requestId);
        if (r !== undefined) r.until = now + LEASE_TTL_MS;
      }
    }
    return Promise.resolve();
  }

  addSpend(items: readonly SpendItem[]): Promise<void> {
    for (const it of items) addSpent(this.#state(it.subject), it.period, it.cost);
    return Promise.resolve();
  }

  spend(subject: string, period: BudgetPeriod): Promise<number> {
    return Promise.resolve(this.#subjects.get(subject)?.spent.get(period.start) ?? 0);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function addSpent(s: SubjectState, period: BudgetPeriod, cost: number): void {
  // Only the current period matters for admission; older ones are dropped as periods pass.
  for (const start of s.spent.keys()) if (start < period.start) s.spent.delete(start);
  s.spent.set(period.start, (s.spent.get(period.start) ?? 0) + cost);
}

function prune(s: SubjectState, now: number): void {
  const edge = now - WINDOW_MS;
  while (s.requestsHead < s.requests.length && (s.requests[s.requestsHead] as number) <= edge) s.requestsHead++;
  if (s.requestsHead > 1024 && s.requestsHead * 2 > s.requests.length) {
    s.requests = s.requests.slice(s.requestsHead);
    s.requestsHead = 0;
  }
}

function pruneTokens(s: SubjectState, now: number): void {
  const edge = now - WINDOW_MS;
  while (s.tokenHead < s.tokenLog.length) {
    const e = s.tokenLog[s.tokenHead] as TokenEntry;
    if (e.at > edge) break;
    s.tokenTotal -= e.tokens;
    if (e.open) s.tokenOpen -= e.tokens;
    s.tokenById.delete(e.id);
    s.tokenHead++;
  }
  if (s.tokenHead > 1024 && s.tokenHead * 2 > s.tokenLog.length) {
    s.tokenLog = s.tokenLog.slice(s.tokenHead);
    s.tokenHead = 0;
  }
}

/** What denied an admission: a limit, or (`-in-flight`) what requests in flight hold of it until they end. */
export type DeniedLimit = 'rpm' | 'tpm' | 'tpm-in-flight' | 'parallel' | 'budget' | 'budget-in-flight';

function denied(limit: DeniedLimit, sub: LimitSubject, retryAfterMs: number, rate: RateView): Admission {
  // Spend past the budget waits for the next period; cost reserved by requests in flight frees up when they end.
  // A parallel limit has no window: its x-ratelimit-*-requests say how many may be in flight, none left.
  const retry = Math.max(0, retryAfterMs);
  return {
    ok: false,
    code: limit === 'budget' ? 'budget_exceeded' : 'rate_limit_exceeded',
    limit: limit === 'budget-in-flight' ? 'budget' : limit === 'tpm-in-flight' ? 'tpm' : limit,
    held: limit === 'budget-in-flight' || limit === 'tpm-in-flight',
    subject: sub.id,
    retryAfterMs: retry,
    rate:
      limit === 'parallel' && rate.requests === undefined && sub.parallel !== undefined
        ? { ...rate, requests: { limit: sub.parallel, remaining: 0, resetMs: retry } }
        : rate,
  };
}

export { denied as admissionDenied };
