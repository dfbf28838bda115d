/**
 * Gateway overhead: non-streamed chat completions straight to a fake vLLM, through Portkey's gateway and
 * through tollgate's gateway (standalone: a declared virtual key, no JWT), at 4 and 32 concurrent clients,
 * all against the same backend in the same run; then time to first token of streamed chat, straight and
 * through tollgate, and tollgate's resident memory after the 32-client run.
 *
 *   npm run bench:gateway                      (or: node dist/bench/gateway.js)
 *   node dist/bench/gateway.js --cpu-prof      only direct and tollgate at 32 clients, tollgate's child
 *                                              profiled, and where its time goes
 *   node dist/bench/gateway.js --quick         only direct, tollgate, the bare proxy and the stack at 32 clients: the
 *                                              throughput ratios in a fifth of the time, while working on them
 *   node dist/bench/gateway.js --envoy-path    only direct, tollgate and its Envoy path at 32 clients
 *   … --redis [url]                            the Envoy path with Redis counters too (another tollgate child)
 *   … --cpu-prof --envoy-path                  the Envoy path profiled (in-process claims)
 *
 * Each server runs in its own child process (the fake vLLM, tollgate, Portkey); the load generator here
 * keeps N requests in flight over N keep-alive connections (undici Pool), warms up, then measures for a
 * fixed time — in slices, each row's interleaved with the other rows of its table (ROUNDS). Every answer
 * must be 2xx.
 *
 * The Envoy path: behind Envoy the gateway does not authorize a request itself; it checks the signed context
 * Check set (x-tollgate-context: HMAC, body digest, expiry) and takes its one use (in process, or a Redis SET
 * with `--redis`). Its rows ("ctx mem", "ctx redis", in the 32-client table) send the standalone row's
 * requests, each with a fresh context signed here as Check signs it (minted before each slice, so signing
 * costs the load generator nothing measured). The Redis row's CPU column adds Redis's own CPU.
 *
 * Three floors run beside them on every row: a bare Node HTTP proxy (servers/bare-proxy.ts, node:http and
 * undici moving bytes), tollgate's own HTTP stack moving bytes (servers/stack-proxy.ts: its server and
 * backend client, nothing else) and a TCP relay (servers/tcp-relay.ts, no HTTP at all). Each target is
 * printed with what they reached in the same run: on a machine where the load generator, the backend and the
 * proxy share two cores, a target below the TCP relay's figure is out of reach for any proxy process, and
 * the gap between tollgate and its stack is what tollgate's own work per request costs.
 */
import { fork } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { bodyDigest, ContextSigner } from '../src/identity/context-token.js';
import { summarizeCpuProfile } from './cpu-profile.js';
import {
  ALIAS,
  BACKEND_MODEL,
  CONTEXT_SIGNING_KEY,
  chatBody,
  cpuMicros,
  gatewayBenchConfig,
  keepTail,
  startChild,
  type ServerChild,
} from './gateway-children.js';

/**
 * Each row is measured in ROUNDS slices, interleaved with the other rows of its group (the same request kind
 * and clients): on a shared machine whose speed drifts within a minute, rows measured one after the other
 * compare different machines; sliced and interleaved, every row sees the same drift.
 */
const ROUNDS = 3;
/** Per slice: warm-up (new connections), then measured. */
const WARMUP_MS = 500;
const MEASURE_MS = 5_000 / ROUNDS;
const LOW = 4;
const HIGH = 32;
const TARGET_ADDED_P50_MS = 0.5;
const TARGET_RATIO_DIRECT = 0.6;
const TARGET_RATIO_PORTKEY = 10;
const TARGET_TTFT_ADDED_MS = 1;
const TARGET_RSS_MB = 150;
const PORTKEY_SCRIPT = fileURLToPath(new URL('../../node_modules/@portkey-ai/gateway/build/start-server.js', import.meta.url));

