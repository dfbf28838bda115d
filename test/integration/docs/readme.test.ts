/**
 * The README is exercised: its configuration reference is what the schema generates; its example config
 * passes `config check`; the walk-through's curl commands run as written (bash, curl, jq) against a real
 * IdP, `tollgate serve`, a fake vLLM and an Envoy stand-in that follows envoy/envoy.yaml, and print what
 * the README shows; every other command in a sh block is run here or named with the test that runs it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { referenceMarkdown, undescribed } from '../../../src/config/reference.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { NO_KEY, NO_TEAM } from '../../../src/policy/rules.js';
import { startEnvoyProxy, type EnvoyProxy } from '../../support/envoy-proxy.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { startIdp, type TestIdp } from '../../support/idp.js';
import { childEnv, children, PGLITE_START_MS, ROOT, startTollgate, type Running } from '../../support/process.js';

const run = promisify(execFile);
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');

interface Block {
  readonly lang: string;
  readonly text: string;
  /** The heading the block sits under. */
  readonly section: string;
}

function blocks(markdown: string): Block[] {
  const out: Block[] = [];
  let section = '';
  let open: { lang: string; lines: string[] } | undefined;
  for (const line of markdown.split('\n')) {
    if (open === undefined && line.startsWith('#')) section = line.replace(/^#+\s*/, '');
    const fence = /^```(\w*)\s*$/.exec(line);
    if (fence !== null) {
      if (open === undefined) open = { lang: fence[1] ?? '', lines: [] };
      else {
        out.push({ lang: open.lang, text: open.lines.join('\n'), section });
        open = undefined;
      }
    } else open?.lines.push(line);
  }
  return out;
}

/** The commands of a sh block: comments dropped, continuation lines joined. */
function commands(text: string): string[] {
  return text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/**
 * Commands in the README that this file does not run, each with the test that does; the test file must
 * exist and mention the command's subject.
 */
const EXERCISED_ELSEWHERE: readonly (readonly [RegExp, string, string])[] = [
  [/^npm install && npm start\b/, 'test/integration/cli/cli.test.ts', 'tollgate serve with no config'],
  [/^npm test\b/, '.ci/run', 'npm test'],
  [/^helm install tollgate charts\/tollgate\b/, 'test/unit/deploy/helm-chart.test.ts', 'full-values.yaml'],
  [/^docker build -t \S+ \.$/, 'test/unit/deploy/dockerfile.test.ts', 'USER'],
  [
    /^kubectl -n llm create secret generic tollgate\b/,
    'test/unit/deploy/helm-chart.test.ts',
    'kubectl -n llm create secret generic tollgate',
  ],
  [/^envoy -c envoy\/envoy\.yaml\b/, 'test/unit/deploy/envoy-config.test.ts', 'Bootstrap'],
];

const walkThrough = blocks(README).filter((b) => b.lang === 'sh' && b.text.includes('$ENVOY'));

test('the configuration reference in the README is what the schema generates', () => {
  assert.deepEqual(undescribed(), [], 'every setting has a description in src/config/reference.ts');
  const start = README.indexOf('<!-- config-reference:start -->');
  const end = README.indexOf('<!-- config-reference:end -->');
  assert.ok(start >= 0 && end > start, 'the README has the reference markers');
  const inReadme = README.slice(start + '<!-- config-reference:start -->'.length, end).trim();
  assert.equal(inReadme, referenceMarkdown(), 'the README reference is stale: run npm run docs');
});

test('every command in a sh block is run here or by a named test', () => {
  const here = [
    /^TOKEN=\$\(curl /,
    /^KEY=\$\(curl /,
    /^MODEL=\$\(curl /,
    /^MASTER_KEY=\$\(cat \.tollgate\/master_key\)$/,
    /^curl /,
    /^tollgate (config check|keys hash) /,
  ];
  for (const b of blocks(README).filter((x) => x.lang === 'sh')) {
    for (const cmd of commands(b.text)) {
      if (here.some((r) => r.test(cmd))) continue;
      const known = EXERCISED_ELSEWHERE.find(([r]) => r.test(cmd));
      assert.ok(known !== undefined, `README command not exercised by any test: ${cmd}`);
      const [, file, marker] = known;
      assert.ok(existsSync(path.join(ROOT, file)), `${file} (exercising "${cmd}") exists`);
      assert.ok(readFileSync(path.join(ROOT, file), 'utf8').includes(marker), `${file} exercises "${cmd}"`);
    }
  }
  assert.ok(walkThrough.length >= 2, 'the walk-through blocks were found');
});

test('the example config passes tollgate config check, and keys hash prints what keys[].key takes', async () => {
  const example = blocks(README).find((b) => b.lang === 'yaml' && b.section === 'Configuration');
  assert.ok(example !== undefined, 'the Configuration section has an example config');
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-readme-'));
  writeFileSync(path.join(dir, 'config.yaml'), example.text);
  // `tollgate` on the PATH, as `npm install -g` or the container image put it.
  writeFileSync(path.join(dir, 'tollgate'), `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, 'bin', 'tollgate.js')}" "$@"\n`, {
    mode: 0o755,
  });
  const env = childEnv({
    PATH: `${dir}:${process.env['PATH'] ?? ''}`,
    TOLLGATE_MASTER_KEY: 'sk-readme-master-0123456789',
    DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test',
    REDIS_URL: 'redis://127.0.0.1:6379',
    VLLM_API_KEY: 'backend',
    CI_BOT_KEY: 'sk-readme-ci-bot-0123456789',
  });
  const lines = blocks(README)
    .filter((b) => b.lang === 'sh' && b.section === 'Commands')
    .flatMap((b) => commands(b.text));
  assert.equal(lines.length, 2);
  for (const line of lines) {
    const { stdout } = await run('bash', ['-c', `set -euo pipefail\n${line}`], { cwd: dir, env });
    const comment = /#\s*→\s*(.*)$/.exec(line)?.[1];
    if (line.includes('keys hash')) assert.match(stdout, /^sha256:[0-9a-f]{64}\n$/);
    else assert.match(stdout, /^config\.yaml: ok \(1 deployments, 1 keys, 1 teams, 1 policy rules\)\n$/);
    assert.ok(comment !== undefined && stdout.startsWith(comment.replace(/….*$/, '')), `prints what the README says: ${comment}`);
  }
});

