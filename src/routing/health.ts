/**
 * Per-deployment state the gateway keeps for routing: in-flight count (least-busy), latency EWMA
 * (latency-based-routing), tokens and requests in the current minute (usage-based-routing), and
 * failures leading to a cooldown (one more than `allowed_fails` within a minute → out for `cooldown_time`), as
 * LiteLLM's Router does. One replica's view; shared limits live in the store.
 */
import { firstOrder, weighted, type Cooldown, type Deployment, type DeploymentHealth, type ModelGroup } from './deployments.js';

interface State {
  inFlight: number;
  latencyMs: number | undefined;
  minute: number;
  requests: number;
  tokens: number;
  failMinute: number;
  fails: number;
  coolUntil: number;
  /** A 429 put the deployment in its cooldown (its backend is rate limiting), not a fault. */
  coolRateLimited: boolean;
}

/** A failed attempt: a fault (connect error, 5xx, timeout, …), or a 429 with the wait its valid retry-after asked for. */
export type Failure = { readonly rateLimited: false } | { readonly rateLimited: true; readonly waitMs: number | undefined };

const FAULT: Failure = { rateLimited: false };

/**
 * The longest a 429's retry-after stretches a cooldown past `cooldown_time` (when that is shorter): one
 * backend's header, bogus or not, cannot take a deployment out for longer; after it, the deployment is
 * asked again, and a 429 then cools it again.
 */
export const MAX_RETRY_AFTER_COOLDOWN_MS = 5 * 60_000;

export type RoutingStrategy = 'simple-shuffle' | 'least-busy' | 'latency-based-routing' | 'usage-based-routing' | 'usage-based-routing-v2';

const EWMA = 0.3;

export class DeploymentTracker implements DeploymentHealth {
  readonly #states = new Map<string, State>();
  readonly #allowedFails: number;
  readonly #cooldownMs: number;
  /** Told each time a deployment enters cooldown (metrics). */
  onCooldown: ((id: string) => void) | undefined;

  constructor(opts: { allowedFails: number; cooldownSeconds: number }) {
    this.#allowedFails = opts.allowedFails;
    this.#cooldownMs = opts.cooldownSeconds * 1000;
  }

