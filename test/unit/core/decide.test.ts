/**
 * decide(input, rules, nowMs, random) as tables of (input, rules, now, random) → Decision. A real compiled
 * Policy and a real ModelCatalog; deployment health is a cooldown stub driven by the injected `now`.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decide,
  type Decision,
  type DecisionInput,
  type DecisionRules,
  type Principal,
  type TeamRecord,
} from '../../../src/core/decide.js';
import { jwtFailureMessage, NO_MODELS_MESSAGE } from '../../../src/core/messages.js';
import type { JwtFailure, JwtIdentity, JwtResult } from '../../../src/identity/jwt.js';
import type { KeyRecord } from '../../../src/identity/keys.js';
import { Policy } from '../../../src/policy/rules.js';
import { ModelCatalog, type Cooldown, type Deployment, type DeploymentHealth } from '../../../src/routing/deployments.js';

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);

/** What opens the admin API, as a refusal says it: the master key, and a token where admin groups are set. */
const BY_MASTER_KEY = 'The admin API needs the master key, sent as "Authorization: Bearer <master key>".';
const BY_KEY_OR_TOKEN =
  'The admin API needs the master key, sent as "Authorization: Bearer <master key>", or an OAuth 2.0 access token of a member of an admin group (auth.admin_groups) in the X-Cake-Authorization header.';
const NONE_BY_MASTER_KEY = 'No credentials: the admin API needs the master key, sent as "Authorization: Bearer <master key>".';
const NONE_BY_KEY_OR_TOKEN =
  'No credentials: the admin API needs the master key, sent as "Authorization: Bearer <master key>", or an OAuth 2.0 access token of a member of an admin group (auth.admin_groups) in the X-Cake-Authorization header.';
const DISABLED = 'The admin API is disabled: configure general_settings.master_key or auth.admin_groups.';

function dep(id: string, alias: string, weight: number): Deployment {
  return {
    id,
    alias,
    provider: 'openai',
    backendModel: `org/${alias}`,
    apiBase: `http://${id}:8000/v1`,
    origin: `http://${id}:8000`,
    basePath: '/v1',
    apiKey: undefined,
    rpm: undefined,
    tpm: undefined,
    weight,
    timeoutMs: 600_000,
    streamTimeoutMs: undefined,
    maxParallelRequests: 1024,
    inputCostPerToken: 0,
    outputCostPerToken: 0,
    maxTokens: undefined,
    order: undefined,
  };
}

/** llama: llama-a (weight 1), llama-b (weight 3); qwen: qwen-a. */
const CATALOG = new ModelCatalog([dep('llama-a', 'llama', 1), dep('llama-b', 'llama', 3), dep('qwen-a', 'qwen', 1)]);

/** Deployments cooling down until the given epoch ms; available from then on. */
function cooling(until: Readonly<Record<string, number>>): DeploymentHealth {
  return { isAvailable: (id, nowMs) => nowMs >= (until[id] ?? -Infinity) };
}
const HEALTHY = cooling({});

/** What the client is told when every deployment is cooling down: by 429s, or not. */
const RATE_LIMITED =
  'Every deployment of this model is being rate limited by its model server: retry after the time given in the retry-after header.';
const COOLING = 'No deployment of the requested model is available right now: retry after the time given in the retry-after header.';

/** Deployments cooling down until the given epoch ms, each because of a 429 (`rateLimited`) or a fault: a view that says when and why. */
function cooled(until: Readonly<Record<string, readonly [number, 'rate-limited' | 'fault']>>): DeploymentHealth {
  const cooldown = (id: string, nowMs: number): Cooldown | undefined => {
    const c = until[id];
    return c === undefined || nowMs >= c[0] ? undefined : { untilMs: c[0], rateLimited: c[1] === 'rate-limited' };
  };
  return { isAvailable: (id, nowMs) => cooldown(id, nowMs) === undefined, cooldown };
}

function key(over: Partial<KeyRecord> = {}): KeyRecord {
  return {
    hash: 'ab'.repeat(32),
    id: 'abababababababab',
    alias: 'ci-bot',
    models: [],
    userId: 'key-owner',
    teamId: 'platform',
    expiresAt: undefined,
    blocked: false,
    limits: { maxBudget: undefined, budgetDuration: undefined, rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: undefined },
    metadata: { owner: 'platform-team' },
    source: 'config',
    ...over,
  };
}

function team(over: Partial<TeamRecord> = {}): TeamRecord {
  return {
    teamId: 'platform',
    alias: 'Platform',
    models: ['llama', 'qwen'],
    blocked: false,
    limits: { maxBudget: undefined, budgetDuration: undefined, rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: undefined },
    metadata: {},
    ...over,
  };
}

function identity(over: Partial<Omit<JwtIdentity, 'policyView'>> = {}): JwtIdentity {
  const id = { claims: { sub: 'alice' }, user: 'alice', email: 'alice@example.com', groups: ['staff'], exp: Infinity, nbf: 0, ...over };
  return { ...id, policyView: { ...id.claims, user: id.user, email: id.email, groups: id.groups } };
}
const jwtOk = (over: Partial<JwtIdentity> = {}): JwtResult => ({ ok: true, identity: identity(over) });
const jwtFail = (failure: JwtFailure): JwtResult => ({ ok: false, failure });

function compile(rules: { name: string; when: string; deny: string }[]): Policy {
  const compiled = Policy.compile(rules);
  assert.ok(compiled.policy, JSON.stringify(compiled.issues));
  return compiled.policy;
}

const POLICY = compile([
  { name: 'guests-llama-only', when: "has(jwt.groups) && 'guests' in jwt.groups && model != 'llama'", deny: 'guests may only use llama' },
  // int('abc') throws at run time: the rule fails, so the request is denied (fail closed).
  { name: 'tier-limit', when: 'has(jwt.tier) && int(jwt.tier) > 5', deny: 'tier too high' },
]);

