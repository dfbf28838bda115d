/** The log line's time: pino's isoTime, made cheaper (the text up to the second is kept for that second). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isoTime } from '../../../src/telemetry/logger.js';

const pinos = (now: number): string => `,"time":"${new Date(now).toISOString()}"`;

test("isoTime writes what pino's isoTime writes, at every millisecond form and across seconds, days and years", () => {
  const base = Date.UTC(2026, 11, 31, 23, 59, 58);
  const instants: number[] = [];
  for (let t = base; t < base + 3000; t += 1) instants.push(t); // 23:59:58.000 → 2027-01-01T00:00:00.999
  // Out of order too: a clock stepped back, and far apart.
  instants.push(base + 1, 0, Date.UTC(2000, 1, 29, 12, 0, 0, 7), base + 2999, Date.UTC(2026, 0, 1));
  for (const t of instants) assert.equal(isoTime(t), pinos(t), String(t));
});

test('without an argument it is now', () => {
  const before = Date.now();
  const text = isoTime();
  const after = Date.now();
  const at = Date.parse(/"time":"([^"]+)"/.exec(text)?.[1] ?? '');
  assert.ok(at >= before && at <= after, text);
});
