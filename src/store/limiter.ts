/**
 * Limits and budgets around one model request: which subjects it counts against (its key, user, team
 * and deployment), what it reserves (tokens and cost), the admission (one counters call), and the
 * settlement with its real usage when the reply ends. `failure_mode` decides what a store fault means:
 * `closed` denies with 503 store_unavailable, `open` admits without counting and says so in the log.
 */
import type { BudgetCalendar } from './calendar.js';
import { randomUUID } from 'node:crypto';
import type { TeamRecord } from '../core/decide.js';
import type { ErrorCode } from '../errors/codes.js';
import type { KeyDirectory, Limits } from '../identity/keys.js';
import { nextInOrder, type Deployment, type ModelCatalog } from '../routing/deployments.js';
import type { Logger } from '../telemetry/logger.js';
import {
  hasLimits,
  rateHeaders,
  subjectOf,
  subjectParts,
  type Admission,
  type Counters,
  type LimitSubject,
  type StoreErrorHook,
} from './counters.js';
import { MemoryCounters } from './memory-counters.js';

/** What the request carries from admission to settlement (in the signed context, behind Envoy). */
export interface Lease {
  readonly id: string;
  readonly reservedTokens: number;
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
  readonly deploymentId: string | undefined;
}

export type Admitted =
  | {
      readonly ok: true;
      /** Undefined when nothing limits this request, or the store failed open. */
      readonly lease: Lease | undefined;
      /** The deployment admitted (another of the group when the hinted one was full). */
      readonly deployment: Deployment | undefined;
      readonly headers: readonly [string, string][];
    }
  | { readonly ok: false; readonly code: ErrorCode; readonly message: string; readonly headers: readonly [string, string][] };

export interface LimitDirectories {
  readonly keys: KeyDirectory;
  readonly teams: ReadonlyMap<string, TeamRecord>;
  readonly users: ReadonlyMap<string, Limits>;
  readonly catalog: () => ModelCatalog;
}

interface Who {
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
}

const NO_HEADERS: readonly [string, string][] = Object.freeze([]);
/** Longer than any budget_duration period (decades): the budget has none. */
const MAX_RESET_MS = 100 * 365 * 86_400_000;
const WHAT: Record<string, string> = { key: 'this key', user: 'this user', team: "this key's team", deployment: 'the model deployment' };
/**
 * What to do about a budget spent for good (no budget_duration), by whose it is: an admin raises its
 * max_budget through the admin API (or the config file, for a record declared there: the API refuses to
 * change those), or the caller uses another key.
 */
const SPENT_FOR_GOOD: Record<string, string> = {
  key: 'an admin can raise its max_budget (POST /key/update, or keys[].max_budget for a key in the config file), or use another key.',
  team: "an admin can raise the team's max_budget (POST /team/update, or teams[].max_budget for a team in the config file), or use a key of another team.",
  user: "an admin can raise the user's max_budget (POST /user/update, or users[].max_budget for a user in the config file).",
};

/** A deployment's own admission (admitDeployment): a lease, nothing to count, or refused. */
export type GateVerdict =
  | Lease
  | undefined
  | { readonly refused: 'full'; readonly headers: readonly (readonly [string, string])[] }
  | { readonly refused: 'store' };

const STORE_DOWN: GateVerdict = { refused: 'store' };

export class Limiter {
  readonly counters: Counters;
  readonly #dirs: LimitDirectories;
  readonly #failOpen: boolean;
  readonly #logger: Logger;
  readonly #onError: StoreErrorHook | undefined;
  readonly #defaultMaxTokens: number;
  readonly calendar: BudgetCalendar;
  #lastFaultLog = 0;

  constructor(opts: {
    counters: Counters;
    dirs: LimitDirectories;
    failureMode: 'open' | 'closed';
    logger: Logger;
    defaultMaxTokens: number;
    onError?: StoreErrorHook | undefined;
    /** When budget periods reset (litellm_settings.timezone, budget_reset_time; calendarOf). */
    calendar: BudgetCalendar;
  }) {
    this.#onError = opts.onError;
    this.counters = opts.counters;
    this.#dirs = opts.dirs;
    this.#failOpen = opts.failureMode === 'open';
    this.#logger = opts.logger;
    this.#defaultMaxTokens = opts.defaultMaxTokens;
    this.calendar = opts.calendar;
  }

