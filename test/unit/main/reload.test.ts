import { test } from 'node:test';
import assert from 'node:assert/strict';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { restartNeeded } from '../../../src/main/reload.js';

const base = `
model_list:
  - model_name: a
    litellm_params: { model: openai/a, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  master_key: sk-reload-unit-0123456789
  allowed_api_bases: [127.0.0.1]
router_settings: { num_retries: 2 }
`;
const load = (text: string) => prepareConfigText(text, 'test.yaml', {}).config;

test('models, keys, policy, fallbacks and allowed_api_bases may change in a running process', () => {
  const next = load(`
model_list:
  - model_name: a
    litellm_params: { model: openai/a, api_base: "http://127.0.0.1:9/v1" }
  - model_name: b
    litellm_params: { model: openai/b, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  master_key: sk-reload-unit-0123456789
  allowed_api_bases: [127.0.0.1, vllm-*.svc]
router_settings: { num_retries: 2, fallbacks: [{ a: [b] }] }
policy:
  rules: [{ name: r, when: "false", deny: never }]
keys:
  - key: sha256:${'0'.repeat(64)}
`);
  assert.deepEqual(restartNeeded(load(base), next), []);
});

test('stores, secrets, limits of the process and router tuning need a restart, each named', () => {
  const next = load(base.replace('sk-reload-unit-0123456789', 'sk-reload-unit-9876543210').replace('num_retries: 2', 'num_retries: 5'));
  assert.deepEqual(restartNeeded(load(base), next).sort(), ['general_settings.master_key', 'router_settings.num_retries']);
});

test('the budget calendar needs a restart: moved in a running process, every budget period would move', () => {
  const next = load(`${base}litellm_settings:\n  timezone: Europe/Paris\n  budget_reset_time: "06:00"\n`);
  assert.deepEqual(restartNeeded(load(base), next).sort(), ['litellm_settings.budget_reset_time', 'litellm_settings.timezone']);
});

test('--watch-config also watches the files the config includes, and reload reads them', async () => {
  const { mkdtempSync, mkdirSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const path = await import('node:path');
  const { prepareConfigFile } = await import('../../../src/main/config-source.js');
  const { startReloader } = await import('../../../src/main/reload.js');
  const { createLogger } = await import('../../../src/telemetry/logger.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-reload-include-'));
  try {
    mkdirSync(path.join(dir, 'models'));
    const main = path.join(dir, 'config.yaml');
    const models = path.join(dir, 'models', 'llama.yaml');
    const entry = (name: string): string =>
      `model_list:\n  - model_name: ${name}\n    litellm_params: { model: openai/${name}, api_base: "http://127.0.0.1:9/v1" }\n`;
    writeFileSync(main, 'include: [models/llama.yaml]\ngeneral_settings:\n  master_key: sk-reload-unit-0123456789\n');
    writeFileSync(models, entry('a'));
    const first = prepareConfigFile(main, {});
    assert.deepEqual(first.files, [main, models]);
    let current = first.config;
    const applied: string[][] = [];
    const reloader = startReloader({
      file: main,
      files: first.files,
      env: {},
      logger: createLogger('silent'),
      watchFile: true,
      current: () => current,
      apply: (next) => {
        current = next.config;
        applied.push(next.config.model_list.map((m) => m.model_name));
        return Promise.resolve();
      },
    });
    try {
      writeFileSync(models, entry('b'));
      const deadline = Date.now() + 5_000;
      while (applied.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(applied.at(-1), ['b'], 'a change of the included file reloads');
    } finally {
      reloader.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
