/** The record-change broadcast over Redis pub/sub (change-bus.ts), with `redis_url`: ioredis loads only then. */
import { Redis } from 'ioredis';
import { bounded, parse, SUBSCRIBE_WAIT_MS, type ChangeBus, type RecordChange } from './change-bus.js';

export class RedisChangeBus implements ChangeBus {
  readonly #channel: string;
  readonly #pub: Redis;
  readonly #sub: Redis;

  constructor(url: string, prefix: string) {
    this.#channel = `${prefix}changes`;
    // Publishing may wait briefly for a reconnect; the subscriber lives on its own connection (subscriber mode).
    this.#pub = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: 2_000, retryStrategy: (n: number) => Math.min(100 * n, 2000) });
    // The subscriber's SUBSCRIBE waits for Redis however long it is down (no retry limit).
    this.#sub = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: (n: number) => Math.min(100 * n, 2000) });
    this.#pub.on('error', () => undefined);
    this.#sub.on('error', () => undefined);
  }

  async publish(change: RecordChange): Promise<void> {
    await this.#pub.publish(this.#channel, JSON.stringify(change));
  }

  async subscribe(onChange: (c: RecordChange) => void, onResync: () => void): Promise<void> {
    let starting = true;
    this.#sub.on('message', (_channel: string, message: string) => {
      const c = parse(message);
      if (c !== undefined) onChange(c);
    });
    // After a reconnect: subscribe again (ioredis does too, but only for a subscription that was confirmed;
    // twice is harmless), then reload everything, since what was published meanwhile is gone.
    this.#sub.on('ready', () => {
      if (starting) return;
      void this.#sub
        .subscribe(this.#channel)
        .catch(() => undefined)
        .then(onResync);
    });
    await bounded(this.#sub.subscribe(this.#channel), SUBSCRIBE_WAIT_MS);
    starting = false;
  }

  async close(): Promise<void> {
    this.#pub.disconnect();
    this.#sub.disconnect();
    return Promise.resolve();
  }
}
