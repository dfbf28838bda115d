/**
 * A LiteLLM (Prisma, libpq) DATABASE_URL's `sslmode` read as libpq reads it, against this machine's
 * PostgreSQL, which offers no TLS: `prefer` and `allow` connect without it, `require` and stricter modes
 * refuse to, and none of them makes the `pg` package print its SECURITY WARNING on stderr.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { openDb, pgConnectionUrl, type Db } from '../../../src/store/db.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const warnings: string[] = [];
const onWarning = (w: Error): void => void warnings.push(w.message);
process.on('warning', onWarning);
const opened: Db[] = [];
const schema = `tg_sslmode_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

after(async () => {
  process.off('warning', onWarning);
  for (const db of opened) await db.close();
  const admin = await openDb({ url: PG });
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.close();
});

const withMode = (mode: string): string => `${PG}?sslmode=${mode}&schema=${schema}`;

test('sslmode=prefer and allow connect without TLS to a server that offers none', async () => {
  for (const mode of ['prefer', 'allow']) {
    const db = await openDb({ url: withMode(mode) });
    opened.push(db);
    assert.deepEqual(await db.query<{ one: number }>('SELECT 1 AS one'), [{ one: 1 }], mode);
    assert.equal(db.schema, schema);
    assert.match(db.connectionUrl ?? '', /sslmode=disable/, `${mode}: asked once, then connected without TLS`);
    assert.doesNotMatch(db.connectionUrl ?? '', /schema=/, 'the schema is not a connection parameter');
  }
});

test('sslmode=require, verify-ca and verify-full refuse a server without TLS', async () => {
  for (const mode of ['require', 'verify-full']) {
    await assert.rejects(openDb({ url: withMode(mode) }), /does not support SSL/, mode);
  }
  // verify-ca without the CA to verify against is refused before connecting, saying what to add.
  await assert.rejects(openDb({ url: withMode('verify-ca') }), /sslrootcert/);
  assert.equal(await pgConnectionUrl(withMode('require')), `${PG}?sslmode=require&uselibpqcompat=true`);
  // The pg package's own no-verify keeps its meaning (TLS without verification).
  assert.equal(await pgConnectionUrl(withMode('no-verify')), `${PG}?sslmode=no-verify`);
});

test('sslmode never makes pg print its SECURITY WARNING (it would read prefer and require as verify-full)', async () => {
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(
    warnings.filter((w) => /SECURITY WARNING/.test(w)),
    [],
  );
});