const INTERNS = "team.team_id == 'interns' && request.path.endsWith('/embeddings')";

const RULES: DecisionRules = {
  jwtRequired: true,
  keysRequired: true,
  adminGroups: ['platform-admins'],
  masterKeySet: true,
  policy: POLICY,
  catalog: CATALOG,
  health: HEALTHY,
  fallbacks: new Map([['llama', ['qwen']]]),
  requiredParams: [],
};

const MODEL_INPUT: DecisionInput = {
  route: 'model',
  method: 'POST',
  path: '/v1/chat/completions',
  headers: {},
  contextExtensions: {},
  source: '10.1.2.3',
  body: '{"model":"llama"}',
  jwt: jwtOk(),
  key: key(),
  team: team(),
};
const ADMIN_INPUT: DecisionInput = { ...MODEL_INPUT, route: 'admin', method: 'GET', path: '/key/info', body: undefined };
const PLAIN_INPUT: DecisionInput = { ...MODEL_INPUT, route: 'plain', method: 'GET', path: '/v1/models', body: undefined };
const PROBE_INPUT: DecisionInput = { ...MODEL_INPUT, route: 'probe', method: 'GET', path: '/health/readiness', body: undefined };

type Expect =
  | {
      allow: false;
      code: string;
      message?: string | undefined;
      detail?: string | undefined;
      failedRule?: string | undefined;
      retryAfterMs?: number | undefined;
    }
  | { allow: true; model?: string | undefined; deployment?: string | undefined; principal?: Partial<Principal>; hidden?: string[] };

interface Case {
  name: string;
  input?: Partial<DecisionInput>;
  base?: DecisionInput;
  rules?: Partial<DecisionRules>;
  now?: number;
  random?: number;
  expect: Expect;
}

function run(c: Case): Decision {
  return decide({ ...(c.base ?? MODEL_INPUT), ...c.input }, { ...RULES, ...c.rules }, c.now ?? NOW, c.random ?? 0);
}

function check(c: Case): void {
  const d = run(c);
  const e = c.expect;
  if (!e.allow) {
    assert.equal(d.allow, false, `expected a denial ${e.code}, got ${JSON.stringify(d)}`);
    if (d.allow) return;
    assert.equal(d.code, e.code);
    if ('message' in e) assert.equal(d.message, e.message);
    if ('detail' in e) assert.equal(d.detail, e.detail);
    assert.equal(d.failedRule, e.failedRule);
    assert.equal(d.retryAfterMs, e.retryAfterMs, 'retryAfterMs');
    return;
  }
  assert.equal(d.allow, true, `expected an allow, got ${JSON.stringify(d)}`);
  if (!d.allow) return;
  if ('model' in e) assert.equal(d.body?.model, e.model);
  if ('deployment' in e) assert.equal(d.deployment?.id, e.deployment);
  if (e.hidden !== undefined) assert.deepEqual(d.hidden, e.hidden);
  if (e.principal !== undefined) {
    for (const [k, v] of Object.entries(e.principal)) assert.deepEqual(d.principal[k as keyof Principal], v, `principal.${k}`);
  }
}

function table(title: string, cases: Case[]): void {
  describe(title, () => {
    for (const c of cases) test(c.name, () => check(c));
  });
}

const JWT_FAILURES: JwtFailure[] = [
  'malformed',
  'expired',
  'not_yet_valid',
  'wrong_issuer',
  'wrong_audience',
  'bad_signature',
  'unknown_key',
  'algorithm_not_allowed',
  'claims_invalid',
  'no_expiry',
  'not_access_token',
];

describe('decide: identity token', () => {
  for (const failure of JWT_FAILURES) {
    test(`invalid_jwt (${failure}) with its own message`, () => {
      check({
        name: failure,
        input: { jwt: jwtFail(failure) },
        expect: { allow: false, code: 'invalid_jwt', message: jwtFailureMessage(failure), detail: failure },
      });
    });
    test(`invalid_jwt (${failure}) even when the token is not required`, () => {
      check({
        name: failure,
        input: { jwt: jwtFail(failure) },
        rules: { jwtRequired: false },
        expect: { allow: false, code: 'invalid_jwt' },
      });
    });
  }
  test('each failure has a distinct message that names the header and never is empty', () => {
    const messages = JWT_FAILURES.map((f) => jwtFailureMessage(f));
    assert.equal(new Set(messages).size, messages.length);
    for (const m of messages) assert.match(m, /X-Cake-Authorization/);
  });
  test('with another auth.jwt.header, the messages name that header, on every route', () => {
    for (const f of JWT_FAILURES) {
      const m = jwtFailureMessage(f, 'x-id-token');
      assert.match(m, /X-Id-Token/);
      assert.doesNotMatch(m, /Cake/);
    }
    const rules = { jwtHeader: 'x-id-token', adminGroups: ['ops'] };
    for (const [route, path] of [
      ['model', '/v1/chat/completions'],
      ['admin', '/key/list'],
    ] as const) {
      const input = route === 'admin' ? ADMIN_INPUT : MODEL_INPUT;
      const d = decide({ ...input, path, jwt: jwtFail('missing'), key: 'missing' }, { ...RULES, ...rules }, 0, 0);
      assert.equal(d.allow, false);
      if (!d.allow) {
        assert.equal(d.code, 'missing_jwt');
        assert.match(d.message ?? '', /X-Id-Token/, route);
        assert.doesNotMatch(d.message ?? '', /Cake/, route);
      }
    }
    const bad = decide({ ...MODEL_INPUT, jwt: jwtFail('expired') }, { ...RULES, ...rules }, 0, 0);
    assert.ok(!bad.allow && /X-Id-Token has expired/.test(bad.message ?? ''));
  });
});