const cpuProf = process.argv.includes('--cpu-prof');
const quick = process.argv.includes('--quick');
/**
 * The spend log goes to PostgreSQL, as in a deployment (a schema of the bench's own, dropped after). Embedded
 * PGlite — the default without database_url — runs PostgreSQL in WebAssembly inside the gateway process and
 * costs it CPU and ~300 MB of memory; it is for one small install, not for this load.
 */
/** `--no-spend-log`: no records database at all (spend only settles the in-process counters), to see what the log costs. */
const noSpendLog = process.argv.includes('--no-spend-log');
const envoyOnly = process.argv.includes('--envoy-path');
const redisAt = process.argv.indexOf('--redis');
const redisUrl =
  redisAt < 0 ? undefined : process.argv[redisAt + 1]?.startsWith('redis') ? process.argv[redisAt + 1] : 'redis://127.0.0.1:6379';
/** Contexts signed before each Envoy-path slice: more than a slice sends at the fastest rate seen here (~30 000/s). */
const CONTEXTS_PER_SLICE = 100_000;
const BENCH_DATABASE_URL = `${process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test'}?schema=tollgate_bench_${randomBytes(4).toString('hex')}`;

// ---------------------------------------------------------------------------------------------------
// Server children

/**
 * Portkey's published Node server. build/start-server.js reads `--port=N` (default 8787; port 0 would not
 * be reported back) and `--headless` (no log UI), and listens on every interface; readiness is polled.
 */
