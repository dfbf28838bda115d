/** Denial rows (Accounting.denied): a row of no cost each, capped per caller and minute. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Accounting } from '../../../src/store/accounting.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';

test('a caller leaves at most 60 denial rows a minute; another caller has its own 60', async () => {
  const mirror = new InMemorySpendLog();
  const accounting = new Accounting({ limiter: undefined, log: undefined, mirror, logger: createLogger('silent') });
  try {
    const who = (keyId: string | undefined) => ({ keyId, userId: 'u', teamId: undefined, model: 'llama' });
    for (let i = 0; i < 100; i++) accounting.denied(`r${i}`, who('blocked-key'), 403, 0.1);
    for (let i = 0; i < 5; i++) accounting.denied(`m${i}`, who(undefined), 429, 0.1);
    const rows = mirror.rows;
    assert.equal(rows.filter((r) => r.keyId === 'blocked-key').length, 60);
    assert.equal(rows.filter((r) => r.keyId === undefined).length, 5);
    assert.deepEqual([rows[0]?.status, rows[0]?.cost, rows[0]?.model, rows[0]?.userId], [403, 0, 'llama', 'u']);
  } finally {
    await accounting.close(1000);
  }
});
