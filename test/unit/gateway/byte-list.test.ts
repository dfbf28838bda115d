/**
 * ByteList: a reply's bytes held in few buffers whatever the pieces they came in — the backend client's
 * pieces are as small as the backend's writes, and a Buffer each cost more heap than the bytes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ByteList } from '../../../src/gateway/byte-list.js';

/** `n` bytes that tell their position apart. */
const bytes = (n: number, seed = 0): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251));

describe('ByteList', () => {
  test('pieces of every size, mixed, come back in order, byte for byte', () => {
    let seed = 1;
    const rnd = (): number => ((seed = (seed * 48271) % 2147483647), seed / 2147483647);
    const list = new ByteList();
    const sent: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const r = rnd();
      const n = r < 0.7 ? 1 + Math.floor(rnd() * 64) : r < 0.95 ? 1 + Math.floor(rnd() * 9000) : 20_000 + Math.floor(rnd() * 50_000);
      const b = bytes(n, i);
      sent.push(Buffer.from(b));
      list.push(b);
      // A small piece past the first 8 is copied: what was held does not change with the piece's buffer.
      if (i >= 8 && n < 8 * 1024) b.fill(0);
    }
    const whole = Buffer.concat(sent);
    assert.equal(list.length, whole.length);
    assert.ok(list.concat().equals(whole));
    assert.ok(Buffer.concat(list.list()).equals(whole));
  });

  test('small pieces go into few buffers, growing with what is held; the memory is about the bytes', () => {
    const list = new ByteList();
    const piece = bytes(16);
    for (let i = 0; i < 200_000; i++) list.push(piece);
    const parts = list.list();
    assert.equal(list.length, 3_200_000);
    // The first 8 pieces, then 16 KiB, 32 KiB … up to 1 MiB blocks: a handful, not 200 000 Buffers.
    assert.ok(parts.length <= 20, `${parts.length} buffers`);
    const backing = new Set(parts.map((p) => p.buffer));
    const allocated = [...backing].reduce((n, b) => n + b.byteLength, 0);
    assert.ok(allocated <= list.length + 1024 * 1024 + 8192, `${allocated} bytes allocated for ${list.length}`);
  });

  test('the first piece and large ones are kept as they are (no copy); one piece concatenates to itself', () => {
    const first = bytes(100);
    const one = new ByteList();
    one.push(first);
    assert.equal(one.concat(), first);
    const large = bytes(64 * 1024);
    one.push(bytes(10));
    one.push(large);
    one.push(bytes(10));
    const parts = one.list();
    assert.equal(parts[0], first);
    assert.equal(parts[2], large);
    assert.equal(parts.length, 4);
  });

  test('a small reply in a few pieces is kept as it came: no block, no copy', () => {
    const list = new ByteList();
    const pieces = [bytes(1400), bytes(600, 3), bytes(20, 5)];
    for (const p of pieces) list.push(p);
    assert.deepEqual(list.list(), pieces);
  });

  test('pushing after list() goes on in order; clear() empties it; an empty piece is nothing', () => {
    const list = new ByteList();
    list.push(Buffer.from('ab'));
    list.push(Buffer.from('cd'));
    assert.equal(Buffer.concat(list.list()).toString(), 'abcd');
    list.push(Buffer.from('ef'));
    list.push(Buffer.alloc(0));
    assert.equal(Buffer.concat(list.list()).toString(), 'abcdef');
    assert.equal(list.concat().toString(), 'abcdef');
    list.clear();
    assert.equal(list.length, 0);
    assert.deepEqual(list.list(), []);
    assert.equal(list.concat().length, 0);
    list.push(Buffer.from('g'));
    assert.equal(list.concat().toString(), 'g');
  });
});
