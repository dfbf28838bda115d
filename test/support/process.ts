/**
 * The `tollgate` binary as a child process (`node bin/tollgate.js`), for tests that run it as users do:
 * its JSON log lines are watched, and every wait is bounded so a hang fails instead of stalling.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** dist/test/support/process.js → the repository root. */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'tollgate.js');
const WAIT_MS = 20_000;
/**
 * How long a tollgate that opens embedded PGlite (PostgreSQL in WebAssembly: no database_url) may take to
 * listen: about 5 s alone here, more beside the rest of the suite, over 20 s on a loaded two-core machine.
 */
export const PGLITE_START_MS = 45_000;

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Running {
  readonly proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout JSON log line whose msg is `msg`; rejects on exit or timeout. */
  waitForLog(msg: string, ms?: number): Promise<Record<string, unknown>>;
  /** Resolves when the process exits; rejects after `ms`. */
  waitExit(ms?: number): Promise<Finished>;
}

export const children = new Set<ChildProcess>();

export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['TOLLGATE_CONFIG', 'LOG_LEVEL', 'GRPC_VERBOSITY', 'GRPC_NODE_VERBOSITY', 'DATABASE_URL', 'REDIS_URL'])
    delete env[name];
  return { ...env, ...extra };
}

/** Runs `node bin/tollgate.js <args>`; every wait on it is bounded. */
export function startTollgate(args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Running {
  const proc = spawn(process.execPath, [BIN, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: childEnv(opts.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
  if (opts.input !== undefined) proc.stdin?.end(opts.input);
  else proc.stdin?.end();
  const exited = new Promise<Finished>((resolve) => {
    proc.on('close', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal, stdout: out, stderr: err });
    });
  });
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    waitExit: (ms = WAIT_MS) =>
      withTimeout(exited, ms, () => `tollgate ${args.join(' ')} did not exit within ${ms} ms\nstdout: ${out}\nstderr: ${err}`),
    waitForLog: (msg, ms = WAIT_MS) =>
      new Promise((resolve, reject) => {
        const find = (): Record<string, unknown> | undefined => {
          for (const line of out.split('\n')) {
            if (!line.startsWith('{')) continue;
            try {
              const rec = JSON.parse(line) as Record<string, unknown>;
              if (rec['msg'] === msg) return rec;
            } catch {
              // a partial line; the next chunk completes it
            }
          }
          return undefined;
        };
        const done = (fn: () => void): void => {
          clearTimeout(timer);
          proc.stdout?.off('data', onData);
          proc.off('close', onClose);
          fn();
        };
        const onData = (): void => {
          const rec = find();
          if (rec) done(() => resolve(rec));
        };
        const onClose = (code: number | null): void =>
          done(() => reject(new Error(`exited (${String(code)}) before logging "${msg}"\nstdout: ${out}\nstderr: ${err}`)));
        const timer = setTimeout(
          () => done(() => reject(new Error(`no "${msg}" log within ${ms} ms\nstdout: ${out}\nstderr: ${err}`))),
          ms,
        );
        proc.stdout?.on('data', onData);
        proc.on('close', onClose);
        onData();
      }),
  };
}

export async function withTimeout<T>(p: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(why())), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port nothing listens on now (bound, read, released). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
