import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CounterFamily, GaugeFamily, HistogramFamily } from '../../../src/telemetry/families.js';
import { parsePrometheus } from '../../support/prometheus.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];
/** Label values a client could influence (an alias from the catalog): quotes, backslashes, newlines, non-ASCII. */
const ODD = 'llama "3" \\ 8b\nnext ✓';

test('the families write the exposition text prom-client writes for the same observations', async () => {
  const ours = new Registry();
  const theirs = new Registry();
  const c = new CounterFamily({
    name: 't_requests_total',
    help: 'requests "by" model',
    labelNames: ['model', 'status'] as const,
    registers: [ours],
  });
  const pc = new Counter({ name: 't_requests_total', help: 'requests "by" model', labelNames: ['model', 'status'], registers: [theirs] });
  const h = new HistogramFamily({
    name: 't_seconds',
    help: 'latency',
    labelNames: ['model'] as const,
    buckets: BUCKETS,
    registers: [ours],
  });
  const ph = new Histogram({ name: 't_seconds', help: 'latency', labelNames: ['model'], buckets: BUCKETS, registers: [theirs] });
  const g = new GaugeFamily({ name: 't_in_flight', help: 'now', labelNames: ['route'] as const, registers: [ours] });
  const pg = new Gauge({ name: 't_in_flight', help: 'now', labelNames: ['route'], registers: [theirs] });

  for (const [model, status, n] of [
    ['a', '200', 1],
    [ODD, '200', 2.5],
    ['a', '429', 1],
    ['a', '200', 3],
  ] as const) {
    c.at(model, status).inc(n);
    pc.inc({ model, status }, n);
  }
  // On a bound, between bounds, above them all, zero.
  for (const [model, v] of [
    ['a', 0.001],
    ['a', 0.05],
    [ODD, 7],
    ['a', 0],
    ['a', 1],
  ] as const) {
    h.at(model).observe(v);
    ph.observe({ model }, v);
  }
  g.at('chat').inc();
  g.at('chat').inc();
  g.at('chat').dec();
  g.at('embeddings').inc();
  pg.inc({ route: 'chat' }, 1);
  pg.inc({ route: 'embeddings' }, 1);

  const text = await ours.metrics();
  assert.equal(text, await theirs.metrics());
  // And it parses as the exposition format, the odd label value intact.
  const samples = parsePrometheus(text);
  assert.ok(samples.some((s) => s.labels['model'] === ODD && s.name === 't_requests_total' && s.value === 2.5));
});

test('the object form counts into the same series as the positional one', async () => {
  const r = new Registry();
  const c = new CounterFamily({ name: 'x_total', help: 'x', labelNames: ['store', 'op'] as const, registers: [r] });
  c.inc({ op: 'write', store: 'redis' });
  c.at('redis', 'write').inc(2);
  const values = (await c.get()).values;
  assert.deepEqual(values, [{ labels: { store: 'redis', op: 'write' }, value: 3 }]);
});

test('a counter never goes down and a histogram ignores values that are not finite', async () => {
  const r = new Registry();
  const c = new CounterFamily({ name: 'y_total', help: 'y', labelNames: ['k'] as const, registers: [r] });
  c.at('a').inc(2);
  c.at('a').inc(-5);
  c.at('a').inc(Number.NaN);
  assert.equal(c.at('a').value, 2);
  const h = new HistogramFamily({ name: 'y_seconds', help: 'y', labelNames: ['k'] as const, buckets: [1], registers: [r] });
  h.at('a').observe(Number.NaN);
  h.at('a').observe(Number.POSITIVE_INFINITY);
  h.at('a').observe(0.5);
  assert.equal(h.at('a').count, 1);
  assert.equal(h.at('a').sum, 0.5);
});

test('removeWhere drops the matching series of every depth and keeps the rest; reset drops all', async () => {
  const r = new Registry();
  const c = new CounterFamily({ name: 'z_total', help: 'z', labelNames: ['model', 'deployment', 'status'] as const, registers: [r] });
  c.at('m', 'stays', '200').inc();
  c.at('m', 'goes', '200').inc();
  c.at('m', 'goes', '500').inc();
  c.at('n', 'goes', '200').inc();
  c.removeWhere((l) => l['deployment'] === 'goes');
  assert.deepEqual(
    c.series().map((s) => s.labels),
    [{ model: 'm', deployment: 'stays', status: '200' }],
  );
  // A series created again after removal starts from zero.
  c.at('m', 'goes', '200').inc();
  assert.equal(c.at('m', 'goes', '200').value, 1);
  c.reset();
  assert.deepEqual(c.series(), []);
  assert.equal(await r.metrics(), '# HELP z_total z\n# TYPE z_total counter\n');
});

test('two families of one name on one registry are refused, as prom-client refuses them', () => {
  const r = new Registry();
  new CounterFamily({ name: 'dup_total', help: 'd', labelNames: ['k'] as const, registers: [r] });
  assert.throws(
    () => new CounterFamily({ name: 'dup_total', help: 'd', labelNames: ['k'] as const, registers: [r] }),
    /already been registered/,
  );
});