async function startPortkey(): Promise<ServerChild> {
  const port = await freePort();
  const child = fork(PORTKEY_SCRIPT, [`--port=${port}`, '--headless'], {
    env: { ...process.env, NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const tail = keepTail(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const probe = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
  try {
    const deadline = performance.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`portkey exited (${child.exitCode}) before listening:\n${tail()}`);
      try {
        const r = await probe.request({ path: '/', method: 'GET' });
        await r.body.dump();
        break;
      } catch {
        if (performance.now() > deadline) throw new Error(`portkey did not listen on ${port} within 20 s:\n${tail()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  } finally {
    await probe.close();
  }
  return {
    name: 'portkey',
    child,
    port,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** The Redis server's pid (INFO server), so the Envoy path's Redis row is charged its CPU; undefined when it is not on this machine. */
async function redisPid(url: string): Promise<number | undefined> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    const pid = Number(/^process_id:(\d+)/m.exec(await r.info('server'))?.[1]);
    return Number.isInteger(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('redis') ? pid : undefined;
  } catch {
    return undefined;
  } finally {
    r.disconnect();
  }
}

/** Resident set size of a process in bytes (Linux /proc); NaN elsewhere. */
function rssBytes(pid: number | undefined): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
  } catch {
    return NaN;
  }
}

// ---------------------------------------------------------------------------------------------------
// The requests

interface Target {
  readonly name: string;
  readonly origin: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly model: string;
  /** The process whose CPU is charged to this path (the gateway); undefined for direct. */
  readonly pid: number | undefined;
  /** Another process whose CPU is charged to it too (Redis, on the Envoy path with Redis counters). */
  readonly alsoPid?: number | undefined;
  /** Envoy path: a fresh signed x-tollgate-context per request, as Check would set it for this body. */
  readonly contexts?: ((body: string, count: number) => string[]) | undefined;
}

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json', 'user-agent': 'OpenAI/Python 1.54.4' };

/** One request: the measured milliseconds (whole answer, or first content token when streamed), or an error text. */
type Op = (pool: Pool) => Promise<number | string>;

function nonStreamed(target: Target): Op {
  const body = chatBody(target.model, false);
  const headers = { ...target.headers, 'content-length': String(Buffer.byteLength(body)) };
  const contexts = target.contexts?.(body, CONTEXTS_PER_SLICE);
  let next = 0;
  return async (pool) => {
    let h: Record<string, string> = headers;
    if (contexts !== undefined) {
      const context = contexts[next++];
      if (context === undefined) return `more than ${CONTEXTS_PER_SLICE} requests in a slice: raise CONTEXTS_PER_SLICE`;
      h = { ...headers, 'x-tollgate-context': context };
    }
    const t0 = performance.now();
    const r = await pool.request({ path: target.path, method: 'POST', headers: h, body });
    const text = await r.body.text();
    if (r.statusCode < 200 || r.statusCode >= 300) return `HTTP ${r.statusCode}: ${text.slice(0, 300)}`;
    return performance.now() - t0;
  };
}

/** Streamed chat: time to the first `data:` event carrying content; the rest is read to `[DONE]`. */
function streamed(target: Target): Op {
  const body = chatBody(target.model, true);
  const headers = { ...target.headers, accept: 'text/event-stream', 'content-length': String(Buffer.byteLength(body)) };
  const content = /"content":"[^"]/;
  return async (pool) => {
    const t0 = performance.now();
    const r = await pool.request({ path: target.path, method: 'POST', headers, body });
    if (r.statusCode < 200 || r.statusCode >= 300) return `HTTP ${r.statusCode}: ${(await r.body.text()).slice(0, 300)}`;
    let ttft = NaN;
    let seen = '';
    for await (const chunk of r.body) {
      seen += (chunk as Buffer).toString('utf8');
      if (Number.isNaN(ttft)) {
        for (const event of seen.split('\n\n').slice(0, -1)) {
          if (event.startsWith('data:') && content.test(event)) {
            ttft = performance.now() - t0;
            break;
          }
        }
      }
    }
    if (Number.isNaN(ttft)) return `no content event in: ${seen.slice(0, 300)}`;
    if (!seen.trimEnd().endsWith('data: [DONE]')) return `stream did not end with [DONE]: ${seen.slice(-300)}`;
    return ttft;
  };
}

// ---------------------------------------------------------------------------------------------------
// Load

interface Run {
  readonly target: string;
  readonly kind: 'chat' | 'stream';
  readonly clients: number;
  readonly throughput: number;
  readonly p50: number;
  readonly p99: number;
  /** Gateway CPU per request in microseconds (NaN for direct). */
  readonly cpuPerReq: number;
  /** The fake backend's CPU per request in microseconds. */
  readonly backendPerReq: number;
  /** Non-2xx answers and transport errors, warm-up included. */
  readonly failed: number;
  readonly firstFailure: string | undefined;
  /** Gateway RSS when the measurement ended. */
  readonly rss: number;
  /** Share of a core the rest of the machine (not the bench processes) used meanwhile; NaN when unknown. */
  readonly other: number;
}

/** One slice of a row: what was counted, for combine(). */
interface Slice {
  readonly count: number;
  readonly seconds: number;
  readonly latencies: Float64Array;
  readonly cpuUs: number;
  readonly backendUs: number;
  readonly otherUs: number;
  readonly failed: number;
  readonly firstFailure: string | undefined;
  readonly rss: number;
}

/** Keeps `clients` requests in flight: WARMUP_MS unrecorded, then MEASURE_MS recorded; resolves once drained. */
async function drive(
  target: Target,
  clients: number,
  op: Op,
  backendPid: number | undefined,
  benchPids: readonly number[],
): Promise<Slice> {
  const pool = new Pool(target.origin, { connections: clients, pipelining: 1, keepAliveTimeout: 30_000 });
  const latencies = new Float64Array(1024 * 1024);
  let phase: 'warmup' | 'measure' | 'done' = 'warmup';
  let n = 0;
  let failed = 0;
  let firstFailure: string | undefined;
  const worker = async (): Promise<void> => {
    while (phase !== 'done') {
      let result: number | string;
      try {
        result = await op(pool);
      } catch (err) {
        result = err instanceof Error ? `${(err as { code?: string }).code ?? err.name}: ${err.message}` : String(err);
      }
      if (typeof result === 'string') {
        failed++;
        firstFailure ??= result;
      } else if (phase === 'measure') {
        if (n < latencies.length) latencies[n] = result;
        n++;
      }
    }
  };
  const workers = Array.from({ length: clients }, () => worker());
  await sleep(WARMUP_MS);
  phase = 'measure';
  const cpu0 = cpuMicros(target.pid) + (target.alsoPid === undefined ? 0 : cpuMicros(target.alsoPid));
  const backend0 = cpuMicros(backendPid);
  const bench0 = benchPids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
  const machine0 = machineBusyMicros();
  const t0 = performance.now();
  await sleep(MEASURE_MS);
  const seconds = (performance.now() - t0) / 1000;
  const count = n;
  phase = 'done';
  const cpuUs = cpuMicros(target.pid) + (target.alsoPid === undefined ? 0 : cpuMicros(target.alsoPid)) - cpu0;
  const backendUs = cpuMicros(backendPid) - backend0;
  const otherUs = machineBusyMicros() - machine0 - (benchPids.reduce((sum, pid) => sum + cpuMicros(pid), 0) - bench0);
  const rss = rssBytes(target.pid);
  await Promise.all(workers);
  await pool.close();
  return {
    count,
    seconds,
    latencies: latencies.slice(0, Math.min(count, latencies.length)),
    cpuUs,
    backendUs,
    otherUs,
    failed,
    firstFailure,
    rss,
  };
}

/** A row from its slices: rates over the time of all of them, percentiles over all their latencies. */
function combine(target: Target, kind: Run['kind'], clients: number, slices: readonly Slice[]): Run {
  const sum = (f: (s: Slice) => number): number => slices.reduce((acc, sl) => acc + f(sl), 0);
  const count = sum((sl) => sl.count);
  const seconds = sum((sl) => sl.seconds);
  const sorted = new Float64Array(sum((sl) => sl.latencies.length));
  let at = 0;
  for (const sl of slices) {
    sorted.set(sl.latencies, at);
    at += sl.latencies.length;
  }
  sorted.sort();
  // The most any slice saw: a share of a core averaged over the row would hide a burst.
  const other = Math.max(...slices.map((sl) => Math.max(0, sl.otherUs) / 1e6 / sl.seconds));
  return {
    target: target.name,
    kind,
    clients,
    throughput: count / seconds,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    cpuPerReq: sum((sl) => sl.cpuUs) / count,
    backendPerReq: sum((sl) => sl.backendUs) / count,
    failed: sum((sl) => sl.failed),
    firstFailure: slices.find((sl) => sl.firstFailure !== undefined)?.firstFailure,
    rss: slices.at(-1)?.rss ?? NaN,
    other,
  };
}

/** CPU time the whole machine has spent busy, in microseconds (Linux /proc/stat, USER_HZ = 100); NaN elsewhere. */
function machineBusyMicros(): number {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    // user nice system idle iowait irq softirq steal …: everything but idle and iowait.
    return cpu.reduce((sum, v, i) => (i === 3 || i === 4 || i > 7 ? sum : sum + v), 0) * 10_000;
  } catch {
    return NaN;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

/** One request must succeed before a path is measured: a bench over errors measures nothing. */
async function verify(target: Target): Promise<void> {
  const pool = new Pool(target.origin, { connections: 1 });
  try {
    const body = chatBody(target.model, false);
    const context = target.contexts?.(body, 1)[0];
    const headers = context === undefined ? target.headers : { ...target.headers, 'x-tollgate-context': context };
    const r = await pool.request({ path: target.path, method: 'POST', headers, body });
    const text = await r.body.text();
    const content = (JSON.parse(text) as { choices?: Array<{ message?: { content?: unknown } }> }).choices?.[0]?.message?.content;
    if (r.statusCode !== 200 || typeof content !== 'string' || content === '') {
      throw new Error(`${target.name} does not answer the bench request: HTTP ${r.statusCode} ${text.slice(0, 500)}`);
    }
  } finally {
    await pool.close();
  }
}

// ---------------------------------------------------------------------------------------------------

function row(r: Run): string {
  const f = (v: number, d: number, w: number): string => (Number.isFinite(v) ? v.toFixed(d) : '-').padStart(w);
  return (
    `${r.target.padEnd(10)} ${(r.kind === 'chat' ? 'chat' : 'stream TTFT').padEnd(11)} ${String(r.clients).padStart(7)} ` +
    `${f(r.throughput, 0, 8)} ${f(r.p50, 3, 8)} ${f(r.p99, 3, 8)} ${f(r.cpuPerReq, 0, 14)} ${f(r.backendPerReq, 0, 14)} ${String(r.failed).padStart(8)} ${f(100 * r.other, 0, 8)}`
  );
}

async function main(): Promise<void> {
  const began = performance.now();
  const key = `sk-bench-${randomBytes(16).toString('hex')}`;
  const keyHash = `sha256:${createHash('sha256').update(key).digest('hex')}`;
  const profileDir = cpuProf ? mkdtempSync(path.join(tmpdir(), 'tollgate-gateway-prof-')) : undefined;
  const logDir = mkdtempSync(path.join(tmpdir(), 'tollgate-gateway-log-'));
  const servers: ServerChild[] = [];
  try {
    const backend = await startChild('fake-vllm', './servers/fake-vllm.js', {});
    servers.push(backend);
    const apiBase = `http://127.0.0.1:${backend.port}/v1`;
    const withEnvoyPath = envoyOnly || !(quick || cpuProf);
    const [tollgate, tollgateCtx, tollgateRedis, portkey, bare, stack, relay] = await Promise.all([
      startChild('tollgate', './servers/tollgate-gateway.js', {
        env: {
          TOLLGATE_BENCH_CONFIG: gatewayBenchConfig(apiBase, keyHash, noSpendLog ? undefined : BENCH_DATABASE_URL),
          TOLLGATE_BENCH_LOG: path.join(logDir, 'tollgate.log'),
        },
        execArgv: profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir],
      }),
      // The Envoy path in a process of its own, so the standalone row's memory is its own (profiled, the one child).
      withEnvoyPath && !cpuProf
        ? startChild('tollgate-ctx', './servers/tollgate-gateway.js', {
            env: {
              TOLLGATE_BENCH_CONFIG: gatewayBenchConfig(apiBase, keyHash, noSpendLog ? undefined : BENCH_DATABASE_URL),
              TOLLGATE_BENCH_LOG: path.join(logDir, 'tollgate-ctx.log'),
            },
          })
        : undefined,
      withEnvoyPath && redisUrl !== undefined
        ? startChild('tollgate-redis', './servers/tollgate-gateway.js', {
            env: {
              TOLLGATE_BENCH_CONFIG: gatewayBenchConfig(apiBase, keyHash, noSpendLog ? undefined : BENCH_DATABASE_URL, redisUrl),
              TOLLGATE_BENCH_LOG: path.join(logDir, 'tollgate-redis.log'),
            },
          })
        : undefined,
      cpuProf || quick || envoyOnly ? undefined : startPortkey(),
      cpuProf || envoyOnly
        ? undefined
        : startChild('bare-proxy', './servers/bare-proxy.js', { env: { BARE_PROXY_BACKEND: `http://127.0.0.1:${backend.port}` } }),
      cpuProf || envoyOnly
        ? undefined
        : startChild('stack-proxy', './servers/stack-proxy.js', { env: { BARE_PROXY_BACKEND: `http://127.0.0.1:${backend.port}` } }),
      cpuProf || quick || envoyOnly
        ? undefined
        : startChild('tcp-relay', './servers/tcp-relay.js', { env: { TCP_RELAY_BACKEND: `http://127.0.0.1:${backend.port}` } }),
    ]);
    servers.push(tollgate);
    if (tollgateCtx !== undefined) servers.push(tollgateCtx);
    if (tollgateRedis !== undefined) servers.push(tollgateRedis);
    if (portkey !== undefined) servers.push(portkey);
    if (bare !== undefined) servers.push(bare);
    if (stack !== undefined) servers.push(stack);
    if (relay !== undefined) servers.push(relay);

    const direct: Target = {
      name: 'direct',
      origin: `http://127.0.0.1:${backend.port}`,
      path: '/v1/chat/completions',
      headers: JSON_HEADERS,
      model: BACKEND_MODEL,
      pid: undefined,
    };
    const viaTollgate: Target = {
      name: 'tollgate',
      origin: `http://127.0.0.1:${tollgate.port}`,
      path: '/v1/chat/completions',
      headers: { ...JSON_HEADERS, authorization: `Bearer ${key}` },
      model: ALIAS,
      pid: tollgate.child.pid,
    };
    const viaPortkey: Target | undefined =
      portkey === undefined
        ? undefined
        : {
            name: 'portkey',
            origin: `http://127.0.0.1:${portkey.port}`,
            path: '/v1/chat/completions',
            headers: {
              ...JSON_HEADERS,
              authorization: 'Bearer x',
              'x-portkey-provider': 'openai',
              'x-portkey-custom-host': apiBase,
            },
            model: BACKEND_MODEL,
            pid: portkey.child.pid,
          };
    // The floors: a Node HTTP proxy that only moves bytes (servers/bare-proxy.ts), tollgate's HTTP stack
    // doing the same (servers/stack-proxy.ts), and a TCP relay that does not even read HTTP
    // (servers/tcp-relay.ts) — the least any proxy process can add on this machine. They take the backend's
    // own requests, as direct does.
    const floor = (name: string, server: ServerChild | undefined): Target | undefined =>
      server === undefined ? undefined : { ...direct, name, origin: `http://127.0.0.1:${server.port}`, pid: server.child.pid };
    // The Envoy path: what Envoy forwards after Check — no credentials, a context Check signed for this body.
    const signer = new ContextSigner(Buffer.from(CONTEXT_SIGNING_KEY, 'utf8'));
    const keyId = keyHash.slice('sha256:'.length, 'sha256:'.length + 16);
    const contexts = (body: string, count: number): string[] => {
      const b = bodyDigest(body);
      const x = Date.now() + 240_000;
      return Array.from({ length: count }, () =>
        signer.sign({
          k: keyId,
          a: 'bench',
          u: 'alice',
          m: ALIAS,
          d: 'fake-vllm-a',
          n: randomUUID(),
          r: randomUUID(),
          p: 'POST /v1/chat/completions',
          b,
          x,
        }),
      );
    };
    const envoyTargets: Target[] = [];
    if (withEnvoyPath) {
      const own = tollgateCtx === undefined ? {} : { origin: `http://127.0.0.1:${tollgateCtx.port}`, pid: tollgateCtx.child.pid };
      envoyTargets.push({ ...viaTollgate, ...own, name: 'ctx mem', headers: JSON_HEADERS, contexts });
    }
    if (tollgateRedis !== undefined && redisUrl !== undefined) {
      envoyTargets.push({
        ...viaTollgate,
        name: 'ctx redis',
        origin: `http://127.0.0.1:${tollgateRedis.port}`,
        headers: JSON_HEADERS,
        pid: tollgateRedis.child.pid,
        alsoPid: await redisPid(redisUrl),
        contexts,
      });
    }
    const viaBare = floor('bare', bare);
    const viaStack = floor('stack', stack);
    const viaRelay = floor('tcp relay', relay);
    const benchPids = [process.pid, ...servers.map((s) => s.child.pid ?? -1), ...envoyTargets.flatMap((t) => t.alsoPid ?? [])];
    const chatTargets = [direct, viaTollgate, ...(viaPortkey === undefined ? [] : [viaPortkey])];
    for (const t of [...chatTargets, ...envoyTargets]) await verify(t);
    const idleRss = rssBytes(tollgate.child.pid);
    console.log(
      `fake vLLM (chunkDelayMs 0) on ${apiBase}; ${chatTargets.map((t) => t.name).join(', ')} answer 200; ` +
        `each row ${ROUNDS} slices of ${WARMUP_MS / 1000} s warm-up + ${(MEASURE_MS / 1000).toFixed(2)} s measured, interleaved with its group's other rows; ` +
        `${availableParallelism()} CPUs; tollgate RSS at start ${(idleRss / 2 ** 20).toFixed(0)} MB`,
    );

    const runs: Run[] = [];
    /** The rows of one group (request kind, clients), their slices interleaved round by round. */
    const measure = async (targets: readonly Target[], kind: Run['kind'], clients: number): Promise<void> => {
      const slices = targets.map((): Slice[] => []);
      for (let round = 0; round < ROUNDS; round++) {
        // Each round starts with another row, so none is always measured right after the same one.
        for (let k = 0; k < targets.length; k++) {
          const i = (k + round) % targets.length;
          const t = targets[i] as Target;
          slices[i]?.push(await drive(t, clients, kind === 'chat' ? nonStreamed(t) : streamed(t), backend.child.pid, benchPids));
        }
      }
      targets.forEach((t, i) => {
        const run = combine(t, kind, clients, slices[i] ?? []);
        runs.push(run);
        console.log(`  ${row(run)}`);
      });
    };
    console.log(
      `  ${'path'.padEnd(10)} ${'request'.padEnd(11)} ${'clients'.padStart(7)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ` +
        `${'p99 ms'.padStart(8)} ${'gw CPU µs/req'.padStart(14)} ${'vLLM CPU µs/r'.padStart(14)} ${'non-2xx'.padStart(8)} ${'other %'.padStart(8)}`,
    );
    const find = (name: string, kind: Run['kind'], clients: number): Run | undefined =>
      runs.find((r) => r.target === name && r.kind === kind && r.clients === clients);

    if (quick) {
      const floors = [viaBare, viaStack].filter((t): t is Target => t !== undefined);
      for (const t of floors) await verify(t);
      await measure([direct, viaTollgate, ...floors], 'chat', HIGH);
    } else if (envoyOnly && !cpuProf) {
      await measure([direct, viaTollgate, ...envoyTargets], 'chat', HIGH);
    } else if (!cpuProf) {
      // The floors are measured beside every figure: what a proxy doing no work adds on this machine.
      const floors = [viaBare, viaStack, viaRelay].filter((t): t is Target => t !== undefined);
      for (const t of floors) await verify(t);
      await measure([...chatTargets, ...floors], 'chat', LOW);
      await measure([...chatTargets, ...floors, ...envoyTargets], 'chat', HIGH);
      await measure([direct, viaTollgate, ...floors], 'stream', LOW);
    } else {
      // With --envoy-path, the Envoy path is profiled instead of standalone.
      await measure([direct, (envoyOnly ? envoyTargets[0] : undefined) ?? viaTollgate], 'chat', HIGH);
    }

    await Promise.all(servers.map((s) => s.stop()));
    servers.length = 0;

    if (profileDir !== undefined) {
      const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
      console.log(`\ntollgate CPU profile (${file === undefined ? 'not written' : path.join(profileDir, file)}):`);
      if (file !== undefined) {
        const lines = summarizeCpuProfile(path.join(profileDir, file), 25);
        console.log(lines.map((l) => `  ${l}`).join('\n'));
      }
    }

    const busiest = Math.max(...runs.map((r) => r.other));
    if (busiest > 0.15) {
      console.log(
        `WARNING: other processes used up to ${(100 * busiest).toFixed(0)} % of a core during a measurement; rerun on a quiet machine`,
      );
    }
    const failed = runs.filter((r) => r.failed > 0);
    for (const r of failed) console.log(`INVALID RUN: ${r.failed} failed requests via ${r.target} (first: ${r.firstFailure ?? '?'})`);
    if (failed.length > 0) process.exitCode = 1;
    console.log(
      `(total ${((performance.now() - began) / 1000).toFixed(0)} s${cpuProf ? '; tollgate profiled, so slower than usual' : ''})`,
    );

    const tHigh = find('tollgate', 'chat', HIGH);
    const dHigh = find('direct', 'chat', HIGH);
    if (envoyTargets.length > 0) {
      const of = (name: string): string => {
        const r = find(name, 'chat', HIGH);
        return `${name} ${((r?.throughput ?? NaN) / (dHigh?.throughput ?? NaN)).toFixed(2)}× direct, ${(r?.cpuPerReq ?? NaN).toFixed(0)} µs/req`;
      };
      console.log(
        `Envoy path at ${HIGH} clients (a signed context per request; the gateway's CPU${redisUrl === undefined ? '' : ', with Redis’s on the Redis row'}): ` +
          `${envoyTargets.map((t) => of(t.name)).join('; ')}; standalone: ${of('tollgate')}`,
      );
    }
    if (!cpuProf && !quick && !envoyOnly) {
      const addedP50 = (name: string, kind: Run['kind']): number =>
        (find(name, kind, LOW)?.p50 ?? NaN) - (find('direct', kind, LOW)?.p50 ?? NaN);
      const vsPortkey = (name: string): number =>
        (find(name, 'chat', HIGH)?.throughput ?? NaN) / (find('portkey', 'chat', HIGH)?.throughput ?? NaN);
      const vsDirect = (name: string): number => (find(name, 'chat', HIGH)?.throughput ?? NaN) / (dHigh?.throughput ?? NaN);
      const rssMb = (tHigh?.rss ?? NaN) / 2 ** 20;
      // Each target beside what the floors reached in this run: the bare Node HTTP proxy, tollgate's HTTP
      // stack alone, the TCP relay.
      const bare = (v: (name: string) => number, d: number): string =>
        `; bare Node proxy: ${v('bare').toFixed(d)}, tollgate's HTTP stack alone: ${v('stack').toFixed(d)}, TCP relay: ${v('tcp relay').toFixed(d)}`;
      const addedChat = (name: string): number => addedP50(name, 'chat');
      const addedStream = (name: string): number => addedP50(name, 'stream');
      console.log(
        `added p50 latency at ${LOW} clients (tollgate - direct): ${addedP50('tollgate', 'chat').toFixed(3)} ms (target <= ${TARGET_ADDED_P50_MS} ms${bare(addedChat, 3)})`,
      );
      console.log(
        `throughput tollgate/Portkey at ${HIGH} clients: ${vsPortkey('tollgate').toFixed(1)} (target >= ${TARGET_RATIO_PORTKEY}${bare(vsPortkey, 1)})`,
      );
      console.log(
        `TTFT added at ${LOW} clients (p50, tollgate - direct): ${addedP50('tollgate', 'stream').toFixed(3)} ms (target <= ${TARGET_TTFT_ADDED_MS} ms${bare(addedStream, 3)})`,
      );
      console.log(`tollgate RSS at the end of the ${HIGH}-client run: ${rssMb.toFixed(0)} MB (target <= ${TARGET_RSS_MB} MB)`);
      console.log(
        `ratio tollgate/direct throughput at ${HIGH} clients: ${vsDirect('tollgate').toFixed(2)} (target >= ${TARGET_RATIO_DIRECT.toFixed(2)}${bare(vsDirect, 2)})`,
      );
      return;
    }
    const ratio = (tHigh?.throughput ?? NaN) / (dHigh?.throughput ?? NaN);
    const floorRatio = (name: string): string => ((find(name, 'chat', HIGH)?.throughput ?? NaN) / (dHigh?.throughput ?? NaN)).toFixed(2);
    console.log(
      `ratio tollgate/direct throughput at ${HIGH} clients: ${ratio.toFixed(2)} (target >= ${TARGET_RATIO_DIRECT.toFixed(2)}${quick ? `; bare Node proxy: ${floorRatio('bare')}, tollgate's HTTP stack alone: ${floorRatio('stack')}` : ''})`,
    );
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(logDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
