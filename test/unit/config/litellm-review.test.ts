/**
 * Regression tests for the LiteLLM config.yaml review: configs that LiteLLM loads must load here too, or be
 * refused with a message saying what to do when tollgate would otherwise allow more than configured.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfigText, type LoadResult } from '../../../src/config/load.js';
import { ConfigError, formatIssue, type ConfigIssue } from '../../../src/config/issues.js';
import type { Config } from '../../../src/config/schema.js';
import { prepareConfigFile } from '../../../src/main/config-source.js';
import { composeCatalog } from '../../../src/main/catalog.js';
import { modelView } from '../../../src/gateway/admin-models.js';
import { main, type Io } from '../../../src/main/cli.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { deploymentFromEntry } from '../../../src/routing/deployments.js';

const MINIMAL = `model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://127.0.0.1:8000/v1
`;

/**
 * The warnings, but for the one every config without credentials gets (MINIMAL has no master key nor keys;
 * test/unit/config/load.test.ts tests that warning).
 */
function loaded(text: string, env: Record<string, string> = {}): { config: Config; warnings: readonly ConfigIssue[] } {
  const r = loadConfigText(text, env);
  assert.deepEqual(r.issues, [], 'expected no issues');
  assert.ok(r.config, 'expected a config');
  return { config: r.config, warnings: r.warnings.filter((w) => !w.message.startsWith('nothing can be authorized')) };
}

function failed(text: string, env: Record<string, string> = {}): LoadResult {
  const r = loadConfigText(text, env);
  assert.equal(r.config, undefined, 'expected no config');
  assert.ok(r.issues.length > 0, 'expected issues');
  return r;
}

function at(issues: readonly ConfigIssue[], p: string): ConfigIssue {
  const found = issues.find((i) => i.path === p);
  assert.ok(found, `nothing at ${p}; got ${JSON.stringify(issues, null, 1)}`);
  return found;
}

function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  assert.notEqual(i, -1, `test bug: ${needle} not in the text`);
  return i + 1;
}

