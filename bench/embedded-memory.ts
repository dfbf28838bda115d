/**
 * Memory of the embedded default: `tollgate serve` with no config (embedded PGlite in ./.tollgate), against
 * the same PGlite as its defaults leave it (128 MB shared buffers, initdb's WebAssembly instance left to V8),
 * in the same run. Each starts twice in a directory of its own: once creating its data directory (initdb
 * runs), once opening it again. Resident memory is read 2 s after each is ready.
 *
 *   npm run bench:memory                       (or: node dist/bench/embedded-memory.js)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const TOLLGATE = fileURLToPath(new URL('../../bin/tollgate.js', import.meta.url));
const PGLITE = fileURLToPath(new URL('../../node_modules/@electric-sql/pglite/dist/index.js', import.meta.url));
const SETTLE_MS = 2_000;
const READY_WITHIN_MS = 60_000;

/** PGlite opened with its defaults in `dir`, as tollgate opened it before: prints `ready` and waits. */
const BASELINE = `
const { PGlite } = await import(${JSON.stringify(PGLITE)});
const db = new PGlite(process.argv[1]);
await db.waitReady;
await db.query('SELECT 1');
console.log('ready');
setInterval(() => {}, 1 << 30);
`;

function rssMb(pid: number | undefined): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m?.[1] === undefined ? NaN : Number(m[1]) / 1024;
}

/** Starts `child`, waits for `marker` on its stdout, then SETTLE_MS; returns its RSS in MB and stops it. */
async function measure(child: ChildProcess, marker: string): Promise<number> {
  let out = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready within ${READY_WITHIN_MS} ms:\n${out.slice(-2000)}`)), READY_WITHIN_MS);
      const seen = (chunk: Buffer): void => {
        out += chunk.toString('utf8');
        if (out.includes(marker)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', seen);
      child.stderr?.on('data', (c: Buffer) => (out += c.toString('utf8')));
      child.once('exit', (code) => reject(new Error(`exited (${code}) before ready:\n${out.slice(-2000)}`)));
    });
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    return rssMb(child.pid);
  } finally {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
}

async function main(): Promise<void> {
  const root = mkdtempSync(path.join(tmpdir(), 'tollgate-embedded-memory-'));
  try {
    const tollgateDir = path.join(root, 'tollgate');
    const baselineDir = path.join(root, 'pglite');
    mkdirSync(tollgateDir);
    mkdirSync(baselineDir);
    // The embedded default keeps its data in ./.tollgate: run in a directory of its own.
    const runTollgate = (): ChildProcess =>
      spawn(process.execPath, [TOLLGATE, 'serve', '--http-port', '0', '--grpc-port', '0'], { cwd: tollgateDir });
    const runBaseline = (): ChildProcess => spawn(process.execPath, ['--input-type=module', '-e', BASELINE, baselineDir]);
    const tFirst = await measure(runTollgate(), 'serve listening');
    const bFirst = await measure(runBaseline(), 'ready');
    const tAgain = await measure(runTollgate(), 'serve listening');
    const bAgain = await measure(runBaseline(), 'ready');
    console.log(`RSS ${SETTLE_MS / 1000} s after ready, MB`);
    console.log(`  ${'process'.padEnd(38)} ${'new data dir'.padStart(13)} ${'reopened'.padStart(10)}`);
    for (const [what, first, again] of [
      ['tollgate serve (embedded default)', tFirst, tAgain],
      ['PGlite with its defaults (baseline)', bFirst, bAgain],
    ] as const)
      console.log(`  ${what.padEnd(38)} ${first.toFixed(0).padStart(13)} ${again.toFixed(0).padStart(10)}`);
    console.log(`ratio tollgate/baseline RSS (new data dir): ${(tFirst / bFirst).toFixed(2)}; reopened: ${(tAgain / bAgain).toFixed(2)}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
