/**
 * The config loader (CONTRACT.md, "Configuration"): LiteLLM keys accepted as they are, os.environ/
 * references, defaults, and every error reported with its YAML path and line, all in one result.
 */
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfigText, type LoadResult } from '../../../src/config/load.js';
import { ConfigError, type ConfigIssue } from '../../../src/config/issues.js';
import { DEFAULT_MAX_PARALLEL_REQUESTS, type Config } from '../../../src/config/schema.js';
import { composeCatalog } from '../../../src/main/catalog.js';
import { ModelCatalog } from '../../../src/routing/deployments.js';
import type { StoredModel } from '../../../src/store/records.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { Policy } from '../../../src/policy/rules.js';

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

const MASTER_KEY = 'sk-master-0123456789abcdefABCDEF';
const VLLM_API_KEY = 'vllm-secret-token-7f3a9c';
const DATABASE_URL = 'postgres://tollgate:db-pass-51e2@db.internal:5432/tollgate';
const REDIS_URL = 'redis://:redis-pass-9d0c@redis.internal:6379';
const CI_KEY = 'sk-ci-bot-key-3b8e2f1a';
const DECLARED_KEY = 'sk-declared-key-0001';

const ENV = {
  VLLM_API_KEY,
  TOLLGATE_MASTER_KEY: MASTER_KEY,
  DATABASE_URL,
  REDIS_URL,
  CI_BOT_KEY: CI_KEY,
} as const;

/** The contract's example config, completed so every reference resolves. */
const FULL = `model_list:
  - model_name: llama-3.1-8b
    litellm_params:
      model: openai/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://vllm-llama:8000/v1
      api_key: os.environ/VLLM_API_KEY
      rpm: 600
      tpm: 1000000
      weight: 1
      timeout: 600
      stream_timeout: 60
    model_info:
      id: llama-a
      input_cost_per_token: 1.0e-7
      output_cost_per_token: 2.0e-7
  - model_name: qwen3-8b
    litellm_params:
      model: hosted_vllm/Qwen/Qwen3-8B
      api_base: https://vllm-qwen.models.svc/v1
    model_info:
      id: qwen-a
      mode: chat
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  fallbacks: [{ llama-3.1-8b: [qwen3-8b] }]
  allowed_fails: 3
  cooldown_time: 30
general_settings:
  master_key: os.environ/TOLLGATE_MASTER_KEY
  database_url: os.environ/DATABASE_URL
  data_dir: ./.tollgate
  redis_url: os.environ/REDIS_URL
  failure_mode: closed
  allowed_api_bases: [vllm-*.models.svc, 127.0.0.1]
  default_max_tokens: 4096
auth:
  jwt:
    header: x-cake-authorization
    issuer: https://idp.example.com/realms/cake
    audience: https://tollgate.internal
    jwks_uri: https://idp.example.com/realms/cake/protocol/openid-connect/certs
    algorithms: [RS256, ES256]
    clock_tolerance_s: 30
    allow_insecure_http: false
    claims: { user: sub, email: email, groups: groups }
    required: true
  admin_groups: [platform-admins]
  keys:
    required: true
policy:
  rules:
    - name: guests-small-models-only
      when: "'guests' in jwt.groups && !model.startsWith('llama-3.1-8b')"
      deny: guests may only use the 8B model
keys:
  - key: sha256:${sha256(DECLARED_KEY)}
    key_alias: declared
    models: [llama-3.1-8b]
    max_budget: 10.0
    budget_duration: 30d
    rpm_limit: 60
    tpm_limit: 100000
    max_parallel_requests: 4
    user_id: ci
    team_id: platform
    expires: 2027-01-01T00:00:00Z
    metadata: { owner: platform-team }
  - key: os.environ/CI_BOT_KEY
    key_alias: ci-bot
teams:
  - team_id: platform
    models: [llama-3.1-8b, qwen3-8b]
    max_budget: 500
    budget_duration: mo
    rpm_limit: 1000
    tpm_limit: 5000000
`;

/** A small valid file that error cases extend. */
const MINIMAL = `model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://127.0.0.1:8000/v1
`;

/** 1-based line of the first line containing `needle`. */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  assert.notEqual(i, -1, `test bug: ${JSON.stringify(needle)} is not in the YAML`);
  return i + 1;
}

function loaded(text: string, env: Record<string, string> = {}): Config {
  const r = loadConfigText(text, env);
  assert.deepEqual(r.issues, [], 'expected no issues');
  assert.ok(r.config, 'expected a config');
  return r.config;
}

function failed(text: string, env: Record<string, string> = {}): LoadResult {
  const r = loadConfigText(text, env);
  assert.equal(r.config, undefined, 'expected no config');
  assert.ok(r.issues.length > 0, 'expected issues');
  return r;
}

function issueAt(issues: readonly ConfigIssue[], path: string): ConfigIssue {
  const found = issues.find((i) => i.path === path);
  assert.ok(found, `no issue at ${path}; got ${JSON.stringify(issues)}`);
  return found;
}

/** Asserts one issue at `path`, on the line holding `needle`, whose message matches `message`. */
function assertIssue(text: string, issues: readonly ConfigIssue[], path: string, needle: string, message?: RegExp): ConfigIssue {
  const issue = issueAt(issues, path);
  assert.equal(issue.line, lineOf(text, needle), `line of ${path}: ${JSON.stringify(issue)}`);
  assert.equal(typeof issue.column, 'number', `column of ${path}`);
  if (message) assert.match(issue.message, message);
  return issue;
}

