/**
 * A settlement that fails (Redis unreachable) leaves its lease held — its parallel slot and token reservation
 * on every replica — until the lease expires: Accounting settles it again, with no cost, once Redis answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Accounting } from '../../../src/store/accounting.js';
import type { Lease, Limiter } from '../../../src/store/limiter.js';
import { createLogger } from '../../../src/telemetry/logger.js';

test('a lease whose settlement failed is released again, without cost, once Redis answers', async () => {
  let down = true;
  const calls: { id: string; tokens: number; cost: number; servedBy: string | undefined }[] = [];
  const limiter = {
    settle(lease: Lease, tokens: number, cost: number, _now: number, servedBy?: string): Promise<string | undefined> {
      calls.push({ id: lease.id, tokens, cost, servedBy });
      return down ? Promise.reject(new Error('Command timed out')) : Promise.resolve('g1');
    },
    onUnreleased(hook: (lease: Lease, err: unknown) => void): void {
      lost = hook;
    },
  } as unknown as Limiter;
  let lost: ((lease: Lease, err: unknown) => void) | undefined;
  const accounting = new Accounting({ limiter, log: undefined, logger: createLogger('silent') });
  const lease: Lease = { id: 'lease-1', reservedTokens: 100, keyId: 'k', userId: undefined, teamId: undefined, deploymentId: 'd1' };
  const unused: Lease = { ...lease, id: 'lease-2' };
  try {
    accounting.record({
      requestId: 'r1',
      keyId: 'k',
      userId: undefined,
      teamId: undefined,
      model: 'm',
      deployment: 'd1',
      promptTokens: 3,
      completionTokens: 4,
      cost: 0.5,
      status: 200,
      latencyMs: 1,
      estimated: false,
      at: Date.now(),
      lease,
    });
    accounting.release(unused);
    // An admission whose answer was lost, and whose late release failed too (Limiter.#releaseLate), after
    // the two failures above were heard of (the retries go in that order).
    await new Promise((r) => setImmediate(r));
    lost?.({ ...lease, id: 'lease-3', deploymentId: undefined }, new Error('Command timed out'));
    await new Promise((r) => setTimeout(r, 1_500)); // Redis still down: tried again, still held
    assert.ok(calls.filter((c) => c.id === 'lease-1').length >= 2, JSON.stringify(calls));
    down = false;
    await new Promise((r) => setTimeout(r, 1_200));
    const last = (id: string) => calls.filter((c) => c.id === id).at(-1);
    assert.deepEqual(last('lease-1'), { id: 'lease-1', tokens: 7, cost: 0, servedBy: 'd1' }, 'the real tokens, no cost again');
    assert.deepEqual(last('lease-2'), { id: 'lease-2', tokens: 0, cost: 0, servedBy: undefined });
    assert.deepEqual(last('lease-3'), { id: 'lease-3', tokens: 0, cost: 0, servedBy: undefined });
    const n = calls.length;
    await new Promise((r) => setTimeout(r, 1_200));
    assert.equal(calls.length, n, 'released once Redis took it: not sent again');
  } finally {
    await accounting.close(100);
  }
});