  /** The subjects with limits that a request of `who` on `deployment` counts against. */
  subjects(who: Who, deployment: Deployment | undefined, now: number): LimitSubject[] {
    const out: LimitSubject[] = [];
    // A request admitted under a key regenerated since (a settlement) counts for the key it became.
    const keys = this.#dirs.keys;
    const key = who.keyId === undefined ? undefined : (keys.current?.(who.keyId) ?? keys.byId(who.keyId));
    const cal = this.calendar;
    if (key !== undefined) push(out, subjectOf(`key:${key.id}`, key.limits, now, cal));
    const user = who.userId === undefined ? undefined : this.#dirs.users.get(who.userId);
    if (user !== undefined) push(out, subjectOf(`user:${who.userId}`, user, now, cal));
    const team = who.teamId === undefined ? undefined : this.#dirs.teams.get(who.teamId);
    if (team !== undefined) push(out, subjectOf(`team:${team.teamId}`, team.limits, now, cal));
    if (deployment !== undefined)
      push(out, subjectOf(`deployment:${deployment.id}`, { rpm: deployment.rpm, tpm: deployment.tpm }, now, cal));
    return out;
  }

  /**
   * Admits a model request: reserves `max_tokens` plus an estimate of the prompt, and their cost on
   * `deployment`. Without `max_tokens`, the default cap is reserved where there is room for it, else the
   * room a tpm window has left (at least the prompt and a token). When the deployment itself is full, the other deployments of its model are tried.
   */
  admit(
    who: Who,
    deployment: Deployment | undefined,
    body: { maxTokens: number | undefined; choices: number; bytes: number },
    now: number,
    tried: ReadonlySet<string> = new Set(),
  ): Admitted | Promise<Admitted> {
    const subjects = this.subjects(who, deployment, now);
    if (subjects.length === 0) return { ok: true, lease: undefined, deployment, headers: NO_HEADERS };
    const { prompt, completion: maxTokens } = reservation(body, deployment, this.#defaultMaxTokens);
    const tokens = prompt + maxTokens;
    const cost = deployment === undefined ? 0 : prompt * deployment.inputCostPerToken + maxTokens * deployment.outputCostPerToken;
    const id = randomUUID();
    // Sent without max_tokens, the completion cap is tollgate's own: the request may start on whatever room
    // a tpm window has left (its prompt and a token), instead of waiting for room for the whole cap.
    const leastTokens = body.maxTokens === undefined && maxTokens > 0 ? prompt + 1 : undefined;
    const req = { requestId: id, subjects, tokens, leastTokens, cost, now };
    const done = (a: Admission): Admitted | Promise<Admitted> => {
      if (a.ok) {
        const lease: Lease = { id, reservedTokens: tokens, ...who, deploymentId: deployment?.id };
        return { ok: true, lease, deployment, headers: rateHeaders(a.rate) };
      }
      if (deployment !== undefined && a.subject === `deployment:${deployment.id}`) {
        // That deployment is at its rpm/tpm: another of the group may have room — of its order first, then
        // of the next (a full one counts as unavailable for LiteLLM's `order`).
        const skip = new Set(tried).add(deployment.id);
        const group = this.#dirs.catalog().group(deployment.alias);
        const other = group === undefined ? undefined : nextInOrder(group, deployment, skip);
        if (other !== undefined) return this.admit(who, other, body, now, skip);
      }
      return denial(a);
    };
    if (this.counters instanceof MemoryCounters) return done(this.counters.admitNow(req));
    return this.counters.admit(req).then(done, (err: unknown) => {
      this.#releaseLate(req, { id, reservedTokens: tokens, ...who, deploymentId: deployment?.id });
      return this.#fault(err, deployment);
    });
  }

  /**
   * An admission that failed on this side (its answer timed out) may still run in Redis later and take a
   * lease nothing would settle: holding a parallel slot and reservations until it expired. A release sent
   * now runs after it on the same connection (or finds nothing to release); if that fails too (Redis down),
   * the lease goes to whoever asked to hear of unreleased ones (onUnreleased: Accounting releases it again
   * once Redis answers).
   */
  #releaseLate(req: { requestId: string; subjects: LimitSubject[]; tokens: number; now: number }, lease: Lease): void {
    this.counters
      .settle({ requestId: req.requestId, subjects: req.subjects, reservedTokens: req.tokens, tokens: 0, cost: 0, now: req.now })
      .catch((err: unknown) => this.#unreleased?.(lease, err));
  }

  #unreleased: ((lease: Lease, err: unknown) => void) | undefined;

  /** Told of a lease whose release failed here (Redis unreachable), to release it again later. */
  onUnreleased(hook: (lease: Lease, err: unknown) => void): void {
    this.#unreleased = hook;
  }

  /**
   * The request ended: real tokens and cost replace the reservation; the lease is released. Synchronous
   * (undefined) when nothing limits the request or the counters are in process; rejects on a store fault,
   * else resolves to the counters' generation the cost went into (Counters.settle).
   */
  settle(lease: Lease, tokens: number, cost: number, now: number, servedBy?: string): Promise<string | undefined> | undefined {
    const catalog = this.#dirs.catalog();
    const admitted = lease.deploymentId === undefined ? undefined : catalog.deployment(lease.deploymentId);
    // Windows count whole tokens (a backend could report 10.5).
    const whole = Number.isFinite(tokens) && tokens > 0 ? Math.round(tokens) : 0;
    if (admitted !== undefined && servedBy !== undefined && servedBy !== admitted.id) {
      // Another deployment answered (a retry or fallback, which settles its own lease): the admitted one
      // gets its reservation back and no tokens; the key, user and team get the real usage.
      const a = this.#settleSubjects(lease, this.subjects(lease, undefined, now), whole, cost, now);
      const b = this.#settleSubjects(
        lease,
        this.subjects({ keyId: undefined, userId: undefined, teamId: undefined }, admitted, now),
        0,
        0,
        now,
      );
      if (a === undefined) return b;
      if (b === undefined) return a;
      return Promise.all([a, b]).then(([generation]) => generation);
    }
    return this.#settleSubjects(lease, this.subjects(lease, admitted, now), whole, cost, now);
  }

