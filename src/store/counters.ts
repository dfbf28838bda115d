/**
 * Shared counters: rate-limit windows, parallel-request leases and budget spend — what every replica
 * must see as one. Two implementations with the same semantics: in-process (one replica) and Redis
 * (one atomic Lua round trip per admission).
 *
 * Semantics, for every subject (a key, user, team or deployment) that has a limit:
 * - rpm / tpm: a sliding 60 s log, not fixed windows (which admit twice the limit at a boundary). A request
 *   is admitted when the requests (tokens) admitted in the last 60 s, plus this one, fit the limit.
 * - Tokens are reserved at admission (the request's max_tokens or the default cap, plus its prompt) and
 *   settled with the real usage when the reply ends, so a burst cannot pass the tpm before usage is known.
 * - max_parallel_requests: a lease per request, released when it ends, and expiring on its own
 *   (LEASE_TTL_MS, renewed by the replica holding the request) when a replica dies.
 * - Budgets: spend per period; a request is admitted while spend plus the cost reserved by requests in
 *   flight is below the budget, so concurrency can push spend past it by one request at most.
 * Admission is all-or-nothing across subjects: a request denied by its team takes nothing from its key.
 */
import type { Limits } from '../identity/keys.js';
import { DURATION_PATTERN, DURATION_UNIT_MS } from '../config/schema.js';
import type { BudgetCalendar, BudgetPeriod } from './calendar.js';

export const WINDOW_MS = 60_000;
/** A lease not renewed for this long belongs to a replica that died. */
export const LEASE_TTL_MS = 30_000;
/**
 * How long a context's claim (Counters.claim) is kept past the context's expiry: replica clocks differ (by
 * milliseconds where NTP runs). Every context is claimed, so claims held are requests per second × 35 s.
 */
export const CLAIM_MARGIN_MS = 5_000;
/** How often the replica holding a request renews its leases. */
export const LEASE_RENEW_MS = 10_000;

export type { BudgetPeriod } from './calendar.js';

export interface LimitSubject {
  /** `key:<key id>`, `user:<id>`, `team:<id>`, `deployment:<id>`. */
  readonly id: string;
  readonly rpm: number | undefined;
  readonly tpm: number | undefined;
  readonly parallel: number | undefined;
  readonly budget: { readonly max: number; readonly period: BudgetPeriod } | undefined;
}

export interface AdmitRequest {
  readonly requestId: string;
  readonly subjects: readonly LimitSubject[];
  /** Tokens reserved for the tpm windows. */
  readonly tokens: number;
  /**
   * When set, a tpm window with less room than `tokens` takes the room it has, down to this (the request sent
   * no max_tokens: the completion cap is tollgate's, and the request is admitted while it can start).
   */
  readonly leastTokens?: number | undefined;
  /** USD reserved against budgets until the request settles. */
  readonly cost: number;
  readonly now: number;
}

export interface SettleRequest {
  readonly requestId: string;
  readonly subjects: readonly LimitSubject[];
  /** What admission reserved (0 when the request was admitted without the store). */
  readonly reservedTokens: number;
  /** The real usage, and its cost. */
  readonly tokens: number;
  readonly cost: number;
  readonly now: number;
}

/** The tightest request and token windows, for `x-ratelimit-*`. */
export interface RateView {
  readonly requests: { readonly limit: number; readonly remaining: number; readonly resetMs: number } | undefined;
  readonly tokens: { readonly limit: number; readonly remaining: number; readonly resetMs: number } | undefined;
}

export type Admission =
  | { readonly ok: true; readonly rate: RateView }
  | {
      readonly ok: false;
      readonly code: 'rate_limit_exceeded' | 'budget_exceeded';
      /** Which limit: `rpm`, `tpm`, `parallel` or `budget`, of which subject. */
      readonly limit: 'rpm' | 'tpm' | 'parallel' | 'budget';
      /** The limit is not used up: requests in flight hold the rest (their reservations) until they end. */
      readonly held: boolean;
      readonly subject: string;
      /** The real time until the request would fit (a slot ages out, a lease is released, the period ends). */
      readonly retryAfterMs: number;
      readonly rate: RateView;
    };

/** Cost added to a subject's budget in one period. */
export interface SpendItem {
  /** `key:<id>`, `user:<id>`, `team:<id>`. */
  readonly subject: string;
  readonly period: BudgetPeriod;
  readonly cost: number;
}