/** prepareConfigText's issues (schema and CEL), or a failure if it accepted the text. */
function prepareIssues(text: string, env: Record<string, string> = {}): readonly ConfigIssue[] {
  try {
    prepareConfigText(text, 'test.yaml', env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.issues;
  }
  assert.fail('expected a ConfigError');
}

/** The warnings but the one every config without credentials gets (tested on its own below). */
function besideNoCredentials(r: LoadResult): readonly ConfigIssue[] {
  return r.warnings.filter((w) => !w.message.startsWith('nothing can be authorized'));
}

function assertDeepFrozen(v: unknown, path = 'config'): void {
  if (typeof v !== 'object' || v === null) return;
  assert.ok(Object.isFrozen(v), `${path} is not frozen`);
  for (const [k, x] of Object.entries(v)) assertDeepFrozen(x, `${path}.${k}`);
}

function assertNoSecret(r: LoadResult | readonly ConfigIssue[], secrets: readonly string[]): void {
  const all = Array.isArray(r) ? r : [...(r as LoadResult).issues, ...(r as LoadResult).warnings];
  const text = JSON.stringify(all);
  for (const s of secrets) assert.ok(!text.includes(s), `a secret value appears in an issue: ${text}`);
}

describe('loadConfigText: a full valid config', () => {
  test('the contract example loads with env references resolved', () => {
    const r = loadConfigText(FULL, ENV);
    assert.deepEqual(r.issues, []);
    assert.deepEqual(r.warnings, []);
    const c = r.config;
    assert.ok(c);
    assert.equal(c.model_list.length, 2);
    const [llama, qwen] = c.model_list;
    assert.ok(llama && qwen);
    assert.equal(llama.model_name, 'llama-3.1-8b');
    assert.equal(llama.litellm_params.model, 'openai/meta-llama/Llama-3.1-8B-Instruct');
    assert.equal(llama.litellm_params.api_key, VLLM_API_KEY);
    assert.equal(llama.litellm_params.rpm, 600);
    assert.equal(llama.litellm_params.stream_timeout, 60);
    assert.equal(llama.model_info.id, 'llama-a');
    assert.equal(llama.model_info.input_cost_per_token, 1e-7);
    assert.equal(qwen.model_info.mode, 'chat');
    assert.deepEqual(c.router_settings.fallbacks, [{ 'llama-3.1-8b': ['qwen3-8b'] }]);
    assert.equal(c.general_settings.master_key, MASTER_KEY);
    assert.equal(c.general_settings.database_url, DATABASE_URL);
    assert.equal(c.general_settings.redis_url, REDIS_URL);
    assert.deepEqual(c.general_settings.allowed_api_bases, ['vllm-*.models.svc', '127.0.0.1']);
    assert.deepEqual(c.auth.jwt?.algorithms, ['RS256', 'ES256']);
    assert.deepEqual(c.auth.admin_groups, ['platform-admins']);
    assert.equal(c.policy.rules.length, 1);
    assert.equal(c.keys.length, 2);
    assert.equal(c.keys[0]?.key, `sha256:${sha256(DECLARED_KEY)}`);
    assert.equal(c.keys[0]?.expires, '2027-01-01T00:00:00Z');
    assert.deepEqual(c.keys[0]?.metadata, { owner: 'platform-team' });
    assert.equal(c.teams[0]?.budget_duration, 'mo');
  });

  test('prepareConfigText accepts it and compiles its policy', () => {
    const p = prepareConfigText(FULL, 'full.yaml', ENV);
    assert.equal(p.source, 'full.yaml');
    assert.equal(p.policy.size, 1);
    assert.deepEqual(p.warnings, []);
  });

  test('defaults are applied', () => {
    const c = loaded(`${MINIMAL}auth:
  jwt:
    issuer: https://idp.example.com
    audience: tollgate
keys:
  - key: sha256:${sha256(DECLARED_KEY)}
`);
    assert.equal(c.router_settings.routing_strategy, 'simple-shuffle');
    assert.equal(c.general_settings.failure_mode, 'closed');
    assert.deepEqual(c.general_settings.allowed_api_bases, []);
    assert.equal(c.general_settings.default_max_tokens, 4096);
    assert.equal(c.auth.jwt?.required, true);
    assert.equal(c.auth.jwt?.header, 'x-cake-authorization');
    assert.deepEqual(c.auth.jwt?.claims, { user: 'sub', email: 'email', groups: 'groups' });
    assert.deepEqual(c.auth.jwt?.algorithms, ['RS256']);
    assert.equal(c.auth.jwt?.allow_insecure_http, false);
    assert.equal(c.auth.keys.required, true);
    assert.equal(c.model_list[0]?.litellm_params.weight, 1);
    assert.deepEqual(c.keys[0]?.models, []);
    assert.equal(c.keys[0]?.blocked, false);
    assert.deepEqual(c.policy.rules, []);
  });

  test('partial claims get the other claim defaults', () => {
    const c = loaded(`auth:
  jwt:
    issuer: https://idp.example.com
    audience: tollgate
    claims: { user: preferred_username }
`);
    assert.deepEqual(c.auth.jwt?.claims, { user: 'preferred_username', email: 'email', groups: 'groups' });
  });

  test('the token in Authorization is accepted when keys are not required (a JWT-only gateway)', () => {
    const c = loaded(`${JWT('    header: authorization\n')}  keys: { required: false }\n`);
    assert.equal(c.auth.jwt?.header, 'authorization');
  });

  test('an empty file is a valid config with every default', () => {
    const c = loaded('');
    assert.deepEqual(c.model_list, []);
    assert.equal(c.router_settings.routing_strategy, 'simple-shuffle');
    assert.equal(c.general_settings.failure_mode, 'closed');
    assert.equal(c.auth.keys.required, true);
    assert.equal(c.auth.jwt, undefined);
  });

  test('the result is deep-frozen', () => {
    const c = loaded(FULL, ENV);
    assertDeepFrozen(c);
    assert.throws(() => {
      (c.general_settings as unknown as Record<string, unknown>)['failure_mode'] = 'open';
    }, TypeError);
    assert.throws(() => {
      (c.model_list as unknown as unknown[]).push({});
    }, TypeError);
    assert.throws(() => {
      (c.keys[0]?.metadata as Record<string, unknown>)['owner'] = 'someone';
    }, TypeError);
  });
});

describe('loadConfigText: os.environ/ references', () => {
  test('a reference anywhere is replaced by the variable', () => {
    const c = loaded(
      `${MINIMAL}      api_key: os.environ/K
router_settings:
  routing_strategy: os.environ/STRATEGY
`,
      { K: 'abc', STRATEGY: 'least-busy' },
    );
    assert.equal(c.model_list[0]?.litellm_params.api_key, 'abc');
    assert.equal(c.router_settings.routing_strategy, 'least-busy');
  });

  test('a missing variable is an issue naming the variable and the YAML path, on its line', () => {
    const text = `${MINIMAL}      api_key: os.environ/MISSING_VLLM_KEY
general_settings:
  master_key: os.environ/MISSING_MASTER
`;
    const r = failed(text);
    const a = assertIssue(text, r.issues, 'model_list[0].litellm_params.api_key', 'MISSING_VLLM_KEY');
    assert.match(a.message, /MISSING_VLLM_KEY/);
    const b = assertIssue(text, r.issues, 'general_settings.master_key', 'MISSING_MASTER');
    assert.match(b.message, /MISSING_MASTER/);
    assert.equal(r.issues.filter((i) => i.path === 'general_settings.master_key').length, 1, 'reported once');
  });

  test('an empty variable counts as missing', () => {
    const text = `general_settings:\n  master_key: os.environ/MK\n`;
    const r = failed(text, { MK: '' });
    assertIssue(text, r.issues, 'general_settings.master_key', 'MK', /MK/);
  });

  test('os.environ/ without a valid variable name is an issue', () => {
    const text = `${MINIMAL}      api_key: os.environ/not a name\n`;
    const r = failed(text);
    assertIssue(text, r.issues, 'model_list[0].litellm_params.api_key', 'os.environ/not a name', /environment variable name/);
  });

  test('environment_variables supplies values for references', () => {
    const text = `environment_variables:
  MK: ${MASTER_KEY}
  VLLM_KEY: from-the-file
${MINIMAL}      api_key: os.environ/VLLM_KEY
general_settings:
  master_key: os.environ/MK
`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.equal(r.config?.general_settings.master_key, MASTER_KEY);
    assert.equal(r.config?.model_list[0]?.litellm_params.api_key, 'from-the-file');
    assert.equal((r.config as unknown as Record<string, unknown>)['environment_variables'], undefined, 'not kept in the config');
  });

  test('the real environment wins over environment_variables', () => {
    const text = `environment_variables:\n  VLLM_KEY: from-the-file\n${MINIMAL}      api_key: os.environ/VLLM_KEY\n`;
    const c = loaded(text, { VLLM_KEY: 'from-the-env' });
    assert.equal(c.model_list[0]?.litellm_params.api_key, 'from-the-env');
  });

  test('the value of a resolved variable never appears in an issue or warning', () => {
    const secret = 'Super Secret:Value/42!';
    const text = `general_settings:
  database_url: os.environ/S
  redis_url: os.environ/S
  master_key: os.environ/S
  context_signing_key: os.environ/S
  failure_mode: os.environ/S
  default_max_tokens: os.environ/S
  alerting: [slack]
auth:
  jwt:
    issuer: os.environ/S
    audience: a
    jwks_uri: os.environ/S
    algorithms: [os.environ/S]
    header: os.environ/S
    clock_tolerance_s: os.environ/S
model_list:
  - model_name: a
    litellm_params: {model: os.environ/S, api_base: os.environ/S, api_key: os.environ/S, rpm: os.environ/S, max_retries: 1}
    model_info: {id: os.environ/S, mode: os.environ/S}
keys:
  - key: os.environ/S
    expires: os.environ/S
    budget_duration: os.environ/S
    team_id: os.environ/S
teams:
  - team_id: t
    budget_duration: os.environ/S
router_settings: {routing_strategy: os.environ/S}
`;
    const r = failed(text, { S: secret });
    assert.ok(r.issues.length >= 15, `expected an issue per bad field, got ${r.issues.length}`);
    assertNoSecret(r, [secret]);
  });

  test('valid secrets do not appear in the issues of a file with other errors', () => {
    const text = `${FULL}unknown_section: 1\n`;
    const r = failed(text, ENV);
    issueAt(r.issues, 'unknown_section');
    assertNoSecret(r, Object.values(ENV));
    assertNoSecret(r, [sha256(CI_KEY)]);
  });

  test('a secret that is almost a valid value does not appear either', () => {
    const secrets = { MK: 'sk-short-9', DB: 'mysql://u:pw-7788@h/db', K: 'notsk-3e3e3e3e3e', CSK: 'short-signing-key-4455' };
    const text = `general_settings:
  master_key: os.environ/MK
  database_url: os.environ/DB
  context_signing_key: os.environ/CSK
keys:
  - key: os.environ/K
`;
    const r = failed(text, secrets);
    assert.equal(r.issues.length, 4);
    assertNoSecret(r, Object.values(secrets));
  });
});

describe('loadConfigText: LiteLLM compatibility', () => {
  test('LiteLLM-only keys are warnings with their path and line, not errors', () => {
    const text = `${MINIMAL}      max_retries: 3
    model_info:
      mode: chat
      base_model: llama
      supports_vision: true
general_settings:
  alerting: [slack]
litellm_settings:
  drop_params: true
  set_verbose: false
router_settings:
  redis_db: 0
callback_settings: {}
`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.ok(r.config);
    const paths = besideNoCredentials(r)
      .map((w) => w.path)
      .sort();
    assert.deepEqual(paths, [
      'callback_settings',
      'general_settings.alerting',
      'litellm_settings.drop_params',
      'litellm_settings.set_verbose',
      'model_list[0].litellm_params.max_retries',
      // model_info.supports_vision is information (LiteLLM's ModelInfo is extra="allow"): accepted quietly.
      'router_settings.redis_db',
    ]);
    assertIssue(text, r.warnings, 'general_settings.alerting', 'alerting:');
    assertIssue(text, r.warnings, 'litellm_settings.drop_params', 'drop_params:');
    assertIssue(text, r.warnings, 'model_list[0].litellm_params.max_retries', 'max_retries:');
    assert.equal(r.config.model_list[0]?.model_info.mode, 'chat', 'model_info.mode is ours');
    assert.equal(r.config.model_list[0]?.model_info.base_model, 'llama', 'model_info.base_model is ours');
    assert.equal(r.config.litellm_settings, undefined);
  });

  test("litellm_params.order (and model_info.order, where LiteLLM's API keeps it) is read, not set aside with a warning", () => {
    const text = `${MINIMAL}      order: 2
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:8001/v1" }
    model_info: { order: 1 }
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:8002/v1", order: 3 }
    model_info: { order: 1 }
`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.deepEqual(besideNoCredentials(r), []);
    assert.deepEqual(
      r.config?.model_list.map((m) => [m.litellm_params.order, m.model_info.order]),
      [
        [2, undefined],
        [undefined, 1],
        [3, 1],
      ],
    );
    const catalog = ModelCatalog.fromConfig(r.config?.model_list ?? []);
    assert.deepEqual(
      catalog.group('llama')?.deployments.map((d) => d.order),
      [2, 1, 3],
      'litellm_params.order wins over model_info.order',
    );
  });

  test('litellm_settings.num_retries, fallbacks and request_timeout move to router_settings', () => {
    const text = `${MINIMAL}  - model_name: other
    litellm_params: { model: openai/other, api_base: 'http://127.0.0.1:8001/v1' }
litellm_settings:
  num_retries: 5
  fallbacks: [{ llama: [other] }]
  request_timeout: 30
`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.deepEqual(besideNoCredentials(r), []);
    assert.equal(r.config?.router_settings.num_retries, 5);
    assert.deepEqual(r.config?.router_settings.fallbacks, [{ llama: ['other'] }]);
    assert.equal(r.config?.router_settings.timeout, 30);
    assert.equal(r.config?.router_settings.routing_strategy, 'simple-shuffle', 'router defaults still apply');
  });

  test('router_settings wins over the same litellm_settings key', () => {
    const c = loaded(`router_settings:\n  num_retries: 1\nlitellm_settings:\n  num_retries: 5\n`);
    assert.equal(c.router_settings.num_retries, 1);
  });

  test('a bad value moved from litellm_settings is reported where it was written', () => {
    const text = `${MINIMAL}litellm_settings:\n  num_retries: -1\n`;
    const r = failed(text);
    assertIssue(text, r.issues, 'litellm_settings.num_retries', 'num_retries: -1');
  });

  test("LiteLLM's router Redis (router_settings.redis_host, redis_port, redis_password) is tollgate's redis_url", () => {
    const text = `router_settings:
  redis_host: os.environ/REDIS_HOST
  redis_port: os.environ/REDIS_PORT
  redis_password: os.environ/REDIS_PASSWORD
`;
    const r = loadConfigText(text, { REDIS_HOST: 'redis.cache.svc', REDIS_PORT: '6380', REDIS_PASSWORD: 'p@ss/w:rd' });
    assert.deepEqual(r.issues, []);
    assert.deepEqual(besideNoCredentials(r), []);
    assert.equal(r.config?.general_settings.redis_url, 'redis://:p%40ss%2Fw%3Ard@redis.cache.svc:6380');
    // An empty password variable is no password; the port defaults to 6379; a database number is the path.
    const bare = loaded('router_settings:\n  redis_host: 10.0.0.7\n  redis_password: os.environ/REDIS_PASSWORD\n  redis_db: 2\n', {
      REDIS_PASSWORD: '',
    });
    assert.equal(bare.general_settings.redis_url, 'redis://10.0.0.7:6379/2');
    assert.equal(loaded('router_settings:\n  redis_host: "::1"\n').general_settings.redis_url, 'redis://[::1]:6379');
    assert.equal(loaded('router_settings:\n  redis_url: rediss://r:6379\n').general_settings.redis_url, 'rediss://r:6379');
  });

  test("REDIS_URL set beside the router's Redis: the config's is used, and the warning says so", () => {
    const r = loadConfigText('router_settings:\n  redis_host: valkey\n', { REDIS_URL: 'redis://elsewhere:6379' });
    assert.deepEqual(r.issues, []);
    assert.equal(r.config?.general_settings.redis_url, 'redis://valkey:6379');
    assert.match(issueAt(r.warnings, 'router_settings.redis_host').message, /REDIS_URL is set too/);
  });

  test("general_settings.redis_url wins over the router's Redis, which is reported as ignored", () => {
    const text = 'general_settings:\n  redis_url: redis://mine:6379\nrouter_settings:\n  redis_host: theirs\n  redis_port: 6380\n';
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.equal(r.config?.general_settings.redis_url, 'redis://mine:6379');
    assert.deepEqual(
      besideNoCredentials(r).map((w) => w.path),
      ['router_settings.redis_host', 'router_settings.redis_port'],
    );
    assertIssue(text, r.warnings, 'router_settings.redis_port', 'redis_port: 6380', /redis_url is set/);
  });

  test("a bad part of the router's Redis is an error naming it, without its value", () => {
    const cases: [string, string, string][] = [
      ['router_settings:\n  redis_host: r\n  redis_port: 99999\n', 'router_settings.redis_port', 'redis_port: 99999'],
      ['router_settings:\n  redis_host: r\n  redis_port: six\n', 'router_settings.redis_port', 'redis_port: six'],
      ['router_settings:\n  redis_host: "r/x"\n', 'router_settings.redis_host', 'redis_host:'],
      // A port written into the host is not taken for an IPv6 address.
      ['router_settings:\n  redis_host: "redis:6380"\n', 'router_settings.redis_host', 'redis_host:'],
      ['router_settings:\n  redis_host: r\n  redis_password: [s3cret-pw]\n', 'router_settings.redis_password', 'redis_password:'],
      ['router_settings:\n  redis_url: http://r:6379\n', 'router_settings.redis_url', 'redis_url:'],
    ];
    for (const [text, path, line] of cases) {
      const r = failed(text);
      assertIssue(text, r.issues, path, line);
      assert.ok(!JSON.stringify(r.issues).includes('s3cret-pw'), 'a password is never echoed');
    }
    const unset = failed('router_settings:\n  redis_host: os.environ/NO_SUCH_REDIS_HOST\n');
    issueAt(unset.issues, 'router_settings.redis_host');
  });

  test('a key neither LiteLLM nor tollgate knows is an error, also inside litellm_settings', () => {
    const text = `litellm_settings:\n  drop_parms: true\n`;
    const r = failed(text);
    assertIssue(text, r.issues, 'litellm_settings.drop_parms', 'drop_parms', /unknown key/);
  });
});

describe('loadConfigText: declared keys', () => {
  test('os.environ/ holding an sk- key is hashed; the key itself is nowhere in the config', () => {
    const c = loaded(`keys:\n  - key: os.environ/CI_BOT_KEY\n`, { CI_BOT_KEY: CI_KEY });
    assert.equal(c.keys[0]?.key, `sha256:${sha256(CI_KEY)}`);
    assert.ok(!JSON.stringify(c).includes(CI_KEY));
  });

  test('a sha256: hash is kept, in lower case', () => {
    const hex = sha256(DECLARED_KEY);
    const c = loaded(`keys:\n  - key: SHA256:${hex.toUpperCase()}\n`);
    assert.equal(c.keys[0]?.key, `sha256:${hex}`);
  });

  test('a clear-text sk- key in keys[] is refused without echoing it', () => {
    const text = `${MINIMAL}keys:\n  - key: ${CI_KEY}\n`;
    const r = failed(text);
    assertIssue(text, r.issues, 'keys[0].key', CI_KEY, /clear text/);
    assertNoSecret(r, [CI_KEY]);
  });

  test('a variable holding something other than an sk- key is refused without echoing it', () => {
    const text = `keys:\n  - key: os.environ/K\n`;
    const r = failed(text, { K: 'hunter2-not-a-key' });
    assertIssue(text, r.issues, 'keys[0].key', 'os.environ/K', /\bK\b.*sk-/);
    assertNoSecret(r, ['hunter2-not-a-key']);
  });

  test('a value that is neither a hash nor a reference is refused', () => {
    const text = `keys:\n  - key: sha256:1234\n`;
    const r = failed(text);
    assertIssue(text, r.issues, 'keys[0].key', 'sha256:1234', /sha256:<hex>/);
  });

  test('the same key declared twice (once hashed, once from the environment) is a duplicate', () => {
    const text = `keys:\n  - key: sha256:${sha256(CI_KEY)}\n  - key: os.environ/K\n`;
    const r = failed(text, { K: CI_KEY });
    assertIssue(text, r.issues, 'keys[1].key', 'os.environ/K', /twice/);
  });
});

interface ErrorCase {
  readonly name: string;
  readonly text: string;
  readonly env?: Record<string, string>;
  readonly path: string;
  /** Text on the line the issue must point at. */
  readonly line: string;
  readonly message?: RegExp;
}

const JWT = (extra: string): string => `auth:
  jwt:
    issuer: https://idp.example.com
    audience: tollgate
${extra}`;

const ERROR_CASES: readonly ErrorCase[] = [
  {
    name: 'unknown key (typo weigth)',
    text: `${MINIMAL}      weigth: 2\n`,
    path: 'model_list[0].litellm_params.weigth',
    line: 'weigth',
    message: /unknown key/,
  },
  {
    name: 'a body limit past 1 GiB (Envoy counts max_request_bytes in 32 bits)',
    text: `${MINIMAL}general_settings:\n  max_request_size_mb: 5000\n`,
    path: 'general_settings.max_request_size_mb',
    line: 'max_request_size_mb',
    message: /1024/,
  },
  ...(
    [
      ['0', /1 or more/],
      ['-1', /1 or more/],
      ['1.5', /whole number/],
      ['primary', /whole number/],
    ] as const
  ).map(([value, message]) => ({
    name: `litellm_params.order: ${value} is not an order`,
    text: `${MINIMAL}      order: ${value}\n`,
    path: 'model_list[0].litellm_params.order',
    line: 'order:',
    message,
  })),
  { name: 'unknown top-level key', text: `${MINIMAL}model_lists: []\n`, path: 'model_lists', line: 'model_lists', message: /unknown key/ },
  {
    name: 'bad URL',
    text: MINIMAL.replace('http://127.0.0.1:8000/v1', 'vllm-llama:8000'),
    path: 'model_list[0].litellm_params.api_base',
    line: 'api_base',
    message: /URL/,
  },
  {
    name: 'non-http URL',
    text: MINIMAL.replace('http://127.0.0.1:8000/v1', 'ftp://vllm/v1'),
    path: 'model_list[0].litellm_params.api_base',
    line: 'api_base',
    message: /URL/,
  },
  {
    name: 'unsupported provider',
    text: MINIMAL.replace('openai/llama', 'bedrock/x'),
    path: 'model_list[0].litellm_params.model',
    line: 'bedrock/x',
    message: /openai\//,
  },
  {
    name: 'bad enum (routing_strategy)',
    text: `${MINIMAL}router_settings:\n  routing_strategy: fastest\n`,
    path: 'router_settings.routing_strategy',
    line: 'fastest',
    message: /simple-shuffle/,
  },
  {
    name: 'bad enum (failure_mode)',
    text: `general_settings:\n  failure_mode: maybe\n`,
    path: 'general_settings.failure_mode',
    line: 'maybe',
    message: /closed/,
  },
  {
    name: 'non-integer rpm',
    text: `${MINIMAL}      rpm: 1.5\n`,
    path: 'model_list[0].litellm_params.rpm',
    line: 'rpm: 1.5',
    message: /int/,
  },
  { name: 'string rpm', text: `${MINIMAL}      rpm: lots\n`, path: 'model_list[0].litellm_params.rpm', line: 'rpm: lots' },
  {
    name: 'negative price',
    text: `${MINIMAL}    model_info:\n      input_cost_per_token: -0.1\n`,
    path: 'model_list[0].model_info.input_cost_per_token',
    line: '-0.1',
  },
  {
    name: 'negative key budget',
    text: `keys:\n  - key: sha256:${sha256(DECLARED_KEY)}\n    max_budget: -5\n`,
    path: 'keys[0].max_budget',
    line: 'max_budget',
  },
  {
    name: 'bad duration',
    text: `teams:\n  - team_id: t\n    budget_duration: 3y\n`,
    path: 'teams[0].budget_duration',
    line: '3y',
    message: /duration/,
  },
  {
    name: 'bad date',
    text: `keys:\n  - key: sha256:${sha256(DECLARED_KEY)}\n    expires: next tuesday\n`,
    path: 'keys[0].expires',
    line: 'next tuesday',
    message: /date/,
  },
  {
    name: 'too-short master key',
    text: `general_settings:\n  master_key: sk-1234\n`,
    path: 'general_settings.master_key',
    line: 'master_key',
    message: /short/,
  },
  {
    name: 'master key without sk-',
    text: `general_settings:\n  master_key: 0123456789abcdef0123456789\n`,
    path: 'general_settings.master_key',
    line: 'master_key',
    message: /sk-/,
  },
  {
    name: 'HS256 algorithm refused',
    text: JWT('    algorithms: [RS256, HS256]\n'),
    path: 'auth.jwt.algorithms[1]',
    line: 'HS256',
    message: /asymmetric/,
  },
  {
    name: 'http:// issuer without allow_insecure_http',
    text: JWT('').replace('https://idp.example.com', 'http://idp.example.com'),
    path: 'auth.jwt.issuer',
    line: 'issuer',
    message: /allow_insecure_http/,
  },
  {
    name: 'http:// jwks_uri without allow_insecure_http',
    text: JWT('    jwks_uri: http://idp.example.com/jwks\n'),
    path: 'auth.jwt.jwks_uri',
    line: 'jwks_uri',
    message: /allow_insecure_http/,
  },
  {
    name: 'a redis_url that does not parse (a port that is no number)',
    text: 'general_settings:\n  redis_url: "redis://127.0.0.1:notaport"\n',
    path: 'general_settings.redis_url',
    line: 'redis_url',
    message: /does not parse/,
  },
  {
    // The virtual key's header cannot carry the token too.
    name: 'auth.jwt.header authorization while keys are required',
    text: JWT('    header: authorization\n'),
    path: 'auth.jwt.header',
    line: 'header: authorization',
    message: /auth\.keys\.required: false/,
  },
  {
    name: 'upper-case JWT header name',
    text: JWT('    header: X-Cake-Authorization\n'),
    path: 'auth.jwt.header',
    line: 'X-Cake',
  },
  {
    name: 'duplicate deployment id',
    text: `${MINIMAL}    model_info: { id: dep-a }
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: 'http://127.0.0.1:8001/v1' }
    model_info: { id: dep-a }
`,
    path: 'model_list[1].model_info.id',
    line: '',
    message: /duplicate deployment id.*model_list\[0\]/,
  },
  {
    name: 'fallback to an unknown alias',
    text: `${MINIMAL}router_settings:\n  fallbacks: [{ llama: [qwen-nope] }]\n`,
    path: 'router_settings.fallbacks[0].llama[0]',
    line: 'qwen-nope',
    message: /unknown model.*qwen-nope/,
  },
  {
    name: 'fallback from an unknown alias',
    text: `${MINIMAL}router_settings:\n  fallbacks: [{ nope: [llama] }]\n`,
    path: 'router_settings.fallbacks[0].nope',
    line: 'nope',
    message: /unknown model/,
  },
  {
    name: 'duplicate key hash',
    text: `keys:\n  - key: sha256:${sha256(DECLARED_KEY)}\n    key_alias: a\n  - key: sha256:${sha256(DECLARED_KEY)}\n    key_alias: b\n`,
    path: 'keys[1].key',
    line: '',
    message: /twice.*keys\[0\]/,
  },
  {
    name: 'duplicate team id',
    text: `teams:\n  - team_id: platform\n  - team_id: research\n  - team_id: platform\n    max_budget: 1\n`,
    path: 'teams[2].team_id',
    line: '',
    message: /duplicate team_id.*teams\[0\]/,
  },
  {
    name: 'duplicate rule name',
    text: `policy:
  rules:
    - name: r
      when: "model == 'a'"
      deny: no a
    - name: r
      when: "model == 'b'"
      deny: no b
`,
    path: 'policy.rules[1].name',
    line: '',
    message: /duplicate rule name/,
  },
  {
    name: 'missing required field',
    text: `model_list:\n  - model_name: llama\n    litellm_params:\n      api_base: http://127.0.0.1:8000/v1\n`,
    path: 'model_list[0].litellm_params.model',
    // the mapping that lacks it
    line: 'api_base',
    message: /required/,
  },
];

/** Lines that cannot be found by a unique needle: the Nth occurrence. */
function nthLine(text: string, needle: string, n: number): number {
  let seen = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]?.includes(needle) && ++seen === n) return i + 1;
  }
  assert.fail(`test bug: occurrence ${n} of ${needle} not found`);
}