table('decide: required credentials', [
  {
    name: 'missing JWT, required → missing_jwt',
    input: { jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: undefined },
  },
  {
    name: 'missing JWT, not required → allowed as the key owner',
    input: { jwt: jwtFail('missing') },
    rules: { jwtRequired: false },
    expect: { allow: true, principal: { userId: 'key-owner', email: undefined, groups: [] } },
  },
  {
    name: 'no JWT configured (jwt undefined) → allowed',
    input: { jwt: undefined },
    expect: { allow: true, principal: { userId: 'key-owner' } },
  },
  {
    name: 'missing key, keys required → missing_api_key',
    input: { key: 'missing', team: undefined },
    expect: { allow: false, code: 'missing_api_key', message: undefined },
  },
  {
    name: 'missing key, keys not required → allowed without a key',
    input: { key: 'missing', team: undefined },
    rules: { keysRequired: false },
    expect: {
      allow: true,
      deployment: 'llama-a',
      principal: { keyId: undefined, keyAlias: undefined, userId: 'alice', teamId: undefined, key: undefined },
    },
  },
  {
    name: "malformed key → invalid_api_key saying 'Bearer sk-...'",
    input: { key: 'malformed' },
    expect: { allow: false, code: 'invalid_api_key', message: 'The Authorization header must be "Bearer sk-..." with a virtual key.' },
  },
  {
    name: 'unknown key → invalid_api_key',
    input: { key: 'unknown' },
    expect: { allow: false, code: 'invalid_api_key', message: undefined },
  },
  {
    name: 'malformed key, keys required → invalid_api_key',
    input: { key: 'malformed' },
    expect: { allow: false, code: 'invalid_api_key' },
  },
  {
    // `Bearer EMPTY` (the OpenAI SDKs for vLLM), or the JWT itself in Authorization: no key, not a wrong one.
    name: 'not a virtual key when keys are not required → allowed without a key',
    input: { key: 'malformed', team: undefined },
    rules: { keysRequired: false },
    expect: { allow: true, principal: { keyId: undefined, userId: 'alice' } },
  },
  {
    name: 'an unknown sk- key when keys are not required → invalid_api_key',
    input: { key: 'unknown' },
    rules: { keysRequired: false },
    expect: { allow: false, code: 'invalid_api_key' },
  },
  {
    name: 'blocked key → key_blocked',
    input: { key: key({ blocked: true }) },
    expect: { allow: false, code: 'key_blocked', message: undefined },
  },
  {
    name: 'expired at exactly nowMs == expiresAt',
    input: { key: key({ expiresAt: NOW }) },
    expect: { allow: false, code: 'expired_api_key' },
  },
  { name: 'expired after expiresAt', input: { key: key({ expiresAt: NOW - 60_000 }) }, expect: { allow: false, code: 'expired_api_key' } },
  { name: 'not expired 1 ms before expiresAt', input: { key: key({ expiresAt: NOW + 1 }) }, expect: { allow: true } },
  {
    name: 'the same key expires once now reaches it',
    input: { key: key({ expiresAt: NOW + 1 }) },
    now: NOW + 1,
    expect: { allow: false, code: 'expired_api_key' },
  },
  {
    name: "blocked team → key_blocked with the team's message",
    input: { team: team({ blocked: true }) },
    expect: { allow: false, code: 'key_blocked', message: "This key's team is blocked: ask your platform team." },
  },
  {
    name: 'master key on a model route → allowed, no key principal',
    input: { key: 'master', team: undefined, body: '{"model":"qwen"}' },
    expect: { allow: true, deployment: 'qwen-a', principal: { keyId: undefined, admin: false } },
  },
  {
    name: 'master key alone on a model route, JWT required → missing_jwt',
    input: { key: 'master', team: undefined, jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt' },
  },
  {
    // LiteLLM's admin calls send the master key alone; the contract opens the admin API to it.
    name: 'master key alone on an admin route, JWT required → allowed as admin',
    base: ADMIN_INPUT,
    input: { key: 'master', team: undefined, jwt: jwtFail('missing') },
    expect: { allow: true, principal: { admin: true } },
  },
  {
    // Its own record, as any route of that key: the token is what it lacks.
    name: 'a virtual key alone reading its own info, JWT required → missing_jwt asking for the token',
    base: ADMIN_INPUT,
    input: { jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: undefined },
  },
  // A LiteLLM operator calls the admin API with the master key alone: a refusal there says so, not only "send a token".
  {
    name: 'regression: no credentials on an admin route, JWT required → missing_jwt naming the master key and the admin groups',
    base: ADMIN_INPUT,
    input: { path: '/key/list', key: 'missing', team: undefined, jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: NONE_BY_KEY_OR_TOKEN },
  },
  {
    name: 'no credentials on an admin route, JWT required, no admin groups → missing_jwt naming the master key only',
    base: ADMIN_INPUT,
    input: { path: '/health', key: 'missing', team: undefined, jwt: jwtFail('missing') },
    rules: { adminGroups: [] },
    expect: { allow: false, code: 'missing_jwt', message: NONE_BY_MASTER_KEY },
  },
  {
    name: 'no credentials on an admin route, JWT required, only admin groups → the same words as with a master key too',
    base: ADMIN_INPUT,
    input: { path: '/spend/logs', key: 'missing', team: undefined, jwt: jwtFail('missing') },
    rules: { masterKeySet: false },
    expect: { allow: false, code: 'missing_jwt', message: NONE_BY_KEY_OR_TOKEN },
  },
  {
    name: 'no credentials on an admin route, JWT required, admin API disabled → missing_jwt saying it is disabled',
    base: ADMIN_INPUT,
    input: { path: '/key/list', key: 'missing', team: undefined, jwt: jwtFail('missing') },
    rules: { masterKeySet: false, adminGroups: [] },
    expect: { allow: false, code: 'missing_jwt', message: DISABLED },
  },
  {
    name: 'a virtual key alone on another admin route, JWT required → missing_jwt saying what opens it',
    base: ADMIN_INPUT,
    input: { path: '/key/list', jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: BY_KEY_OR_TOKEN },
  },
  {
    name: 'a wrong key alone on an admin route, JWT required → missing_jwt saying what opens it',
    base: ADMIN_INPUT,
    input: { path: '/key/list', key: 'unknown', team: undefined, jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: BY_KEY_OR_TOKEN },
  },
  {
    name: 'no credentials on a model route, JWT required → missing_jwt asking for the token (unchanged)',
    input: { key: 'missing', team: undefined, jwt: jwtFail('missing') },
    expect: { allow: false, code: 'missing_jwt', message: undefined },
  },
]);

table('decide: the body', [
  { name: 'empty string body → invalid_body', input: { body: '' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'empty bytes body → invalid_body', input: { body: new Uint8Array(0) }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'no body on a model route → invalid_body', input: { body: undefined }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'not JSON → invalid_body', input: { body: 'model=llama' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'JSON array → invalid_body', input: { body: '[{"model":"llama"}]' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'JSON string → invalid_body', input: { body: '"llama"' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'model not a string → invalid_body', input: { body: '{"model":42}' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'model an array → invalid_body', input: { body: '{"model":["llama"]}' }, expect: { allow: false, code: 'invalid_body' } },
  { name: 'no model → missing_model', input: { body: '{"messages":[]}' }, expect: { allow: false, code: 'missing_model' } },
  { name: 'model "" → missing_model', input: { body: '{"model":""}' }, expect: { allow: false, code: 'missing_model' } },
  { name: 'model null → missing_model', input: { body: '{"model":null}' }, expect: { allow: false, code: 'missing_model' } },
  {
    name: 'UTF-8 bytes body → allowed',
    input: { body: new TextEncoder().encode('{"model":"qwen","max_tokens":10}') },
    expect: { allow: true, model: 'qwen', deployment: 'qwen-a' },
  },
  {
    name: 'enforce_user_param: no user → invalid_body naming it',
    rules: { requiredParams: ['user'] },
    expect: {
      allow: false,
      code: 'invalid_body',
      message: 'This proxy requires user in every request body: send it (general_settings of its config).',
    },
  },
  {
    name: 'enforce_user_param: user "" → invalid_body',
    input: { body: '{"model":"llama","user":""}' },
    rules: { requiredParams: ['user'] },
    expect: { allow: false, code: 'invalid_body' },
  },
  {
    name: 'enforce_user_param: a user → allowed',
    input: { body: '{"model":"llama","user":"u-1"}' },
    rules: { requiredParams: ['user'] },
    expect: { allow: true },
  },
  {
    name: 'enforced_params: a nested field present → allowed',
    input: { body: '{"model":"llama","metadata":{"generation_name":"g"}}' },
    rules: { requiredParams: ['metadata.generation_name'] },
    expect: { allow: true },
  },
  {
    name: 'enforced_params: a nested field absent (or its parent not an object) → invalid_body',
    input: { body: '{"model":"llama","metadata":"generation_name"}' },
    rules: { requiredParams: ['metadata.generation_name'] },
    expect: { allow: false, code: 'invalid_body' },
  },
  {
    name: 'enforced_params: an inherited name is not a field',
    input: { body: '{"model":"llama","metadata":{}}' },
    rules: { requiredParams: ['metadata.constructor'] },
    expect: { allow: false, code: 'invalid_body' },
  },
]);

table('decide: model allow-lists', [
  {
    name: 'key list excludes the model → model_not_allowed (table message)',
    input: { key: key({ models: ['qwen'] }) },
    expect: { allow: false, code: 'model_not_allowed', message: undefined },
  },
  { name: 'key list includes the model → allowed', input: { key: key({ models: ['llama'] }) }, expect: { allow: true, model: 'llama' } },
  {
    name: "key list ['*'] → all models",
    input: { key: key({ models: ['*'] }), body: '{"model":"qwen"}' },
    expect: { allow: true, model: 'qwen' },
  },
  {
    name: 'key list [] → all models',
    input: { key: key({ models: [] }), body: '{"model":"qwen"}' },
    expect: { allow: true, model: 'qwen' },
  },
  {
    name: "team list excludes the model → model_not_allowed with the team's message",
    input: { team: team({ models: ['qwen'] }) },
    expect: { allow: false, code: 'model_not_allowed', message: "This key's team may not use the requested model." },
  },
  { name: "team list ['*'] → all models", input: { team: team({ models: ['*'] }) }, expect: { allow: true } },
  { name: 'team list [] → all models', input: { team: team({ models: [] }) }, expect: { allow: true } },
  {
    name: 'key list checked before the team list',
    input: { key: key({ models: ['qwen'] }), team: team({ models: ['qwen'] }) },
    expect: { allow: false, code: 'model_not_allowed', message: undefined },
  },
  {
    name: 'unknown model, key allowed all, no team → model_not_found',
    input: { key: key({ teamId: undefined }), team: undefined, body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_found' },
  },
  {
    name: "unknown model, key ['*'] → model_not_found",
    input: { key: key({ models: ['*'], teamId: undefined }), team: undefined, body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_found' },
  },
  {
    name: 'unknown model, team allowed all → model_not_found',
    input: { team: team({ models: [] }), body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_found' },
  },
  {
    name: 'unknown model, master key → model_not_found',
    input: { key: 'master', team: undefined, body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_found', message: undefined },
  },
  {
    name: 'no models at all (discovery has found none) → model_not_found saying the proxy serves none yet',
    input: { key: 'master', team: undefined, body: '{"model":"gpt-4"}' },
    rules: { catalog: new ModelCatalog([]) },
    expect: { allow: false, code: 'model_not_found', message: NO_MODELS_MESSAGE },
  },
  {
    name: 'unknown model, restricted key → model_not_allowed (no catalogue probing)',
    input: { key: key({ models: ['llama'], teamId: undefined }), team: undefined, body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_allowed' },
  },
  {
    name: 'unknown model, restricted team → model_not_allowed',
    input: { body: '{"model":"gpt-4"}' },
    expect: { allow: false, code: 'model_not_allowed', message: "This key's team may not use the requested model." },
  },
]);

table('decide: policy', [
  {
    name: "a matching rule → policy_denied with the rule's message",
    input: { jwt: jwtOk({ groups: ['guests'] }), body: '{"model":"qwen"}' },
    expect: {
      allow: false,
      code: 'policy_denied',
      message: 'guests may only use llama',
      detail: 'rule guests-llama-only',
      failedRule: undefined,
    },
  },
  { name: 'a non-matching rule → allowed', input: { jwt: jwtOk({ groups: ['guests'] }) }, expect: { allow: true, model: 'llama' } },
  {
    name: 'a rule that throws at run time → policy_denied, failedRule set (fail closed)',
    input: { jwt: jwtOk({ claims: { sub: 'alice', tier: 'abc' } }) },
    expect: {
      allow: false,
      code: 'policy_denied',
      message: 'tier too high',
      failedRule: 'tier-limit',
      // Not the CEL error, which can quote the claim it choked on.
      detail: 'rule tier-limit failed while evaluating',
    },
  },
  {
    name: 'the same rule evaluating false → allowed',
    input: { jwt: jwtOk({ claims: { sub: 'alice', tier: '3' } }) },
    expect: { allow: true },
  },
  {
    name: 'policy runs on plain routes (model is "")',
    base: { ...PLAIN_INPUT, path: '/v1/files' },
    input: { jwt: jwtOk({ groups: ['guests'] }) },
    expect: { allow: false, code: 'policy_denied', message: 'guests may only use llama' },
  },
  {
    // The contract's own example rule ("guests only the 8B") would otherwise deny guests the listing itself.
    name: 'the model listing is judged alias by alias: what the policy denies is hidden, the listing allowed',
    base: PLAIN_INPUT,
    input: { jwt: jwtOk({ groups: ['guests'] }) },
    expect: { allow: true, hidden: ['qwen'] },
  },
  {
    name: 'GET /v1/models/{model} is judged the same way',
    base: { ...PLAIN_INPUT, path: '/v1/models/qwen' },
    input: { jwt: jwtOk({ groups: ['guests'] }) },
    expect: { allow: true, hidden: ['qwen'] },
  },
  {
    name: 'a rule that fails on an alias hides it (fail closed)',
    base: PLAIN_INPUT,
    input: { jwt: jwtOk({ claims: { sub: 'alice', tier: 'abc' } }) },
    expect: { allow: true, hidden: ['llama', 'qwen'] },
  },
  {
    name: 'nothing hidden from a caller the policy allows everything',
    base: PLAIN_INPUT,
    expect: { allow: true, hidden: [] },
  },
  {
    name: 'policy sees key.metadata and request.headers',
    input: { key: key({ metadata: { owner: 'ml' } }), headers: { 'x-env': 'prod' } },
    rules: {
      policy: compile([
        { name: 'ml-not-prod', when: "key.metadata.owner == 'ml' && request.headers['x-env'] == 'prod'", deny: 'ml keys stay out of prod' },
      ]),
    },
    expect: { allow: false, code: 'policy_denied', message: 'ml keys stay out of prod', detail: 'rule ml-not-prod' },
  },
  {
    name: 'policy sees request.source, the peer address',
    rules: { policy: compile([{ name: 'office', when: "!request.source.startsWith('192.168.')", deny: 'from the office only' }]) },
    expect: { allow: false, code: 'policy_denied', message: 'from the office only', detail: 'rule office' },
  },
  {
    name: 'policy sees team.models and request.context_extensions',
    input: { contextExtensions: { listener: 'internal' } },
    rules: {
      policy: compile([{ name: 'int', when: "request.context_extensions.listener == 'internal' && 'qwen' in team.models", deny: 'no' }]),
    },
    expect: { allow: false, code: 'policy_denied', message: 'no' },
  },
  {
    name: 'a rule over jwt.groups without a JWT is false, as for a token without groups (not an error that denies)',
    input: { jwt: undefined },
    rules: { jwtRequired: false, policy: compile([{ name: 'g', when: "'guests' in jwt.groups", deny: 'no guests' }]) },
    expect: { allow: true },
  },
  {
    name: "the README's team rule lets a key without a team through",
    input: { key: key({ teamId: undefined }), team: undefined, path: '/v1/embeddings' },
    rules: { policy: compile([{ name: 'interns', when: INTERNS, deny: 'no' }]) },
    expect: { allow: true },
  },
  {
    name: "the README's team rule lets the master key through",
    input: { key: 'master', team: undefined, path: '/v1/embeddings' },
    rules: { policy: compile([{ name: 'interns', when: INTERNS, deny: 'no' }]) },
    expect: { allow: true },
  },
  {
    name: "the README's team rule still denies the interns' key",
    input: { team: team({ teamId: 'interns' }), path: '/v1/embeddings' },
    rules: { policy: compile([{ name: 'interns', when: INTERNS, deny: 'no' }]) },
    expect: { allow: false, code: 'policy_denied', detail: 'rule interns' },
  },
  {
    name: 'a rule over key.metadata without a key, unguarded, still fails closed',
    input: { key: 'master', team: undefined },
    rules: { policy: compile([{ name: 'owner', when: "key.metadata.owner == 'ml'", deny: 'no' }]) },
    expect: { allow: false, code: 'policy_denied', failedRule: 'owner' },
  },
  {
    name: 'the policy is not consulted on admin routes for the master key',
    base: ADMIN_INPUT,
    input: { key: 'master', jwt: jwtOk({ groups: ['guests'] }) },
    rules: { policy: compile([{ name: 'all', when: 'true', deny: 'everything' }]) },
    expect: { allow: true, principal: { admin: true } },
  },
]);

table('decide: no healthy deployment', [
  {
    name: 'every deployment of the alias cooling down → its fallback serves (a deployment of qwen)',
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000 }) },
    expect: { allow: true, model: 'llama', deployment: 'qwen-a' },
  },
  {
    name: 'the alias and its fallbacks all cooling down → no_healthy_deployment',
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000, 'qwen-a': NOW + 1000 }) },
    expect: { allow: false, code: 'no_healthy_deployment' },
  },
  {
    name: 'every deployment cooling down and the fallback not allowed to the key → no_healthy_deployment',
    input: { key: key({ models: ['llama'] }) },
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000 }) },
    expect: { allow: false, code: 'no_healthy_deployment' },
  },
  {
    name: 'an alias without fallbacks, every deployment cooling down → no_healthy_deployment',
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000 }), fallbacks: new Map() },
    expect: { allow: false, code: 'no_healthy_deployment' },
  },
  {
    name: 'all cooling down, the first back (a fallback) put out by a 429 → 429 rate_limit_exceeded, retry-after until it is back',
    rules: {
      health: cooled({ 'llama-a': [NOW + 5000, 'rate-limited'], 'llama-b': [NOW + 6000, 'fault'], 'qwen-a': [NOW + 2500, 'rate-limited'] }),
    },
    expect: { allow: false, code: 'rate_limit_exceeded', message: RATE_LIMITED, retryAfterMs: 2500 },
  },
  {
    name: 'all cooling down, the first back put out by a fault (5xx, timeout) → 503 no_healthy_deployment, with its retry-after',
    rules: {
      health: cooled({ 'llama-a': [NOW + 5000, 'rate-limited'], 'llama-b': [NOW + 3000, 'fault'], 'qwen-a': [NOW + 8000, 'rate-limited'] }),
    },
    expect: { allow: false, code: 'no_healthy_deployment', message: COOLING, retryAfterMs: 3000 },
  },
  {
    name: 'two back at the same time, one put out by a 429 → 429',
    rules: {
      health: cooled({ 'llama-a': [NOW + 4000, 'fault'], 'llama-b': [NOW + 4000, 'rate-limited'], 'qwen-a': [NOW + 4000, 'fault'] }),
    },
    expect: { allow: false, code: 'rate_limit_exceeded', retryAfterMs: 4000 },
  },
  {
    name: 'a fallback the key may not use does not count: its cooldown is not when this client may come back',
    input: { key: key({ models: ['llama'] }) },
    rules: {
      health: cooled({ 'llama-a': [NOW + 5000, 'rate-limited'], 'llama-b': [NOW + 7000, 'rate-limited'], 'qwen-a': [NOW + 1000, 'fault'] }),
    },
    expect: { allow: false, code: 'rate_limit_exceeded', retryAfterMs: 5000 },
  },
  {
    name: 'the fallback available while the alias cools down → it serves (no denial, whatever the cooldowns)',
    rules: { health: cooled({ 'llama-a': [NOW + 5000, 'rate-limited'], 'llama-b': [NOW + 7000, 'rate-limited'] }) },
    expect: { allow: true, deployment: 'qwen-a' },
  },
  {
    name: 'the cooldown has passed at the injected now → allowed',
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000 }) },
    now: NOW + 1000,
    expect: { allow: true, deployment: 'llama-a' },
  },
  {
    name: 'another alias is unaffected',
    input: { body: '{"model":"qwen"}' },
    rules: { health: cooling({ 'llama-a': NOW + 1000, 'llama-b': NOW + 1000 }) },
    expect: { allow: true, deployment: 'qwen-a' },
  },
]);

