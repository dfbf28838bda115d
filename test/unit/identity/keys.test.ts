/** Virtual keys: the Authorization header, hashing, key ids, constant-time equality, declared keys. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { DeclaredKey } from '../../../src/config/schema.js';
import { bearerKey, keyFromConfig, keyId, secretEquals, sha256Hex, StaticKeyDirectory } from '../../../src/identity/keys.js';

const KEY = 'sk-ci-bot-key-0001';

describe('bearerKey', () => {
  const cases: Array<[name: string, header: string | undefined, expected: string | undefined | null]> = [
    ['absent', undefined, undefined],
    ['empty', '', undefined],
    ['Bearer sk-…', `Bearer ${KEY}`, KEY],
    ['lower-case bearer', `bearer ${KEY}`, KEY],
    ['upper-case BEARER', `BEARER ${KEY}`, KEY],
    ['extra spaces and a tab', `  Bearer \t${KEY}  `, KEY],
    ['no scheme', KEY, null],
    ['Basic credentials', 'Basic dXNlcjpwYXNz', null],
    ['Basic with an sk- token', `Basic ${KEY}`, null],
    ['Bearer without a token', 'Bearer', null],
    ['Bearer and spaces only', 'Bearer    ', null],
    ['a token without sk-', 'Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig', null],
    ['SK- in upper case is not a key', 'Bearer SK-ci-bot-key-0001', null],
    ['two tokens', `Bearer ${KEY} ${KEY}`, null],
    ['no space after Bearer', `Bearer${KEY}`, null],
    ['too short (sk- plus 4)', 'Bearer sk-abcd', null],
    ['shortest accepted (8 characters)', 'Bearer sk-abcde', 'sk-abcde'],
    ['512 characters', `Bearer sk-${'a'.repeat(509)}`, `sk-${'a'.repeat(509)}`],
    ['too long (513 characters)', `Bearer sk-${'a'.repeat(510)}`, null],
    ['a newline inside', `Bearer sk-abc\ndef`, null],
  ];
  for (const [name, header, expected] of cases) {
    test(name, () => assert.equal(bearerKey(header), expected));
  }
});

describe('sha256Hex and keyId', () => {
  const cases: Array<[input: string, hex: string]> = [
    ['', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
    ['abc', 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
    [KEY, createHash('sha256').update(KEY).digest('hex')],
  ];
  for (const [input, hex] of cases) {
    test(`sha256Hex(${JSON.stringify(input)})`, () => {
      assert.equal(sha256Hex(input), hex);
      assert.equal(keyId(hex), hex.slice(0, 16));
    });
  }
  test('keyId is the first 16 hex characters of the hash', () => {
    const id = keyId(sha256Hex(KEY));
    assert.match(id, /^[0-9a-f]{16}$/);
    assert.ok(sha256Hex(KEY).startsWith(id));
  });
  test('UTF-8 input is hashed as UTF-8', () => {
    assert.equal(sha256Hex('é'), createHash('sha256').update(Buffer.from('é', 'utf8')).digest('hex'));
  });
});

describe('secretEquals', () => {
  const cases: Array<[a: string, b: string, equal: boolean]> = [
    [KEY, KEY, true],
    ['', '', true],
    [KEY, `${KEY}x`, false],
    [KEY, KEY.slice(0, -1), false],
    [KEY, KEY.toUpperCase(), false],
    ['a', '', false],
    ['sk-a', 'sk-b', false],
  ];
  for (const [a, b, equal] of cases) {
    test(`${JSON.stringify(a)} vs ${JSON.stringify(b)} → ${equal}`, () => {
      assert.equal(secretEquals(a, b), equal);
      assert.equal(secretEquals(b, a), equal);
    });
  }
});

describe('declared keys', () => {
  const hash = sha256Hex(KEY);
  const full: DeclaredKey = {
    key: `sha256:${hash}`,
    key_alias: 'ci-bot',
    models: ['llama-3.1-8b'],
    max_budget: 10,
    budget_duration: '30d',
    rpm_limit: 60,
    tpm_limit: 100000,
    max_parallel_requests: 4,
    user_id: 'ci',
    team_id: 'platform',
    expires: '2027-01-01T00:00:00Z',
    blocked: false,
    metadata: { owner: 'platform-team' },
  };
  const minimal: DeclaredKey = { key: `sha256:${sha256Hex('sk-minimal-key-0002')}`, models: [], blocked: true, metadata: {} };

  test('keyFromConfig: every field', () => {
    assert.deepEqual(keyFromConfig(full), {
      hash,
      id: hash.slice(0, 16),
      alias: 'ci-bot',
      models: ['llama-3.1-8b'],
      userId: 'ci',
      teamId: 'platform',
      expiresAt: Date.UTC(2027, 0, 1),
      blocked: false,
      limits: { maxBudget: 10, budgetDuration: '30d', rpmLimit: 60, tpmLimit: 100000, maxParallelRequests: 4 },
      metadata: { owner: 'platform-team' },
      source: 'config',
    });
  });
  test('keyFromConfig: a minimal key', () => {
    const r = keyFromConfig(minimal);
    assert.equal(r.alias, undefined);
    assert.equal(r.userId, undefined);
    assert.equal(r.teamId, undefined);
    assert.equal(r.expiresAt, undefined);
    assert.equal(r.blocked, true);
    assert.deepEqual(r.models, []);
    assert.deepEqual(r.limits, {
      maxBudget: undefined,
      budgetDuration: undefined,
      rpmLimit: undefined,
      tpmLimit: undefined,
      maxParallelRequests: undefined,
    });
  });
  test('keyFromConfig: expires with an offset', () => {
    assert.equal(keyFromConfig({ ...full, expires: '2027-01-01T02:00:00+02:00' }).expiresAt, Date.UTC(2027, 0, 1));
  });

  const dir = new StaticKeyDirectory([full, minimal]);
  /** alias null: not found. */
  const lookups: Array<[name: string, presented: string, alias: string | undefined | null]> = [
    ['the declared key, by the hash of what the client sent', KEY, 'ci-bot'],
    ['the second declared key', 'sk-minimal-key-0002', undefined],
    ['an unknown key', 'sk-not-declared-0003', null],
    ['a near miss', `${KEY}x`, null],
  ];
  for (const [name, presented, alias] of lookups) {
    test(`StaticKeyDirectory: ${name}`, () => {
      const r = dir.get(sha256Hex(presented));
      if (alias === null) assert.equal(r, undefined);
      else {
        assert.ok(r);
        assert.equal(r.alias, alias);
      }
    });
  }
  test('StaticKeyDirectory: looked up by hash, never by the clear key or the sha256: form', () => {
    assert.equal(dir.get(KEY), undefined);
    assert.equal(dir.get(`sha256:${hash}`), undefined);
    assert.equal(dir.get(hash)?.id, hash.slice(0, 16));
  });
  test('StaticKeyDirectory: empty', () => assert.equal(new StaticKeyDirectory([]).get(hash), undefined));
});
