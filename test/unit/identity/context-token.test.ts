/** x-tollgate-context: HMAC-signed, short-lived; verification with an injected now. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { bodyDigest, CONTEXT_TTL_MS, ContextSigner, contextSecret, type ContextClaims } from '../../../src/identity/context-token.js';

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const SECRET = Buffer.from('0123456789abcdef0123456789abcdef', 'utf8');
const OTHER = Buffer.from('fedcba9876543210fedcba9876543210', 'utf8');
const signer = new ContextSigner(SECRET);

const CLAIMS: ContextClaims = {
  k: 'abababababababab',
  a: 'ci-bot',
  u: 'alice',
  t: 'platform',
  e: 'alice@example.com',
  m: 'llama',
  d: 'llama-a',
  r: 'req-1',
  p: 'POST /v1/chat/completions',
  x: NOW + CONTEXT_TTL_MS,
};

/** A token whose signature is valid over an arbitrary payload (what only the secret's holder can make). */
function signRaw(payloadB64: string, secret = SECRET): string {
  const payload = `tgc1.${payloadB64}`;
  return `${payload}.${createHmac('sha256', secret).update(payload).digest('base64url')}`;
}

/** Replaces one character of `s` at `i` with a different base64url character. */
function flip(s: string, i: number): string {
  const c = s[i] === 'A' ? 'B' : 'A';
  return s.slice(0, i) + c + s.slice(i + 1);
}