  #state(id: string): State {
    let s = this.#states.get(id);
    if (s === undefined) {
      s = {
        inFlight: 0,
        latencyMs: undefined,
        minute: 0,
        requests: 0,
        tokens: 0,
        failMinute: 0,
        fails: 0,
        coolUntil: 0,
        coolRateLimited: false,
      };
      this.#states.set(id, s);
    }
    return s;
  }

  isAvailable(id: string, nowMs: number): boolean {
    const s = this.#states.get(id);
    return s === undefined || s.coolUntil <= nowMs;
  }

  cooling(id: string, nowMs: number): boolean {
    return !this.isAvailable(id, nowMs);
  }

  cooldown(id: string, nowMs: number): Cooldown | undefined {
    const s = this.#states.get(id);
    return s === undefined || s.coolUntil <= nowMs ? undefined : { untilMs: s.coolUntil, rateLimited: s.coolRateLimited };
  }

  inFlight(id: string): number {
    return this.#states.get(id)?.inFlight ?? 0;
  }

  started(id: string, nowMs: number): void {
    const s = this.#state(id);
    s.inFlight++;
    const minute = Math.floor(nowMs / 60_000);
    if (s.minute !== minute) {
      s.minute = minute;
      s.requests = 0;
      s.tokens = 0;
    }
    s.requests++;
  }

  finished(id: string): void {
    const s = this.#state(id);
    if (s.inFlight > 0) s.inFlight--;
  }

  /** Time to the response headers of a successful attempt (latency-based-routing). */
  latency(id: string, latencyMs: number): void {
    const s = this.#state(id);
    s.latencyMs = s.latencyMs === undefined ? latencyMs : s.latencyMs * (1 - EWMA) + latencyMs * EWMA;
  }

  /** Tokens a request used on the deployment this minute (usage-based-routing). */
  addTokens(id: string, tokens: number): void {
    this.#state(id).tokens += tokens;
  }

  /**
   * A failed attempt (connect error, 429, 5xx, timeout). Returns true when this put the deployment in cooldown.
   * A 429 counts as any failure does: LiteLLM's count when `allowed_fails` is set (router_utils/
   * cooldown_handlers.py, should_cooldown_based_on_allowed_fails_policy; only without it does its failure-rate
   * logic cool a deployment at its first 429), and tollgate always has one (default 3). When a 429 tips the
   * count, its retry-after, if longer than `cooldown_time`, is how long the deployment stays out (bounded by
   * MAX_RETRY_AFTER_COOLDOWN_MS): its backend said it refuses until then, so back sooner it is refused again.
   */
  failed(id: string, nowMs: number, failure: Failure = FAULT): boolean {
    const s = this.#state(id);
    const minute = Math.floor(nowMs / 60_000);
    if (s.failMinute !== minute) {
      s.failMinute = minute;
      s.fails = 0;
    }
    s.fails++;
    // LiteLLM's count: `allowed_fails` failures are tolerated, the next one cools the deployment down.
    if (s.fails > this.#allowedFails && this.#cooldownMs > 0) {
      const wait = failure.rateLimited ? failure.waitMs : undefined;
      const ms =
        wait !== undefined && wait > this.#cooldownMs
          ? Math.min(wait, Math.max(this.#cooldownMs, MAX_RETRY_AFTER_COOLDOWN_MS))
          : this.#cooldownMs;
      s.fails = 0;
      // A failure of a request that was in flight when the cooldown began does not end it sooner (a 5xx
      // after a 429's five minutes): the cooldown that ends later, and its cause, stand.
      if (s.coolUntil > nowMs + ms) return false;
      s.coolUntil = nowMs + ms;
      s.coolRateLimited = failure.rateLimited;
      this.onCooldown?.(id);
      return true;
    }
    return false;
  }

  /**
   * The deployment for an attempt: among available ones not yet tried, those of the lowest `order` (LiteLLM
   * filters by order before its strategy runs: orderRank), then by strategy. `random` in [0, 1).
   * `usage-based-routing` skips deployments past their rpm/tpm this minute — which makes the next order the
   * first available when all of one order are past theirs — and prefers the least used.
   */
  pick(group: ModelGroup, strategy: RoutingStrategy, exclude: ReadonlySet<string>, nowMs: number, random: number): Deployment | undefined {
    let open = group.deployments.filter((d) => !exclude.has(d.id) && this.isAvailable(d.id, nowMs));
    const minute = Math.floor(nowMs / 60_000);
    if ((strategy === 'usage-based-routing' || strategy === 'usage-based-routing-v2') && open.length > 1) {
      const under = open.filter((d) => {
        const u = this.#used(d.id, minute);
        return (d.rpm === undefined || u.requests < d.rpm) && (d.tpm === undefined || u.tokens < d.tpm);
      });
      if (under.length > 0) open = under;
    }
    const candidates = group.ordered ? firstOrder(open) : open;
    if (candidates.length <= 1) return candidates[0];
    switch (strategy) {
      case 'least-busy':
        return minBy(candidates, (d) => this.inFlight(d.id), random);
      case 'latency-based-routing':
        // Untried deployments first (latency unknown = 0), so each gets measured.
        return minBy(candidates, (d) => this.#states.get(d.id)?.latencyMs ?? 0, random);
      case 'usage-based-routing':
      case 'usage-based-routing-v2':
        return minBy(candidates, (d) => this.#used(d.id, minute).tokens, random);
      case 'simple-shuffle':
        return weighted(candidates, random);
    }
  }

  /** Requests and tokens of a deployment in `minute` (usage-based-routing). */
  #used(id: string, minute: number): { requests: number; tokens: number } {
    const s = this.#states.get(id);
    return s === undefined || s.minute !== minute ? NO_USE : s;
  }
}

const NO_USE = { requests: 0, tokens: 0 } as const;

function minBy(list: readonly Deployment[], score: (d: Deployment) => number, random: number): Deployment | undefined {
  let best: Deployment[] = [];
  let bestScore = Infinity;
  for (const d of list) {
    const s = score(d);
    if (s < bestScore) {
      bestScore = s;
      best = [d];
    } else if (s === bestScore) {
      best.push(d);
    }
  }
  return best[Math.floor(random * best.length)] ?? best[0];
}
