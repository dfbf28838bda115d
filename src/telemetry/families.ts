/**
 * Labelled counters, gauges and histograms for the request path, exported through a prom-client Registry.
 *
 * prom-client finds a series by hashing its label object on every `inc`/`observe` (sorting the names,
 * building a string, validating each label) and a histogram observation allocates closures: nine such
 * calls a request cost the gateway 10–15 µs in place (bench/gateway.ts, metrics on and off in one run).
 * Here a series is found by its label values, in the family's label order, through one Map per label
 * (the values are the same few strings each time, so each lookup is a hash probe on a cached hash), and
 * counting is a number added in place. The registry reads the families at scrape time through `get()`,
 * in prom-client's own shape, so the exposition text (escaping, `le` buckets, `_sum`, `_count`) is the one
 * prom-client writes.
 */
import type { Registry } from 'prom-client';

type Values<N extends readonly string[]> = { readonly [K in keyof N]: string };
type Labels<N extends readonly string[]> = Readonly<Record<N[number], string>>;

/** One value of a family in prom-client's `get()` shape. */
interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface FamilyOptions<N extends readonly string[]> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: N;
  readonly registers: readonly Registry[];
}

/** Series in a tree of Maps, one level per label; a leaf holds the series and its label object. */
abstract class Family<N extends readonly string[], S extends { readonly labels: Record<string, string> }> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: N;
  readonly aggregator = 'sum';
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  #root = new Map<string, unknown>();
  /** The same series in creation order, the order prom-client writes them in. */
  #all = new Set<S>();

  constructor(opts: FamilyOptions<N>) {
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = opts.labelNames;
    // prom-client's Registry takes any object with a name and get() (its collectors are registered so).
    for (const r of opts.registers) r.registerMetric(this as never);
  }

  protected abstract create(labels: Record<string, string>): S;

  /** The series with these label values (in `labelNames` order), created at first use. */
  at(...values: Values<N>): S {
    let node = this.#root;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      const v = values[i] as string;
      let next = node.get(v) as Map<string, unknown> | undefined;
      if (next === undefined) {
        next = new Map();
        node.set(v, next);
      }
      node = next;
    }
    const leafKey = values[last] as string;
    let s = node.get(leafKey) as S | undefined;
    if (s === undefined) {
      const labels: Record<string, string> = {};
      this.labelNames.forEach((n, i) => (labels[n] = values[i] as string));
      s = this.create(labels);
      node.set(leafKey, s);
      this.#all.add(s);
    }
    return s;
  }

  /** The series of a label object, for callers off the request path. */
  protected byLabels(labels: Labels<N>): S {
    return this.at(...(this.labelNames.map((n: N[number]) => labels[n]) as unknown as Values<N>));
  }

  /** Every series now, in creation order. */
  series(): S[] {
    return [...this.#all];
  }

  /** Drops the series whose labels match (a deployment that left the catalog); empty branches go too. */
  removeWhere(match: (labels: Readonly<Record<string, string>>) => boolean): void {
    const prune = (node: Map<string, unknown>, depth: number): void => {
      for (const [k, v] of node) {
        if (depth === this.labelNames.length - 1) {
          if (match((v as S).labels)) {
            node.delete(k);
            this.#all.delete(v as S);
          }
        } else {
          const child = v as Map<string, unknown>;
          prune(child, depth + 1);
          if (child.size === 0) node.delete(k);
        }
      }
    };
    prune(this.#root, 0);
  }

  reset(): void {
    this.#root = new Map();
    this.#all = new Set();
  }

  protected abstract samples(): Sample[];

  /** prom-client's metric shape, read by the registry at scrape time. */
  get(): Promise<{ name: string; help: string; type: string; values: Sample[]; aggregator: string }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, values: this.samples(), aggregator: this.aggregator });
  }
}

export class CounterSeries {
  value = 0;
  readonly labels: Record<string, string>;
  constructor(labels: Record<string, string>) {
    this.labels = labels;
  }
  inc(n = 1): void {
    // A counter only goes up; a NaN or negative amount would poison it for good.
    if (n > 0) this.value += n;
  }
}

export class CounterFamily<N extends readonly string[]> extends Family<N, CounterSeries> {
  readonly type = 'counter';
  protected create(labels: Record<string, string>): CounterSeries {
    return new CounterSeries(labels);
  }
  inc(labels: Labels<N>, n = 1): void {
    this.byLabels(labels).inc(n);
  }
  protected samples(): Sample[] {
    return this.series().map((s) => ({ labels: s.labels, value: s.value }));
  }
}

export class GaugeSeries {
  value = 0;
  readonly labels: Record<string, string>;
  constructor(labels: Record<string, string>) {
    this.labels = labels;
  }
  inc(): void {
    this.value++;
  }
  dec(): void {
    this.value--;
  }
}

export class GaugeFamily<N extends readonly string[]> extends Family<N, GaugeSeries> {
  readonly type = 'gauge';
  protected create(labels: Record<string, string>): GaugeSeries {
    return new GaugeSeries(labels);
  }
  protected samples(): Sample[] {
    return this.series().map((s) => ({ labels: s.labels, value: s.value }));
  }
}

export class HistogramSeries {
  sum = 0;
  count = 0;
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  readonly counts: Float64Array;
  readonly labels: Record<string, string>;
  readonly #bounds: readonly number[];
  constructor(labels: Record<string, string>, bounds: readonly number[]) {
    this.labels = labels;
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }
  observe(v: number): void {
    if (!Number.isFinite(v)) return;
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && v > (b[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += v;
    this.count++;
  }
}

export class HistogramFamily<N extends readonly string[]> extends Family<N, HistogramSeries> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];
  constructor(opts: FamilyOptions<N> & { readonly buckets: readonly number[] }) {
    super(opts);
    this.buckets = [...opts.buckets].sort((a, b) => a - b);
  }
  protected create(labels: Record<string, string>): HistogramSeries {
    return new HistogramSeries(labels, this.buckets);
  }
  observe(labels: Labels<N>, v: number): void {
    this.byLabels(labels).observe(v);
  }
  /** As prom-client lays a histogram out: cumulative `_bucket`s with `le`, then `+Inf`, `_sum` and `_count`. */
  protected samples(): Sample[] {
    const out: Sample[] = [];
    for (const s of this.series()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += s.counts[i] as number;
        out.push({ labels: { le, ...s.labels }, value: acc, metricName: `${this.name}_bucket` });
      });
      out.push({ labels: { le: '+Inf', ...s.labels }, value: s.count, metricName: `${this.name}_bucket` });
      out.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      out.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return out;
  }
}
