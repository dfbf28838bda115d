/**
 * ext_authz Check throughput: tollgate against a no-op grpc-js ext_authz server, measured in the same
 * run under the same load, each server in its own child process and the load generator here.
 *
 *   npm run bench                              (or: node dist/bench/check.js)
 *   node dist/bench/check.js --cpu-prof        also profiles tollgate's child and prints where time goes
 *
 * Load: CONCURRENCY Check calls always in flight, spread over CONNECTIONS HTTP/2 connections (one per
 * Envoy worker thread; see CONNECTIONS for why not one), each a realistic CheckRequest that tollgate allows: ~20 headers, a chat-completions body, a JWT from a
 * real OIDC provider and a virtual key; one policy rule; two deployments behind the model. The request
 * is encoded once with Envoy's own protos and sent by a lean HTTP/2 client (see unary-h2.ts), so the
 * client spends the same, and little, per call on both servers; every response is decoded with Envoy's
 * protos and must be OK.
 * Rounds alternate tollgate/noop; each warms up, then measures; throughput is the median over rounds.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type protobuf from 'protobufjs';
import { CHECK_PROTO, loadRoot } from '../src/authz/protos.js';
import { ENVOY_INCLUDE_DIRS, checkRequest } from '../test/support/envoy.js';
import { startIdp } from '../test/support/idp.js';
import { summarizeCpuProfile } from './cpu-profile.js';
import type { ToChild, ToParent } from './servers/ipc.js';
import { UnaryH2Client, grpcFrame } from './unary-h2.js';

const CONCURRENCY = 64;
/**
 * HTTP/2 connections the calls are spread over. grpc-js servers keep Node's default 64 KiB connection
 * receive window (no server option raises it), so 64 requests of ~2.7 KB on one connection wait for
 * WINDOW_UPDATEs and some streams starve for hundreds of ms: p99 then measures the flow control, not
 * the server. 16 per connection fit in the window.
 */
const CONNECTIONS = 4;
const WARMUP_MS = 2_000;
/** The first round warms each server up longer: the JIT is still settling after 2 s (more so for tollgate). */
const FIRST_WARMUP_MS = 5_000;
const MEASURE_MS = 8_000;
const ROUNDS = 2;
const TARGET_RATIO = 0.7;
const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';
const AUDIENCE = 'tollgate-bench';
const MODEL = 'llama-3.1-8b-instruct';

const cpuProf = process.argv.includes('--cpu-prof');
/**
 * `--redis [url]`: tollgate counts the bench key's rpm and tpm in Redis (one Lua call per Check), against
 * the same no-op server; the target is then 0.5, and the Redis round trips per Check are reported.
 */
const redisAt = process.argv.indexOf('--redis');
const redisUrl =
  redisAt < 0 ? undefined : process.argv[redisAt + 1]?.startsWith('redis') ? process.argv[redisAt + 1] : 'redis://127.0.0.1:6379';
const TARGET_RATIO_REDIS = 0.5;

// ---------------------------------------------------------------------------------------------------
// Server children

