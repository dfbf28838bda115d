import type { Lease } from './limiter.js';

/**
 * Where the gateway records what each request cost. The shared-state work backs this with Redis counters
 * and a PostgreSQL spend log; until then an in-process log keeps the rows (one replica).
 */

export interface SpendEntry {
  readonly requestId: string;
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
  /** The alias the client asked for (after a fallback, the alias that answered). */
  readonly model: string;
  readonly deployment: string | undefined;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** USD: prompt × input_cost_per_token + completion × output_cost_per_token. */
  readonly cost: number;
  /** HTTP status sent to the client; 499 when the client closed (or, on a stream, stopped reading) before the reply ended. */
  readonly status: number;
  readonly latencyMs: number;
  /** True when the backend never reported usage (a stream cut short): tokens are counted from what was streamed. */
  readonly estimated: boolean;
  readonly at: number;
  /** The limits admission this request holds, settled with this entry's usage. */
  readonly lease?: Lease | undefined;
  /** Deployment admissions taken by the gateway for retries and fallbacks. */
  readonly extraLeases?: readonly Lease[] | undefined;
  /** For metrics: the OpenAI endpoint, time spent on backends, and time to the first streamed token. */
  readonly endpoint?: string | undefined;
  readonly backendMs?: number | undefined;
  readonly ttftMs?: number | undefined;
  /** For the log line: what the attempts that failed met (`<deployment>: HTTP 401; <deployment>: CONNECT_TIMEOUT`). */
  readonly upstream?: string | undefined;
}

export interface SpendRecorder {
  record(entry: SpendEntry): void;
}

/** Who a denied request came from (a known key, or the master key), for its spend-log row. */
export interface DeniedCaller {
  readonly keyId: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
  /** The alias asked for, when the body named one. */
  readonly model: string | undefined;
}

/** Where the rows of denied requests go (Accounting): no cost, nothing to settle. */
export interface DenialRecorder {
  denied(requestId: string, who: DeniedCaller, status: number, latencyMs: number): void;
}

/** Keeps the last `max` rows in memory and totals per key. */
export class InMemorySpendLog implements SpendRecorder {
  readonly rows: SpendEntry[] = [];
  readonly #max: number;
  readonly #byKey = new Map<string, number>();
  constructor(max = 10_000) {
    this.#max = max;
  }
  record(entry: SpendEntry): void {
    this.rows.push(entry);
    if (this.rows.length > this.#max) this.rows.shift();
    if (entry.keyId !== undefined) this.#byKey.set(entry.keyId, (this.#byKey.get(entry.keyId) ?? 0) + entry.cost);
  }
  spendOfKey(keyId: string): number {
    return this.#byKey.get(keyId) ?? 0;
  }
}
