/**
 * A key written to the records database reaches every replica's Check within a second, through the
 * broadcast: Redis pub/sub with redis_url, PostgreSQL LISTEN/NOTIFY without. Two `tollgate authz`
 * processes per case; the test writes through the same RecordStore the admin API uses.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { KeyRecord } from '../../../src/identity/keys.js';
import { PgChangeBus, type ChangeBus } from '../../../src/store/change-bus.js';
import { RedisChangeBus } from '../../../src/store/redis-change-bus.js';
import { openDb, type Db } from '../../../src/store/db.js';
import { migrate } from '../../../src/store/migrate.js';
import { RecordStore } from '../../../src/store/records.js';
import { EnvoyCheckClient, type EnvoyCheckResponse } from '../../support/envoy.js';
import { children, startTollgate } from '../../support/process.js';
import { apiKeyRecord } from '../../support/records.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const BODY = JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] });

const record = (key: string, blocked = false): KeyRecord => apiKeyRecord(key, { alias: 'generated', blocked });

/** The error code of a denial, or 'allowed'. */
function outcome(r: EnvoyCheckResponse): string {
  if (r.ok_response) return 'allowed';
  const body = JSON.parse(String(r.denied_response?.body ?? '{}')) as { error?: { code?: string } };
  return body.error?.code ?? 'unknown';
}

const schemas: string[] = [];
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  const db = await openDb({ url: PG });
  for (const s of schemas) await db.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await db.close();
});

for (const via of ['redis', 'postgres'] as const) {
  describe(`record changes reach every replica within a second (${via})`, { timeout: 60_000 }, () => {
    test('generated → allowed on both; blocked → key_blocked on both; deleted → invalid_api_key on both', async () => {
      const schema = `tg_bcast_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
      schemas.push(schema);
      const prefix = `tg-bcast-${randomUUID()}:`;
      const url = `${PG}?schema=${schema}`;
      const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-bcast-'));
      const file = path.join(dir, 'config.yaml');
      writeFileSync(
        file,
        `
model_list:
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  context_signing_key: broadcast-test-context-key-0123456789abcdef
  database_url: ${url}
${via === 'redis' ? `  redis_url: ${REDIS}\n  redis_key_prefix: "${prefix}"\n` : ''}`,
      );
      const procs = [0, 1].map(() => startTollgate(['authz', '--config', file, '--host', '127.0.0.1', '--grpc-port', '0']));
      const clients: EnvoyCheckClient[] = [];
      let db: Db | undefined;
      let bus: ChangeBus | undefined;
      try {
        for (const p of procs) {
          const rec = await p.waitForLog('authz listening', 20_000);
          clients.push(new EnvoyCheckClient(Number(/:(\d+)$/.exec(String(rec['grpc']))?.[1])));
        }
        db = await openDb({ url });
        await migrate(db);
        const notifyDb = db;
        bus =
          via === 'redis'
            ? new RedisChangeBus(REDIS, prefix)
            : new PgChangeBus(url, schema, async (channel, payload) => {
                await notifyDb.query('SELECT pg_notify($1, $2)', [channel, payload]);
              });
        const store = new RecordStore(db, bus);
        const key = `sk-generated-${randomUUID()}`;
        const both = async (): Promise<string[]> =>
          Promise.all(clients.map(async (c) => outcome(await c.check({ headers: { authorization: `Bearer ${key}` }, body: BODY }))));
        const within = async (expected: string, ms: number): Promise<number> => {
          const t0 = Date.now();
          for (;;) {
            const got = await both();
            if (got.every((g) => g === expected)) return Date.now() - t0;
            if (Date.now() - t0 > ms)
              assert.fail(
                `expected ${expected} on both replicas within ${ms} ms, got ${got.join(', ')}\n${procs.map((p) => p.stdout()).join('\n')}`,
              );
            await new Promise((r) => setTimeout(r, 25));
          }
        };
        assert.deepEqual(await both(), ['invalid_api_key', 'invalid_api_key']);
        await store.createKey(record(key), 'sk-...test');
        await within('allowed', 1000);
        await store.setKeyBlocked(record(key).hash, true);
        await within('key_blocked', 1000);
        await store.deleteKey(record(key).hash);
        await within('invalid_api_key', 1000);
      } finally {
        for (const c of clients) c.close();
        for (const p of procs) p.proc.kill('SIGKILL');
        await bus?.close();
        await db?.close();
      }
    });
  });
}