  #settleSubjects(
    lease: Lease,
    subjects: LimitSubject[],
    tokens: number,
    cost: number,
    now: number,
  ): Promise<string | undefined> | undefined {
    if (subjects.length === 0) return undefined;
    const req = { requestId: lease.id, subjects, reservedTokens: lease.reservedTokens, tokens, cost, now };
    if (this.counters instanceof MemoryCounters) {
      this.counters.settleNow(req);
      return undefined;
    }
    return this.counters.settle(req);
  }

  /**
   * A retry or fallback on a deployment other than the one admitted at Check, against that deployment's own
   * rpm/tpm: a lease, undefined when nothing is counted, or why not — it is full (with the rate-limit
   * headers), or the store is down and failure_mode is closed.
   */
  admitDeployment(d: Deployment, tokens: number, now: number, leastTokens?: number): GateVerdict | Promise<GateVerdict> {
    const subject = subjectOf(`deployment:${d.id}`, { rpm: d.rpm, tpm: d.tpm }, now, this.calendar);
    if (!hasLimits(subject)) return undefined;
    const id = randomUUID();
    const req = { requestId: id, subjects: [subject], tokens, leastTokens, cost: 0, now };
    const lease: Lease = { id, reservedTokens: tokens, keyId: undefined, userId: undefined, teamId: undefined, deploymentId: d.id };
    const done = (a: Admission): GateVerdict => {
      if (a.ok) return lease;
      return { refused: 'full', headers: denial(a).headers };
    };
    if (this.counters instanceof MemoryCounters) return done(this.counters.admitNow(req));
    return this.counters.admit(req).then(done, (err: unknown) => {
      this.#releaseLate(req, lease);
      return this.#fault(err, d).ok ? undefined : STORE_DOWN;
    });
  }

  /**
   * The gateway takes a signed context's one use (its lease id, or its nonce) before it serves the request:
   * 'claimed' the first time; 'taken' when the context was sent before (a replay would pass every limit, and
   * repeat an admin write); 'store' when the counters cannot say and failure_mode is closed — or `strict`
   * (the admin API: a repeated write is worse than a refused one). Open: claimed.
   */
  claim(id: string, untilMs: number, now: number, strict: boolean): ClaimResult | Promise<ClaimResult> {
    const counters = this.counters;
    if (counters instanceof MemoryCounters) return counters.claimNow(id, untilMs, now) ? 'claimed' : 'taken';
    return counters.claim(id, untilMs, now).then(
      (first) => (first ? 'claimed' : 'taken'),
      (err: unknown) => (this.#fault(err, undefined, 'claim').ok && !strict ? 'claimed' : 'store'),
    );
  }

  /** A lease whose request will not be served (its context could not be claimed): its slot and reservations back. */
  release(lease: Lease, now: number): void {
    this.settle(lease, 0, 0, now)?.catch(() => undefined); // unreleased, it expires with LEASE_TTL_MS
  }

  /** Keeps the leases of requests in flight alive (a replica that dies stops renewing, and its leases expire). */
  async renew(leases: Iterable<Lease>, now: number): Promise<void> {
    const catalog = this.#dirs.catalog();
    const list = [...leases].map((l) => ({
      requestId: l.id,
      subjects: this.subjects(l, l.deploymentId === undefined ? undefined : catalog.deployment(l.deploymentId), now),
    }));
    if (list.length > 0) await this.counters.renew(list, now);
  }

  #fault(err: unknown, deployment: Deployment | undefined, op = 'admit'): Admitted {
    this.#onError?.('redis', op);
    const t = Date.now();
    if (t - this.#lastFaultLog > 5_000) {
      this.#lastFaultLog = t;
      this.#logger.error(
        { err: (err as Error).message, failure_mode: this.#failOpen ? 'open' : 'closed' },
        this.#failOpen
          ? 'counters unreachable: admitting without limits (failure_mode: open)'
          : 'counters unreachable: denying (failure_mode: closed)',
      );
    }
    if (this.#failOpen) return { ok: true, lease: undefined, deployment, headers: NO_HEADERS };
    return {
      ok: false,
      code: 'store_unavailable',
      message: 'tollgate cannot reach its rate-limit store right now: retry shortly.',
      headers: [['retry-after', '1']],
    };
  }
}

