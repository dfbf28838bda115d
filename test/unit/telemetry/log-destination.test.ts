import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LogDestination } from '../../../src/telemetry/log-destination.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-logdest-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function settled(file: string, lines: number): Promise<string[]> {
  for (let i = 0; i < 500; i++) {
    const got = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    if (got.length >= lines) return got;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

test('lines go out in batches (one write for a burst), every line once and in order', async (t) => {
  const file = path.join(tempDir(t), 'log');
  const d = LogDestination.toFile(file);
  const writes: number[] = [];
  const original = fs.write;
  t.mock.method(fs, 'write', (...args: Parameters<typeof fs.write>) => {
    writes.push((args[1] as unknown as Buffer).length);
    return (original as (...a: unknown[]) => void)(...args);
  });
  for (let i = 0; i < 100; i++) d.write(`{"n":${i}}\n`);
  await turn();
  assert.equal(fs.readFileSync(file, 'utf8'), '', 'a burst waits a moment for more');
  await settled(file, 100);
  for (let i = 100; i < 250; i++) {
    d.write(`{"n":${i}}\n`);
    if (i % 7 === 0) await turn();
  }
  const got = await settled(file, 250);
  assert.deepEqual(
    got.map((l) => (JSON.parse(l) as { n: number }).n),
    Array.from({ length: 250 }, (_, i) => i),
  );
  assert.ok(writes[0] === 100 * '{"n":0}\n'.length + 90, `the burst's 100 lines in one write (${writes[0]} bytes)`);
  assert.ok(writes.length < 10, `${writes.length} writes for 250 lines written over ${Math.ceil(150 / 7)} turns`);
});

test('a destination nobody reads holds at most its bound, drops and counts the rest, and says so once it is read again', async (t) => {
  const fifo = path.join(tempDir(t), 'fifo');
  execFileSync('mkfifo', [fifo]);
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  t.after(() => {
    fs.closeSync(reader);
    fs.closeSync(writer);
  });
  const d = new LogDestination({ fd: writer, maxPendingBytes: 256 * 1024 });
  const line = `${JSON.stringify({ msg: 'x'.repeat(1000) })}\n`;
  let accepted = 0;
  // Far more than the pipe (64 KiB) and the bound (256 KiB) hold together.
  for (let i = 0; i < 2000; i++) {
    if (d.write(line)) accepted++;
    if (i % 50 === 0) await turn();
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(accepted < 400, `accepted ${accepted}`);
  assert.equal(d.dropped, 2000 - accepted);
  // The reader comes back: everything accepted arrives, and the count of what was not follows them, with
  // the first batch that has room. Which batch that is depends on how the lines were split into batches
  // (timing): when the batch after the pipe's first 64 KiB is still over half the bound, no batch has room
  // and the count waits for the next line logged, so one more is logged once all accepted lines are out.
  let text = '';
  const buf = Buffer.alloc(1 << 16);
  let nudged = false;
  for (let i = 0; i < 400 && !(text.includes('dropped_lines') && text.endsWith('\n')); i++) {
    try {
      const n = fs.readSync(reader, buf);
      text += buf.toString('utf8', 0, n);
    } catch {
      // EAGAIN: nothing to read now.
      if (!nudged && !text.includes('dropped_lines') && text.split('\n').length - 1 === accepted) {
        nudged = d.write('{"msg":"after"}\n');
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const lines = text.split('\n').filter(Boolean);
  assert.equal(lines.length - 1 - (nudged ? 1 : 0), accepted, 'every accepted line arrived whole');
  assert.ok(
    lines.slice(0, accepted).every((l) => l === line.trimEnd()),
    'the accepted lines come first',
  );
  if (nudged) assert.equal(lines.at(-2), '{"msg":"after"}');
  const note = JSON.parse(lines.at(-1) as string) as { level: number; dropped_lines: number; msg: string };
  assert.equal(note.level, 40);
  assert.equal(note.dropped_lines, 2000 - accepted);
});

test('a destination whose reader is gone (EPIPE) drops its lines without throwing', async (t) => {
  const fifo = path.join(tempDir(t), 'fifo');
  execFileSync('mkfifo', [fifo]);
  const reader = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const writer = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  fs.closeSync(reader);
  t.after(() => fs.closeSync(writer));
  const d = new LogDestination({ fd: writer });
  let writes = 0;
  const original = fs.write;
  t.mock.method(fs, 'write', (...args: Parameters<typeof fs.write>) => {
    writes++;
    return (original as (...a: unknown[]) => void)(...args);
  });
  d.write('{"a":1}\n');
  d.write('{"a":2}\n');
  for (let i = 0; i < 100 && d.dropped === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(d.dropped, 2);
  // Gone for good: later lines are counted, and nothing tries the fd again (no loop of failing notes).
  assert.equal(d.write('{"a":3}\n'), false);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(writes, 1);
  assert.equal(d.dropped, 3);
});

test('lines logged just before process.exit() are written by the exit hook', () => {
  const module = fileURLToPath(new URL('../../../src/telemetry/log-destination.js', import.meta.url));
  const script = `
    const { LogDestination } = await import(${JSON.stringify(module)});
    const d = new LogDestination({ fd: 1 });
    for (let i = 0; i < 1000; i++) d.write('{"n":' + i + '}\\n');
    process.exit(3);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 3, r.stderr);
  const lines = r.stdout.split('\n').filter(Boolean);
  assert.equal(lines.length, 1000);
  assert.equal(lines[999], '{"n":999}');
});

test('lines logged while a batch is being written are still written at exit', () => {
  const module = fileURLToPath(new URL('../../../src/telemetry/log-destination.js', import.meta.url));
  // The first batch goes to fs.write at 10 ms; at 11 ms ten more lines come, and the process exits.
  const script = `
    const fs = await import('node:fs');
    const { LogDestination } = await import(${JSON.stringify(module)});
    const d = new LogDestination({ fd: 1 });
    const write = fs.default.write;
    let underWay = false;
    fs.default.write = (...args) => { underWay = true; return write(...args); };
    for (let i = 0; i < 1000; i++) d.write('{"n":' + i + '}\\n');
    const late = () => {
      if (!underWay) return setTimeout(late, 1);
      for (let i = 1000; i < 1010; i++) d.write('{"n":' + i + '}\\n');
      process.exit(4);
    };
    setTimeout(late, 10);
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 4, r.stderr);
  const seen = new Set(r.stdout.split('\n').filter(Boolean));
  for (let i = 1000; i < 1010; i++) assert.ok(seen.has(`{"n":${i}}`), `line ${i} lost:\n${r.stdout.slice(-400)}`);
});

test('flush waits for the write under way, then writes what is pending, in order, before its callback', async (t) => {
  const file = path.join(tempDir(t), 'log');
  const d = LogDestination.toFile(file);
  const original = fs.write;
  // Every asynchronous write takes 50 ms to start.
  t.mock.method(fs, 'write', (...args: Parameters<typeof fs.write>) => {
    setTimeout(() => (original as (...a: unknown[]) => void)(...args), 50);
  });
  d.write('{"a":1}\n');
  await new Promise((resolve) => setTimeout(resolve, 20)); // the first batch is now under way
  d.write('{"a":2}\n');
  await new Promise<void>((resolve, reject) => d.flush((err) => (err ? reject(err) : resolve())));
  assert.equal(fs.readFileSync(file, 'utf8'), '{"a":1}\n{"a":2}\n');
});

test("the line counting dropped lines follows the logger's level: none while warnings are off, the count kept", async (t) => {
  const run = async (warns: boolean): Promise<{ text: string; dropped: number }> => {
    const file = path.join(tempDir(t), `log-${warns}`);
    const d = LogDestination.toFile(file, { maxPendingBytes: 64, warns: () => warns });
    // One burst in one turn: past the 64-byte bound, so most lines are dropped.
    for (let i = 0; i < 20; i++) d.write(`{"n":${i},"pad":"xxxxxxxx"}\n`);
    await new Promise<void>((resolve) => d.flush(() => resolve()));
    d.write('{"msg":"after"}\n');
    await new Promise<void>((resolve) => d.flush(() => resolve()));
    return { text: fs.readFileSync(file, 'utf8'), dropped: d.dropped };
  };
  const quiet = await run(false);
  assert.ok(!quiet.text.includes('dropped_lines'), quiet.text);
  assert.ok(quiet.dropped > 0, 'still counted');
  const told = await run(true);
  assert.match(told.text, /"level":40,.*"dropped_lines":\d+/);
  assert.equal(told.dropped, 0, 'reported');
});
