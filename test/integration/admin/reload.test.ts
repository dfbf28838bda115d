/**
 * Config reload: SIGHUP (and, with --watch-config, a change of the file) validates the file again and swaps
 * it in whole; a bad file, or one changing a setting a running process cannot swap, is rejected with its
 * errors logged and the running config kept. Also: with neither a master key nor an admin group, the admin
 * API is disabled and says so.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { children, PGLITE_START_MS, startTollgate, type Running } from '../../support/process.js';

const BACKEND = 'meta-llama/Llama-3.1-8B-Instruct';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const K1 = `sk-reload-one-${randomUUID()}`;
const K2 = `sk-reload-two-${randomUUID()}`;

const fakes: FakeVllm[] = [];
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const f of fakes) await f.close();
});

function config(apiBase: string, extra: { keys?: string[]; rules?: string; general?: string; typo?: boolean } = {}): string {
  return `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${BACKEND}, api_base: "${apiBase}" }
general_settings:
  context_signing_key: reload-test-context-key-0123456789abcdef
${extra.general ?? ''}
keys:
${(extra.keys ?? [K1]).map((k) => `  - key: sha256:${sha(k)}\n`).join('')}
policy:
  rules:
${extra.rules ?? '    []'}
${extra.typo === true ? 'router_settings: { num_retires: 2 }' : ''}
`;
}

async function chatStatus(port: number, key: string): Promise<{ status: number; code: string | undefined; message: string | undefined }> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 }),
  });
  const body = (await res.json()) as { error?: { code?: string; message?: string } };
  return { status: res.status, code: body.error?.code, message: body.error?.message };
}

/** Waits until `msg` has been logged `n` times; returns the n-th record. */
async function nthLog(p: Running, msg: string, n: number, ms = 10_000): Promise<Record<string, unknown>> {
  const started = Date.now();
  for (;;) {
    const recs = p
      .stdout()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r['msg'] === msg);
    const rec = recs[n - 1];
    if (rec !== undefined) return rec;
    if (Date.now() - started > ms) assert.fail(`"${msg}" not logged ${n} times within ${ms} ms\n${p.stdout()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function start(file: string, watch: boolean): Promise<{ p: Running; port: number }> {
  const args = ['serve', '--config', file, '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'];
  const p = startTollgate(watch ? [...args, '--watch-config'] : args);
  // No database_url: the records are in embedded PGlite.
  const rec = await p.waitForLog('serve listening', PGLITE_START_MS);
  return { p, port: Number(/:(\d+)$/.exec(String(rec['http']))?.[1]) };
}

describe('config reload', { timeout: 4 * PGLITE_START_MS }, () => {
  test('SIGHUP applies a good config at once, and keeps the running one when the new one is bad or needs a restart', async () => {
    const vllm = await startFakeVllm({ models: [BACKEND] });
    fakes.push(vllm);
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-reload-'));
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, config(vllm.apiBase));
    const { p, port } = await start(file, false);
    assert.equal((await chatStatus(port, K1)).status, 200);
    assert.equal((await chatStatus(port, K2)).code, 'invalid_api_key');

    // Good: a new key, and a policy rule that denies the old one.
    writeFileSync(
      file,
      config(vllm.apiBase, {
        keys: [K1, K2],
        rules: `    - name: no-k1\n      when: "key.id == '${sha(K1).slice(0, 16)}'"\n      deny: this key was retired`,
      }),
    );
    p.proc.kill('SIGHUP');
    const reloaded = await nthLog(p, 'config reloaded', 1);
    assert.equal(reloaded['reason'], 'SIGHUP');
    assert.equal((await chatStatus(port, K2)).status, 200);
    const denied = await chatStatus(port, K1);
    assert.equal(denied.code, 'policy_denied');
    assert.match(String(denied.message), /retired/);

    // Bad: a misspelt key. Rejected with the error logged; K2 still works, K1 still denied.
    writeFileSync(file, config(vllm.apiBase, { keys: [K1], typo: true }));
    p.proc.kill('SIGHUP');
    await nthLog(p, 'config reload rejected: the running config is kept', 1);
    const errLine = p
      .stdout()
      .split('\n')
      .find((l) => l.includes('num_retires'));
    assert.ok(errLine?.includes('unknown key'), 'the error names the misspelt key');
    assert.equal((await chatStatus(port, K2)).status, 200);
    assert.equal((await chatStatus(port, K1)).code, 'policy_denied');

    // A setting that needs a restart: rejected, naming it.
    writeFileSync(file, config(vllm.apiBase, { keys: [K1, K2], general: '  max_request_size_mb: 8' }));
    p.proc.kill('SIGHUP');
    await within(p, 'general_settings.max_request_size_mb');
    assert.equal((await chatStatus(port, K2)).status, 200);
    assert.equal((await chatStatus(port, K1)).code, 'policy_denied', 'the rejected file (no rule) was not applied');

    // A key removed from the file stops working at once.
    writeFileSync(file, config(vllm.apiBase, { keys: [K2] }));
    p.proc.kill('SIGHUP');
    await nthLog(p, 'config reloaded', 2);
    assert.equal((await chatStatus(port, K1)).code, 'invalid_api_key');
    assert.equal((await chatStatus(port, K2)).status, 200);

    // SIGTERM still ends it cleanly after reloads.
    p.proc.kill('SIGTERM');
    assert.equal((await p.waitExit(15_000)).code, 0);
  });

  test('--watch-config reloads when the file changes', async () => {
    const vllm = await startFakeVllm({ models: [BACKEND] });
    fakes.push(vllm);
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-watch-'));
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, config(vllm.apiBase));
    const { p, port } = await start(file, true);
    assert.equal((await chatStatus(port, K2)).code, 'invalid_api_key');
    writeFileSync(file, config(vllm.apiBase, { keys: [K1, K2] }));
    const rec = await nthLog(p, 'config reloaded', 1);
    assert.equal(rec['reason'], 'file changed');
    assert.equal((await chatStatus(port, K2)).status, 200);
  });

  test('with neither a master key nor an admin group, the admin API is disabled and says so', async () => {
    const vllm = await startFakeVllm({ models: [BACKEND] });
    fakes.push(vllm);
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-noadmin-'));
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, config(vllm.apiBase));
    const { port } = await start(file, false);
    const res = await fetch(`http://127.0.0.1:${port}/key/generate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${K1}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(res.status, 403);
    const body = (await res.json()) as { error: { message: string; code: string } };
    assert.match(body.error.message, /admin API is disabled/);
    assert.match(body.error.message, /master_key|admin_groups/);
  });
});

/** Waits until a log line mentions `text`. */
async function within(p: Running, text: string, ms = 10_000): Promise<void> {
  const started = Date.now();
  while (!p.stdout().includes(text)) {
    if (Date.now() - started > ms) assert.fail(`no log line mentions ${text} within ${ms} ms\n${p.stdout()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
