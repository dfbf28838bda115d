/**
 * The image's Docker HEALTHCHECK (`node dist/src/main/healthcheck.js`): probes what the container's tollgate
 * process serves, read from its command line, so `tollgate authz` alone is checked on its gRPC port instead of
 * being found unhealthy for want of the gateway's. `serve` and `gateway`: GET /health/liveliness on the HTTP
 * port; `serve` and `authz`: grpc.health.v1.Health/Check on the gRPC port. Liveness only, as the chart's
 * probes: any answer means the process is alive (a gRPC NOT_SERVING too, as the gateway's liveliness answers
 * 200 with the stores down); a TCP connect alone would not do, since the kernel accepts connections for a
 * process whose event loop is stuck. Exits 0 when every probe answered, 1 otherwise, with the reason on stderr.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:http2';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Where a tollgate process serves; a port absent when its command does not serve it. */
export interface HealthTargets {
  readonly host: string;
  readonly httpPort?: number | undefined;
  readonly grpcPort?: number | undefined;
}

const SERVERS = new Set(['serve', 'authz', 'gateway']);

/**
 * The targets of a tollgate command line (`node bin/tollgate.js authz --grpc-port 9002 ...`, as in
 * /proc/<pid>/cmdline), or undefined when it runs no server. Defaults as src/main/cli.ts: ports 4000 and 9001; a
 * wildcard host (0.0.0.0, the default, or ::) is probed on loopback.
 */
export function healthTargets(argv: readonly string[]): HealthTargets | undefined {
  const entry = argv.findIndex((a) => /(^|\/)tollgate(\.js)?$/.test(a));
  if (entry < 0) return undefined;
  const [command, ...rest] = argv.slice(entry + 1);
  if (command === undefined || !SERVERS.has(command)) return undefined;
  const { values } = parseArgs({
    args: rest,
    options: { host: { type: 'string' }, 'http-port': { type: 'string' }, 'grpc-port': { type: 'string' } },
    strict: false,
    allowPositionals: true,
  });
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const port = (v: string | undefined, fallback: number): number | undefined => {
    const n = v === undefined ? fallback : Number(v);
    // 0 is a port the kernel picked: nothing to find it by.
    return Number.isInteger(n) && n > 0 && n <= 65535 ? n : undefined;
  };
  const host = str(values['host']);
  return {
    host: host === undefined || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host,
    httpPort: command === 'authz' ? undefined : port(str(values['http-port']), 4000),
    grpcPort: command === 'gateway' ? undefined : port(str(values['grpc-port']), 9001),
  };
}

/** The command line of the container's tollgate process: PID 1 (exec form), else the first found (an init first). */
export function tollgateCommandLine(proc = '/proc'): string[] | undefined {
  const read = (pid: string): string[] | undefined => {
    try {
      const argv = readFileSync(`${proc}/${pid}/cmdline`, 'utf8')
        .split('\0')
        .filter((a) => a !== '');
      return healthTargets(argv) === undefined ? undefined : argv;
    } catch {
      return undefined; // gone, or not ours to read
    }
  };
  const first = read('1');
  if (first !== undefined) return first;
  let pids: string[];
  try {
    pids = readdirSync(proc).filter((p) => /^\d+$/.test(p));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    const argv = read(pid);
    if (argv !== undefined) return argv;
  }
  return undefined;
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** GET /health/liveliness: 200 while the gateway runs. */
async function probeHttp(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://${urlHost(host)}:${port}/health/liveliness`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.ok ? undefined : `GET /health/liveliness on port ${port} answered ${res.status}`;
  } catch (err) {
    return `GET /health/liveliness on port ${port}: ${(err as Error).message}`;
  }
}

/**
 * grpc.health.v1.Health/Check for service "" over h2c, by hand (no proto needed: the request is an empty
 * message). Any grpc-status is an answer from a live server (gRPC over HTTP/2: the status ends the call).
 */
function probeGrpc(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const what = `grpc.health.v1.Health/Check on port ${port}`;
    const session = connect(`http://${urlHost(host)}:${port}`);
    let done = false;
    const finish = (problem: string | undefined): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => finish(`${what}: no answer within ${timeoutMs} ms`), timeoutMs);
    session.on('error', (err: Error) => finish(`${what}: ${err.message}`));
    const call = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const status = (headers: Record<string, unknown>): void => {
      if (headers['grpc-status'] !== undefined) finish(undefined);
    };
    call.on('response', status);
    call.on('trailers', status);
    call.on('error', (err: Error) => finish(`${what}: ${err.message}`));
    call.on('close', () => finish(`${what}: the stream closed without a gRPC status`));
    call.resume();
    // A length-prefixed message: not compressed, 0 bytes (HealthCheckRequest with service "").
    call.end(Buffer.alloc(5));
  });
}

/** Every problem found probing `targets`; empty when all answered. */
export async function probe(targets: HealthTargets, timeoutMs: number): Promise<string[]> {
  const checks: Array<Promise<string | undefined>> = [];
  if (targets.httpPort !== undefined) checks.push(probeHttp(targets.host, targets.httpPort, timeoutMs));
  if (targets.grpcPort !== undefined) checks.push(probeGrpc(targets.host, targets.grpcPort, timeoutMs));
  if (checks.length === 0) return ['no port to probe: the server runs on a port the kernel picked (0)'];
  return (await Promise.all(checks)).filter((p) => p !== undefined);
}

async function main(): Promise<number> {
  const argv = tollgateCommandLine();
  const targets = argv === undefined ? undefined : healthTargets(argv);
  if (targets === undefined) {
    process.stderr.write('healthcheck: no tollgate serve, authz or gateway process in this container\n');
    return 1;
  }
  // Below the Dockerfile's HEALTHCHECK --timeout (5 s).
  const problems = await probe(targets, 4000);
  for (const p of problems) process.stderr.write(`healthcheck: ${p}\n`);
  return problems.length === 0 ? 0 : 1;
}

// process.exit: an idle keep-alive socket of fetch's must not hold the check open past Docker's timeout.
if (process.argv[1] === fileURLToPath(import.meta.url)) process.exit(await main());