table('decide: probe, admin and plain routes', [
  {
    name: 'probe without any credentials → allowed',
    base: PROBE_INPUT,
    input: { jwt: jwtFail('missing'), key: 'missing', team: undefined },
    expect: { allow: true, model: undefined, deployment: undefined, principal: { keyId: undefined, userId: undefined, admin: false } },
  },
  { name: 'probe with an unknown key → still allowed', base: PROBE_INPUT, input: { key: 'unknown' }, expect: { allow: true } },
  {
    name: 'admin: master key → allowed as admin',
    base: ADMIN_INPUT,
    input: { key: 'master', jwt: undefined, team: undefined },
    expect: { allow: true, principal: { admin: true } },
  },
  {
    name: 'admin: JWT in an admin group, no key → allowed as admin',
    base: ADMIN_INPUT,
    input: { key: 'missing', team: undefined, jwt: jwtOk({ user: 'root', groups: ['staff', 'platform-admins'] }) },
    expect: { allow: true, principal: { admin: true, userId: 'root', groups: ['staff', 'platform-admins'] } },
  },
  {
    name: 'admin: ordinary key → policy_denied',
    base: ADMIN_INPUT,
    input: { path: '/key/list' },
    expect: { allow: false, code: 'policy_denied', message: BY_KEY_OR_TOKEN },
  },
  {
    name: "admin: an ordinary key reading its own info (LiteLLM's GET /key/info) → allowed, not as admin",
    base: ADMIN_INPUT,
    expect: { allow: true, principal: { admin: false, keyId: 'abababababababab' } },
  },
  {
    name: 'admin: its own info even with the admin API disabled (the gateway answers for that key only)',
    base: ADMIN_INPUT,
    rules: { masterKeySet: false, adminGroups: [] },
    expect: { allow: true, principal: { admin: false } },
  },
  {
    name: 'admin: its own info is not a write: POST /key/info → policy_denied',
    base: ADMIN_INPUT,
    input: { method: 'POST' },
    expect: { allow: false, code: 'policy_denied' },
  },
  {
    name: "admin: its own info still passes the security team's rules",
    base: ADMIN_INPUT,
    rules: { policy: compile([{ name: 'all', when: 'true', deny: 'everything' }]) },
    expect: { allow: false, code: 'policy_denied' },
  },
  {
    name: 'admin: JWT outside the admin groups, no key → missing_api_key (send the master key)',
    base: ADMIN_INPUT,
    input: { key: 'missing', team: undefined },
    expect: { allow: false, code: 'missing_api_key', message: BY_KEY_OR_TOKEN },
  },
  {
    name: 'admin: neither master key nor admin groups configured → disabled',
    base: ADMIN_INPUT,
    input: { path: '/key/list' },
    rules: { masterKeySet: false, adminGroups: [] },
    expect: { allow: false, code: 'policy_denied', message: DISABLED },
  },
  {
    name: 'admin: disabled even with no credentials at all',
    base: ADMIN_INPUT,
    input: { key: 'missing', jwt: undefined, team: undefined },
    rules: { masterKeySet: false, adminGroups: [] },
    expect: { allow: false, code: 'policy_denied', message: DISABLED },
  },
  {
    name: 'admin: no credentials at all, no token configured → missing_api_key naming the master key only',
    base: ADMIN_INPUT,
    input: { key: 'missing', jwt: undefined, team: undefined },
    expect: { allow: false, code: 'missing_api_key', message: BY_MASTER_KEY },
  },
  {
    name: 'admin: no credentials, a token not required → missing_api_key naming the master key and the admin groups',
    base: ADMIN_INPUT,
    input: { key: 'missing', jwt: jwtFail('missing'), team: undefined },
    rules: { jwtRequired: false },
    expect: { allow: false, code: 'missing_api_key', message: BY_KEY_OR_TOKEN },
  },
  {
    name: 'admin: only admin groups configured, ordinary key → policy_denied (saying no more of the master key)',
    base: ADMIN_INPUT,
    input: { path: '/team/info' },
    rules: { masterKeySet: false },
    expect: { allow: false, code: 'policy_denied', message: BY_KEY_OR_TOKEN },
  },
  {
    name: 'admin: only the master key configured, ordinary key → policy_denied naming the master key only',
    base: ADMIN_INPUT,
    input: { path: '/team/info' },
    rules: { adminGroups: [] },
    expect: { allow: false, code: 'policy_denied', message: BY_MASTER_KEY },
  },
  {
    name: 'admin: unknown key → invalid_api_key',
    base: ADMIN_INPUT,
    input: { key: 'unknown' },
    expect: { allow: false, code: 'invalid_api_key' },
  },
  {
    name: 'admin: blocked key in an admin group → key_blocked',
    base: ADMIN_INPUT,
    input: { key: key({ blocked: true }), jwt: jwtOk({ groups: ['platform-admins'] }) },
    expect: { allow: false, code: 'key_blocked' },
  },
  {
    name: 'plain: GET /v1/models without a body → allowed, no model, no deployment',
    base: PLAIN_INPUT,
    expect: { allow: true, model: undefined, deployment: undefined, principal: { keyId: 'abababababababab', admin: false } },
  },
  {
    name: 'plain: missing key → missing_api_key',
    base: PLAIN_INPUT,
    input: { key: 'missing', team: undefined },
    expect: { allow: false, code: 'missing_api_key' },
  },
  {
    name: 'plain: blocked team → key_blocked',
    base: PLAIN_INPUT,
    input: { team: team({ blocked: true }) },
    expect: { allow: false, code: 'key_blocked' },
  },
]);