export type ClaimResult = 'claimed' | 'taken' | 'store';

/**
 * The tokens a model request reserves at admission (Check's, or the gateway's on a retry's deployment): the
 * prompt at about four bytes a token (the JSON around the messages makes it an overestimate, as a reservation
 * should be), and `max_tokens` — or the cap tollgate adds — for each of `n` completions (0 for an embedding).
 */
export function reservation(
  body: { maxTokens: number | undefined; choices: number; bytes: number },
  deployment: Deployment | undefined,
  defaultMaxTokens: number,
): { prompt: number; completion: number } {
  const cap = body.maxTokens ?? Math.min(deployment?.maxTokens ?? Infinity, defaultMaxTokens);
  return { prompt: Math.ceil(body.bytes / 4), completion: body.choices * cap };
}

function push(out: LimitSubject[], s: LimitSubject): void {
  if (hasLimits(s)) out.push(s);
}

function denial(a: Exclude<Admission, { ok: true }>): Extract<Admitted, { ok: false }> {
  const secs = Math.max(1, Math.ceil(a.retryAfterMs / 1000));
  const what = WHAT[subjectParts(a.subject).kind] ?? 'this caller';
  if (a.code === 'budget_exceeded' && a.retryAfterMs > MAX_RESET_MS) {
    // A budget without budget_duration never resets: there is no retry-after to give, only what to do instead.
    const kind = subjectParts(a.subject).kind;
    return {
      ok: false,
      code: 'budget_exceeded',
      message: `The budget of ${what} is spent and does not reset (it has no budget_duration): ${SPENT_FOR_GOOD[kind] ?? SPENT_FOR_GOOD['key']}`,
      headers: rateHeaders(a.rate),
    };
  }
  const headers: [string, string][] = [
    ['retry-after', String(secs)],
    ['retry-after-ms', String(Math.ceil(a.retryAfterMs))],
    ...rateHeaders(a.rate),
  ];
  if (a.code === 'budget_exceeded') {
    return {
      ok: false,
      code: 'budget_exceeded',
      message: `The budget of ${what} is spent for this period; it resets in ${secs} s.`,
      headers,
    };
  }
  const message =
    a.limit === 'rpm'
      ? `Rate limit reached: ${what} may send no more requests per minute. Retry after ${secs} s.`
      : a.limit === 'tpm'
        ? a.held
          ? `Requests in flight hold the rest of the tokens per minute of ${what} (each holds its prompt and max_tokens until it ends): retry when they finish, or send a smaller max_tokens.`
          : `Rate limit reached: ${what} may use no more tokens per minute. Retry after ${secs} s.`
        : a.limit === 'parallel'
          ? `Too many requests in flight for ${what}: wait for one to finish.`
          : `Requests in flight may use the rest of the budget of ${what}: retry when they finish.`;
  return { ok: false, code: 'rate_limit_exceeded', message, headers };
}
