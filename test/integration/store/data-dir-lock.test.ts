/**
 * The data_dir lock (one process per embedded PGlite directory): a fresh lock is its holder's whatever the
 * process ids say (two containers on one volume are both PID 1); a stale one, or one naming a process of
 * this host that is gone, is taken over; a released one is gone.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lockDataDir } from '../../../src/store/db.js';

const root = mkdtempSync(path.join(tmpdir(), 'tollgate-lock-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => path.join(root, `d${++n}`, 'pglite');

test('a lock held by another running process refuses, naming it; released, it is free', async () => {
  const dir = fresh();
  const db = fileURLToPath(new URL('../../../src/store/db.js', import.meta.url));
  const holder = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import(${JSON.stringify(db)}); m.lockDataDir(${JSON.stringify(dir)}); console.log('locked'); setInterval(() => {}, 1000);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await once(holder.stdout, 'data');
    assert.throws(() => lockDataDir(dir), new RegExp(`in use by process ${holder.pid} on ${hostname()}`));
  } finally {
    holder.kill('SIGKILL');
    await once(holder, 'exit');
  }
  // Its process is gone (this host): taken over at once.
  const release = lockDataDir(dir);
  assert.ok(existsSync(`${dir}.lock`));
  release();
  assert.equal(existsSync(`${dir}.lock`), false, 'released');
});

test('a fresh lock of another host is refused even with this very pid (two containers, both PID 1); a stale one is taken', () => {
  const dir = fresh();
  lockDataDir(dir)(); // makes the directory
  writeFileSync(`${dir}.lock`, JSON.stringify({ host: 'another-container', pid: process.pid }));
  assert.throws(() => lockDataDir(dir), /in use by process \d+ on another-container/);
  const old = new Date(Date.now() - 60_000);
  utimesSync(`${dir}.lock`, old, old); // its holder stopped touching it a minute ago
  const release = lockDataDir(dir);
  release();
});

test('this host, this pid (a container restarted as PID 1 again): the lock is its own former one', () => {
  const dir = fresh();
  lockDataDir(dir)();
  writeFileSync(`${dir}.lock`, JSON.stringify({ host: hostname(), pid: process.pid }));
  lockDataDir(dir)();
});
