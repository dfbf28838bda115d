/**
 * The spend log: one row per request in `spend_logs`, written in batches (at most every FLUSH_MS, or at
 * once past MAX_BATCH rows) and flushed on shutdown. A batch that fails to write stays buffered and is
 * tried again, so a database outage delays rows without losing them while the process runs.
 */
import { randomUUID } from 'node:crypto';
import type { StoreErrorHook } from './counters.js';
import type { Logger } from '../telemetry/logger.js';
import type { Db } from './db.js';
import type { SpendEntry } from './spend.js';

/** A row as buffered: the entry as recorded (not copied), with what the log adds to it. */
interface SpendRow {
  readonly entry: SpendEntry;
  /** Its lease (or a fresh id): what the replay marks counted. */
  readonly leaseId: string;
  /** Its cost reached the shared counters (false while they could not be reached: replayed later). */
  readonly counted: boolean;
}

const FLUSH_MS = 500;
const MAX_BATCH = 500;
/**
 * Rows kept in memory while the database does not take them (readiness already reports the outage). Past
 * this, new rows are dropped and counted rather than growing the process until it is killed, which would
 * lose every buffered row at once. About 200 MB at most.
 */
const MAX_PENDING = 200_000;

/**
 * One statement per batch, the rows as one JSON parameter: JSON.stringify is native and PostgreSQL parses
 * JSON in C, where fifteen array parameters cost the pg client a string-escaping pass per value. A batch
 * keeps its id across retries and is recorded in spend_batches in the same statement, so a batch whose
 * first write succeeded unseen is not written twice — without a unique index per row, which would cost
 * every insert a random b-tree probe.
 */
const INSERT = `WITH batch AS (INSERT INTO spend_batches (batch_id) VALUES ($2) ON CONFLICT DO NOTHING RETURNING batch_id)
  INSERT INTO spend_logs
  (lease_id, request_id, key_id, user_id, team_id, model, deployment, prompt_tokens, completion_tokens, cost, status, latency_ms, estimated, counted, created_at)
  SELECT lease_id, request_id, key_id, user_id, team_id, model, deployment, prompt_tokens, completion_tokens, cost, status, latency_ms, estimated, counted,
         to_timestamp(at_ms / 1000.0)
  FROM json_to_recordset($1::json) AS r(lease_id text, request_id text, key_id text, user_id text, team_id text, model text, deployment text,
       prompt_tokens integer, completion_tokens integer, cost double precision, status integer, latency_ms double precision, estimated boolean,
       counted boolean, at_ms double precision)
  WHERE EXISTS (SELECT 1 FROM batch)`;

export class SpendLog {
  readonly #db: Db;
  readonly #logger: Logger;
  readonly #onError: StoreErrorHook | undefined;
  #buffer: SpendRow[] = [];
  /** The batch being written (kept, with its id, until a write of it succeeds). */
  #batch: { readonly id: string; readonly rows: SpendRow[] } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #failures = 0;
  readonly #maxPending: number;
  #dropped = 0;
  #fullLogged = false;

  constructor(db: Db, logger: Logger, onError?: StoreErrorHook, opts: { maxPending?: number } = {}) {
    this.#db = db;
    this.#logger = logger;
    this.#onError = onError;
    this.#maxPending = opts.maxPending ?? MAX_PENDING;
  }

  /** Rows dropped because the database did not take them for too long. */
  get dropped(): number {
    return this.#dropped;
  }

  /** The last write reached the database (readiness). */
  get healthy(): boolean {
    return this.#failures === 0;
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.#buffer.length + (this.#batch?.rows.length ?? 0);
  }

  add(entry: SpendEntry, leaseId: string, counted: boolean): void {
    if (this.pending >= this.#maxPending) {
      // One line per outage; each row is counted.
      this.#dropped++;
      if (!this.#fullLogged)
        this.#logger.error({ pending: this.pending }, 'spend log full while the database is unreachable: new rows are dropped');
      this.#fullLogged = true;
      this.#onError?.('database', 'spend_log_dropped');
      return;
    }
    this.#buffer.push({ entry, leaseId, counted });
    // A full batch goes at once, unless writes are failing: then the backoff timer decides.
    if (this.#buffer.length >= MAX_BATCH && this.#failures === 0) void this.flush();
    else this.#timer ??= setTimeout(() => void this.flush(), FLUSH_MS);
  }

  /** Writes what is buffered; rows of a failed batch stay for the next try. Never rejects. */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#batch !== undefined || this.#buffer.length > 0) {
      this.#batch ??= { id: randomUUID(), rows: this.#buffer.splice(0, MAX_BATCH) };
      try {
        await this.#db.query(INSERT, [rowsJson(this.#batch.rows), this.#batch.id]);
        this.#batch = undefined;
        this.#failures = 0;
        this.#fullLogged = false;
      } catch (err) {
        this.#failures++;
        this.#onError?.('database', 'spend_log');
        // One line per outage, not one per try.
        if (this.#failures === 1)
          this.#logger.error({ err: (err as Error).message, pending: this.pending }, 'spend log write failed; retrying');
        this.#timer ??= setTimeout(() => void this.flush(), Math.min(5_000, FLUSH_MS * 2 ** Math.min(this.#failures, 4)));
        return;
      }
    }
  }

  /** Shutdown: flush until empty or `deadlineMs` passes; returns the rows that could not be written. */
  async close(deadlineMs: number): Promise<number> {
    const until = Date.now() + deadlineMs;
    for (;;) {
      await this.flush();
      if (this.pending === 0 || Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.pending > 0) this.#logger.error({ lost: this.pending }, 'spend log rows could not be written before shutdown');
    return this.pending;
  }
}

/** The batch as the JSON array of records the INSERT reads. */
function rowsJson(rows: readonly SpendRow[]): string {
  return JSON.stringify(
    rows.map(({ entry: e, leaseId, counted }) => ({
      lease_id: leaseId,
      request_id: e.requestId,
      key_id: e.keyId ?? null,
      user_id: e.userId ?? null,
      team_id: e.teamId ?? null,
      model: e.model,
      deployment: e.deployment ?? null,
      prompt_tokens: Math.round(e.promptTokens),
      completion_tokens: Math.round(e.completionTokens),
      cost: e.cost,
      status: e.status,
      latency_ms: e.latencyMs,
      estimated: e.estimated,
      counted,
      at_ms: e.at,
    })),
  );
}