table('decide: the principal', [
  {
    name: 'JWT user wins over the key owner; team from the team record; email from the JWT',
    expect: {
      allow: true,
      principal: {
        keyId: 'abababababababab',
        keyAlias: 'ci-bot',
        userId: 'alice',
        teamId: 'platform',
        email: 'alice@example.com',
        groups: ['staff'],
        admin: false,
      },
    },
  },
  {
    name: "JWT with an empty user → the key's user_id",
    input: { jwt: jwtOk({ user: '' }) },
    expect: { allow: true, principal: { userId: 'key-owner' } },
  },
  {
    name: "no JWT → the key's user_id, no email",
    input: { jwt: undefined },
    expect: { allow: true, principal: { userId: 'key-owner', email: undefined, groups: [] } },
  },
  {
    name: 'JWT with an empty email → email undefined',
    input: { jwt: jwtOk({ email: '' }) },
    expect: { allow: true, principal: { email: undefined } },
  },
  {
    name: 'a team_id naming no team (removed from the config, a typo) → refused, not run without its limits',
    input: { team: undefined, key: key({ teamId: 'ml' }) },
    expect: { allow: false, code: 'key_blocked' },
  },
  {
    name: 'key without user or team, no JWT → both undefined',
    input: { jwt: undefined, team: undefined, key: key({ userId: undefined, teamId: undefined }) },
    expect: { allow: true, principal: { userId: undefined, teamId: undefined } },
  },
  {
    name: 'the principal carries the key record',
    input: { key: key({ alias: 'other' }) },
    expect: { allow: true, principal: { keyAlias: 'other' } },
  },
]);