test('the policy examples compile, and deny what their names say', () => {
  const example = blocks(README).find((b) => b.lang === 'yaml' && b.section === 'Policy rules (CEL)');
  assert.ok(example !== undefined);
  const prepared = prepareConfigText(example.text, 'README policy', {});
  assert.equal(prepared.config.policy.rules.length, 6);
  const verdict = (facts: Partial<Parameters<typeof prepared.policy.evaluate>[0]>): string | undefined => {
    const v = prepared.policy.evaluate({
      jwt: { email: 'a@example.com', groups: [] },
      key: NO_KEY,
      team: NO_TEAM,
      model: 'llama-3.1-8b',
      request: { method: 'POST', path: '/v1/chat/completions', source: '', headers: {}, context_extensions: {} },
      ...facts,
    });
    return v.allowed ? undefined : v.rule;
  };
  assert.equal(verdict({}), undefined);
  assert.equal(verdict({ jwt: { email: 'a@example.com', groups: ['guests'] }, model: 'qwen3-8b' }), 'guests-small-models-only');
  assert.equal(verdict({ jwt: { email: 'a@gmail.com', groups: [] } }), 'company-accounts-only');
  assert.equal(
    verdict({
      request: { method: 'POST', path: '/v1/chat/completions', source: '', headers: { 'x-environment': 'prod' }, context_extensions: {} },
    }),
    'prod-needs-prod-group',
  );
  const embeddings = { method: 'POST', path: '/v1/embeddings', source: '', headers: {}, context_extensions: { route: 'batch' } };
  // A key without a team (or the master key) is not an intern: the rule is false for it, not an error.
  assert.equal(verdict({ request: embeddings }), undefined);
  assert.equal(
    verdict({ request: embeddings, team: { team_id: 'interns', alias: '', models: [], metadata: {} } }),
    'interns-no-embeddings',
  );
});

