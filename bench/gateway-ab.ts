/**
 * Paired A/B of the gateway's CPU per request: this checkout's gateway against another checkout's (built,
 * `dist/` present), both running at once against one fake vLLM, driven together by one load generator.
 *
 *   node dist/bench/gateway-ab.js <other checkout>            e.g. a `git worktree add /tmp/base HEAD~1`, built
 *   node dist/bench/gateway-ab.js <other checkout> --pg       both with a spend log in PostgreSQL
 *   node dist/bench/gateway-ab.js <other checkout> --stream   streamed chat completions (read to [DONE])
 *   node dist/bench/gateway-ab.js .                           this checkout against itself: the noise floor
 *   node dist/bench/gateway-ab.js . --other-node-options '--max-semi-space-size=8'
 *                                                             a V8 or Node flag on one side (NODE_OPTIONS);
 *                                                             also --this-node-options
 *
 * Why paired: on these shared two-core machines a process's CPU per request drifts by a third within
 * minutes (another tenant, frequency), so two builds measured one after the other differ by more than most
 * changes do. Measured side by side, both see the same machine: the ratio of their CPU per request holds
 * within about 3% from round to round where each figure alone moves by 30%. Each round sends `--requests`
 * non-streamed chat completions to each gateway (16 clients each, keep-alive) and reads each gateway
 * process's CPU time before and after; each side's peak RSS is printed at the end. The last line is the
 * median over the rounds of this/other.
 *
 * Run it both ways (each checkout against the other) for a change near the noise: on 2026-12-07 one pair
 * read 0.948 one way and 1.024 the other (not 1/0.948 = 1.055), another 1.055 and 0.957. Taking both, the
 * change's own ratio is the square root of the first over the second, whatever favoured one side.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import { ALIAS, chatBody, cpuMicros, gatewayBenchConfig, startChild, type ServerChild } from './gateway-children.js';

const CLIENTS = 16;
const WARMUP_REQUESTS = 3_000;

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  const v = at < 0 ? undefined : Number(process.argv[at + 1]);
  return v !== undefined && Number.isInteger(v) && v > 0 ? v : fallback;
}

interface Side {
  readonly label: string;
  readonly server: ServerChild;
  readonly pool: Pool;
  readonly perRequest: number[];
}

async function drive(side: Side, n: number, body: string, key: string): Promise<void> {
  let sent = 0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (sent++ < n) {
        const r = await side.pool.request({
          path: '/v1/chat/completions',
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
          body,
        });
        const text = await r.body.text();
        if (r.statusCode !== 200) throw new Error(`${side.label} answered ${r.statusCode}: ${text.slice(0, 300)}`);
        if (text.startsWith('data:') && !text.trimEnd().endsWith('data: [DONE]')) throw new Error(`${side.label}: a stream without [DONE]`);
      }
    }),
  );
}

function stringOption(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at < 0 ? undefined : process.argv[at + 1];
}

/** Peak resident memory of a process, MB (VmHWM). */
function peakRssMb(pid: number | undefined): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? NaN : Number(m[1]) / 1024;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function main(): Promise<void> {
  const other = process.argv[2];
  const otherScript = other === undefined ? undefined : path.resolve(other, 'dist/bench/servers/tollgate-gateway.js');
  if (otherScript === undefined || !existsSync(otherScript)) {
    throw new Error(
      'usage: node dist/bench/gateway-ab.js <other checkout, built> [--pg] [--rounds N] [--requests N] [--stream] [--this-node-options S] [--other-node-options S]',
    );
  }
  const rounds = option('--rounds', 5);
  const requests = option('--requests', 20_000);
  const databaseUrl = (label: string): string | undefined =>
    process.argv.includes('--pg')
      ? `${process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'}?schema=tollgate_ab_${label}_${randomBytes(4).toString('hex')}`
      : undefined;
  const key = `sk-bench-${randomBytes(16).toString('hex')}`;
  const keyHash = `sha256:${createHash('sha256').update(key).digest('hex')}`;
  const started: ServerChild[] = [];
  try {
    const backend = await startChild('fake-vllm', './servers/fake-vllm.js', {});
    started.push(backend);
    const apiBase = `http://127.0.0.1:${backend.port}/v1`;
    const sides: Side[] = [];
    for (const [label, script] of [
      ['this', './servers/tollgate-gateway.js'],
      ['other', pathToFileURL(otherScript)],
    ] as const) {
      const nodeOptions = stringOption(`--${label}-node-options`);
      const server = await startChild(label, script, {
        env: {
          TOLLGATE_BENCH_CONFIG: gatewayBenchConfig(apiBase, keyHash, databaseUrl(label)),
          ...(nodeOptions === undefined ? {} : { NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} ${nodeOptions}`.trim() }),
        },
      });
      started.push(server);
      sides.push({ label, server, pool: new Pool(`http://127.0.0.1:${server.port}`, { connections: CLIENTS }), perRequest: [] });
    }
    const stream = process.argv.includes('--stream');
    const body = chatBody(ALIAS, stream);
    await Promise.all(sides.map((s) => drive(s, WARMUP_REQUESTS, body, key)));
    console.log(
      `this checkout against ${other}; ${rounds} rounds of ${requests} ${stream ? 'streamed' : 'non-streamed'} requests to each, ${CLIENTS} clients each`,
    );
    for (let r = 0; r < rounds; r++) {
      const before = sides.map((s) => cpuMicros(s.server.child.pid));
      await Promise.all(sides.map((s) => drive(s, requests, body, key)));
      sides.forEach((s, i) => s.perRequest.push((cpuMicros(s.server.child.pid) - (before[i] as number)) / requests));
    }
    const [mine, theirs] = sides as [Side, Side];
    const ratios = mine.perRequest.map((v, i) => v / (theirs.perRequest[i] as number));
    for (const s of sides) console.log(`  ${s.label.padEnd(6)} CPU µs/request: ${s.perRequest.map((v) => v.toFixed(1)).join('  ')}`);
    for (const s of sides) console.log(`  ${s.label.padEnd(6)} peak RSS: ${peakRssMb(s.server.child.pid).toFixed(0)} MB`);
    console.log(`  ratio  this/other:      ${ratios.map((v) => v.toFixed(3)).join('  ')}`);
    for (const s of sides) await s.pool.close();
    console.log(`CPU per request, this/other (median of ${rounds} rounds): ${median(ratios).toFixed(3)}`);
  } finally {
    for (const s of started.reverse()) await s.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