table('decide: weighted routing hint (llama-a weight 1, llama-b weight 3)', [
  { name: 'random 0 → llama-a', random: 0, expect: { allow: true, deployment: 'llama-a' } },
  { name: 'random 0.2 → llama-a', random: 0.2, expect: { allow: true, deployment: 'llama-a' } },
  { name: 'random 0.2499 → llama-a', random: 0.2499, expect: { allow: true, deployment: 'llama-a' } },
  { name: 'random 0.25 → llama-b', random: 0.25, expect: { allow: true, deployment: 'llama-b' } },
  { name: 'random 0.5 → llama-b', random: 0.5, expect: { allow: true, deployment: 'llama-b' } },
  { name: 'random 0.9999 → llama-b', random: 0.9999, expect: { allow: true, deployment: 'llama-b' } },
  {
    name: 'random 0.2 with llama-a cooling down → llama-b',
    random: 0.2,
    rules: { health: cooling({ 'llama-a': NOW + 5000 }) },
    expect: { allow: true, deployment: 'llama-b' },
  },
  {
    name: 'random 0.5 with llama-b cooling down → llama-a',
    random: 0.5,
    rules: { health: cooling({ 'llama-b': NOW + 5000 }) },
    expect: { allow: true, deployment: 'llama-a' },
  },
  {
    name: 'random 0.2, llama-a cooled down until now → llama-a again',
    random: 0.2,
    now: NOW + 5000,
    rules: { health: cooling({ 'llama-a': NOW + 5000 }) },
    expect: { allow: true, deployment: 'llama-a' },
  },
  {
    name: 'single deployment alias, any random → qwen-a',
    random: 0.99,
    input: { body: '{"model":"qwen"}' },
    expect: { allow: true, deployment: 'qwen-a' },
  },
]);

