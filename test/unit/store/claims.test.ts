/** In-process claims (MemoryCounters.claimNow): each context once, remembered at least until it has expired. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { MemoryCounters } from '../../../src/store/memory-counters.js';

const T = 1_800_000_000_000;
const TTL = 30_000;

test('a claim is refused again while its context can still be valid, and forgotten two generations on', () => {
  const c = new MemoryCounters();
  const id = randomUUID();
  assert.equal(c.claimNow(id, T + TTL, T), true);
  for (const later of [1, 10_000, TTL, TTL + 5_000, 60_000])
    assert.equal(c.claimNow(id, T + later + TTL, T + later), false, `${later} ms on`);
  // Other claims meanwhile rotate the generations; long after its context expired, the id is gone.
  c.claimNow(randomUUID(), T + 100_000 + TTL, T + 100_000);
  assert.equal(c.claimNow(id, T + 200_000 + TTL, T + 200_000), true, 'forgotten once its context long expired');
});

test('many distinct claims are all taken, none mistaken for another', () => {
  const c = new MemoryCounters();
  let taken = 0;
  for (let i = 0; i < 50_000; i++) if (c.claimNow(randomUUID(), T + i + TTL, T + i)) taken++;
  assert.equal(taken, 50_000);
});

test('a context valid for ever (a clock far ahead, or not a time) does not stop the generations from turning', () => {
  const c = new MemoryCounters();
  assert.equal(c.claimNow(randomUUID(), Infinity, T), true);
  const id = randomUUID();
  assert.equal(c.claimNow(id, T + TTL, T), true);
  assert.equal(c.claimNow(id, T + TTL, T + 1000), false);
  // Retention is bounded (5 min + margin): half an hour later the id is forgotten.
  c.claimNow(randomUUID(), T + 900_000 + TTL, T + 900_000);
  assert.equal(c.claimNow(id, T + 1_800_000 + TTL, T + 1_800_000), true);
});
