/**
 * The spend log: one row per request in `spend_logs`, written in batches (at most every FLUSH_MS, or at
 * once past MAX_BATCH rows) and flushed on shutdown. A batch that fails to write stays buffered and is
 * tried again, so a database outage delays rows without losing them while the process runs.
 */
import type { Logger } from '../telemetry/logger.js';
import type { Db } from './db.js';
import type { SpendEntry } from './spend.js';

export interface SpendRow extends SpendEntry {
  /** Unique per request (its lease, or a fresh id): a batch retried after an unknown outcome is not doubled. */
  readonly leaseId: string;
  /** Its cost reached the shared counters (false while they could not be reached: replayed later). */
  readonly counted: boolean;
}

const FLUSH_MS = 500;
const MAX_BATCH = 500;

const INSERT = `INSERT INTO spend_logs
  (lease_id, request_id, key_id, user_id, team_id, model, deployment, prompt_tokens, completion_tokens, cost, status, latency_ms, estimated, counted, created_at)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::int[],
                       $10::float8[], $11::int[], $12::float8[], $13::bool[], $14::bool[], $15::timestamptz[])
  ON CONFLICT (lease_id) DO NOTHING`;

export class SpendLog {
  readonly #db: Db;
  readonly #logger: Logger;
  #buffer: SpendRow[] = [];
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #failures = 0;

  constructor(db: Db, logger: Logger) {
    this.#db = db;
    this.#logger = logger;
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.#buffer.length;
  }

  add(row: SpendRow): void {
    this.#buffer.push(row);
    if (this.#buffer.length >= MAX_BATCH) void this.flush();
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
    while (this.#buffer.length > 0) {
      const batch = this.#buffer.slice(0, MAX_BATCH);
      try {
        await this.#db.query(INSERT, columns(batch));
        this.#buffer.splice(0, batch.length);
        this.#failures = 0;
      } catch (err) {
        this.#failures++;
        // One line per outage, not one per try.
        if (this.#failures === 1)
          this.#logger.error({ err: (err as Error).message, pending: this.#buffer.length }, 'spend log write failed; retrying');
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
      if (this.#buffer.length === 0 || Date.now() >= until) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#buffer.length > 0) this.#logger.error({ lost: this.#buffer.length }, 'spend log rows could not be written before shutdown');
    return this.#buffer.length;
  }
}

/** The batch as one array per column (unnest), in one pass. */
function columns(rows: readonly SpendRow[]): unknown[] {
  const cols: unknown[][] = Array.from({ length: 15 }, () => new Array<unknown>(rows.length));
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i] as SpendRow;
    const v = [
      r.leaseId,
      r.requestId,
      r.keyId ?? null,
      r.userId ?? null,
      r.teamId ?? null,
      r.model,
      r.deployment ?? null,
      Math.round(r.promptTokens),
      Math.round(r.completionTokens),
      r.cost,
      r.status,
      r.latencyMs,
      r.estimated,
      r.counted,
      new Date(r.at).toISOString(),
    ];
    for (let c = 0; c < 15; c++) (cols[c] as unknown[])[i] = v[c];
  }
  return cols;
}