/** llama: primary llama-a (order 1, weight 1), backup llama-b (order 2, weight 3); qwen-a as before. */
const ORDERED = new ModelCatalog([
  { ...dep('llama-a', 'llama', 1), order: 1 },
  { ...dep('llama-b', 'llama', 3), order: 2 },
  dep('qwen-a', 'qwen', 1),
]);

table('decide: routing hint by order (llama-a order 1, llama-b order 2 and three times its weight)', [
  { name: 'random 0 → llama-a', random: 0, rules: { catalog: ORDERED }, expect: { allow: true, deployment: 'llama-a' } },
  {
    name: 'random 0.9999 (llama-b by weight alone) → llama-a, the first order',
    random: 0.9999,
    rules: { catalog: ORDERED },
    expect: { allow: true, deployment: 'llama-a' },
  },
  {
    name: 'llama-a cooling down → llama-b, the next order',
    random: 0,
    rules: { catalog: ORDERED, health: cooling({ 'llama-a': NOW + 5000 }) },
    expect: { allow: true, deployment: 'llama-b' },
  },
  {
    name: 'llama-a back from its cooldown → llama-a again',
    random: 0.9999,
    now: NOW + 5000,
    rules: { catalog: ORDERED, health: cooling({ 'llama-a': NOW + 5000 }) },
    expect: { allow: true, deployment: 'llama-a' },
  },
  {
    name: 'both orders cooling down → the fallback (qwen-a)',
    rules: { catalog: ORDERED, health: cooling({ 'llama-a': NOW + 5000, 'llama-b': NOW + 5000 }) },
    expect: { allow: true, deployment: 'qwen-a' },
  },
]);

