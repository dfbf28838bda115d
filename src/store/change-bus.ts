/**
 * The broadcast that tells every replica a record changed (a key generated, blocked or deleted; a team or
 * user updated), so its in-process cache reloads that record at once: Redis pub/sub with `redis_url`
 * (redis-change-bus.ts, loaded only then), else PostgreSQL LISTEN/NOTIFY, else (embedded PGlite: one
 * process) in-process delivery. A subscriber that was disconnected may have missed messages, so it is told
 * to reload everything when it reconnects.
 */
import { EventEmitter } from 'node:events';
import pg from 'pg';

export const SUBSCRIBE_WAIT_MS = 3_000;

/** `p`'s value, or undefined when it fails or once `ms` passed (`p` itself goes on). */
export function bounded<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    const done = (v: T | undefined): void => {
      clearTimeout(timer);
      resolve(v);
    };
    p.then(done, () => done(undefined));
  });
}

export interface RecordChange {
  readonly kind: 'key' | 'team' | 'user' | 'model';
  /** Key hash, team id, user id or model id. */
  readonly id: string;
}

export interface ChangeBus {
  publish(change: RecordChange): Promise<void>;
  /**
   * `onChange` for each change; `onResync` after a reconnect, when changes may have been missed. Resolves once
   * the subscription is active (or after `SUBSCRIBE_WAIT_MS`, when the broker is down: `onResync` follows its return).
   */
  subscribe(onChange: (c: RecordChange) => void, onResync: () => void): Promise<void>;
  close(): Promise<void>;
}

export function parse(message: string): RecordChange | undefined {
  try {
    const v = JSON.parse(message) as Partial<RecordChange>;
    if ((v.kind === 'key' || v.kind === 'team' || v.kind === 'user' || v.kind === 'model') && typeof v.id === 'string') {
      return { kind: v.kind, id: v.id };
    }
  } catch {
    // not ours
  }
  return undefined;
}

export class LocalChangeBus implements ChangeBus {
  readonly #events = new EventEmitter();
  publish(change: RecordChange): Promise<void> {
    this.#events.emit('change', change);
    return Promise.resolve();
  }
  subscribe(onChange: (c: RecordChange) => void): Promise<void> {
    this.#events.on('change', onChange);
    return Promise.resolve();
  }
  close(): Promise<void> {
    this.#events.removeAllListeners();
    return Promise.resolve();
  }
}

/** LISTEN/NOTIFY on a dedicated connection, reconnected after a failure. */
export class PgChangeBus implements ChangeBus {
  readonly #url: string;
  readonly #channel: string;
  readonly #notify: (payload: string) => Promise<void>;
  #client: pg.Client | undefined;
  #closed = false;
  #retry: NodeJS.Timeout | undefined;

  /** `notify` runs `SELECT pg_notify($1, $2)` on the records pool. */
  constructor(url: string, schema: string, notify: (channel: string, payload: string) => Promise<void>) {
    this.#url = url;
    this.#channel = `tollgate_changes_${schema}`;
    this.#notify = (payload) => notify(this.#channel, payload);
  }

  publish(change: RecordChange): Promise<void> {
    return this.#notify(JSON.stringify(change));
  }

  subscribe(onChange: (c: RecordChange) => void, onResync: () => void): Promise<void> {
    const connect = async (again: boolean): Promise<void> => {
      if (this.#closed) return;
      const u = new URL(this.#url);
      u.searchParams.delete('schema');
      const client = new pg.Client({ connectionString: u.toString(), keepAlive: true, connectionTimeoutMillis: 5_000 });
      let retried = false;
      const retry = (): void => {
        // pg may both emit 'error' and reject the pending query for one failure: reconnect once.
        if (retried) return;
        retried = true;
        client.removeAllListeners();
        client.on('error', () => undefined);
        void client.end().catch(() => undefined);
        if (this.#closed) return;
        this.#retry = setTimeout(() => void connect(true), 1_000);
        this.#retry.unref();
      };
      client.on('error', retry);
      client.on('notification', (n) => {
        const c = n.payload === undefined ? undefined : parse(n.payload);
        if (c !== undefined) onChange(c);
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${this.#channel}`);
        if (this.#closed) {
          await client.end().catch(() => undefined);
          return;
        }
        this.#client = client;
        if (again) onResync();
      } catch {
        retry();
      }
    };
    return bounded(connect(false), SUBSCRIBE_WAIT_MS).then(() => undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    await this.#client?.end().catch(() => undefined);
  }
}
