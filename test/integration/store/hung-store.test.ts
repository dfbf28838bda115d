/**
 * Stores that stop answering without a reset (a network path dropping packets), staged with a TCP proxy in
 * front of the real PostgreSQL and Redis: statements and commands fail within their timeouts rather than
 * waiting for ever, SIGTERM still ends in time, and Redis is reconnected once the path is back.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { openStore } from '../../../src/main/store-app.js';
import { ModelCatalog } from '../../../src/routing/deployments.js';
import { openDb } from '../../../src/store/db.js';
import { SpendLog } from '../../../src/store/spend-log.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { startFakeVllm } from '../../support/fake-vllm.js';
import { children, freePort, startTollgate } from '../../support/process.js';
import { startTcpProxy } from '../../support/tcp-proxy.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const MASTER = 'sk-hung-store-master-0123456789abcdef';
const schemas: string[] = [];

after(async () => {
  for (const c of children) c.kill('SIGKILL');
  const admin = new pg.Client({ connectionString: PG });
  await admin.connect();
  for (const s of schemas) await admin.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await admin.end();
});

function schemaName(): string {
  const s = `tg_hung_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  schemas.push(s);
  return s;
}

test('PostgreSQL hung: a statement fails within its timeout, the spend log says so and retries on a new connection', async () => {
  const proxy = await startTcpProxy(5432);
  const schema = schemaName();
  const db = await openDb({ url: `postgres://postgres@127.0.0.1:${proxy.port}/test?schema=${schema}`, queryTimeoutMs: 500 });
  const lines: string[] = [];
  const logger = createLogger('info', { write: (l: string) => void lines.push(l) });
  try {
    await db.exec('CREATE TABLE spend_batches (batch_id text PRIMARY KEY)');
    await db.exec(
      'CREATE TABLE spend_logs (lease_id text, request_id text, key_id text, user_id text, team_id text, model text, deployment text, ' +
        'prompt_tokens integer, completion_tokens integer, cost double precision, status integer, latency_ms double precision, ' +
        'estimated boolean, counted boolean, created_at timestamptz)',
    );
    proxy.freeze();
    const t0 = Date.now();
    await assert.rejects(db.query('SELECT 1'), /timeout/i);
    assert.ok(Date.now() - t0 < 3_000, `failed after ${Date.now() - t0} ms`);

    const log = new SpendLog(db, logger);
    log.add(
      {
        requestId: 'r1',
        keyId: undefined,
        userId: undefined,
        teamId: undefined,
        model: 'm',
        deployment: 'd',
        promptTokens: 1,
        completionTokens: 1,
        cost: 0.5,
        status: 200,
        latencyMs: 1,
        estimated: false,
        at: Date.now(),
      },
      'lease-1',
      true,
    );
    await log.flush();
    assert.equal(log.healthy, false, 'the hung write failed');
    assert.ok(
      lines.some((l) => l.includes('spend log write failed')),
      lines.join(''),
    );
    proxy.pass(); // the hung connection was dropped: a new one reaches PostgreSQL
    await log.flush();
    assert.equal(log.pending, 0);
    assert.deepEqual(await db.query('SELECT request_id FROM spend_logs'), [{ request_id: 'r1' }]);
  } finally {
    proxy.pass();
    await db.close();
    await proxy.close();
  }
});

test(
  'SIGTERM with PostgreSQL hung and a stream outlasting the drain: exits 0 within the drain + 5 s, the unwritten rows counted',
  { timeout: 60_000 },
  async () => {
    const proxy = await startTcpProxy(5432);
    const vllm = await startFakeVllm({ models: [MODEL], chunks: 40, chunkDelayMs: 250 });
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-hung-'));
    const config = path.join(dir, 'c.yaml');
    writeFileSync(
      config,
      `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: ${vllm.apiBase} }
general_settings:
  master_key: ${MASTER}
  database_url: postgres://postgres@127.0.0.1:${proxy.port}/test?schema=${schemaName()}
`,
    );
    const tg = startTollgate(['serve', '--config', config, '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'], {
      env: { TOLLGATE_DRAIN_SECONDS: '2' },
    });
    try {
      const listening = await tg.waitForLog('serve listening');
      const base = `http://127.0.0.1:${String(listening['http']).split(':').at(-1)}`;
      const chat = (stream: boolean): Promise<Response> =>
        fetch(`${base}/v1/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${MASTER}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], stream }),
        });
      proxy.freeze();
      const served = await chat(false);
      assert.equal(served.status, 200, 'served while PostgreSQL hangs');
      await served.text();
      const long = await chat(true);
      const longText = long.text().catch(() => '');
      const t0 = Date.now();
      tg.proc.kill('SIGTERM');
      const exit = await tg.waitExit(15_000);
      const took = Date.now() - t0;
      await longText;
      assert.equal(exit.code, 0, exit.stderr);
      assert.ok(took < 2_000 + 5_000 + 2_000, `exited ${took} ms after SIGTERM`);
      const lost = exit.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { msg?: string; lost?: number })
        .find((l) => l.msg === 'spend log rows could not be written before shutdown');
      assert.ok(lost !== undefined && (lost.lost ?? 0) >= 1, exit.stdout);
    } finally {
      await vllm.close();
      await proxy.close();
    }
  },
);

test(
  'Redis hung: readiness says so within seconds, and the connection is made again once the path is back',
  { timeout: 60_000 },
  async () => {
    const proxy = await startTcpProxy(6379);
    const yaml = `
model_list:
  - model_name: m
    litellm_params: { model: openai/x, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  master_key: ${MASTER}
  redis_url: redis://127.0.0.1:${proxy.port}
  redis_key_prefix: "tg-hung-${randomUUID()}:"
`;
    const prepared = prepareConfigText(yaml, 'h.yaml', {});
    const store = await openStore(prepared.config, {
      logger: createLogger('silent'),
      withDb: false,
      catalog: () => ModelCatalog.fromConfig([]),
    });
    const until = async (what: string, ms: number, ok: () => Promise<boolean>): Promise<void> => {
      const t0 = Date.now();
      while (!(await ok())) {
        if (Date.now() - t0 > ms) assert.fail(`${what} within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const answers = (): Promise<boolean> =>
      store.counters.claim(randomUUID(), Date.now() + 1000, Date.now()).then(
        () => true,
        () => false,
      );
    try {
      assert.equal(store.notReady(), undefined);
      assert.equal(await answers(), true);
      proxy.freeze();
      await until('not ready', 5_000, async () => store.notReady() !== undefined);
      assert.match(String(store.notReady()), /Redis/);
      await new Promise((r) => setTimeout(r, 6_500)); // the hung connection is given up meanwhile
      proxy.pass();
      await until('commands answered again', 10_000, answers);
      await until('ready again', 5_000, async () => store.notReady() === undefined);
    } finally {
      await store.close(1_000);
      await proxy.close();
    }
  },
);

test(
  'PostgreSQL unreachable at start: start-up waits for it (and says so) instead of exiting; a missing database still exits 1',
  { timeout: 60_000 },
  async () => {
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-pgstart-'));
    const write = (name: string, url: string): string => {
      const file = path.join(dir, name);
      writeFileSync(
        file,
        `
model_list:
  - model_name: m
    litellm_params: { model: openai/x, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  master_key: ${MASTER}
  database_url: ${url}
`,
      );
      return file;
    };
    const args = (config: string): string[] => ['serve', '--config', config, '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'];
    const later = startTollgate(args(write('later.yaml', `postgres://postgres@127.0.0.1:${port}/test?schema=${schemaName()}`)));
    await later.waitForLog('the database is not reachable yet; retrying (not ready meanwhile)');
    const proxy = await startTcpProxy(5432, port);
    try {
      await later.waitForLog('serve listening', 20_000);
      later.proc.kill('SIGTERM');
      assert.equal((await later.waitExit()).code, 0);
    } finally {
      await proxy.close();
    }
    const missing = startTollgate(
      args(write('missing.yaml', `postgres://postgres@127.0.0.1:5432/tg_no_such_db_${randomUUID().slice(0, 8)}`)),
    );
    const exit = await missing.waitExit(10_000);
    assert.equal(exit.code, 1);
    assert.match(exit.stderr, /cannot open the database: .*does not exist/);
  },
);
