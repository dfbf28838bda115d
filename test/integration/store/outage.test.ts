/**
 * Redis stopped and restarted during a run (a redis-server of this test's own, on a free port), with the
 * spend log in the real PostgreSQL (a schema of this test's own):
 * - failure_mode closed: Check answers 503 store_unavailable while Redis is down, and allows again after;
 * - failure_mode open: requests are served, nothing crashes, and no spend is lost — the restarted (empty)
 *   Redis ends up with the whole period's spend: the counted rows seeded, the others replayed;
 * - SIGTERM during traffic: in-flight requests finish and every spend row is written.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { budgetPeriod } from '../../../src/store/counters.js';
import { EnvoyCheckClient } from '../../support/envoy.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { children, freePort, startTollgate, type Running } from '../../support/process.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const KEY = 'sk-outage-test-key-000001';
const KEY_ID = createHash('sha256').update(KEY).digest('hex').slice(0, 16);
const SCHEMA = `tg_outage_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const PREFIX = `tg-outage-${randomUUID()}:`;
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';

function startRedis(port: number): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'pipe',
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`redis-server did not start:\n${out}`)), 5000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(t);
        resolve(proc);
      }
    });
    proc.once('exit', () => reject(new Error(`redis-server exited:\n${out}`)));
  });
}

async function stopRedis(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGKILL');
  await exited;
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} within ${ms} ms${last instanceof Error ? `: ${last.message}` : ''}`);
}

describe('Redis outage and SIGTERM', { timeout: 90_000 }, () => {
  let redisPort: number;
  let redis: ChildProcess;
  let vllm: FakeVllm;
  let db: pg.Pool;
  let serveOpen: Running;
  let gatewayPort: number;
  let authzClosed: EnvoyCheckClient;

  const yaml = (failureMode: string): string => `
model_list:
  - model_name: llama
    litellm_params:
      model: openai/${MODEL}
      api_base: ${vllm.apiBase}
      input_cost_per_token: 0.001
      output_cost_per_token: 0.002
general_settings:
  context_signing_key: outage-test-context-key-0123456789abcdef
  redis_url: redis://127.0.0.1:${redisPort}
  redis_key_prefix: "${PREFIX}"
  database_url: ${PG}?schema=${SCHEMA}
  failure_mode: ${failureMode}
keys:
  - key: sha256:${createHash('sha256').update(KEY).digest('hex')}
    max_budget: 1000
    budget_duration: 30d
    rpm_limit: 10000
`;

  before(async () => {
    redisPort = await freePort();
    redis = await startRedis(redisPort);
    vllm = await startFakeVllm({ models: [MODEL], chunks: 5, chunkDelayMs: 60 });
    db = new pg.Pool({ connectionString: PG, max: 2 });
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-outage-'));
    writeFileSync(path.join(dir, 'open.yaml'), yaml('open'));
    writeFileSync(path.join(dir, 'closed.yaml'), yaml('closed'));
    serveOpen = startTollgate([
      'serve',
      '--config',
      path.join(dir, 'open.yaml'),
      '--host',
      '127.0.0.1',
      '--http-port',
      '0',
      '--grpc-port',
      '0',
    ]);
    const authz = startTollgate(['authz', '--config', path.join(dir, 'closed.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']);
    const listening = await serveOpen.waitForLog('serve listening', 20_000);
    gatewayPort = Number(/:(\d+)$/.exec(String(listening['http']))?.[1]);
    const a = await authz.waitForLog('authz listening', 20_000);
    authzClosed = new EnvoyCheckClient(Number(/:(\d+)$/.exec(String(a['grpc']))?.[1]));
  });

  after(async () => {
    authzClosed.close();
    for (const c of children) c.kill('SIGKILL');
    await stopRedis(redis);
    await vllm.close();
    await db.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await db.end();
  });

  const chat = (stream = false): Promise<Response> =>
    fetch(`http://127.0.0.1:${gatewayPort}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5, stream }),
      signal: AbortSignal.timeout(10_000),
    });

  const check = () =>
    authzClosed.check({
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] }),
    });

  /** The rows of served requests (each Check denied while Redis is down leaves a row of its own: `denials`). */
  const rows = async (): Promise<{ n: number; cost: number; uncounted: number }> => {
    const r = await db.query<{ n: string; cost: number | null; uncounted: string }>(
      `SELECT count(*) AS n, sum(cost) AS cost, count(*) FILTER (WHERE NOT counted) AS uncounted FROM ${SCHEMA}.spend_logs WHERE key_id = $1 AND status < 400`,
      [KEY_ID],
    );
    const row = r.rows[0];
    return { n: Number(row?.n ?? 0), cost: Number(row?.cost ?? 0), uncounted: Number(row?.uncounted ?? 0) };
  };

  test('closed denies with 503 while Redis is down, open serves; after the restart no spend is lost', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await chat()).status, 200);
    assert.ok((await check()).ok_response, 'allowed while Redis is up');

    const readiness = async (): Promise<number> =>
      (await fetch(`http://127.0.0.1:${gatewayPort}/health/readiness`, { signal: AbortSignal.timeout(5000) })).status;
    assert.equal(await readiness(), 200);
    await stopRedis(redis);
    const denied = await check();
    assert.ok(denied.denied_response, 'closed: denied');
    assert.match(String(denied.denied_response.body), /store_unavailable/);
    assert.equal((denied.denied_response.status as { code: unknown }).code, 'ServiceUnavailable');
    for (let i = 0; i < 3; i++) {
      const r = await chat();
      assert.equal(r.status, 200, 'open: served while Redis is down');
      await r.text();
    }
    // failure_mode: open serves through the outage by choice, so its readiness does not take it out of service.
    assert.equal(await readiness(), 200, 'open: still ready while Redis is down');
    await until('the denial at Check in the log: its status, no cost', 5000, async () => {
      const r = await db.query<{ n: string }>(
        `SELECT count(*) AS n FROM ${SCHEMA}.spend_logs WHERE key_id = $1 AND status = 503 AND cost = 0 AND counted`,
        [KEY_ID],
      );
      return Number(r.rows[0]?.n ?? 0) >= 1 ? true : undefined;
    });
    const during = await until('six spend rows, three not counted', 5000, async () => {
      const r = await rows();
      return r.n === 6 && r.uncounted === 3 ? r : undefined;
    });

    redis = await startRedis(redisPort); // restarted empty: no persistence
    await until('Check allowed again once Redis is back', 10_000, async () => ((await check()).ok_response ? true : undefined));
    await until('readiness 200 again', 10_000, async () => ((await readiness()) === 200 ? true : undefined));
    const client = new Redis(redisPort, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await client.connect();
      const bg = `${PREFIX}{key:${KEY_ID}}:bg:${budgetPeriod('30d', Date.now(), UTC_CALENDAR).start}`;
      let seen = '';
      const counted = await until('the whole spend back in Redis (seeded + replayed)', 15_000, async () => {
        const v = Number((await client.get(bg)) ?? 0);
        const r = await rows();
        seen = `redis ${v}, log ${JSON.stringify(r)}`;
        return r.uncounted === 0 && Math.abs(v - r.cost) < 1e-9 ? v : undefined;
      }).catch((err: unknown) => assert.fail(`${(err as Error).message}: ${seen}\n${serveOpen.stdout()}`));
      assert.ok(Math.abs(counted - during.cost) < 1e-9, `redis ${counted} = logged ${during.cost}`);
      assert.ok(counted > 0);
    } finally {
      client.disconnect();
    }
  });

  test('SIGTERM during traffic: in-flight streams finish and every spend row is written', async () => {
    const before = (await rows()).n;
    const inflight = Array.from({ length: 10 }, () => chat(true).then(async (r) => ({ status: r.status, text: await r.text() })));
    await new Promise((r) => setTimeout(r, 150));
    serveOpen.proc.kill('SIGTERM');
    const results = await Promise.all(inflight);
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.match(r.text, /data: \[DONE\]/);
    }
    const exit = await serveOpen.waitExit(20_000);
    assert.equal(exit.code, 0, exit.stderr);
    assert.equal((await rows()).n, before + 10);
  });
});
