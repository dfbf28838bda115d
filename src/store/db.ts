/**
 * The records database: PostgreSQL (`database_url`, the `pg` package) or, without one, embedded PGlite
 * (`@electric-sql/pglite`: real PostgreSQL compiled to WebAssembly, in memory or in `data_dir`). One small
 * interface over both, so the same SQL and migrations run on each. SQL only with parameters.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import pg from 'pg';

export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** Several statements, no parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** The PostgreSQL schema the tables live in. */
  readonly schema: string;
  /** PostgreSQL: the URL connections are made with (sslmode resolved as libpq reads it; pgConnectionUrl). */
  readonly connectionUrl?: string | undefined;
  /** `timeoutMs`: how long each statement may go unanswered, when not QUERY_TIMEOUT_MS (PostgreSQL: migrations). */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, timeoutMs?: number): Promise<T>;
  /**
   * In one transaction: the statements `before` (no parameters), then `copy` (`COPY table (columns)`) fed
   * `data`, rows in COPY's text format. PostgreSQL's bulk path: a batch of rows costs the server about half
   * the CPU of the same rows read from a JSON parameter. One round trip on PostgreSQL; two when `data` is
   * made from the rows the last statement of `before` returns.
   */
  copyIn(before: string, copy: string, data: CopyData): Promise<void>;
  close(): Promise<void>;
}

/** COPY's rows, or what makes them from the rows the statements before it returned. */
export type CopyData = string | ((rows: readonly Record<string, unknown>[]) => string);

export interface DbOptions {
  /** `postgres://…`; a Prisma-style `?schema=name` (as LiteLLM's DATABASE_URL may carry) picks the schema. */
  readonly url?: string | undefined;
  /** Embedded PGlite's directory; absent: in memory. */
  readonly dataDir?: string | undefined;
  /** Overrides the URL's schema (tests: one schema each). */
  readonly schema?: string | undefined;
  /** PostgreSQL: how long a statement may go unanswered (QUERY_TIMEOUT_MS; tests shorten it). */
  readonly queryTimeoutMs?: number | undefined;
}

/**
 * A statement PostgreSQL has not answered in this long is taken for a connection lost (a network path that
 * drops packets resets nothing, and TCP would retransmit for minutes): it fails, and its connection is
 * dropped rather than given back, so the spend log retries on a new one and shutdown is not held up.
 */
export const QUERY_TIMEOUT_MS = 30_000;
/** Migrations may build an index on a large table, or wait for another replica's: bounded only loosely. */
export const MIGRATION_TIMEOUT_MS = 60 * 60_000;

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Embedded PGlite's shared buffers (bench/embedded-memory.ts measures what it and releaseInitMemory save). */
export const PGLITE_SHARED_BUFFERS = '16MB';

/**
 * PGlite's initdb (a new data directory, or every start in memory) runs in a WebAssembly instance of its
 * own, a few hundred MB that V8 frees only in full collections, which an idle process has no reason to run:
 * they are run here, once, at boot. The first unlinks the instance; the next ones, a turn later, free it.
 */