test('the no-models message says why the list is empty and names no address of the backend', () => {
  assert.match(NO_MODELS_MESSAGE, /serves no models at the moment/);
  assert.match(NO_MODELS_MESSAGE, /has not answered yet/);
  assert.doesNotMatch(NO_MODELS_MESSAGE, /https?:|127\.0\.0\.1|localhost|:8000/);
});

describe('decide: determinism', () => {
  test('weights are honoured over a sweep of random values (1:3)', () => {
    const picks = { 'llama-a': 0, 'llama-b': 0 } as Record<string, number>;
    for (let i = 0; i < 1000; i++) {
      const d = run({ name: 'sweep', random: i / 1000, expect: { allow: true } });
      assert.ok(d.allow);
      const id = d.deployment?.id ?? '';
      picks[id] = (picks[id] ?? 0) + 1;
    }
    assert.deepEqual(picks, { 'llama-a': 250, 'llama-b': 750 });
  });
  test('the same input, rules, now and random give the same decision', () => {
    assert.deepEqual(run({ name: 'a', random: 0.3, expect: { allow: true } }), run({ name: 'b', random: 0.3, expect: { allow: true } }));
  });
});

describe('decide: the model listing counts a rule that fails', () => {
  test('a rule failing on every alias hides them all and is named once in failedRules', () => {
    const d = decide({ ...PLAIN_INPUT, jwt: jwtOk({ claims: { sub: 'alice', tier: 'abc' } }) }, RULES, NOW, 0.1);
    assert.ok(d.allow);
    assert.deepEqual(d.hidden, ['llama', 'qwen']);
    assert.deepEqual(d.failedRules, ['tier-limit']);
  });
  test('a rule that only matches hides without a failure', () => {
    const d = decide({ ...PLAIN_INPUT, jwt: jwtOk({ groups: ['guests'] }) }, RULES, NOW, 0.1);
    assert.ok(d.allow);
    assert.deepEqual(d.hidden, ['qwen']);
    assert.equal(d.failedRules, undefined);
  });
});

describe('fallbacks are filtered like the model itself', () => {
  const body = JSON.stringify({ model: 'llama' });
  const base = {
    route: 'model' as const,
    method: 'POST',
    path: '/v1/chat/completions',
    headers: {},
    contextExtensions: {},
    source: '',
    body,
    team: team({ models: [] }),
  };
  test('a key allowed both models keeps the fallback', () => {
    const d = decide({ ...base, jwt: jwtOk(), key: key({ models: [] }) }, RULES, NOW, 0.1);
    assert.ok(d.allow);
    assert.deepEqual(d.fallbacks, ['qwen']);
  });
  test('a key limited to llama gets no fallback to qwen', () => {
    const d = decide({ ...base, jwt: jwtOk(), key: key({ models: ['llama'] }) }, RULES, NOW, 0.1);
    assert.ok(d.allow);
    assert.deepEqual(d.fallbacks, []);
  });
  test('a policy rule denying qwen removes the fallback', () => {
    const d = decide({ ...base, jwt: jwtOk({ groups: ['guests'] }), key: key({ models: [] }) }, RULES, NOW, 0.1);
    assert.ok(d.allow);
    assert.deepEqual(d.fallbacks, []);
  });
});
