import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  firstProblem,
  keyGenerate,
  keyListQuery,
  keyRef,
  keyUpdate,
  MAX_NESTING,
  teamNew,
  unstorableText,
  userUpdate,
} from '../../../src/gateway/admin-schemas.js';

test('an unknown field is named, with what to do', () => {
  const r = keyGenerate.safeParse({ max_budjet: 1 });
  assert.ok(!r.success);
  assert.deepEqual(firstProblem(r.error), { field: 'max_budjet', message: 'max_budjet: unknown field: remove it or check its spelling' });
});

test('a wrong type names the field and never echoes the value', () => {
  const r = keyGenerate.safeParse({ key_alias: 'x', rpm_limit: 'sk-secret-looking-value' });
  assert.ok(!r.success);
  const p = firstProblem(r.error);
  assert.equal(p.field, 'rpm_limit');
  assert.ok(!p.message.includes('sk-secret'));
});

test('a key reference is the sk- key or its 64-hex token', () => {
  assert.ok(keyRef.safeParse('sk-abcdef123').success);
  assert.ok(keyRef.safeParse('a'.repeat(64)).success);
  assert.ok(!keyRef.safeParse('A'.repeat(64)).success);
  assert.ok(!keyRef.safeParse('bearer sk-x').success);
});

test('query strings are coerced and bounded', () => {
  assert.deepEqual(keyListQuery.parse({ page: '2', size: '50' }), { page: 2, size: 50, return_full_object: false });
  assert.ok(!keyListQuery.safeParse({ size: '101' }).success);
  assert.ok(!keyListQuery.safeParse({ return_full_object: 'yes' }).success);
});

test("budgets and limits written as strings are numbers, as LiteLLM's API takes them; other strings are refused", () => {
  assert.deepEqual(keyGenerate.parse({ max_budget: '10.5', rpm_limit: '+5', tpm_limit: ' 1e3 ', max_parallel_requests: '2.0' }), {
    max_budget: 10.5,
    rpm_limit: 5,
    tpm_limit: 1000,
    max_parallel_requests: 2,
  });
  for (const [field, value] of [
    ['rpm_limit', '5.5'],
    ['rpm_limit', ''],
    ['max_budget', '-1'],
    ['max_budget', 'ten'],
    ['tpm_limit', '0x10'],
  ] as const) {
    const r = keyGenerate.safeParse({ [field]: value });
    assert.ok(!r.success, `${field}: ${JSON.stringify(value)}`);
    assert.equal(firstProblem(r.error).field, field);
  }
  assert.deepEqual(keyGenerate.parse({ max_budget: null }), { max_budget: null });
});

test('a zero duration or budget_duration is refused, naming the field, not rounded up to one unit', () => {
  for (const [field, value] of [
    ['duration', '0s'],
    ['duration', '0mo'],
    ['budget_duration', '0d'],
    ['budget_duration', '00m'],
  ] as const) {
    const r = keyGenerate.safeParse({ [field]: value });
    assert.ok(!r.success, `${field}: ${value}`);
    const p = firstProblem(r.error);
    assert.equal(p.field, field);
    assert.match(p.message, /zero/);
  }
  assert.ok(keyGenerate.safeParse({ duration: '1s', budget_duration: 'mo' }).success);
});

test('a body nested past MAX_NESTING is named at its field, however deep (no stack overflow)', () => {
  const nest = (depth: number): unknown => {
    let v: unknown = 'leaf';
    for (let i = 0; i < depth; i++) v = [v];
    return v;
  };
  // metadata is at depth 1: MAX_NESTING - 1 levels inside it still fit.
  assert.equal(unstorableText({ metadata: nest(MAX_NESTING - 1) }), undefined);
  for (const depth of [MAX_NESTING, 3000, 200_000]) {
    const found = unstorableText({ key_alias: 'ok', metadata: nest(depth) });
    assert.equal(found?.field, 'metadata', String(depth));
    assert.match(found?.message ?? '', /^metadata: nested more than \d+ levels deep/);
  }
});

test('unstorable text is named in the order of the body, field names before their values', () => {
  assert.equal(unstorableText({ a: { b: ['ok', 'x\u0000'] }, c: '\u0000' })?.field, 'a.b[1]');
  assert.equal(unstorableText({ a: 'ok', ['b\u0000']: '\u0000', c: '\u0000' })?.field, 'b\\u0000');
  assert.equal(unstorableText({ a: { ['\ud800']: 1 }, b: '\u0000' })?.message.includes('field name'), true);
  assert.equal(unstorableText({ a: [1, null, true, { b: 'fine' }] }), undefined);
});