describe('the walk-through, as written, through an Envoy stand-in', { timeout: 2 * PGLITE_START_MS }, () => {
  const CLIENT_ID = 'readme-client';
  const CLIENT_SECRET = `secret-${randomUUID()}`;
  const MASTER = `sk-readme-${randomUUID()}`;
  let idp: TestIdp;
  let vllm: FakeVllm;
  let envoy: EnvoyProxy;

  before(async () => {
    idp = await startIdp({ audience: 'https://tollgate.internal', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    vllm = await startFakeVllm({ models: ['meta-llama/Llama-3.1-8B-Instruct'] });
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-walk-'));
    const file = path.join(dir, 'walkthrough.yaml');
    // The config the README says the walk-through runs with, pointed at this fake vLLM; the test IdP is http://.
    const shown = blocks(README).find((b) => b.lang === 'yaml' && b.section === 'A request, step by step (curl, through Envoy)');
    assert.ok(shown !== undefined, 'the walk-through shows its config');
    assert.match(shown.text, /master_key: os\.environ\/MASTER_KEY/);
    assert.match(shown.text, /issuer: os\.environ\/IDP/);
    const config = shown.text
      .replace('http://127.0.0.1:8000/v1', vllm.apiBase)
      .replace(/^(\s+)audience: (.*)$/m, '$1audience: $2\n$1allow_insecure_http: true');
    assert.ok(config.includes(vllm.apiBase) && config.includes('allow_insecure_http'), config);
    writeFileSync(file, config);
    const p = startTollgate(['serve', '--config', file, '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'], {
      env: { MASTER_KEY: MASTER, IDP: idp.issuer },
    });
    const rec = await p.waitForLog('serve listening', PGLITE_START_MS); // no database_url: embedded PGlite
    envoy = await startEnvoyProxy({
      authzPort: Number(/:(\d+)$/.exec(String(rec['grpc']))?.[1]),
      gatewayPort: Number(/:(\d+)$/.exec(String(rec['http']))?.[1]),
    });
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await envoy?.close();
    await vllm?.close();
    await idp?.close();
  });

  async function bash(script: string): Promise<string> {
    const { stdout } = await run('bash', ['-c', `set -euo pipefail\n${script}`], {
      env: childEnv({ ENVOY: envoy.url, IDP: idp.issuer, CLIENT_ID, CLIENT_SECRET, MASTER_KEY: MASTER }),
    });
    return stdout;
  }

  test('token, key, chat completion: the reply names the alias', async () => {
    const [steps] = walkThrough;
    assert.ok(steps !== undefined);
    const out = JSON.parse(await bash(steps.text)) as { model?: string; choices?: { message?: { content?: string } }[] };
    assert.equal(out.model, 'llama-3.1-8b');
    assert.ok(typeof out.choices?.[0]?.message?.content === 'string');
  });

  test('without the JWT: the denial the README shows, byte for byte', async () => {
    const denial = walkThrough[1];
    assert.ok(denial !== undefined);
    const shown = /^# (\{.*\})$/m.exec(denial.text)?.[1];
    assert.ok(shown !== undefined, 'the block shows the answer');
    const key = (await bash(`${walkThrough[0]?.text.split('# 3.')[0] ?? ''}\necho "$KEY"`)).trim();
    assert.match(key, /^sk-/);
    const got = await bash(`KEY=${key}\n${denial.text}`);
    assert.equal(got.trim(), shown);
  });
});

/**
 * The first run, as a new user meets it: `tollgate serve` with no config in a fresh directory while no vLLM
 * listens on 127.0.0.1:8000 (a warning names the URL; chats get a 404 that names none), then a vLLM there
 * (this test's fake, on vLLM's own port): the README's curl commands, as written, get a chat completion.
 */
describe('the first run, as written, on the embedded default', { timeout: 3 * PGLITE_START_MS }, () => {
  const VLLM_PORT = 8000;
  const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
  let cwd: string;
  let vllm: FakeVllm | undefined;

  before(() => {
    cwd = mkdtempSync(path.join(tmpdir(), 'tollgate-first-run-'));
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await vllm?.close();
    rmSync(cwd, { recursive: true, force: true });
  });

  /** The first stdout JSON log line that `match` accepts; fails after `ms`. */
  async function logLine(p: Running, match: (rec: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>> {
    const until = Date.now() + ms;
    for (;;) {
      for (const line of p.stdout().split('\n')) {
        if (!line.startsWith('{') || !line.endsWith('}')) continue; // a line still being written
        const rec = JSON.parse(line) as Record<string, unknown>;
        if (match(rec)) return rec;
      }
      if (Date.now() > until) assert.fail(`no such log line within ${ms} ms:\n${p.stdout()}\n${p.stderr()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  test('no vLLM: a warning naming what was asked and what to do, and a 404 that names no address; then the README steps work', async () => {
    assert.equal(await listening(VLLM_PORT), false, `something listens on 127.0.0.1:${VLLM_PORT}: this test plays vLLM there`);
    const p = startTollgate(['serve', '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'], { cwd });
    const http = String((await p.waitForLog('serve listening', PGLITE_START_MS))['http']);
    const base = `http://${http}`;

    const warned = await logLine(p, (r) => String(r['msg']).startsWith('model discovery:'), 1_000);
    assert.equal(warned['level'], 40);
    assert.equal(warned['failure'], 'connection refused (nothing listens there)');
    assert.match(String(warned['msg']), /asked http:\/\/127\.0\.0\.1:8000\/v1\/models and got connection refused/);
    assert.match(String(warned['msg']), /Start vLLM there .* or write a config with model_list/);

    const master = readFileSync(path.join(cwd, '.tollgate', 'master_key'), 'utf8').trim();
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${master}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(res.status, 404);
    const text = await res.text();
    const denial = JSON.parse(text) as { error: { code: string; message: string } };
    assert.equal(denial.error.code, 'model_not_found');
    assert.match(denial.error.message, /serves no models at the moment/);
    assert.doesNotMatch(text, /127\.0\.0\.1|:8000|http:/, 'the client is told no backend address');

    vllm = await startFakeVllm({ models: [MODEL], port: VLLM_PORT });
    // Discovery asks every 10 s: the next poll finds it, and says so once.
    const back = await logLine(p, (r) => String(r['msg']).endsWith('answers again'), 15_000);
    assert.equal(back['level'], 30);
    await logLine(p, (r) => r['msg'] === 'deployments discovered', 2_000);
    const warnings = p
      .stdout()
      .split('\n')
      .filter((l) => l.includes('"msg":"model discovery: asked'));
    assert.equal(warnings.length, 1, 'warned once, not at every poll');

    const steps = blocks(README).find((b) => b.lang === 'sh' && b.section === 'First run: the embedded default');
    assert.ok(steps !== undefined, 'the README has the first-run steps');
    assert.ok(steps.text.includes('http://127.0.0.1:4000'));
    const script = steps.text.replaceAll('http://127.0.0.1:4000', base);
    const { stdout } = await run('bash', ['-c', `set -euo pipefail\n${script}`], { cwd, env: childEnv() });
    const reply = JSON.parse(stdout) as { model?: string; choices?: { message?: { content?: string } }[] };
    assert.equal(reply.model, MODEL);
    assert.ok(typeof reply.choices?.[0]?.message?.content === 'string', stdout);
    assert.ok(
      vllm.received.some((r) => r.path === '/v1/chat/completions'),
      'the chat reached vLLM',
    );
  });
});

/** Whether something accepts connections on 127.0.0.1:port. */
async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
