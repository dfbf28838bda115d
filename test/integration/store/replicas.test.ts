/**
 * Limits are exact across replicas: three `tollgate authz` processes on one real Redis, many concurrent
 * Checks for one key spread over the three, and exactly the limit is admitted — for rpm, for tpm with
 * reservations, for parallel leases and for a budget under concurrency.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EnvoyCheckClient, deniedHeaders } from '../../support/envoy.js';
import { children, startTollgate } from '../../support/process.js';

const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const KEYS = {
  rpm: 'sk-replicas-rpm-000001',
  tpm: 'sk-replicas-tpm-000001',
  par: 'sk-replicas-par-000001',
  budget: 'sk-replicas-bud-000001',
};
const BODY = JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100 });

const config = (prefix: string): string => `
model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://127.0.0.1:9/v1
      input_cost_per_token: 0
      output_cost_per_token: 0.001
general_settings:
  context_signing_key: replicas-test-context-key-0123456789abcdef
  redis_url: ${REDIS}
  redis_key_prefix: "${prefix}"
keys:
  - key: sha256:${sha(KEYS.rpm)}
    rpm_limit: 20
  - key: sha256:${sha(KEYS.tpm)}
    tpm_limit: 1000
  - key: sha256:${sha(KEYS.par)}
    max_parallel_requests: 5
  - key: sha256:${sha(KEYS.budget)}
    max_budget: 0.35
    budget_duration: 30d
`;

describe('three replicas on one Redis', { timeout: 60_000 }, () => {
  const clients: EnvoyCheckClient[] = [];

  before(async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-replicas-'));
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, config(`tg-replicas-${randomUUID()}:`));
    const procs = [0, 1, 2].map(() => startTollgate(['authz', '--config', file, '--host', '127.0.0.1', '--grpc-port', '0']));
    for (const p of procs) {
      const rec = await p.waitForLog('authz listening', 20_000);
      clients.push(new EnvoyCheckClient(Number(/:(\d+)$/.exec(String(rec['grpc']))?.[1])));
    }
  });

  after(() => {
    for (const c of clients) c.close();
    for (const c of children) c.kill('SIGKILL');
  });

  /** `n` Checks at once for `key`, round-robin over the replicas; the statuses (200 allowed, else the denial's). */
  async function burst(key: string, n: number): Promise<{ statuses: number[]; retryAfter: string[] }> {
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        (clients[i % clients.length] as EnvoyCheckClient).check({
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-request-id': `same-id-for-all` },
          body: BODY,
        }),
      ),
    );
    const statuses: number[] = [];
    const retryAfter: string[] = [];
    for (const r of results) {
      if (r.ok_response !== undefined && r.ok_response !== null) statuses.push(200);
      else {
        const denied = r.denied_response;
        assert.ok(denied);
        // The HttpStatus enum by name (the test client loads enums as strings): TooManyRequests is 429.
        const code = (denied.status as { code: unknown }).code;
        statuses.push(code === 'TooManyRequests' ? 429 : typeof code === 'number' ? code : -1);
        retryAfter.push(deniedHeaders(denied)['retry-after'] ?? '');
      }
    }
    return { statuses, retryAfter };
  }

  test('rpm_limit 20: exactly 20 of 60 concurrent requests are admitted (a shared x-request-id changes nothing)', async () => {
    const { statuses, retryAfter } = await burst(KEYS.rpm, 60);
    assert.equal(statuses.filter((s) => s === 200).length, 20);
    assert.equal(statuses.filter((s) => s === 429).length, 40);
    for (const r of retryAfter) assert.ok(Number(r) >= 59 && Number(r) <= 60, `retry-after ${r}: the window frees in about 60 s`);
  });

  test('tpm_limit 1000 with reservations: exactly floor(1000 / reserved) are admitted', async () => {
    const reserved = Math.ceil(Buffer.byteLength(BODY) / 4) + 100;
    const { statuses } = await burst(KEYS.tpm, 30);
    assert.equal(statuses.filter((s) => s === 200).length, Math.floor(1000 / reserved));
  });

  test('max_parallel_requests 5: exactly 5 leases are handed out while none ends', async () => {
    const { statuses } = await burst(KEYS.par, 30);
    assert.equal(statuses.filter((s) => s === 200).length, 5);
  });

  test('max_budget 0.35 with 0.10 reserved per request: exactly 4 start, so spend can pass the budget by one request at most', async () => {
    const { statuses } = await burst(KEYS.budget, 30);
    assert.equal(statuses.filter((s) => s === 200).length, 4);
  });
});