const LINE_OVERRIDES: Readonly<Record<string, (text: string) => number>> = {
  'duplicate deployment id': (t) => nthLine(t, 'id: dep-a', 2),
  'duplicate key hash': (t) => nthLine(t, '- key: sha256:', 2),
  'duplicate team id': (t) => nthLine(t, 'team_id: platform', 2),
  'duplicate rule name': (t) => nthLine(t, '- name: r', 2),
};

describe('loadConfigText: each kind of error, with its path and line', () => {
  for (const c of ERROR_CASES) {
    test(c.name, () => {
      const r = failed(c.text, c.env);
      const issue = issueAt(r.issues, c.path);
      const override = LINE_OVERRIDES[c.name];
      const line = override ? override(c.text) : lineOf(c.text, c.line);
      assert.equal(issue.line, line, `line: ${JSON.stringify(issue)}`);
      assert.equal(typeof issue.column, 'number');
      if (c.message) assert.match(issue.message, c.message);
    });
  }

  test('http:// issuer and JWKS are accepted with allow_insecure_http', () => {
    const c = loaded(
      JWT('    jwks_uri: http://127.0.0.1:9999/jwks\n    allow_insecure_http: true\n').replace(
        'https://idp.example.com',
        'http://127.0.0.1:9999',
      ),
    );
    assert.equal(c.auth.jwt?.issuer, 'http://127.0.0.1:9999');
    assert.equal(c.auth.jwt?.allow_insecure_http, true);
  });

  test('invalid YAML reports its line', () => {
    const text = `model_list:\n  - model_name: a\n    litellm_params: [unclosed\ngeneral_settings:\n  master_key: x\n`;
    const r = failed(text);
    const issue = r.issues[0];
    assert.ok(issue);
    assert.match(issue.message, /YAML/);
    const line = issue.line;
    assert.ok(line !== undefined && line >= 3 && line <= 5, `line ${String(line)}`);
  });

  test('a key written twice is invalid YAML on the second one', () => {
    const text = `general_settings:\n  failure_mode: open\n  failure_mode: closed\n`;
    const r = failed(text);
    assert.match(r.issues[0]?.message ?? '', /YAML.*unique/);
    assert.equal(r.issues[0]?.line, 3);
  });

  test('a file holding a list, not a mapping, is one issue at line 1', () => {
    const text = `- model_name: a\n- model_name: b\n`;
    const r = failed(text);
    assert.equal(r.issues.length, 1);
    assert.match(r.issues[0]?.message ?? '', /mapping/);
    assert.equal(r.issues[0]?.path, '');
    assert.equal(r.issues[0]?.line, 1);
  });

  test('a file holding a scalar is refused too', () => {
    const r = failed('just some text\n');
    assert.match(r.issues[0]?.message ?? '', /mapping/);
  });

  test('several errors in one file are all reported in one result', () => {
    const text = `model_list:
  - model_name: a
    litellm_params:
      model: bedrock/x
      api_base: not-a-url
      weigth: 2
      rpm: 1.5
      api_key: os.environ/UNSET_VAR
    model_info:
      output_cost_per_token: -1
router_settings:
  routing_strategy: fastest
general_settings:
  master_key: sk-123
keys:
  - key: sk-clear-text-key-1
    budget_duration: forever
teams:
  - team_id: t
    expires: 2027-01-01T00:00:00Z
`;
    const r = failed(text);
    const paths = r.issues.map((i) => i.path).sort();
    assert.deepEqual(paths, [
      'general_settings.master_key',
      'keys[0].budget_duration',
      'keys[0].key',
      'model_list[0].litellm_params.api_base',
      'model_list[0].litellm_params.api_key',
      'model_list[0].litellm_params.model',
      'model_list[0].litellm_params.rpm',
      'model_list[0].litellm_params.weigth',
      'model_list[0].model_info.output_cost_per_token',
      'router_settings.routing_strategy',
      'teams[0].expires',
    ]);
    for (const i of r.issues) assert.equal(typeof i.line, 'number', `no line for ${i.path}`);
    assertNoSecret(r, ['sk-clear-text-key-1']);
  });

  test('a zero budget_duration is an error, not a period of one unit', () => {
    const text = `${MINIMAL}teams:
  - team_id: t
    max_budget: 10
    budget_duration: 0d
keys:
  - key: sha256:${sha256(DECLARED_KEY)}
    max_budget: 1
    budget_duration: 0m
`;
    const r = failed(text);
    assertIssue(text, r.issues, 'teams[0].budget_duration', '0d', /zero/);
    assertIssue(text, r.issues, 'keys[0].budget_duration', '0m', /zero/);
  });

  test("LiteLLM's restrictions in keys[].metadata and teams[].metadata are errors, not labels", () => {
    const text = `${MINIMAL}teams:
  - team_id: t
    metadata: { owner: platform, model_tpm_limit: { llama: 10 } }
keys:
  - key: sha256:${sha256(DECLARED_KEY)}
    metadata:
      tags: [prod]
      model_rpm_limit: { llama: 1 }
`;
    const r = failed(text);
    assertIssue(text, r.issues, 'teams[0].metadata.model_tpm_limit', 'model_tpm_limit', /not enforced by tollgate/);
    assertIssue(text, r.issues, 'keys[0].metadata.model_rpm_limit', 'model_rpm_limit', /not enforced by tollgate/);
    assert.equal(r.issues.length, 2, JSON.stringify(r.issues));
  });

  test('several cross-reference errors are all reported in one result', () => {
    const text = `${MINIMAL}    model_info: { id: x }
  - model_name: b
    litellm_params: { model: openai/b, api_base: 'http://127.0.0.1:8001/v1' }
    model_info: { id: x }
router_settings:
  fallbacks: [{ llama: [nope] }]
teams:
  - team_id: t
  - team_id: t
`;
    const r = failed(text);
    assert.deepEqual(r.issues.map((i) => i.path).sort(), [
      'model_list[1].model_info.id',
      'router_settings.fallbacks[0].llama[0]',
      'teams[1].team_id',
    ]);
  });
});

