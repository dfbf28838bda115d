/**
 * Summarizes a V8 `.cpuprofile` (from `node --cpu-prof`): self time by function and by area (a tollgate
 * src/ folder, a package, node internals, GC), and total (inclusive) time of tollgate's own functions,
 * as shares of the non-idle time.
 *
 *   node dist/bench/cpu-profile.js <file.cpuprofile> [top]
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const IDLE = '(idle)';

/** Where a function lives, coarsely: `src/authz`, `@grpc/grpc-js`, `node:internal/http2`, `(gc)`. */
function areaOf(url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)';
  const src = /\/dist\/(src\/[^/]+|test\/support|bench)\//.exec(url);
  if (src?.[1] !== undefined) return `tollgate ${src[1]}`;
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg?.[1] !== undefined) return pkg[1];
  const internal = /^node:(internal\/[^/]+|[^/]+)/.exec(url);
  if (internal?.[1] !== undefined) return `node:${internal[1].replace(/\.js$/, '')}`;
  return url;
}

function shortUrl(url: string): string {
  const i = url.lastIndexOf('/node_modules/');
  if (i >= 0) return url.slice(i + '/node_modules/'.length);
  const d = url.indexOf('/dist/');
  if (d >= 0) return url.slice(d + '/dist/'.length);
  return url;
}

function keyOf(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  return `${functionName || '(anonymous)'}  ${url === '' ? '' : `${shortUrl(url)}:${lineNumber + 1}`}`;
}

/** Self plus callee time per function, each sample counted once per function even under recursion. */
function inclusiveTimes(
  profile: CpuProfile,
  byId: ReadonlyMap<number, ProfileNode>,
  selfUs: ReadonlyMap<number, number>,
  key: (n: ProfileNode) => string,
): Map<string, number> {
  const subtree = new Map<number, number>();
  const totalOf = (id: number): number => {
    let t = subtree.get(id);
    if (t === undefined) {
      t = selfUs.get(id) ?? 0;
      for (const c of byId.get(id)?.children ?? []) t += totalOf(c);
      subtree.set(id, t);
    }
    return t;
  };
  const totals = new Map<string, number>();
  const onPath = new Set<string>();
  const walk = (id: number): void => {
    const node = byId.get(id);
    if (node === undefined) return;
    const k = key(node);
    const outermost = !onPath.has(k);
    if (outermost) {
      totals.set(k, (totals.get(k) ?? 0) + totalOf(id));
      onPath.add(k);
    }
    for (const c of node.children ?? []) walk(c);
    if (outermost) onPath.delete(k);
  };
  const root = profile.nodes[0];
  if (root !== undefined) walk(root.id);
  return totals;
}

/** Lines of text: the top functions by self time, then every area above 1 %. */
export function summarizeCpuProfile(file: string, top = 20): string[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

  const fns = new Map<string, { us: number; area: string }>();
  const areas = new Map<string, number>();
  let busy = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url } = node.callFrame;
    if (functionName === IDLE) {
      idle += us;
      continue;
    }
    busy += us;
    const area = areaOf(url, functionName);
    const key = keyOf(node);
    const f = fns.get(key) ?? { us: 0, area };
    f.us += us;
    fns.set(key, f);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const pct = (us: number): string => `${((100 * us) / busy).toFixed(1).padStart(5)} %`;
  const lines = [
    `busy ${(busy / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s; self time as a share of busy time`,
    '',
    'top functions:',
  ];
  for (const [key, f] of [...fns].sort((a, b) => b[1].us - a[1].us).slice(0, top)) lines.push(`  ${pct(f.us)}  ${key}`);
  lines.push('', 'by area (self time):');
  for (const [area, us] of [...areas].sort((a, b) => b[1] - a[1])) if (us / busy >= 0.01) lines.push(`  ${pct(us)}  ${area}`);
  lines.push('', "tollgate's functions by total time (self + callees):");
  const totals = inclusiveTimes(profile, byId, selfUs, keyOf);
  const own = [...totals].filter(([key]) => / (src|bench)\//.test(key));
  for (const [key, us] of own.sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`  ${pct(us)}  ${key}`);
  return lines;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) {
    console.error('usage: node dist/bench/cpu-profile.js <file.cpuprofile> [top]');
    process.exit(2);
  }
  console.log(summarizeCpuProfile(file, Number(process.argv[3] ?? 20)).join('\n'));
}