export interface Counters {
  /** 'memory' counts for this process alone; 'redis' for every replica. */
  readonly kind: 'memory' | 'redis';
  /** Checks and reserves, atomically across every subject. Rejects only on a store fault. */
  admit(req: AdmitRequest): Promise<Admission>;
  /**
   * Replaces the reservation with the real usage, adds the cost, releases the lease. Resolves to the
   * counters' generation (Redis: changed whenever it is seeded after a restart), undefined in process.
   */
  settle(req: SettleRequest): Promise<string | undefined>;
  /**
   * Takes a signed context's one use (its lease id, or its nonce): true the first time, false ever after —
   * kept CLAIM_MARGIN_MS past `untilMs`, when the context has expired anyway, so a replica whose clock runs behind
   * still finds it. A context sent again is refused.
   */
  claim(id: string, untilMs: number, now: number): Promise<boolean>;
  /** Keeps the leases of requests still in flight alive. */
  renew(leases: readonly { readonly requestId: string; readonly subjects: readonly LimitSubject[] }[], now: number): Promise<void>;
  /** Adds spend that settled while the counters could not be reached (replayed from the spend log). */
  addSpend(items: readonly SpendItem[]): Promise<void>;
  /** Spend counted in a period (budget checks, admin views, tests). */
  spend(subject: string, period: BudgetPeriod): Promise<number>;
  close(): Promise<void>;
}

/** Told of each failed store operation (metrics): which store, and what was being done. */
export type StoreErrorHook = (store: 'redis' | 'database', op: string) => void;

/** `key:<id>` → { kind: 'key', id }: the one place subject ids are taken apart. */
export function subjectParts(subject: string): { kind: string; id: string } {
  const at = subject.indexOf(':');
  return { kind: subject.slice(0, at), id: subject.slice(at + 1) };
}

export function hasLimits(s: LimitSubject): boolean {
  return s.rpm !== undefined || s.tpm !== undefined || s.parallel !== undefined || s.budget !== undefined;
}

/**
 * The budget period containing `now` on `calendar` (LiteLLM's calendar resets, in its time zone and at its
 * reset time of day; calendar.ts), so every replica — and a restarted one — agrees on when a period resets
 * without storing it.
 */
export function budgetPeriod(duration: string | undefined, now: number, calendar: BudgetCalendar): BudgetPeriod {
  return calendar.period(duration, now);
}

/**
 * The budget period of `limits` containing `now`, starting no earlier than `limits.budgetFrom` (the key
 * record's creation): spend of an earlier record with the same key id is outside it. The period's start
 * names its counter, so a new record's spend is counted apart from the old one's.
 */
export function budgetPeriodOf(
  limits: Partial<Pick<Limits, 'budgetDuration' | 'budgetFrom'>>,
  now: number,
  calendar: BudgetCalendar,
): BudgetPeriod {
  const p = calendar.period(limits.budgetDuration, now);
  const from = limits.budgetFrom;
  return from === undefined || from <= p.start || from >= p.end ? p : { start: from, end: p.end };
}

/**
 * `now` plus a duration (`30d`, `12h`, `1mo`: calendar months, UTC): when a key made for it expires. A month
 * from a day the target month lacks (the 31st, the 30th into February) ends on that month's last day, as
 * LiteLLM's duration_parser does, not days into the month after.
 */
export function afterDuration(duration: string, now: number): number {
  const m = DURATION_PATTERN.exec(duration);
  const n = Number(m?.[1] ?? 1);
  const unit = m?.[2] ?? 'd';
  if (unit !== 'mo') return now + n * (DURATION_UNIT_MS[unit] ?? 86_400_000);
  const d = new Date(now);
  const day = d.getUTCDate();
  d.setUTCDate(1);
  d.setUTCMonth(d.getUTCMonth() + n);
  const lastDay = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 0)).getUTCDate();
  d.setUTCDate(Math.min(day, lastDay));
  return d.getTime();
}

/** The subject of a key, user, team or deployment with its configured limits (undefined: no limits). */
export function subjectOf(
  id: string,
  limits: Partial<Limits> & { rpm?: number | undefined; tpm?: number | undefined },
  now: number,
  calendar: BudgetCalendar,
): LimitSubject {
  return {
    id,
    rpm: limits.rpmLimit ?? limits.rpm,
    tpm: limits.tpmLimit ?? limits.tpm,
    parallel: limits.maxParallelRequests,
    budget: limits.maxBudget === undefined ? undefined : { max: limits.maxBudget, period: budgetPeriodOf(limits, now, calendar) },
  };
}

/** `x-ratelimit-*` (OpenAI's names) for a RateView; reset as a duration like OpenAI's `6m0s` / `1.5s`. */
export function rateHeaders(rate: RateView): [string, string][] {
  const out: [string, string][] = [];
  for (const [kind, w] of [
    ['requests', rate.requests],
    ['tokens', rate.tokens],
  ] as const) {
    if (w === undefined) continue;
    out.push([`x-ratelimit-limit-${kind}`, String(w.limit)]);
    out.push([`x-ratelimit-remaining-${kind}`, String(Math.max(0, w.remaining))]);
    out.push([`x-ratelimit-reset-${kind}`, `${Math.max(0, Math.ceil(w.resetMs) / 1000)}s`]);
  }
  return out;
}

/** Keeps the tighter of two windows (least remaining). */
export function tighter<T extends { remaining: number }>(a: T | undefined, b: T | undefined): T | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b.remaining < a.remaining ? b : a;
}
