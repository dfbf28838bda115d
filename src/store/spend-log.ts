/**
 * The spend log: one row per request in `spend_logs`, written in batches (at most every FLUSH_MS, or at
 * once past MAX_BATCH rows) and flushed on shutdown. A batch that fails to write stays buffered and is
 * tried again, so a database outage delays rows without losing them while the process runs.
 */
import { randomUUID } from 'node:crypto';
import { bounded } from './change-bus.js';
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
  /** The counters' generation its cost went into (Redis), checked against the one on record when written. */
  readonly generation: string | undefined;
}

const FLUSH_MS = 500;
const MAX_BATCH = 500;
/**
 * Rows kept in memory while the database does not take them (readiness turns 503 at nine tenths). Past
 * this, new rows are dropped and counted rather than growing the process until it is killed, which would
 * lose every buffered row at once. About 60 MB at most (a row's line is under 300 bytes).
 */
const MAX_PENDING = 200_000;

/**
 * Each batch is COPYed in text format (PostgreSQL's bulk path: the server spends about half the CPU it spent
 * reading the same rows from a JSON parameter through json_to_recordset), in one transaction with its id's
 * row in spend_batches: a batch whose first write succeeded unseen is refused whole when retried (its id's
 * unique violation), without a unique index per row, which would cost every insert a random b-tree probe.
 * Lines are made when a batch is taken: made as each row comes, a line is a rope of thirty strings kept
 * until the batch goes, which cost the collector more than the entry does (bench/gateway-ab.ts --pg).
 */
const COPY =
  'COPY spend_logs (lease_id, request_id, key_id, user_id, team_id, model, deployment, prompt_tokens, completion_tokens, cost, status, latency_ms, estimated, counted, created_at)';

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

  /** The Redis counters' key prefix: whose generation on record rows are checked against. */
  readonly #countersPrefix: string | undefined;

  constructor(db: Db, logger: Logger, onError?: StoreErrorHook, opts: { maxPending?: number; countersPrefix?: string | undefined } = {}) {
    this.#db = db;
    this.#logger = logger;
    this.#onError = onError;
    this.#maxPending = opts.maxPending ?? MAX_PENDING;
    this.#countersPrefix = opts.countersPrefix;
  }

  /** Rows dropped because the database did not take them for too long. */
  get dropped(): number {
    return this.#dropped;
  }

  /** The last write reached the database. */
  get healthy(): boolean {
    return this.#failures === 0;
  }

  /** Nine tenths of the rows it keeps are waiting: it is about to drop new ones (readiness). */
  get nearlyFull(): boolean {
    return this.pending >= this.#maxPending * 0.9;
  }

  /** Rows waiting to be written. */
  get pending(): number {
    return this.#buffer.length + (this.#batch?.rows.length ?? 0);
  }

  /** `generation`: the counters' generation the cost settled into (Redis), when `counted`. */
  add(entry: SpendEntry, leaseId: string, counted: boolean, generation?: string): void {
    if (this.pending >= this.#maxPending) {
      // One line per outage; each row is counted.
      this.#dropped++;
      if (!this.#fullLogged)
        this.#logger.error({ pending: this.pending }, 'spend log full while the database is unreachable: new rows are dropped');
      this.#fullLogged = true;
      this.#onError?.('database', 'spend_log_dropped');
      return;
    }
    this.#buffer.push({ entry, leaseId, counted, generation });
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
        try {
          await this.#write(this.#batch.id, this.#batch.rows);
        } catch (err) {
          if (!isDataError(err)) throw err;
          await this.#rowByRow(err);
        }
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

  /** Writes `rows` as the batch `id`; resolves also when an earlier try of it was written (its answer lost). */
  async #write(id: string, rows: readonly SpendRow[]): Promise<void> {
    const claim = `INSERT INTO spend_batches (batch_id) VALUES (${sqlString(id)})`;
    const prefix = this.#countersPrefix;
    await (
      prefix !== undefined && rows.some((r) => r.counted && r.generation !== undefined)
        ? // Rows whose cost went into Redis are counted only if that Redis was not seeded again since: read
          // under the lock the seed takes (seedRedis), so each row is in the seed or written after it.
          this.#db.copyIn(
            `LOCK TABLE spend_logs IN ROW EXCLUSIVE MODE; ${claim}; ` +
              `SELECT generation FROM counter_generations WHERE prefix = ${sqlString(prefix)}`,
            COPY,
            (current) => copyText(rows, current[0]?.['generation'] as string | undefined),
          )
        : this.#db.copyIn(claim, COPY, copyText(rows, undefined))
    ).catch((err: unknown) => {
      if (!isUniqueViolation(err, 'spend_batches_pkey')) throw err;
    });
  }

  /**
   * PostgreSQL refused a value of the batch (never expected: every value is escaped and bounded). Retried
   * whole it would be refused for ever and hold back every row after it: its rows are written one at a
   * time instead (each under an id of its own, so a retry skips those written), and a row refused alone is
   * logged — every field of it, none secret — and counted as dropped.
   */
  async #rowByRow(first: unknown): Promise<void> {
    const batch = this.#batch;
    if (batch === undefined) return;
    this.#logger.error(
      { err: (first as Error).message, rows: batch.rows.length },
      'spend log batch refused by PostgreSQL; writing its rows one by one',
    );
    while (batch.rows.length > 0) {
      const row = batch.rows[0] as SpendRow;
      try {
        await this.#write(`${batch.id}:${row.leaseId}`, [row]);
      } catch (err) {
        if (!isDataError(err)) throw err; // the database went away: the rest waits for the next try
        this.#dropped++;
        this.#onError?.('database', 'spend_log_dropped');
        const { lease: _lease, extraLeases: _extra, ...fields } = row.entry;
        this.#logger.error(
          { err: (err as Error).message, row: { ...fields, leaseId: row.leaseId } },
          'spend log row refused by PostgreSQL: dropped',
        );
      }
      batch.rows.shift();
    }
  }

  /**
   * Shutdown: flush until empty or `deadlineMs` passes — a write the database does not answer is given up at
   * the deadline, not awaited. Returns the rows that could not be written (logged with their count).
   */
  async close(deadlineMs: number): Promise<number> {
    const until = Date.now() + deadlineMs;
    for (let left = deadlineMs; left > 0; left = until - Date.now()) {
      await bounded(this.flush(), left);
      if (this.pending === 0) break;
      await new Promise((r) => setTimeout(r, Math.min(200, Math.max(0, until - Date.now()))));
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.pending > 0) this.#logger.error({ lost: this.pending }, 'spend log rows could not be written before shutdown');
    return this.pending;
  }
}