async function releaseInitMemory(): Promise<void> {
  let gc: () => void;
  try {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  } catch {
    return; // a runtime without it keeps the memory until V8 collects on its own
  } finally {
    v8.setFlagsFromString('--no-expose-gc'); // only this function holds it
  }
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

export async function openDb(opts: DbOptions): Promise<Db> {
  if (opts.url !== undefined) return openPostgres(opts.url, opts.schema, opts.queryTimeoutMs ?? QUERY_TIMEOUT_MS);
  // initdb runs in memory, and in a data directory that holds no database yet.
  const initdb = opts.dataDir === undefined || !existsSync(path.join(opts.dataDir, 'PG_VERSION'));
  // One process at a time: a second one on the same files would overwrite the first's writes.
  const unlock = opts.dataDir === undefined ? undefined : lockDataDir(opts.dataDir);
  // Loaded only here: a process with a database_url never holds PGlite's module.
  const { PGlite } = await import('@electric-sql/pglite');
  const lite = new PGlite(opts.dataDir, {
    // One small install's records: PostgreSQL's default 128 MB of shared buffers was most of the process's
    // memory. (In memory, without a data directory, PGlite keeps its own settings.)
    startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${PGLITE_SHARED_BUFFERS}`],
  });
  await lite.waitReady.catch((err: unknown) => {
    unlock?.();
    throw err;
  });
  if (initdb) await releaseInitMemory();
  return {
    kind: 'pglite',
    schema: 'public',
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      return (await lite.query<T>(sql, params as unknown[] | undefined)).rows;
    },
    async exec(sql: string): Promise<void> {
      await lite.exec(sql);
    },
    transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      return lite.transaction((tx) =>
        fn({
          async query<R>(sql: string, params?: readonly unknown[]): Promise<R[]> {
            return (await tx.query<R>(sql, params as unknown[] | undefined)).rows;
          },
          async exec(sql: string): Promise<void> {
            await tx.exec(sql);
          },
        }),
      );
    },
    async copyIn(before: string, copy: string, data: CopyData): Promise<void> {
      await lite.transaction(async (tx) => {
        const results = await tx.exec(before);
        const text = typeof data === 'string' ? data : data(results.at(-1)?.rows ?? []);
        await tx.query(`${copy} FROM '/dev/blob'`, [], { blob: new Blob([text]) });
      });
    },
    async close(): Promise<void> {
      await lite.close();
      unlock?.();
    },
  };
}

/**
 * The URL to connect with, `sslmode` read as libpq (and so Prisma, LiteLLM's client) reads it; the `pg`
 * package alone takes prefer, require and verify-ca as verify-full (and warns on stderr), so a LiteLLM
 * DATABASE_URL with `sslmode=require` against a private CA, or `prefer` against a server without TLS,
 * would not connect. `require`: encrypted, unverified (verified against `sslrootcert` when given);
 * `verify-ca`: the chain, not the host name; `prefer` and `allow`: TLS when the server offers it, else
 * none — asked once here, as libpq asks at every connection.
 */
export async function pgConnectionUrl(url: string): Promise<string> {
  const u = new URL(url);
  u.searchParams.delete('schema');
  const mode = u.searchParams.get('sslmode');
  // no-verify is the pg package's own (TLS, no verification), which libpq's reading does not know.
  if (mode === null || mode === 'no-verify') return u.toString();
  if (!u.searchParams.has('uselibpqcompat')) u.searchParams.set('uselibpqcompat', 'true');
  if (mode !== 'prefer' && mode !== 'allow') return u.toString();
  u.searchParams.set('sslmode', 'prefer');
  const probe = new pg.Client({ connectionString: u.toString(), connectionTimeoutMillis: 5_000 });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    return u.toString();
  } catch (err) {
    if (!/does not support SSL/i.test((err as Error).message)) throw err;
    u.searchParams.set('sslmode', 'disable');
    return u.toString();
  } finally {
    await probe.end().catch(() => undefined);
  }
}

/**
 * A data_dir another live process holds. `code` lets the CLI say what to do in its own terms (the embedded
 * default has no data_dir setting to change).
 */
export class DataDirInUseError extends Error {
  readonly code = 'TOLLGATE_DATA_DIR_IN_USE';
  readonly dataDir: string;
  readonly pid: number;
  readonly host: string;
  constructor(dataDir: string, pid: number, host: string) {
    super(
      `data_dir ${dataDir} is in use by process ${pid} on ${host}: embedded PGlite takes one process at a ` +
        'time (stop it, or give this one another data_dir, or set database_url to share PostgreSQL)',
    );
    this.name = 'DataDirInUseError';
    this.dataDir = dataDir;
    this.pid = pid;
    this.host = host;
  }
}

/** How often a data_dir lock's holder touches it, and how old a lock is when its holder is taken for gone. */
const LOCK_BEAT_MS = 2_000;
const LOCK_STALE_MS = 10_000;

/**
 * Takes `dir`'s lock (`<dir>.lock`: the holder's host name and process id, its mtime touched every 2 s), or
 * throws naming the holder. A lock is its holder's while it is fresh, whatever the process ids say — two
 * containers on one volume are both PID 1 — and is taken over once it is 10 s old, or at once when it names
 * this host and a process that is not running (or this very pid: a container restarted). Created by
 * link(2) from a file already written, so no one reads a half-written lock, and one starter wins.
 */
export function lockDataDir(dir: string): () => void {
  mkdirSync(path.dirname(dir), { recursive: true });
  const lock = `${dir}.lock`;
  const host = hostname();
  for (let attempt = 0; attempt < 5; attempt++) {
    const tmp = `${lock}.${process.pid}.${randomBytes(4).toString('hex')}`;
    writeFileSync(tmp, JSON.stringify({ host, pid: process.pid }));
    try {
      linkSync(tmp, lock);
      const beat = setInterval(() => {
        try {
          const now = new Date();
          utimesSync(lock, now, now);
        } catch {
          // released, or the directory is gone: nothing to keep fresh
        }
      }, LOCK_BEAT_MS).unref();
      return () => {
        clearInterval(beat);
        rmSync(lock, { force: true });
      };
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'EEXIST') throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
    const holder = readLock(lock);
    if (holder === undefined) continue; // released meanwhile
    const gone =
      Date.now() - holder.mtimeMs > LOCK_STALE_MS ||
      (holder.host === host && (holder.pid === process.pid || (holder.pid > 0 && !isRunning(holder.pid))));
    if (!gone) throw new DataDirInUseError(path.dirname(dir), holder.pid, holder.host);
    // Moved aside first: of several starters that found it stale, one moves it; all then race for link(2).
    const aside = `${lock}.stale.${randomBytes(4).toString('hex')}`;
    try {
      renameSync(lock, aside);
      rmSync(aside, { force: true });
    } catch {
      // another starter moved it
    }
  }
  throw new Error(`data_dir ${path.dirname(dir)}: its lock changes hands too often to be taken; is something else starting on it?`);
}

function readLock(lock: string): { host: string; pid: number; mtimeMs: number } | undefined {
  try {
    const mtimeMs = statSync(lock).mtimeMs;
    let held: { host?: unknown; pid?: unknown } = {};
    try {
      held = JSON.parse(readFileSync(lock, 'utf8')) as typeof held;
    } catch {
      // not ours to read: its age decides
    }
    return { host: typeof held.host === 'string' ? held.host : '?', pid: typeof held.pid === 'number' ? held.pid : 0, mtimeMs };
  } catch {
    return undefined;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: unknown }).code === 'EPERM';
  }
}

async function openPostgres(url: string, schemaOverride: string | undefined, queryTimeoutMs: number): Promise<Db> {
  const schema = schemaOverride ?? new URL(url).searchParams.get('schema') ?? 'public';
  if (!SCHEMA_NAME.test(schema)) throw new Error(`database_url: schema "${schema}" is not a plain PostgreSQL name (a-z, 0-9, _)`);
  const connectionUrl = await pgConnectionUrl(url);
  const pool = new pg.Pool({
    connectionString: connectionUrl,
    max: 8,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    query_timeout: queryTimeoutMs,
    // An idle connection to a server that went away unseen is found and dropped before a statement is sent on it.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    // Every connection works in the configured schema.
    options: `-c search_path=${schema}`,
  });
  // An idle client's error (the server restarted) must not crash the process; the next query reconnects.
  pool.on('error', () => undefined);
  if (schema !== 'public') {
    // Two replicas may create it at once: the loser's unique violation means it exists.
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`).catch((err: unknown) => {
      if ((err as { code?: unknown }).code !== '23505') throw err;
    });
  }
  const wrap = (c: pg.Pool | pg.PoolClient, timeoutMs = queryTimeoutMs): Queryable => ({
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      return (await c.query(timed(sql, timeoutMs, params))).rows as T[];
    },
    async exec(sql: string): Promise<void> {
      await c.query(timed(sql, timeoutMs));
    },
  });
  return {
    kind: 'postgres',
    schema,
    connectionUrl,
    ...wrap(pool),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>, timeoutMs = queryTimeoutMs): Promise<T> {
      return held(pool, async (client, opened) => {
        // Explicit, whatever the server's default: a statement after a lock must see what committed meanwhile
        // (records.ts claimKeyAlias, the accounting's table lock).
        await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
        opened();
        const out = await fn(wrap(client, timeoutMs));
        await client.query('COMMIT');
        return out;
      });
    },
    async copyIn(before: string, copy: string, data: CopyData): Promise<void> {
      await held(pool, async (client, opened) => {
        const copyIn = (text: string, rows: string): Promise<void> =>
          new Promise<void>((resolve, reject) => {
            client.query(
              new CopyIn(text, Buffer.from(rows), (err) => {
                if (err) reject(err);
                else resolve();
              }),
            );
          });
        if (typeof data === 'string') {
          // One simple-protocol message: its statements run as one implicit transaction, the COPY's rows sent
          // when the server asks for them; an error in `before` skips the rest.
          await copyIn(`${before}; ${copy} FROM STDIN`, data);
          return;
        }
        // Two round trips, so the transaction is explicit: READ COMMITTED whatever the server's default (a
        // statement after a lock must see what committed meanwhile), and not left open by a client that stalls
        // between them.
        opened();
        const results = (await client.query(
          `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL idle_in_transaction_session_timeout = '30s'; ${before}`,
        )) as unknown as pg.QueryResult | pg.QueryResult[];
        const last = Array.isArray(results) ? results.at(-1) : results;
        await copyIn(`${copy} FROM STDIN; COMMIT`, data((last?.rows ?? []) as Record<string, unknown>[]));
      });
    },
    async close(): Promise<void> {
      await pool.end();
    },
  };
}