let dir = '';
const file = (name: string): string => path.join(dir, name);
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tollgate-include-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function prepareIssues(f: string, env: NodeJS.ProcessEnv = {}): readonly ConfigIssue[] {
  try {
    prepareConfigFile(f, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.issues;
  }
  return assert.fail('expected a ConfigError');
}

describe('include: (LiteLLM ProxyConfig._process_includes)', () => {
  test('included files extend model_list and set other keys, relative to the including file', () => {
    mkdirSync(file('inc1/models'), { recursive: true });
    writeFileSync(
      file('inc1/main.yaml'),
      `include: [models/llama.yaml, settings.yaml]\n${MINIMAL}general_settings:\n  master_key: sk-include-test-0123456789\n`,
    );
    writeFileSync(
      file('inc1/models/llama.yaml'),
      'model_list:\n  - model_name: qwen\n    litellm_params: { model: openai/qwen, api_base: "http://127.0.0.1:8001/v1" }\n',
    );
    writeFileSync(file('inc1/settings.yaml'), 'router_settings:\n  num_retries: 4\n');
    const p = prepareConfigFile(file('inc1/main.yaml'), {});
    assert.deepEqual(
      p.config.model_list.map((m) => m.model_name),
      ['llama', 'qwen'],
    );
    assert.equal(p.config.router_settings.num_retries, 4);
    assert.deepEqual(p.files, [file('inc1/main.yaml'), file('inc1/models/llama.yaml'), file('inc1/settings.yaml')]);
  });

  test('an error in an included file names that file, its own YAML path and line', () => {
    mkdirSync(file('inc2'), { recursive: true });
    writeFileSync(file('inc2/main.yaml'), `include:\n  - models.yaml\n${MINIMAL}`);
    const inc = 'model_list:\n  - model_name: bad\n    litellm_params:\n      model: nope/bad\n      api_base: http://127.0.0.1:9/v1\n';
    writeFileSync(file('inc2/models.yaml'), inc);
    const issues = prepareIssues(file('inc2/main.yaml'));
    const i = at(issues, 'model_list[0].litellm_params.model');
    assert.equal(i.file, file('inc2/models.yaml'));
    assert.equal(i.line, lineOf(inc, 'nope/bad'));
    assert.match(formatIssue(file('inc2/main.yaml'), i), new RegExp(`^${file('inc2/models.yaml')}:4:14 model_list\\[0\\]`));
  });

  test('a missing included file and an include cycle are errors on the include line', () => {
    mkdirSync(file('inc3'), { recursive: true });
    writeFileSync(file('inc3/main.yaml'), `${MINIMAL}include: [a.yaml, missing.yaml]\n`);
    writeFileSync(file('inc3/a.yaml'), 'include: [main.yaml]\n');
    const issues = prepareIssues(file('inc3/main.yaml'));
    const missing = at(issues, 'include[1]');
    assert.match(missing.message, /no such file: .*missing\.yaml/);
    assert.equal(missing.file, undefined, 'in the main file');
    assert.equal(missing.line, 6);
    const cycle = issues.find((x) => /include cycle/.test(x.message));
    assert.ok(cycle, JSON.stringify(issues));
    assert.equal(cycle.file, file('inc3/a.yaml'));
    assert.equal(cycle.path, 'include[0]');
  });

  test('config text without a file to resolve includes against is refused, not silently partial', () => {
    const r = failed(`include: [models.yaml]\n${MINIMAL}`);
    assert.match(at(r.issues, 'include[0]').message, /read from a file/);
  });

  test('an included file replacing a whole section is a warning naming it', () => {
    mkdirSync(file('inc4'), { recursive: true });
    writeFileSync(file('inc4/main.yaml'), `include: [r.yaml]\n${MINIMAL}router_settings:\n  num_retries: 1\n`);
    writeFileSync(file('inc4/r.yaml'), 'router_settings:\n  allowed_fails: 9\n');
    const p = prepareConfigFile(file('inc4/main.yaml'), {});
    assert.equal(p.config.router_settings.num_retries, 2, "LiteLLM's include replaces the section");
    assert.equal(p.config.router_settings.allowed_fails, 9);
    const w = at(p.warnings, 'router_settings');
    assert.equal(w.file, file('inc4/r.yaml'));
    assert.match(w.message, /replaces the whole router_settings/);
  });
});

describe('empty sections are none, as LiteLLM reads None', () => {
  test('general_settings:, litellm_settings:, router_settings:, environment_variables: and model_info: with no value', () => {
    const { config } = loaded(
      `${MINIMAL}    model_info:\ngeneral_settings:\nlitellm_settings:\nrouter_settings:\nenvironment_variables:\n`,
    );
    assert.equal(config.router_settings.num_retries, 2);
    assert.equal(config.general_settings.failure_mode, 'closed');
  });
});

describe("LiteLLM's production config (docs.litellm.ai/docs/proxy/prod)", () => {
  const PROD = `model_list:
  - model_name: fake-openai-endpoint
    litellm_params:
      model: openai/fake
      api_key: fake-key
      api_base: https://exampleopenaiendpoint-production.up.railway.app/
general_settings:
  master_key: sk-1234
  alerting: ["slack"]
  proxy_batch_write_at: 60
  database_connection_pool_limit: 10
  disable_error_logs: True
  allow_requests_on_db_unavailable: True
litellm_settings:
  request_timeout: 600
  set_verbose: False
  json_logs: true
`;
  test('only the placeholder master key is refused, with what to do; the rest loads with warnings', () => {
    const r = failed(PROD);
    assert.deepEqual(
      r.issues.map((i) => i.path),
      ['general_settings.master_key'],
    );
    assert.match(r.issues[0]?.message ?? '', /placeholder.*openssl rand/);
    assert.ok(!JSON.stringify(r.issues).includes('sk-1234'), 'the key is not echoed');
    const ok = loaded(PROD.replace('sk-1234', 'sk-prod-0123456789abcdef'));
    assert.ok(ok.warnings.some((w) => w.path === 'general_settings.disable_error_logs'));
  });

  test('completion parameters in litellm_params are accepted with a warning that they are not applied', () => {
    const params = ['top_p', 'stop', 'presence_penalty', 'frequency_penalty', 'extra_body', 'reasoning_effort', 'seed', 'top_k'];
    const text = `${MINIMAL}${params.map((p) => `      ${p}: ${p === 'stop' ? '["</s>"]' : p === 'extra_body' ? '{a: 1}' : p === 'reasoning_effort' ? 'low' : '1'}\n`).join('')}      additional_drop_params: [logprobs]\n`;
    const { warnings } = loaded(text);
    for (const p of params) assert.match(at(warnings, `model_list[0].litellm_params.${p}`).message, /tollgate does not add it/);
    assert.match(at(warnings, 'model_list[0].litellm_params.additional_drop_params').message, /as the client sent them/);
  });

  test('free-form model_info is accepted; what changes LiteLLM behaviour, or neither reads, warns; a misspelt tollgate key is still an error', () => {
    const text = `${MINIMAL}    model_info:\n      description: my model\n      metadata: {owner: me}\n      supports_reasoning: true\n      health_check_model: openai/x\n`;
    const { warnings } = loaded(text);
    assert.deepEqual(
      warnings.map((w) => w.path),
      ['model_list[0].model_info.health_check_model'],
    );
    // A price written so that nothing reads it: the model would be free, so it is said.
    const camel = loaded(`${MINIMAL}    model_info:\n      inputCostPerToken: 0.001\n`);
    assert.match(at(camel.warnings, 'model_list[0].model_info.inputCostPerToken').message, /check its spelling/);
    const typo = failed(`${MINIMAL}    model_info:\n      input_cost_per_tokens: 0.1\n`);
    assert.match(at(typo.issues, 'model_list[0].model_info.input_cost_per_tokens').message, /unknown key/);
  });
});

describe('YAML merge keys', () => {
  test('<<: *anchor merges, and an error in a merged value names the merged path at the anchor', () => {
    const text = `x-vllm: &vllm
  api_base: http://vllm-a:8000/v1
  rpm: 100
model_list:
  - model_name: llama
    litellm_params:
      <<: *vllm
      model: openai/llama
  - model_name: llama
    litellm_params:
      <<: *vllm
      model: openai/llama
      api_base: http://vllm-b:8000/v1
`;
    const { config } = loaded(text);
    assert.deepEqual(
      config.model_list.map((m) => [m.litellm_params.api_base, m.litellm_params.rpm]),
      [
        ['http://vllm-a:8000/v1', 100],
        ['http://vllm-b:8000/v1', 100],
      ],
    );
    const bad = text.replace('rpm: 100', 'rpm: -1');
    const r = failed(bad);
    const i = at(r.issues, 'model_list[0].litellm_params.rpm');
    assert.equal(i.line, lineOf(bad, 'rpm: -1'));
  });
});

describe('providers and modes', () => {
  test('text-completion-openai/ is an OpenAI-compatible deployment, with a warning about chat requests', () => {
    const { config, warnings } = loaded(MINIMAL.replace('openai/llama', 'text-completion-openai/meta-llama/Llama-3.1-8B'));
    assert.equal(config.model_list[0]?.litellm_params.model, 'text-completion-openai/meta-llama/Llama-3.1-8B');
    assert.match(at(warnings, 'model_list[0].litellm_params.model').message, /OpenAI-compatible/);
  });

  test("LiteLLM's modes are accepted; one tollgate does not serve warns; an unknown one is an error", () => {
    for (const mode of ['chat', 'completion', 'embedding'])
      assert.deepEqual(loaded(`${MINIMAL}    model_info: { mode: ${mode} }\n`).warnings, []);
    const rerank = loaded(`${MINIMAL}    model_info: { mode: rerank }\n`);
    assert.match(at(rerank.warnings, 'model_list[0].model_info.mode').message, /no rerank requests/);
    failed(`${MINIMAL}    model_info: { mode: telepathy }\n`);
  });
});

/** The routing catalog of `models` and one model added through the admin API (db-1, alias db), with `defaults`. */
function withDbModel(
  models: Parameters<typeof composeCatalog>[0],
  defaults: { defaultTimeoutS?: number | undefined; defaultStreamTimeoutS?: number | undefined },
): ReturnType<typeof composeCatalog> {
  return composeCatalog(
    models,
    [{ id: 'db-1', modelName: 'db', litellmParams: { model: 'openai/db', api_base: 'http://127.0.0.1:9/v1' }, modelInfo: {} }],
    { box: undefined, env: {}, logger: createLogger('silent'), allowedApiBases: ['127.0.0.1'], ...defaults },
  );
}

describe('router settings from litellm_settings, and timeouts', () => {
  test('router_settings.timeout, else litellm_settings.request_timeout, is the timeout of a deployment that sets none', () => {
    const two = `${MINIMAL}  - model_name: own
    litellm_params: { model: openai/own, api_base: "http://127.0.0.1:8001/v1", timeout: 10 }
`;
    const a = loaded(`${two}litellm_settings:\n  request_timeout: 30\n`).config;
    assert.deepEqual(
      a.model_list.map((m) => m.litellm_params.timeout),
      [30, 10],
    );
    const b = loaded(`${two}litellm_settings:\n  request_timeout: 30\nrouter_settings:\n  timeout: 45\n`);
    assert.deepEqual(
      b.config.model_list.map((m) => m.litellm_params.timeout),
      [45, 10],
    );
    assert.match(at(b.warnings, 'litellm_settings.request_timeout').message, /router_settings\.timeout is set too and wins/);
    assert.equal(loaded(MINIMAL).config.model_list[0]?.litellm_params.timeout, undefined);
  });

  test('router_settings.stream_timeout is the stream_timeout of a deployment that sets none, from the file or the admin API', () => {
    const two = `${MINIMAL}  - model_name: own
    litellm_params: { model: openai/own, api_base: "http://127.0.0.1:8001/v1", stream_timeout: 5 }
`;
    const { config, warnings } = loaded(`${two}router_settings:\n  stream_timeout: 20\n`);
    assert.deepEqual(
      config.model_list.map((m) => m.litellm_params.stream_timeout),
      [20, 5],
    );
    assert.deepEqual(warnings, [], 'applied, not set aside');
    const catalog = withDbModel(config.model_list, { defaultStreamTimeoutS: config.router_settings.stream_timeout });
    assert.deepEqual(
      ['llama', 'own', 'db'].map((a) => catalog.group(a)?.deployments[0]?.streamTimeoutMs),
      [20_000, 5_000, 20_000],
    );
    assert.equal(loaded(MINIMAL).config.model_list[0]?.litellm_params.stream_timeout, undefined);
  });

  test('GET /model/info shows the effective timeout, also of a model added through the admin API', () => {
    const { config } = loaded(`${MINIMAL}router_settings:\n  timeout: 45\n`);
    const catalog = withDbModel(config.model_list, { defaultTimeoutS: config.router_settings.timeout });
    const views = [...catalog.aliases()].flatMap((a) => catalog.group(a)?.deployments ?? []).map((d) => modelView(d, false));
    assert.deepEqual(
      views.map((v) => (v['litellm_params'] as { timeout: number }).timeout),
      [45, 45],
    );
    const none = composeCatalog(loaded(MINIMAL).config.model_list, [], {
      box: undefined,
      env: {},
      logger: createLogger('silent'),
      allowedApiBases: [],
    });
    assert.equal(none.group('llama')?.deployments[0]?.timeoutMs, 600_000);
  });

  test('GET /model/info shows litellm_params.order where LiteLLM does (null without one), also of a model added through the admin API', () => {
    const { config } = loaded(`${MINIMAL}      order: 2\n`);
    const catalog = composeCatalog(
      config.model_list,
      [
        {
          id: 'db-1',
          modelName: 'llama',
          litellmParams: { model: 'openai/db', api_base: 'http://127.0.0.1:9/v1', order: 1 },
          modelInfo: {},
        },
        { id: 'db-2', modelName: 'llama', litellmParams: { model: 'openai/db', api_base: 'http://127.0.0.1:9/v1' }, modelInfo: {} },
      ],
      { box: undefined, env: {}, logger: createLogger('silent'), allowedApiBases: ['127.0.0.1'] },
    );
    const views = (catalog.group('llama')?.deployments ?? []).map((d) => modelView(d, false));
    assert.deepEqual(
      views.map((v) => (v['litellm_params'] as { order: number | null }).order),
      [2, 1, null],
    );
  });

  test('litellm_settings allowed_fails and cooldown_time apply when router_settings sets none; else a warning says which wins', () => {
    const a = loaded(`litellm_settings:\n  allowed_fails: 7\n  cooldown_time: 60\n`).config;
    assert.equal(a.router_settings.allowed_fails, 7);
    assert.equal(a.router_settings.cooldown_time, 60);
    const b = loaded(`litellm_settings:\n  num_retries: 5\n  allowed_fails: 7\nrouter_settings:\n  num_retries: 1\n  allowed_fails: 1\n`);
    assert.equal(b.config.router_settings.num_retries, 1);
    assert.equal(b.config.router_settings.allowed_fails, 1);
    assert.deepEqual(b.warnings.map((w) => w.path).sort(), ['litellm_settings.allowed_fails', 'litellm_settings.num_retries']);
  });
});

describe('LITELLM_MASTER_KEY', () => {
  test('is the master key when general_settings.master_key is not set; the file wins over it', () => {
    assert.equal(
      loaded(MINIMAL, { LITELLM_MASTER_KEY: 'sk-from-env-0123456789ab' }).config.general_settings.master_key,
      'sk-from-env-0123456789ab',
    );
    const both = loaded(`${MINIMAL}general_settings:\n  master_key: sk-from-file-0123456789ab\n`, {
      LITELLM_MASTER_KEY: 'sk-from-env-0123456789ab',
    });
    assert.equal(both.config.general_settings.master_key, 'sk-from-file-0123456789ab');
  });

  test('a short one is refused, naming the variable, never echoing it', () => {
    const r = failed(MINIMAL, { LITELLM_MASTER_KEY: 'sk-1234' });
    assert.match(at(r.issues, 'general_settings.master_key').message, /^LITELLM_MASTER_KEY: too short/);
    assert.ok(!JSON.stringify(r.issues).includes('sk-1234'));
  });

  test('config check reads it from the environment', async () => {
    writeFileSync(file('envkey.yaml'), MINIMAL);
    const out: string[] = [];
    const io: Io = { out: (l) => out.push(l), err: (l) => out.push(l) };
    assert.equal(await main(['config', 'check', file('envkey.yaml')], io, { LITELLM_MASTER_KEY: 'sk-1234' }), 1);
    assert.match(out.join('\n'), /LITELLM_MASTER_KEY: too short/);
  });
});

describe('limits and denials tollgate does not enforce are errors, not warnings', () => {
  test('each names what to use instead', () => {
    const text = `model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://vllm:8000/v1
    model_info:
      access_groups: [beta]
litellm_settings:
  max_budget: 100
  budget_duration: 30d
  max_end_user_budget: 1
  blocked_user_list: [bad-user]
  upperbound_key_generate_params:
    max_budget: 50
general_settings:
  global_max_parallel_requests: 100
  max_parallel_requests: 10
`;
    const r = failed(text);
    const expected: Record<string, RegExp> = {
      'model_list[0].model_info.access_groups': /keys\[\]\.models/,
      'litellm_settings.max_budget': /keys\[\], teams\[\] or users\[\]/,
      'litellm_settings.budget_duration': /keys\[\], teams\[\] or users\[\]/,
      'litellm_settings.max_end_user_budget': /users\[\]/,
      'litellm_settings.blocked_user_list': /policy rule/,
      'litellm_settings.upperbound_key_generate_params': /admin_groups/,
      'general_settings.global_max_parallel_requests': /Envoy/,
      'general_settings.max_parallel_requests': /litellm_params\.max_parallel_requests/,
    };
    assert.deepEqual(r.issues.map((i) => i.path).sort(), Object.keys(expected).sort());
    for (const [p, m] of Object.entries(expected)) {
      const i = at(r.issues, p);
      assert.match(i.message, m);
      assert.match(i.message, /remove this/);
      assert.equal(typeof i.line, 'number');
    }
  });
});

describe('LiteLLM guardrails, key defaults, tag routing and prices by the second are refused, not ignored', () => {
  test('each is an error saying what to do instead; the harmless ones stay warnings', () => {
    const text = `${MINIMAL}guardrails:
  - guardrail_name: pii
    litellm_params: { guardrail: presidio, mode: pre_call }
router_settings:
  enable_tag_filtering: true
litellm_settings:
  callbacks: [prometheus, presidio, hide_secrets]
  success_callback: [langfuse]
  default_key_generate_params: { max_budget: 10 }
  default_internal_user_params: { max_budget: 1 }
general_settings:
  enforce_rbac: true
`;
    const r = failed(text);
    const expected: Record<string, RegExp> = {
      guardrails: /runs no guardrails/,
      'router_settings.enable_tag_filtering': /does not route by tags/,
      'litellm_settings.callbacks': /^presidio, hide_secrets: LiteLLM guardrails/,
      'litellm_settings.default_key_generate_params': /no defaults/,
      'litellm_settings.default_internal_user_params': /no defaults/,
      'general_settings.enforce_rbac': /access-control/,
    };
    assert.deepEqual(r.issues.map((i) => i.path).sort(), Object.keys(expected).sort());
    for (const [p, m] of Object.entries(expected)) assert.match(at(r.issues, p).message, m, p);
  });

  test('a price by the second is refused unless it is 0; enforce_user_param and enforced_params are taken', () => {
    const priced = failed(`model_list:
  - model_name: x
    litellm_params: { model: hosted_vllm/foo, api_base: "http://v:8000/v1", input_cost_per_second: 0.001, output_cost_per_second: 0 }
    model_info: { output_cost_per_second: 0.002, input_cost_per_second: 0 }
`);
    assert.deepEqual(priced.issues.map((i) => i.path).sort(), [
      'model_list[0].litellm_params.input_cost_per_second',
      'model_list[0].model_info.output_cost_per_second',
    ]);
    const c = loaded(`${MINIMAL}general_settings:\n  enforce_user_param: true\n  enforced_params: [metadata.generation_name]\n`).config;
    assert.equal(c.general_settings.enforce_user_param, true);
    assert.deepEqual(c.general_settings.enforced_params, ['metadata.generation_name']);
  });
});

describe("LiteLLM's wildcard routes", () => {
  test('model_name "*" and a provider model ending in * are errors saying to list each model', () => {
    const r = failed(`model_list:
  - model_name: "*"
    litellm_params: { model: "hosted_vllm/*", api_base: "http://v:8000/v1" }
  - model_name: "llama/*"
    litellm_params: { model: "openai/meta-llama/*", api_base: "http://v:8000/v1" }
`);
    assert.deepEqual(r.issues.map((i) => i.path).sort(), [
      'model_list[0].litellm_params.model',
      'model_list[0].model_name',
      'model_list[1].litellm_params.model',
      'model_list[1].model_name',
    ]);
    for (const i of r.issues) assert.match(i.message, /wildcard route.*list each model/);
  });
});

describe("LiteLLM's response cache in Redis", () => {
  const CACHE = `${MINIMAL}litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: os.environ/REDIS_HOST
    port: 6379
`;
  test('without a Redis for limits, an error says to set general_settings.redis_url', () => {
    const r = failed(CACHE, { REDIS_HOST: 'cache' });
    assert.match(at(r.issues, 'litellm_settings.cache_params').message, /set general_settings\.redis_url/);
  });

  test('with one (redis_url, the router Redis or REDIS_URL) it is only ignored', () => {
    for (const [text, env] of [
      [`${CACHE}general_settings:\n  redis_url: redis://limits:6379\n`, {}],
      [`${CACHE}router_settings:\n  redis_host: limits\n`, {}],
      [CACHE, { REDIS_URL: 'redis://limits:6379' }],
    ] as const) {
      const { warnings } = loaded(text, env);
      assert.match(at(warnings, 'litellm_settings.cache_params').message, /does not cache responses/);
    }
  });
});

describe('budget resets: litellm_settings.timezone and budget_reset_time', () => {
  test("LiteLLM's settings load, and a zone or time it would not take is refused with what to write", () => {
    const { config, warnings } = loaded(`${MINIMAL}litellm_settings:\n  timezone: US/Eastern\n  budget_reset_time: "09:30"\n`);
    assert.deepEqual(config.litellm_settings, { timezone: 'US/Eastern', budget_reset_time: '09:30' });
    assert.deepEqual(warnings, []);
    const r = failed(`${MINIMAL}litellm_settings:\n  timezone: Mars/Olympus_Mons\n  budget_reset_time: 9am\n`);
    assert.match(at(r.issues, 'litellm_settings.timezone').message, /IANA zone name such as UTC, US\/Eastern/);
    assert.match(at(r.issues, 'litellm_settings.budget_reset_time').message, /24-hour "HH:MM"/);
  });
});

describe("a deployment's rpm and tpm, read where LiteLLM reads them (lowest_tpm_rpm_v2.py)", () => {
  const entry = (extra: string, params = '', info = ''): string => `model_list:
  - model_name: llama
${extra}    litellm_params:
      model: openai/llama
      api_base: http://vllm:8000/v1
${params}    model_info:
      id: a
${info}`;

  test('on the entry (load_balancer.yaml) and in model_info, they are the deployment limit, with no warning', () => {
    const a = loaded(entry('    tpm: 240000\n    rpm: 1800\n'));
    assert.deepEqual(a.warnings, []);
    const da = deploymentFromEntry(a.config.model_list[0]!, 0);
    assert.equal(da.tpm, 240000);
    assert.equal(da.rpm, 1800);
    const b = loaded(entry('', '', '      tpm: 50000\n      rpm: 60\n'));
    assert.deepEqual(b.warnings, []);
    const db = deploymentFromEntry(b.config.model_list[0]!, 0);
    assert.equal(db.tpm, 50000);
    assert.equal(db.rpm, 60);
  });

  test('the same value in two places is one limit; different values are an error naming both paths', () => {
    const same = loaded(entry('    tpm: 1000\n', '      tpm: 1000\n', '      tpm: 1000\n      rpm: 7\n')).config.model_list[0]!;
    assert.equal(deploymentFromEntry(same, 0).tpm, 1000);
    assert.equal(deploymentFromEntry(same, 0).rpm, 7);
    const text = entry('    tpm: 1000\n', '      tpm: 2000\n', '      rpm: 5\n      tpm: 3000\n');
    const r = failed(text);
    assert.deepEqual(r.issues.map((i) => i.path).sort(), ['model_list[0].litellm_params.tpm', 'model_list[0].model_info.tpm']);
    for (const i of r.issues) assert.match(i.message, /differs from model_list\[0\]\.tpm, which LiteLLM reads first/);
    assert.equal(at(r.issues, 'model_list[0].litellm_params.tpm').line, lineOf(text, 'tpm: 2000'));
  });

  test('a wrong value is reported where the file has it', () => {
    const text = entry('    rpm: many\n');
    const r = failed(text);
    assert.equal(at(r.issues, 'model_list[0].rpm').line, lineOf(text, 'rpm: many'));
    assert.equal(r.issues.length, 1);
  });
});

describe('credential_list and litellm_credential_name (LiteLLM centralized credential management)', () => {
  const CREDS = `credential_list:
  - credential_name: vllm_creds
    credential_values:
      api_key: os.environ/VLLM_API_KEY
      api_base: http://vllm:8000/v1
    credential_info:
      description: the vLLM pool
model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      litellm_credential_name: vllm_creds
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://vllm-b:8000/v1
      api_key: os.environ/OWN_KEY
      litellm_credential_name: vllm_creds
`;
  const ENV = { VLLM_API_KEY: 'vllm-secret-0123456789', OWN_KEY: 'own-secret-0123456789' };

  test("each deployment naming a credential takes its values, its own winning; the backend gets the credential's key", () => {
    const { config, warnings } = loaded(CREDS, ENV);
    assert.deepEqual(warnings, []);
    const [a, b] = config.model_list.map((e, i) => deploymentFromEntry(e, i));
    assert.equal(a?.apiKey, 'vllm-secret-0123456789');
    assert.equal(a?.apiBase, 'http://vllm:8000/v1');
    assert.equal(b?.apiKey, 'own-secret-0123456789');
    assert.equal(b?.apiBase, 'http://vllm-b:8000/v1');
    assert.equal(config.model_list[0]?.litellm_params.litellm_credential_name, undefined);
  });

  test('a name no credential has is an error naming it; so is a name given twice', () => {
    const text = `${CREDS.replace('litellm_credential_name: vllm_creds\n  - model_name', 'litellm_credential_name: vllm_cred\n  - model_name')}`;
    const r = failed(text, ENV);
    const i = at(r.issues, 'model_list[0].litellm_params.litellm_credential_name');
    assert.match(
      i.message,
      /no credential_list entry is named "vllm_cred", so this deployment would reach its backend without its credentials/,
    );
    // The first line naming it is model_list[0]'s, the one misspelt.
    assert.equal(i.line, lineOf(text, 'litellm_credential_name: vllm_cred'));
    const twice = failed(CREDS.replace('model_list:', '  - credential_name: vllm_creds\n    credential_values: {}\nmodel_list:'), ENV);
    assert.match(at(twice.issues, 'credential_list[1].credential_name').message, /a second credential named "vllm_creds"/);
  });

  test('os.environ/ references resolve as elsewhere; an error is reported once, where the credential has it, never echoing a secret', () => {
    const unset = failed(CREDS, { OWN_KEY: 'own-secret-0123456789' });
    assert.deepEqual(
      unset.issues.map((i) => [i.path, i.message]),
      [['credential_list[0].credential_values.api_key', 'environment variable VLLM_API_KEY is not set']],
    );
    const text = CREDS.replace('api_base: http://vllm:8000/v1', 'api_base: vllm-secret-0123456789');
    const bad = failed(text, ENV);
    assert.deepEqual(
      bad.issues.map((i) => i.path),
      ['credential_list[0].credential_values.api_base'],
    );
    assert.equal(bad.issues[0]?.line, lineOf(text, 'api_base: vllm-secret'));
    assert.ok(!JSON.stringify([...unset.issues, ...bad.issues]).includes('secret-0123456789'));
  });

  test('LiteLLM-only credential values warn; a key neither reads is an error at the credential', () => {
    const { warnings } = loaded(
      CREDS.replace('      api_base: http://vllm:8000/v1\n', '      api_base: http://vllm:8000/v1\n      api_version: "2024-06-01"\n'),
      ENV,
    );
    assert.deepEqual(
      warnings.map((w) => w.path),
      ['credential_list[0].credential_values.api_version'],
    );
    const r = failed(
      CREDS.replace('      api_base: http://vllm:8000/v1\n', '      api_base: http://vllm:8000/v1\n      api_kee: x\n'),
      ENV,
    );
    assert.deepEqual(
      r.issues.map((i) => i.path),
      ['credential_list[0].credential_values.api_kee'],
    );
  });
});

describe('router settings with a consequence tollgate must keep', () => {
  test('disable_cooldowns: true is cooldown_time: 0; false changes nothing; beside another cooldown_time it is an error', () => {
    const on = loaded(`${MINIMAL}router_settings:\n  disable_cooldowns: true\n`);
    assert.equal(on.config.router_settings.cooldown_time, 0);
    assert.deepEqual(on.warnings, []);
    const off = loaded(`${MINIMAL}router_settings:\n  disable_cooldowns: false\n  cooldown_time: 30\n`);
    assert.equal(off.config.router_settings.cooldown_time, 30);
    assert.deepEqual(off.warnings, []);
    assert.equal(
      loaded(`${MINIMAL}router_settings:\n  disable_cooldowns: true\n  cooldown_time: 0\n`).config.router_settings.cooldown_time,
      0,
    );
    const both = failed(`${MINIMAL}router_settings:\n  disable_cooldowns: true\n  cooldown_time: 30\n`);
    assert.match(at(both.issues, 'router_settings.disable_cooldowns').message, /router_settings\.cooldown_time is set too/);
    const moved = failed(`${MINIMAL}litellm_settings:\n  cooldown_time: 30\nrouter_settings:\n  disable_cooldowns: true\n`);
    assert.match(at(moved.issues, 'router_settings.disable_cooldowns').message, /litellm_settings\.cooldown_time is set too/);
  });

  test('provider_budget_config and disable_reset_budget: true are budgets tollgate does not enforce: errors saying what to use', () => {
    const text = `${MINIMAL}router_settings:
  provider_budget_config:
    openai:
      budget_limit: 100
      time_period: 1d
general_settings:
  disable_reset_budget: true
`;
    const r = failed(text);
    assert.deepEqual(r.issues.map((i) => i.path).sort(), [
      'general_settings.disable_reset_budget',
      'router_settings.provider_budget_config',
    ]);
    assert.match(
      at(r.issues, 'router_settings.provider_budget_config').message,
      /max_budget .* on keys\[\], teams\[\] or users\[\].*remove this/,
    );
    assert.match(at(r.issues, 'general_settings.disable_reset_budget').message, /leave budget_duration out.*remove this/);
    assert.equal(at(r.issues, 'general_settings.disable_reset_budget').line, lineOf(text, 'disable_reset_budget'));
    // Off, or empty, they ask for nothing.
    loaded(`${MINIMAL}router_settings:\n  provider_budget_config: {}\ngeneral_settings:\n  disable_reset_budget: false\n`);
  });

  test('model_group_alias: each alias is an error saying clients would get 404 and how to serve the name', () => {
    const text = `${MINIMAL}router_settings:
  model_group_alias:
    gpt-4: llama
    gpt-4o: {model: llama, hidden: true}
`;
    const r = failed(text);
    assert.deepEqual(
      r.issues.map((i) => i.path),
      ['router_settings.model_group_alias.gpt-4', 'router_settings.model_group_alias.gpt-4o'],
    );
    const i = at(r.issues, 'router_settings.model_group_alias.gpt-4o');
    assert.match(i.message, /a client sending "gpt-4o" would get 404 model_not_found/);
    assert.match(i.message, /model_list entry with model_name: gpt-4o and the litellm_params of each "llama" deployment/);
    assert.match(i.message, /keys\[\]\.models, teams\[\]\.models or policy rules/);
    assert.equal(i.line, lineOf(text, 'gpt-4o:'));
  });

  test('litellm_settings.model_alias_map: the same second names, refused the same way; empty, only ignored', () => {
    const text = `${MINIMAL}litellm_settings:
  model_alias_map:
    gpt-3.5-turbo: llama
`;
    const r = failed(text);
    assert.deepEqual(
      r.issues.map((i) => i.path),
      ['litellm_settings.model_alias_map.gpt-3.5-turbo'],
    );
    assert.match(at(r.issues, 'litellm_settings.model_alias_map.gpt-3.5-turbo').message, /"gpt-3\.5-turbo" would get 404 model_not_found/);
    loaded(`${MINIMAL}litellm_settings:
  model_alias_map: {}
`);
  });
});

describe('config check --config F', () => {
  test('takes the file as --config, as every other command does, and as an argument', async () => {
    writeFileSync(file('flag.yaml'), `${MINIMAL}router_settings:\n  model_group_alias: {gpt-4: llama}\n`);
    for (const args of [
      ['config', 'check', '--config', file('flag.yaml')],
      ['config', 'check', `--config=${file('flag.yaml')}`],
      ['config', 'check', file('flag.yaml')],
    ]) {
      const out: string[] = [];
      const io: Io = { out: (l) => out.push(l), err: (l) => out.push(l) };
      assert.equal(await main(args, io, {}), 1, args.join(' '));
      assert.match(out.join('\n'), /model_group_alias\.gpt-4: tollgate has no model group aliases/, args.join(' '));
    }
    for (const args of [
      ['config', 'check', '--config'],
      ['config', 'check', '--config', file('flag.yaml'), file('flag.yaml')],
      ['config', 'check', '--conf', file('flag.yaml')],
    ]) {
      const out: string[] = [];
      const io: Io = { out: (l) => out.push(l), err: (l) => out.push(l) };
      assert.equal(await main(args, io, {}), 1, args.join(' '));
      assert.match(out.join('\n'), /^usage: tollgate config check FILE \(or --config FILE\)/, args.join(' '));
    }
  });
});