/** PostgreSQL refused a value (SQLSTATE class 22, data exception, or 23, an integrity violation other than a batch on record). */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'));
}

function isUniqueViolation(err: unknown, constraint: string): boolean {
  const e = err as { code?: unknown; constraint?: unknown; message?: unknown };
  // pg names the constraint; PGlite's error may carry only the message.
  return e.code === '23505' && (e.constraint === constraint || (typeof e.message === 'string' && e.message.includes(constraint)));
}

/** A PostgreSQL string literal (standard_conforming_strings, on since PostgreSQL 9.1). */
function sqlString(v: string): string {
  return `'${v.replaceAll("'", "''").replaceAll('\0', '')}'`;
}

/**
 * The rows in COPY's text format: a line each, tab-separated, `\N` for null, booleans t/f. A row counted in
 * a generation of the counters other than `current` (on record: seeded again since) is written uncounted;
 * with none on record (never seeded by this version), as it came.
 */
function copyText(rows: readonly SpendRow[], current: string | undefined): string {
  let out = '';
  const time = new IsoTime();
  for (const { entry: e, leaseId, counted: settled, generation } of rows) {
    const counted = settled && (generation === undefined || current === undefined || generation === current);
    out +=
      `${text(leaseId)}\t${text(e.requestId)}\t${text(e.keyId)}\t${text(e.userId)}\t${text(e.teamId)}\t${text(e.model)}\t` +
      `${text(e.deployment)}\t${integer(e.promptTokens)}\t${integer(e.completionTokens)}\t${real(e.cost)}\t${integer(e.status)}\t` +
      `${real(e.latencyMs)}\t${e.estimated ? 't' : 'f'}\t${counted ? 't' : 'f'}\t${time.of(e.at)}\n`;
  }
  return out;
}

/** ISO 8601 UTC times of epoch ms; a batch's rows share their second's text (toISOString per row was a third of the batch's cost). */
class IsoTime {
  #second = Number.NaN;
  #prefix = '';
  of(at: number): string {
    const ms = Number.isFinite(at) ? at : Date.now(); // never expected; a throw here would lose the batch
    const second = Math.floor(ms / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#prefix = new Date(second * 1000).toISOString().slice(0, 20); // 2026-12-07T06:08:24.
    }
    const frac = Math.floor(ms - second * 1000);
    return `${this.#prefix}${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}Z`;
  }
}

const COPY_SPECIAL = /[\\\t\n\r\0]/;
const COPY_SPECIALS = /[\\\t\n\r\0]/g;
/** NUL, which no PostgreSQL text holds (a JWT claim may carry one), becomes U+FFFD rather than a batch refused for ever. */
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\uFFFD' };

/** A text value for COPY: backslash, tab, newline and carriage return escaped (ids and aliases rarely hold any). */
function text(v: string | null | undefined): string {
  if (v === undefined || v === null) return '\\N';
  return COPY_SPECIAL.test(v) ? v.replace(COPY_SPECIALS, (c) => COPY_ESCAPES[c] as string) : v;
}

/** PostgreSQL's integer columns hold up to 2^31 - 1. */
const INT_MAX = 2_147_483_647;

/**
 * A count for an integer column, within what the column holds (a backend could report any number of tokens);
 * one that is not finite (never expected) as 0: not a value PostgreSQL refuses.
 */
function integer(v: number): string {
  return Number.isFinite(v) ? String(Math.min(INT_MAX, Math.max(-INT_MAX, Math.round(v)))) : '0';
}

function real(v: number): string {
  return Number.isFinite(v) ? String(v) : '0';
}
