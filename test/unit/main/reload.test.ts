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