describe('prepareConfigText: CEL policy rules', () => {
  test('a rule that does not compile names policy.rules[i].when, the rule and its line', () => {
    const text = `${MINIMAL}policy:
  rules:
    - name: fine
      when: "'guests' in jwt.groups"
      deny: no guests
    - name: broken-rule
      when: "jwt.groups ++ 1"
      deny: never
`;
    const issues = prepareIssues(text);
    assert.equal(issues.length, 1);
    const issue = issueAt(issues, 'policy.rules[1].when');
    assert.match(issue.message, /broken-rule/);
    assert.match(issue.message, /compile/);
    assert.equal(issue.line, lineOf(text, 'jwt.groups ++ 1'));
  });

  test("a rule's error is listed beside the other errors of the file, not only once they are fixed", () => {
    const text = `${MINIMAL}router_settings:
  num_retries: -1
policy:
  rules:
    - name: no-name-here
    - name: broken-rule
      when: "jwt.groups ++ 1"
      deny: never
`;
    const issues = prepareIssues(text);
    assert.ok(
      issues.some((i) => i.path.startsWith('router_settings.num_retries')),
      JSON.stringify(issues),
    );
    const issue = issueAt(issues, 'policy.rules[1].when');
    assert.match(issue.message, /broken-rule.*compile/);
    assert.equal(issue.line, lineOf(text, 'jwt.groups ++ 1'));
    // A `when` the schema refused already is not reported a second time by the compiler.
    const empty = prepareIssues(`${MINIMAL}router_settings:\n  num_retries: -1\npolicy:\n  rules:\n    - { name: e, when: "", deny: x }\n`);
    assert.equal(empty.filter((i) => i.path === 'policy.rules[0].when').length, 1, JSON.stringify(empty));
  });

  test('a rule whose type is not bool is refused', () => {
    const text = `policy:
  rules:
    - name: stringy
      when: "model + '-x'"
      deny: never
    - name: numeric
      when: "1 + 2"
      deny: never
`;
    const issues = prepareIssues(text);
    assert.equal(issues.length, 2);
    assert.match(issueAt(issues, 'policy.rules[0].when').message, /stringy.*(true or false|bool).*string/);
    assert.match(issueAt(issues, 'policy.rules[1].when').message, /numeric.*int/);
  });

  test('a misspelt field of request, key or team is refused at its line', () => {
    const text = `policy:\n  rules:\n    - name: typo\n      when: "request.hedaers['x'] == 'y'"\n      deny: never\n`;
    const issue = issueAt(prepareIssues(text), 'policy.rules[0].when');
    assert.match(issue.message, /typo.*hedaers/);
    assert.equal(issue.line, lineOf(text, 'hedaers'));
  });

  test('a rule that is a metadata value, not a comparison, is refused', () => {
    const issues = prepareIssues(`policy:\n  rules:\n    - name: bare\n      when: "key.metadata.owner"\n      deny: never\n`);
    assert.match(issueAt(issues, 'policy.rules[0].when').message, /bare.*true or false.*dyn/);
  });

  test('a rule over an unknown variable is refused', () => {
    const issues = prepareIssues(`policy:\n  rules:\n    - name: typo\n      when: "jtw.groups.size() > 0"\n      deny: never\n`);
    assert.match(issueAt(issues, 'policy.rules[0].when').message, /typo/);
  });

  test('schema issues come out of prepareConfigText as a ConfigError too', () => {
    const issues = prepareIssues(`${MINIMAL}      weigth: 2\n`);
    issueAt(issues, 'model_list[0].litellm_params.weigth');
  });

  test('the ConfigError message is one file:line:col line per issue', () => {
    const text = `${MINIMAL}      weigth: 2\n      rpm: 1.5\n`;
    try {
      prepareConfigText(text, 'conf.yaml', {});
      assert.fail('expected a ConfigError');
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      const lines = err.message.split('\n');
      assert.equal(lines.length, 2);
      for (const l of lines) assert.match(l, /^conf\.yaml:\d+:\d+ model_list\[0\]\.litellm_params\.(weigth|rpm): \S/);
    }
  });
});

