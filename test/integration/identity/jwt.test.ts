/**
 * JwtVerifier against a real OIDC provider (test/support/idp.ts): how the JWKS cache behaves while the
 * key set changes. The orderings that matter are forced with explicit hooks — the IdP holding its JWKS
 * answer, the libuv threadpool held so a signature check cannot finish, mocked interval timers — never by
 * sleeping and hoping.
 */
import { after, afterEach, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startIdp, type TestIdp } from '../../support/idp.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { JWKS_REFRESH_MS, JwtVerifier, type JwtResult } from '../../../src/identity/jwt.js';

const AUDIENCE = 'https://tollgate.internal';

function settings(issuer: string): NonNullable<ReturnType<typeof prepareConfigText>['config']['auth']['jwt']> {
  const yaml = `
auth:
  jwt:
    issuer: ${issuer}
    audience: ${AUDIENCE}
    algorithms: [RS256]
    clock_tolerance_s: 5
    allow_insecure_http: true
`;
  const jwt = prepareConfigText(yaml, 'test.yaml', {}).config.auth.jwt;
  assert.ok(jwt);
  return jwt;
}

/** Lets every pending microtask (and so every verification up to its next I/O wait) run. */
const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function ok(r: JwtResult): void {
  assert.equal(r.ok, true, r.ok ? '' : `refused: ${r.failure}`);
}

/**
 * Occupies every libuv threadpool thread with an open() of a FIFO that has no writer yet, so WebCrypto
 * jobs (jose's signature checks) queue behind them until release(). Network I/O does not use the pool.
 */
async function holdThreadpool(): Promise<{ release(): Promise<void> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-pool-'));
  const size = Math.min(Math.max(Number(process.env['UV_THREADPOOL_SIZE']) || 4, 1), 1024);
  const fifos = Array.from({ length: size }, (_, i) => path.join(dir, `f${i}`));
  for (const f of fifos) execFileSync('mkfifo', [f]);
  const readers = fifos.map((f) => open(f, 'r'));
  await turn();
  return {
    async release() {
      for (const f of fifos) closeSync(openSync(f, 'w'));
      for (const r of await Promise.all(readers)) await r.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('JwtVerifier and a changing key set', () => {
  const idps: TestIdp[] = [];
  const verifiers: JwtVerifier[] = [];
  afterEach(() => {
    for (const v of verifiers.splice(0)) v.stop();
  });
  after(async () => {
    for (const idp of idps) await idp.close();
  });
  async function setup(): Promise<TestIdp> {
    const idp = await startIdp({ audience: AUDIENCE });
    idps.push(idp);
    return idp;
  }
  async function started(idp: TestIdp, onRefreshFailed?: (err: Error) => void): Promise<JwtVerifier> {
    const v = new JwtVerifier(settings(idp.issuer));
    verifiers.push(v);
    await v.start(onRefreshFailed);
    return v;
  }

  test(
    'a token signed with a new key that arrives while the JWKS refetch runs waits for it (not unknown_key)',
    { timeout: 20_000 },
    async () => {
      const idp = await setup();
      const verifier = await started(idp);
      await idp.rotateKey({ keepOld: true });
      const [first, second] = await Promise.all([idp.token({ claims: { sub: 'a' } }), idp.token({ claims: { sub: 'b' } })]);
      const fetches = idp.jwksFetches();
      const gate = idp.holdJwks();
      const a = verifier.verify(first, Date.now()); // unknown kid: starts the refetch
      await gate.arrived;
      let secondSettled = false;
      const b = Promise.resolve(verifier.verify(second, Date.now())).finally(() => (secondSettled = true));
      await turn();
      assert.equal(secondSettled, false, 'the second token waits for the running fetch instead of being refused');
      gate.release();
      ok(await a);
      ok(await b);
      assert.equal(idp.jwksFetches(), fetches + 1, 'both tokens were served by one fetch');
    },
  );

  test('a token verified while a refetch removes its key is refused and not cached', { timeout: 20_000 }, async () => {
    const idp = await setup();
    const verifier = await started(idp);
    const old = await idp.token();
    await idp.rotateKey(); // the key that signed `old` is gone from the IdP's JWKS
    const pool = await holdThreadpool();
    // The key is still known here, so the token gets it; its signature check then waits for a thread.
    const pending = Promise.resolve(verifier.verify(old, Date.now()));
    try {
      await turn();
      // Meanwhile the key set is refetched (no threadpool needed): the old key is dropped, the cache cleared.
      await verifier.refresh();
    } finally {
      await pool.release();
    }
    const during = await pending;
    assert.equal(during.ok, false, 'a result computed with a key removed meanwhile is refused');
    assert.equal(during.ok ? '' : during.failure, 'unknown_key');
    const later = await verifier.verify(old, Date.now());
    assert.equal(later.ok, false, 'nor was it cached');
  });

  test(
    `a key removed from the IdP's JWKS stops validating at the next background refresh (${JWKS_REFRESH_MS / 1000} s)`,
    { timeout: 20_000 },
    async (t: TestContext) => {
      assert.ok(JWKS_REFRESH_MS <= 60_000, 'README promises at most 60 s');
      const idp = await setup();
      t.mock.timers.enable({ apis: ['setInterval'] });
      const refreshFailures: Error[] = [];
      const verifier = await started(idp, (err) => refreshFailures.push(err));
      const old = await idp.token();
      ok(await verifier.verify(old, Date.now()));
      ok(await verifier.verify(old, Date.now())); // from the cache now
      await idp.rotateKey(); // the key is removed at the IdP; no token with an unknown kid comes to trigger a refetch
      const fetches = idp.jwksFetches();
      const gate = idp.holdJwks();
      t.mock.timers.tick(60_000);
      await gate.arrived; // the timer started a fetch
      const done = verifier.refresh(); // shares that fetch
      gate.release();
      await done;
      assert.equal(idp.jwksFetches(), fetches + 1);
      const afterwards = await verifier.verify(old, Date.now());
      assert.equal(afterwards.ok, false, 'the removed key no longer validates');
      // A refresh that fails keeps the set it has: tokens of current keys still validate.
      const fresh = await idp.token();
      ok(await verifier.verify(fresh, Date.now()));
      await idp.close();
      t.mock.timers.tick(60_000);
      await assert.rejects(verifier.refresh(), { code: 'IDP_UNAVAILABLE' });
      assert.equal(refreshFailures.length, 1, 'the failed background refresh is told (and logged by the caller)');
      ok(await verifier.verify(fresh, Date.now()));
    },
  );
});