interface ServerChild {
  readonly name: string;
  readonly child: ChildProcess;
  readonly port: number;
  /** Process CPU time so far, in microseconds. */
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

async function startChild(name: string, script: string, opts: { env?: NodeJS.ProcessEnv; execArgv?: string[] }): Promise<ServerChild> {
  const child = fork(new URL(script, import.meta.url), [], {
    env: { ...process.env, ...opts.env },
    execArgv: opts.execArgv ?? [],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  // Keep the last output for error messages; drain the rest (pino writes to stdout).
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let nextId = 0;
  const pendingCpu = new Map<number, (us: number) => void>();
  const port = await new Promise<number>((resolve, reject) => {
    child.on('message', (m: ToParent) => {
      if (m.type === 'ready') resolve(m.port);
      else if (m.type === 'failed') reject(new Error(`${name} failed to start:\n${m.message}`));
      else pendingCpu.get(m.id)?.(m.user + m.system);
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before listening:\n${tail}`)));
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      // A child gone mid-run answers no more CPU probes; its calls fail and are counted as not OK.
      for (const settle of pendingCpu.values()) settle(NaN);
      resolve();
    }),
  );
  return {
    name,
    child,
    port,
    cpu: () =>
      new Promise<number>((resolve) => {
        if (!child.connected) return resolve(NaN);
        const id = nextId++;
        pendingCpu.set(id, (us) => {
          pendingCpu.delete(id);
          resolve(us);
        });
        child.send({ type: 'cpu', id } satisfies ToChild);
      }),
    async stop() {
      if (child.exitCode === null) child.send({ type: 'stop' } satisfies ToChild);
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// The request

/** A chat-completions body of about 1.5 KB, as the OpenAI SDKs send it. */
function chatBody(): string {
  return JSON.stringify({
    model: MODEL,
    messages: [
      {
        role: 'system',
        content:
          'You are a careful assistant for the platform team. Answer with short, correct statements, cite the runbook section when one ' +
          'applies, and say so plainly when you do not know. Never invent configuration keys; prefer the documented defaults.',
      },
      { role: 'user', content: 'Our Envoy ext_authz filter times out under load. Which settings should we look at first?' },
      {
        role: 'assistant',
        content:
          'Start with the filter timeout (grpc_service.timeout, 200 ms by default), failure_mode_allow, and with_request_body.max_request_bytes; ' +
          'then check the authz cluster circuit breakers and whether the server keeps up at your peak request rate.',
      },
      {
        role: 'user',
        content:
          'We buffer bodies up to 8 KiB with allow_partial_message false. Peak is about 3000 requests per second across six Envoy pods. ' +
          'What would you change, and how do we verify it?',
      },
    ],
    temperature: 0.2,
    top_p: 0.95,
    max_tokens: 512,
    stream: true,
    stream_options: { include_usage: true },
    user: 'alice@example.com',
  });
}

function benchHeaders(jwt: string, key: string, body: string): Record<string, string> {
  return {
    'user-agent': 'OpenAI/Python 1.54.4',
    accept: 'application/json',
    'accept-encoding': 'gzip, deflate, br',
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'x-forwarded-for': '203.0.113.24, 10.0.0.7',
    'x-forwarded-proto': 'https',
    'x-envoy-external-address': '203.0.113.24',
    traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    tracestate: 'rojo=00f067aa0ba902b7',
    'x-stainless-lang': 'python',
    'x-stainless-package-version': '1.54.4',
    'x-stainless-runtime': 'CPython',
    'x-stainless-retry-count': '0',
    'x-cake-authorization': `Bearer ${jwt}`,
    authorization: `Bearer ${key}`,
  };
}

function benchConfig(issuer: string): string {
  const limits =
    redisUrl === undefined
      ? ''
      : `    rpm_limit: 1000000000
    tpm_limit: 2000000000
`;
  const store =
    redisUrl === undefined ? '' : `  redis_url: ${redisUrl}\n  redis_key_prefix: "tollgate-bench-${randomBytes(6).toString('hex')}:"\n`;
  return `
model_list:
  - model_name: ${MODEL}
    litellm_params: { model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, api_base: "http://vllm-a.models.svc:8000/v1" }
    model_info: { id: llama-8b-a }
  - model_name: ${MODEL}
    litellm_params: { model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct, api_base: "http://vllm-b.models.svc:8000/v1" }
    model_info: { id: llama-8b-b }
general_settings:
  context_signing_key: bench-context-signing-key-0123456789abcdef
${store}auth:
  jwt:
    issuer: "${issuer}"
    audience: ${AUDIENCE}
    allow_insecure_http: true
policy:
  rules:
    - name: ml-users-only
      when: "!('ml-users' in jwt.groups)"
      deny: "This API is for members of ml-users: ask your platform team."
keys:
  - key: os.environ/BENCH_VIRTUAL_KEY
    key_alias: bench
    models: [${MODEL}]
    user_id: alice
${limits}`;
}

/**
 * Redis's command counts so far (INFO commandstats), by a connection of its own: EVAL/EVALSHA calls (round
 * trips from tollgate: it sends nothing else on the Check path) and every command, those run inside scripts included.
 */
async function redisCommands(url: string): Promise<{ scripts: number; all: number }> {
  const { Redis } = await import('ioredis');
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    const info = await r.info('commandstats');
    let all = 0;
    let scripts = 0;
    for (const m of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) {
      all += Number(m[2]);
      if (m[1] === 'evalsha' || m[1] === 'eval') scripts += Number(m[2]);
    }
    return { scripts, all };
  } finally {
    r.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------------
// Load

interface Target {
  readonly server: ServerChild;
  readonly clients: readonly UnaryH2Client[];
}

interface Run {
  readonly calls: number;
  readonly seconds: number;
  readonly latenciesMs: Float64Array;
  /** Calls answered with status.code ≠ 0, or failed with a gRPC error (warm-up included). */
  readonly notOk: number;
  readonly serverCpuUs: number;
  readonly clientCpuUs: number;
  /** CPU the rest of the machine used meanwhile (other processes), in microseconds; NaN when unknown. */
  readonly otherCpuUs: number;
}

/** CPU seconds the whole machine has spent busy (Linux /proc/stat, USER_HZ = 100); NaN elsewhere. */
function machineBusySeconds(): number {
  try {
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    // user nice system idle iowait irq softirq steal …: everything but idle and iowait.
    const busy = cpu.reduce((sum, v, i) => (i === 3 || i === 4 || i > 7 ? sum : sum + v), 0);
    return busy / 100;
  } catch {
    return NaN;
  }
}

/** status.code of a Check answered with gRPC OK; -1 for anything else (a gRPC error, no message). */
function checkCode(
  CheckResponse: protobuf.Type,
  err: Error | undefined,
  grpcStatus: string | undefined,
  message: Buffer | undefined,
): number {
  if (err !== undefined || grpcStatus !== '0' || message === undefined) return -1;
  const m = CheckResponse.decode(message) as unknown as { status?: { code?: number } };
  return m.status?.code ?? 0;
}

function call(target: Target, frame: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    (target.clients[0] as UnaryH2Client).call(frame, (err, grpcStatus, message) =>
      grpcStatus === '0' && message !== undefined ? resolve(message) : reject(err ?? new Error(`gRPC status ${grpcStatus}`)),
    );
  });
}

/** Keeps CONCURRENCY calls in flight: `warmupMs` unrecorded, then MEASURE_MS recorded; resolves once drained. */
function drive(target: Target, frame: Buffer, CheckResponse: protobuf.Type, latencies: Float64Array, warmupMs: number): Promise<Run> {
  return new Promise((resolve) => {
    let phase: 'warmup' | 'measure' | 'drain' = 'warmup';
    let inflight = 0;
    let calls = 0;
    let notOk = 0;
    let t0 = 0;
    let t1 = 0;
    let cpu0: Promise<number> = Promise.resolve(0);
    let cpu1: Promise<number> = Promise.resolve(0);
    let client0 = process.cpuUsage();
    let clientUs = 0;
    let machine0 = 0;
    let machineUs = 0;
    const fire = (client: UnaryH2Client): void => {
      inflight++;
      const started = performance.now();
      client.call(frame, (err, grpcStatus, message) => {
        inflight--;
        const ended = performance.now();
        if (checkCode(CheckResponse, err, grpcStatus, message) !== 0) notOk++;
        if (phase === 'measure') {
          if (calls < latencies.length) latencies[calls] = ended - started;
          calls++;
        }
        if (phase !== 'drain') fire(client);
        else if (inflight === 0) {
          void Promise.all([cpu0, cpu1]).then(([a, b]) =>
            resolve({
              calls,
              seconds: (t1 - t0) / 1000,
              latenciesMs: latencies.slice(0, Math.min(calls, latencies.length)),
              notOk,
              serverCpuUs: b - a,
              clientCpuUs: clientUs,
              otherCpuUs: machineUs - (b - a) - clientUs,
            }),
          );
        }
      });
    };
    for (let i = 0; i < CONCURRENCY; i++) fire(target.clients[i % target.clients.length] as UnaryH2Client);
    setTimeout(() => {
      phase = 'measure';
      t0 = performance.now();
      cpu0 = target.server.cpu();
      client0 = process.cpuUsage();
      machine0 = machineBusySeconds();
      setTimeout(() => {
        phase = 'drain';
        t1 = performance.now();
        cpu1 = target.server.cpu();
        const c = process.cpuUsage(client0);
        clientUs = c.user + c.system;
        machineUs = (machineBusySeconds() - machine0) * 1e6;
      }, MEASURE_MS);
    }, warmupMs);
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

// ---------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const began = performance.now();
  const envoyRoot = loadRoot([CHECK_PROTO], ENVOY_INCLUDE_DIRS);
  const CheckRequest = envoyRoot.lookupType('envoy.service.auth.v3.CheckRequest');
  const CheckResponse = envoyRoot.lookupType('envoy.service.auth.v3.CheckResponse');

  const idp = await startIdp({ audience: AUDIENCE });
  const jwt = await idp.token({ claims: { sub: 'alice', email: 'alice@example.com', groups: ['ml-users', 'staff'] }, expiresIn: 3600 });
  const virtualKey = `sk-bench-${randomBytes(16).toString('hex')}`;
  const body = chatBody();
  const request = Buffer.from(
    CheckRequest.encode(
      CheckRequest.fromObject(
        checkRequest({ method: 'POST', path: '/v1/chat/completions', headers: benchHeaders(jwt, virtualKey, body), body }),
      ),
    ).finish(),
  );
  const frame = grpcFrame(request);

  const profileDir = cpuProf ? mkdtempSync(path.join(tmpdir(), 'tollgate-bench-prof-')) : undefined;
  const servers: ServerChild[] = [];
  const clients: UnaryH2Client[] = [];
  try {
    const [tollgate, noop] = await Promise.all([
      startChild('tollgate', './servers/tollgate-authz.js', {
        env: { TOLLGATE_BENCH_CONFIG: benchConfig(idp.issuer), BENCH_VIRTUAL_KEY: virtualKey },
        execArgv: profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir],
      }),
      startChild('noop', './servers/noop-authz.js', {}),
    ]);
    servers.push(tollgate, noop);
    const targets: Target[] = [tollgate, noop].map((server) => {
      const own = Array.from({ length: CONNECTIONS }, () => new UnaryH2Client(server.port, CHECK_PATH));
      clients.push(...own);
      return { server, clients: own };
    });

    // A bench over denials measures nothing: tollgate must allow this request, and route it.
    const first = CheckResponse.toObject(CheckResponse.decode(await call(targets[0] as Target, frame)), { enums: String }) as {
      status?: { code?: number; message?: string };
      ok_response?: { headers?: Array<{ header: { key: string; value: string } }> };
    };
    const deployment = first.ok_response?.headers?.find((h) => h.header.key === 'x-tollgate-deployment')?.header.value;
    if ((first.status?.code ?? 0) !== 0 || deployment === undefined) {
      throw new Error(`tollgate does not allow the bench request: ${JSON.stringify(first)}`);
    }
    const noopFirst = CheckResponse.decode(await call(targets[1] as Target, frame)) as unknown as { status?: { code?: number } };
    if ((noopFirst.status?.code ?? 0) !== 0) throw new Error('the noop server does not allow');
    console.log(
      `request: ${request.length} B CheckRequest (${Buffer.byteLength(body)} B body); tollgate allows it (deployment ${deployment}); ` +
        `${CONCURRENCY} in flight over ${CONNECTIONS} connections, ${FIRST_WARMUP_MS / 1000} s (then ${WARMUP_MS / 1000} s) warm-up + ${MEASURE_MS / 1000} s measured, ${ROUNDS} rounds`,
    );

    if (redisUrl !== undefined) {
      // Round trips per Check: Redis's command count over 500 sequential Checks (the INFO call itself counts one).
      const before = await redisCommands(redisUrl);
      for (let i = 0; i < 500; i++) await call(targets[0] as Target, frame);
      const after = await redisCommands(redisUrl);
      console.log(
        `Redis round trips (EVALSHA) per Check: ${((after.scripts - before.scripts) / 500).toFixed(2)} (target: 1); ` +
          `commands run inside the script per Check: ${((after.all - before.all - 1) / 500).toFixed(1)}`,
      );
    }

    const latencies = new Float64Array(4 * 1024 * 1024);
    const runs = new Map<string, Run[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const target of targets) {
        const run = await drive(target, frame, CheckResponse, latencies, round === 1 ? FIRST_WARMUP_MS : WARMUP_MS);
        runs.set(target.server.name, [...(runs.get(target.server.name) ?? []), run]);
        console.log(
          `  round ${round} ${target.server.name.padEnd(8)} ${(run.calls / run.seconds).toFixed(0).padStart(7)} calls/s` +
            `  server CPU ${((100 * run.serverCpuUs) / 1e6 / run.seconds).toFixed(0)} %, client CPU ${((100 * run.clientCpuUs) / 1e6 / run.seconds).toFixed(0)} %, ` +
            `other processes ${((100 * Math.max(0, run.otherCpuUs)) / 1e6 / run.seconds).toFixed(0)} %`,
        );
      }
    }

    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    servers.length = 0;

    if (profileDir !== undefined) {
      const file = readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
      console.log(`\ntollgate CPU profile (${file === undefined ? 'not written' : path.join(profileDir, file)}):`);
      if (file !== undefined)
        console.log(
          summarizeCpuProfile(path.join(profileDir, file), 25)
            .map((l) => `  ${l}`)
            .join('\n'),
        );
    }

    const rows = [...runs].map(([name, rs]) => {
      const all = new Float64Array(rs.reduce((n, r) => n + r.latenciesMs.length, 0));
      let at = 0;
      for (const r of rs) {
        all.set(r.latenciesMs, at);
        at += r.latenciesMs.length;
      }
      all.sort();
      const calls = rs.reduce((n, r) => n + r.calls, 0);
      return {
        name,
        throughput: median(rs.map((r) => r.calls / r.seconds)),
        p50: percentile(all, 0.5),
        p99: percentile(all, 0.99),
        cpuPerCall: rs.reduce((n, r) => n + r.serverCpuUs, 0) / calls,
        notOk: rs.reduce((n, r) => n + r.notOk, 0),
      };
    });
    console.log('');
    console.log(
      `${'server'.padEnd(10)} ${'calls/s'.padStart(9)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'server CPU µs/call'.padStart(19)} ${'not OK'.padStart(7)}`,
    );
    for (const r of rows) {
      console.log(
        `${r.name.padEnd(10)} ${r.throughput.toFixed(0).padStart(9)} ${r.p50.toFixed(2).padStart(8)} ${r.p99.toFixed(2).padStart(8)} ` +
          `${r.cpuPerCall.toFixed(0).padStart(19)} ${String(r.notOk).padStart(7)}`,
      );
    }
    const busiest = Math.max(...[...runs.values()].flat().map((r) => r.otherCpuUs / 1e6 / r.seconds));
    if (busiest > 0.15) {
      console.log(
        `WARNING: other processes used up to ${(100 * busiest).toFixed(0)} % of a core during a measurement; rerun on a quiet machine`,
      );
    }
    const failed = rows.filter((r) => r.notOk > 0);
    if (failed.length > 0) {
      console.log(`INVALID RUN: non-OK responses from ${failed.map((r) => r.name).join(', ')}`);
      process.exitCode = 1;
    }
    console.log(
      `(total ${((performance.now() - began) / 1000).toFixed(0)} s${cpuProf ? '; tollgate profiled, so slower than usual' : ''})`,
    );
    const t = rows.find((r) => r.name === 'tollgate')?.throughput ?? NaN;
    const n = rows.find((r) => r.name === 'noop')?.throughput ?? NaN;
    const target = redisUrl === undefined ? TARGET_RATIO : TARGET_RATIO_REDIS;
    console.log(
      `ratio tollgate${redisUrl === undefined ? '' : ' (redis_url)'}/noop throughput: ${(t / n).toFixed(2)} (target >= ${target.toFixed(2)})`,
    );
  } finally {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    await idp.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