describe('review findings', () => {
  test('an upper-case HTTP:// JWKS URL is as insecure as http://', () => {
    const r = failed(`auth:\n  jwt:\n    issuer: https://idp.example.com\n    audience: a\n    jwks_uri: HTTP://idp.example.com/jwks\n`);
    assert.ok(
      r.issues.some((i) => i.path === 'auth.jwt.jwks_uri' && /http:\/\//.test(i.message)),
      JSON.stringify(r.issues),
    );
  });
  test('a key supplied by the file’s own environment_variables is a clear key in the file', () => {
    const r = failed(`environment_variables:\n  K1: ${DECLARED_KEY}\nkeys:\n  - key: os.environ/K1\n`);
    assert.ok(
      r.issues.some((i) => i.path === 'keys[0].key' && /environment_variables/.test(i.message)),
      JSON.stringify(r.issues),
    );
    for (const i of r.issues) assert.ok(!i.message.includes(DECLARED_KEY));
    // From the process environment it is fine.
    assert.ok(loaded(`keys:\n  - key: os.environ/K1\n`, { K1: DECLARED_KEY }).keys[0]?.key.startsWith('sha256:'));
  });
  test('LiteLLM access-control settings are refused, not ignored', () => {
    const r = failed(`general_settings:\n  allowed_ips: [10.0.0.1]\n  alerting: [slack]\n`);
    assert.ok(
      r.issues.some((i) => i.path === 'general_settings.allowed_ips' && /policy rule over .*request\.source/.test(i.message)),
      JSON.stringify(r.issues),
    );
    assert.ok(!r.issues.some((i) => i.path === 'general_settings.alerting'));
    // The rule it suggests for allowed_ips compiles as written.
    const message = r.issues.find((i) => i.path === 'general_settings.allowed_ips')?.message ?? '';
    const when = /when: "(.*)"/.exec(message)?.[1];
    assert.ok(when !== undefined, message);
    assert.ok(Policy.compile([{ name: 'ips', when, deny: 'x' }]).policy);
  });
});

describe('loadConfigText: warnings for settings that load but cannot work', () => {
  const MASTER = `general_settings:\n  master_key: ${MASTER_KEY}\n`;
  const PRICED = `${MINIMAL}    model_info: { input_cost_per_token: 1.0e-7, output_cost_per_token: 2.0e-7 }\n`;
  const KEY = `sha256:${sha256(DECLARED_KEY)}`;
  const noPrice = (r: LoadResult): ConfigIssue | undefined =>
    r.warnings.find((w) => /no deployment in model_list has a price/.test(w.message));
  const noCredentials = (r: LoadResult): ConfigIssue | undefined => r.warnings.find((w) => /^nothing can be authorized/.test(w.message));

  test('a budget with no price on any deployment: a warning at the budget, naming the prices to set; the config loads', () => {
    const text = `${MINIMAL}${MASTER}keys:\n  - key: ${KEY}\n    max_budget: 10\nteams:\n  - team_id: platform\n    max_budget: 500\nusers:\n  - user_id: alice\n    max_budget: 5\n`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.ok(r.config, 'a warning, not an error');
    const w = assertIssue(text, r.warnings, 'keys[0].max_budget', 'max_budget: 10', /spend stays 0 and the budget never runs out/);
    assert.match(w.message, /input_cost_per_token and output_cost_per_token/);
    assert.match(w.message, /and 2 more: teams\[0\]\.max_budget, users\[0\]\.max_budget/);
    assert.equal(r.warnings.filter((x) => x === noPrice(r)).length, 1, 'one warning for all the budgets');
  });

  test('no budget warning with a price (in model_info or litellm_params), a budget of 0, or no budget', () => {
    const budget = `keys:\n  - key: ${KEY}\n    max_budget: 10\n`;
    for (const text of [
      `${PRICED}${MASTER}${budget}`,
      `${MINIMAL}      output_cost_per_token: 2.0e-7\n${MASTER}${budget}`,
      `${MINIMAL}${MASTER}keys:\n  - key: ${KEY}\n    max_budget: 0\n`,
      `${MINIMAL}${MASTER}keys:\n  - key: ${KEY}\n    rpm_limit: 10\n`,
    ]) {
      const r = loadConfigText(text, {});
      assert.deepEqual(r.issues, [], text);
      assert.equal(noPrice(r), undefined, text);
    }
    // A price of 0 is no price: the budget still never runs out.
    const free = loadConfigText(`${MINIMAL}    model_info: { input_cost_per_token: 0 }\n${MASTER}${budget}`, {});
    assert.ok(noPrice(free));
  });

  test('a tpm limit under twice default_max_tokens: one warning at the first, saying such requests run few at a time', () => {
    const small = (r: LoadResult): ConfigIssue[] => r.warnings.filter((w) => /tokens-per-minute limit/.test(w.message));
    const text =
      `${MINIMAL}      tpm: 6000\n${MASTER}keys:\n  - key: ${KEY}\n    tpm_limit: 1000\n` +
      `teams:\n  - team_id: platform\n    tpm_limit: 8192\n`;
    const r = loadConfigText(text, {});
    assert.deepEqual(r.issues, []);
    assert.ok(r.config, 'a warning, not an error');
    const w = assertIssue(
      text,
      r.warnings,
      'keys[0].tpm_limit',
      'tpm_limit: 1000',
      /under twice general_settings\.default_max_tokens \(4096\)/,
    );
    assert.match(w.message, /and 1 more: model_list\[0\]\.litellm_params\.tpm/);
    assert.match(w.message, /Lower default_max_tokens, have clients send max_tokens, or raise the limit/);
    assert.equal(small(r).length, 1);
    // At twice the cap or more, or with a cap lowered to fit (default_max_tokens, the deployment's max_tokens): none.
    for (const t of [
      `${MINIMAL}${MASTER}keys:\n  - key: ${KEY}\n    tpm_limit: 8192\n`,
      `${MINIMAL}${MASTER}  default_max_tokens: 256\nkeys:\n  - key: ${KEY}\n    tpm_limit: 1000\n`,
      `${MINIMAL}      tpm: 1000\n    model_info: { max_tokens: 300 }\n${MASTER}`,
    ]) {
      const q = loadConfigText(t, {});
      assert.deepEqual(q.issues, [], t);
      assert.deepEqual(small(q), [], t);
    }
  });

  test('nothing can be authorized (no master key, no keys, no admin group with a JWT): a warning saying what to set', () => {
    const r = loadConfigText(MINIMAL, {});
    assert.ok(r.config, 'a warning, not an error');
    const w = noCredentials(r);
    assert.ok(w, JSON.stringify(r.warnings));
    assert.match(w.message, /every model request is refused \(401\) and the admin API is disabled/);
    assert.match(w.message, /Set general_settings\.master_key .*declare keys, or set auth\.jwt with auth\.admin_groups/);
    // Admin groups without a JWT to carry them open nothing either.
    assert.ok(noCredentials(loadConfigText(`${MINIMAL}auth:\n  admin_groups: [admins]\n`, {})));
  });

  test('no such warning with a master key (the file or LITELLM_MASTER_KEY), a key, a JWT admin group, or keys not required', () => {
    const jwt = 'auth:\n  jwt:\n    issuer: https://idp.example.com\n    audience: tollgate\n';
    for (const [text, env] of [
      [`${MINIMAL}${MASTER}`, {}],
      [MINIMAL, { LITELLM_MASTER_KEY: MASTER_KEY }],
      [`${MINIMAL}keys:\n  - key: ${KEY}\n`, {}],
      [`${MINIMAL}${jwt}  admin_groups: [platform-admins]\n`, {}],
      [`${MINIMAL}${jwt}  keys:\n    required: false\n`, {}],
    ] as const) {
      const r = loadConfigText(text, env);
      assert.deepEqual(r.issues, [], text);
      assert.equal(noCredentials(r), undefined, text);
    }
  });
});

describe("max_parallel_requests: a deployment's cap on requests in flight (LiteLLM's litellm_params key)", () => {
  const TWO = `model_list:
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: 'http://vllm-a:8000/v1', max_parallel_requests: 16 }
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: 'http://vllm-b:8000/v1' }
`;
  const caps = (c: Config): number[] =>
    ModelCatalog.fromConfig(c.model_list)
      .group('llama')
      ?.deployments.map((d) => d.maxParallelRequests) ?? [];

  test('its own, else router_settings.default_max_parallel_requests, else 1024; no warning', () => {
    const r = loadConfigText(TWO, {});
    assert.deepEqual(r.issues, []);
    assert.deepEqual(besideNoCredentials(r), [], 'LiteLLM keys tollgate uses are not set aside');
    assert.deepEqual(caps(r.config as Config), [16, DEFAULT_MAX_PARALLEL_REQUESTS]);
    assert.equal(DEFAULT_MAX_PARALLEL_REQUESTS, 1024);
    const withDefault = loadConfigText(`${TWO}router_settings:\n  default_max_parallel_requests: 256\n`, {});
    assert.deepEqual(withDefault.issues, []);
    assert.deepEqual(besideNoCredentials(withDefault), []);
    assert.deepEqual(caps(withDefault.config as Config), [16, 256], "the deployment's own wins");
    assert.equal(withDefault.config?.model_list[1]?.litellm_params.max_parallel_requests, 256, 'written into the entry');
  });

  test('the router default reaches the models added through the admin API', () => {
    const stored: StoredModel[] = [
      { id: 'db-1', modelName: 'db', litellmParams: { model: 'openai/db', api_base: 'http://vllm-db:8000/v1' }, modelInfo: {} },
    ];
    const opts = { box: undefined, env: {}, logger: createLogger('silent'), allowedApiBases: ['vllm-db'] };
    const catalog = (extra: { defaultMaxParallelRequests?: number }): ModelCatalog => composeCatalog([], stored, { ...opts, ...extra });
    assert.equal(catalog({}).deployment('db-1')?.maxParallelRequests, 1024);
    assert.equal(catalog({ defaultMaxParallelRequests: 64 }).deployment('db-1')?.maxParallelRequests, 64);
  });

  for (const bad of ['0', '2.5', '100000', 'lots']) {
    test(`${bad} is refused, once, where it was written`, () => {
      const text = `${TWO}router_settings:\n  default_max_parallel_requests: ${bad}\n`;
      const r = failed(text);
      assert.deepEqual(
        r.issues.map((i) => i.path),
        ['router_settings.default_max_parallel_requests'],
        'not again in every entry that takes it',
      );
      const own = `${MINIMAL}      max_parallel_requests: ${bad}\n`;
      const issue = assertIssue(own, failed(own).issues, 'model_list[0].litellm_params.max_parallel_requests', 'max_parallel_requests');
      if (bad === '100000') assert.match(issue.message, /at most 65536/);
    });
  }
});
