/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), enough to prove `/metrics` is
 * what a Prometheus server accepts: every line is a comment (`# HELP`, `# TYPE`) or a sample
 * `name{label="value",…} value`, label values escaped as the format says.
 */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    const where = `line ${i + 1}: ${line}`;
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*)(?: (.*))?$/.exec(line);
      if (m === null) throw new Error(`not a HELP or TYPE comment: ${where}`);
      if (m[1] === 'TYPE' && !TYPES.has(m[3] ?? '')) throw new Error(`unknown metric type: ${where}`);
      continue;
    }
    const name = NAME.exec(line)?.[0];
    if (name === undefined) throw new Error(`no metric name: ${where}`);
    let rest = line.slice(name.length);
    const labels: Record<string, string> = {};
    if (rest.startsWith('{')) {
      rest = rest.slice(1);
      while (!rest.startsWith('}')) {
        const m = LABEL.exec(rest);
        if (m === null) throw new Error(`bad label: ${where}`);
        labels[m[1] ?? ''] = (m[2] ?? '').replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
        rest = rest.slice(m[0].length);
        if (rest.startsWith(',')) rest = rest.slice(1);
        else if (!rest.startsWith('}')) throw new Error(`bad label list: ${where}`);
      }
      rest = rest.slice(1);
    }
    const m = /^ (\S+)(?: (-?\d+))?$/.exec(rest);
    if (m === null) throw new Error(`no value: ${where}`);
    const raw = m[1] ?? '';
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : raw === 'NaN' ? NaN : Number(raw);
    if (Number.isNaN(value) && raw !== 'NaN') throw new Error(`not a number: ${where}`);
    samples.push({ name, labels, value });
  }
  return samples;
}