/** A statement with its own read timeout (pg reads `query_timeout` off the config; its types omit it). */
function timed(text: string, timeoutMs: number, values?: readonly unknown[]): pg.QueryConfig {
  const config: pg.QueryConfig & { query_timeout: number } = { text, values: values as unknown[] | undefined, query_timeout: timeoutMs };
  return config;
}

/**
 * Runs `fn` on a client of `pool`, given back after. While it is held, an `error` the client emits (the
 * server ended the connection: a restart, a failover, pg_terminate_backend) is kept rather than thrown at
 * the process — pg-pool listens only to idle clients — and the client is then given back broken, so the pool
 * drops it. After a statement error in an explicit transaction (`opened()`), it is rolled back first.
 */
async function held<T>(pool: pg.Pool, fn: (client: pg.PoolClient, opened: () => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let lost: Error | undefined;
  const onError = (err: Error): void => {
    lost ??= err;
  };
  client.on('error', onError);
  let open = false;
  try {
    return await fn(client, () => {
      open = true;
    });
  } catch (err) {
    if (!statementError(err)) lost ??= err as Error;
    else if (open && lost === undefined) await client.query('ROLLBACK').catch((e: unknown) => (lost ??= e as Error));
    throw err;
  } finally {
    client.off('error', onError);
    client.release(lost);
  }
}

/** An error PostgreSQL answered a statement with, the connection still usable (not FATAL, not 57P01 admin shutdown, not 08 connection). */
function statementError(err: unknown): boolean {
  const e = err as { code?: unknown; severity?: unknown };
  return typeof e.code === 'string' && e.severity !== 'FATAL' && e.severity !== 'PANIC' && !/^(57P|08)/.test(e.code);
}

/** A simple query whose COPY … FROM STDIN is fed one buffer (pg's own Query refuses COPY data). */
class CopyIn extends pg.Query {
  readonly #data: Buffer;
  constructor(text: string, data: Buffer, callback: (err: Error | null | undefined) => void) {
    super(text, undefined, callback);
    this.#data = data;
  }
  handleCopyInResponse(connection: { sendCopyFromChunk(chunk: Buffer): void; endCopyFrom(): void }): void {
    if (this.#data.length > 0) connection.sendCopyFromChunk(this.#data);
    connection.endCopyFrom();
  }
}