describe('ContextSigner: round trip', () => {
  test('sign then verify gives back the claims', () => {
    assert.deepEqual(signer.verify(signer.sign(CLAIMS), NOW), { ok: true, claims: CLAIMS });
  });
  test('minimal claims (no key, no model)', () => {
    const c: ContextClaims = { r: 'r', p: 'GET /v1/models', x: NOW + 1 };
    assert.deepEqual(signer.verify(signer.sign(c), NOW), { ok: true, claims: c });
  });
  test('admin flag and non-ASCII values survive', () => {
    const c: ContextClaims = { u: 'José Ñ', adm: 1, r: 'r', p: 'GET /key/info', x: NOW + 1 };
    assert.deepEqual(signer.verify(signer.sign(c), NOW), { ok: true, claims: c });
  });
  test('the format is tgc1.<base64url>.<base64url> and carries no padding', () => {
    assert.match(signer.sign(CLAIMS), /^tgc1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
  });
  test('another signer with the same secret verifies it (replicas share the secret)', () => {
    assert.equal(new ContextSigner(Buffer.from(SECRET)).verify(signer.sign(CLAIMS), NOW).ok, true);
  });
});

describe('ContextSigner: expiry with an injected now', () => {
  const token = signer.sign(CLAIMS);
  const cases: Array<[name: string, now: number, ok: boolean]> = [
    ['at issue', NOW, true],
    ['1 ms before expiry', CLAIMS.x - 1, true],
    ['1 ms after expiry', CLAIMS.x + 1, false],
    ['an hour later', NOW + 3_600_000, false],
  ];
  for (const [name, now, ok] of cases) {
    // Expired, its claims come with the refusal: the gateway gives back what Check took for them.
    test(name, () =>
      assert.deepEqual(signer.verify(token, now), ok ? { ok: true, claims: CLAIMS } : { ok: false, reason: 'expired', claims: CLAIMS }),
    );
  }
  test('CONTEXT_TTL_MS is short (≤ 60 s)', () => assert.ok(CONTEXT_TTL_MS > 0 && CONTEXT_TTL_MS <= 60_000));
  test('a signed payload without an expiry is refused', () => {
    const t = signRaw(Buffer.from(JSON.stringify({ r: 'r', p: 'GET /' })).toString('base64url'));
    assert.deepEqual(signer.verify(t, NOW), { ok: false, reason: 'malformed' });
  });
  test('a signed payload with a string expiry is refused', () => {
    const t = signRaw(Buffer.from(JSON.stringify({ r: 'r', p: 'GET /', x: String(NOW + 1000) })).toString('base64url'));
    assert.deepEqual(signer.verify(t, NOW), { ok: false, reason: 'malformed' });
  });
});

describe('ContextSigner: refused tokens', () => {
  const token = signer.sign(CLAIMS);
  const dot = token.lastIndexOf('.');
  const payload = token.slice(0, dot);
  const sig = token.slice(dot + 1);
  const forged = Buffer.from(JSON.stringify({ ...CLAIMS, u: 'mallory' })).toString('base64url');
  const cases: Array<[name: string, token: string, reason: 'malformed' | 'bad_signature' | 'expired']> = [
    ['tampered payload (one character)', `${flip(payload, 10)}.${sig}`, 'bad_signature'],
    ['payload swapped for forged claims', `tgc1.${forged}.${sig}`, 'bad_signature'],
    ['tampered signature', `${payload}.${flip(sig, 5)}`, 'bad_signature'],
    ['truncated signature', `${payload}.${sig.slice(0, 20)}`, 'bad_signature'],
    ['empty signature', `${payload}.`, 'bad_signature'],
    ['signature doubled', `${payload}.${sig}${sig}`, 'bad_signature'],
    ['signed with another secret', new ContextSigner(OTHER).sign(CLAIMS), 'bad_signature'],
    ['forged claims signed with another secret', signRaw(forged, OTHER), 'bad_signature'],
    ['empty string', '', 'malformed'],
    ['no prefix', token.slice('tgc1.'.length), 'malformed'],
    ['other version prefix', `tgc2.${token.slice('tgc1.'.length)}`, 'malformed'],
    ['prefix only', 'tgc1.', 'malformed'],
    ['no signature part', 'tgc1.abc', 'malformed'],
    ['empty payload', 'tgc1..abc', 'malformed'],
    ['a JWT', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', 'malformed'],
    ['far too long', `tgc1.${'A'.repeat(9000)}.${sig}`, 'malformed'],
    ['validly signed but not JSON', signRaw(Buffer.from('not json').toString('base64url')), 'malformed'],
  ];
  for (const [name, t, reason] of cases) {
    test(name, () => assert.deepEqual(signer.verify(t, NOW), { ok: false, reason }));
  }
  test('validly signed JSON that is not an object never throws', () => {
    for (const json of ['null', '42', '"s"', '[]']) {
      const t = signRaw(Buffer.from(json).toString('base64url'));
      assert.doesNotThrow(() => signer.verify(t, NOW), json);
      assert.equal(signer.verify(t, NOW).ok, false, json);
    }
  });
});

describe('ContextSigner: the secret', () => {
  const cases: Array<[name: string, bytes: number, ok: boolean]> = [
    ['0 bytes', 0, false],
    ['16 bytes', 16, false],
    ['31 bytes', 31, false],
    ['32 bytes', 32, true],
    ['64 bytes', 64, true],
  ];
  for (const [name, bytes, ok] of cases) {
    test(`${name} → ${ok ? 'accepted' : 'refused'}`, () => {
      const make = (): ContextSigner => new ContextSigner(Buffer.alloc(bytes, 7));
      if (ok) assert.doesNotThrow(make);
      else assert.throws(make, /at least 32 bytes/);
    });
  }
});

describe('contextSecret', () => {
  const MASTER = 'sk-master-0123456789abcdefghij';
  const SIGNING = 'a-context-signing-key-of-32-chars-or-more';
  test('the same master key → the same 32-byte secret', () => {
    const a = contextSecret(undefined, MASTER);
    const b = contextSecret(undefined, MASTER);
    assert.ok(a && b);
    assert.equal(a.length, 32);
    assert.deepEqual(a, b);
  });
  test('another master key → another secret', () => {
    assert.notDeepEqual(contextSecret(undefined, MASTER), contextSecret(undefined, `${MASTER}x`));
  });
  test('the derived secret is not the master key itself', () => {
    assert.notDeepEqual(contextSecret(undefined, MASTER), Buffer.from(MASTER, 'utf8'));
  });
  test('context_signing_key wins over the master key', () => {
    assert.deepEqual(contextSecret(SIGNING, MASTER), Buffer.from(SIGNING, 'utf8'));
    assert.deepEqual(contextSecret(SIGNING, undefined), Buffer.from(SIGNING, 'utf8'));
  });
  test('neither → undefined', () => assert.equal(contextSecret(undefined, undefined), undefined));
  test('a derived secret makes a working signer; tokens cross replicas sharing the master key', () => {
    const s1 = contextSecret(undefined, MASTER);
    const s2 = contextSecret(undefined, MASTER);
    assert.ok(s1 && s2);
    const t = new ContextSigner(s1).sign(CLAIMS);
    assert.equal(new ContextSigner(s2).verify(t, NOW).ok, true);
    const other = contextSecret(undefined, `${MASTER}x`);
    assert.ok(other);
    assert.deepEqual(new ContextSigner(other).verify(t, NOW), { ok: false, reason: 'bad_signature' });
  });
});

describe('bodyDigest', () => {
  test("the same bytes as a string or as bytes; '' for an empty body; 128 bits of SHA-256", () => {
    const text = '{"model":"llama","messages":[{"role":"user","content":"héllo"}]}';
    assert.equal(bodyDigest(text), bodyDigest(new TextEncoder().encode(text)));
    assert.equal(bodyDigest(text), createHash('sha256').update(text).digest('base64url').slice(0, 22));
    assert.notEqual(bodyDigest(text), bodyDigest(`${text} `));
    assert.equal(bodyDigest(undefined), '');
    assert.equal(bodyDigest(''), '');
    assert.equal(bodyDigest(new Uint8Array(0)), '');
  });
});