test("LiteLLM's empty defaults of the restrictions tollgate refuses are accepted: they restrict nothing", () => {
  // GenerateRequestBase's defaults, as an exported LiteLLM key row carries them.
  const exported = { aliases: {}, config: {}, permissions: {}, model_max_budget: {}, allowed_routes: [], spend: 0, guardrails: null };
  assert.ok(keyGenerate.safeParse(exported).success);
  assert.ok(keyGenerate.safeParse({ spend: '0' }).success);
  assert.ok(teamNew.safeParse({ model_aliases: {}, team_member_budget: null }).success);
  assert.ok(userUpdate.safeParse({ user_id: 'u', spend: 0, model_max_budget: {} }).success);
  for (const [field, value] of [
    ['aliases', { a: 'llama' }],
    ['allowed_routes', ['/v1/embeddings']],
    ['model_max_budget', { llama: 1 }],
    ['permissions', { pii_masking: true }],
  ] as const) {
    const r = keyGenerate.safeParse({ [field]: value });
    assert.ok(!r.success, field);
    assert.match(firstProblem(r.error).message, /not enforced by tollgate/);
  }
});

test('a spend other than 0 says spend is counted, not that the key would be allowed more', () => {
  for (const schema of [keyGenerate, userUpdate]) {
    const r = schema.safeParse({ user_id: 'u', spend: 5 });
    assert.ok(!r.success);
    const p = firstProblem(r.error);
    assert.equal(p.field, 'spend');
    assert.match(p.message, /^spend: counted by tollgate/);
    assert.doesNotMatch(p.message, /allowed more/);
  }
});

test('max_budget "" is no budget, as LiteLLM reads it', () => {
  assert.deepEqual(keyGenerate.parse({ max_budget: '' }), { max_budget: null });
  assert.deepEqual(keyUpdate.parse({ key: 'sk-abcdef', max_budget: '' }), { key: 'sk-abcdef', max_budget: null });
});

test("LiteLLM fields tollgate does not support say so and what to do instead, not 'check its spelling'", () => {
  for (const [field, value, instead] of [
    ['rpm_limit_type', 'guaranteed_throughput', /hard limits/],
    ['tpm_limit_type', 'dynamic', /hard limits/],
    ['temp_budget_increase', 10, /raise max_budget/],
    ['temp_budget_expiry', '2027-01-01', /raise max_budget/],
    ['grace_period', '1h', /generate a second key/],
  ] as const) {
    const r = keyGenerate.safeParse({ [field]: value });
    assert.ok(!r.success, field);
    const p = firstProblem(r.error);
    assert.equal(p.field, field);
    assert.match(p.message, /not supported by tollgate/);
    assert.match(p.message, instead);
    assert.ok(keyGenerate.safeParse({ [field]: null }).success, `${field}: null is not given`);
  }
  assert.match(firstProblem(teamNew.safeParse({ rpm_limit_type: 'dynamic' }).error!).message, /not supported by tollgate/);
});

test("LiteLLM's restrictions inside metadata, where LiteLLM keeps and enforces them, are refused like the top-level fields", () => {
  for (const schema of [keyGenerate, teamNew]) {
    for (const [field, value, message] of [
      ['model_rpm_limit', { llama: 1 }, /not enforced by tollgate/],
      ['model_tpm_limit', { llama: 10 }, /not enforced by tollgate/],
      ['enforced_params', ['user'], /not enforced by tollgate/],
      ['guardrails', ['pii'], /not enforced by tollgate/],
      ['allowed_passthrough_routes', ['/anthropic'], /not enforced by tollgate/],
      ['tpm_limit_type', 'guaranteed_throughput', /not supported by tollgate/],
      ['temp_budget_increase', 5, /not supported by tollgate/],
    ] as const) {
      const r = schema.safeParse({ metadata: { owner: 'x', [field]: value } });
      assert.ok(!r.success, field);
      const p = firstProblem(r.error);
      assert.equal(p.field, `metadata.${field}`);
      assert.match(p.message, message);
    }
  }
  assert.ok(keyUpdate.safeParse({ key: 'sk-abcdef', metadata: { model_rpm_limit: { llama: 1 } } }).error);
  // Labels, and LiteLLM's empty values, stay.
  assert.ok(keyGenerate.safeParse({ metadata: { owner: 'x', tags: ['prod'], model_rpm_limit: {}, guardrails: [] } }).success);
});
