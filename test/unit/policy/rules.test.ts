/** Policy: CEL rules compiled at boot (errors with their YAML path), evaluated first-match, failing closed. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NO_JWT, NO_KEY, NO_TEAM, Policy, type PolicyInput, type PolicyVerdict } from '../../../src/policy/rules.js';

type Rule = { name: string; when: string; deny: string };

function compile(rules: Rule[]): Policy {
  const r = Policy.compile(rules);
  assert.ok(r.policy, JSON.stringify(r.issues));
  return r.policy;
}

const INPUT: PolicyInput = {
  jwt: { sub: 'alice', user: 'alice', email: 'alice@example.com', groups: ['staff', 'guests'], dept: 'research', tier: 'gold' },
  key: {
    id: 'abababababababab',
    alias: 'ci-bot',
    user_id: 'ci',
    team_id: 'platform',
    models: ['llama'],
    metadata: { owner: 'platform-team', env: 'ci' },
  },
  team: { team_id: 'platform', alias: 'Platform', models: ['llama', 'qwen'], metadata: { cost_center: '42' } },
  model: 'qwen',
  request: {
    method: 'POST',
    path: '/v1/chat/completions',
    source: '10.0.0.7',
    headers: { 'x-env': 'prod', 'user-agent': 'sdk/1' },
    context_extensions: { listener: 'internal' },
  },
};
const EMPTY_INPUT: PolicyInput = {
  jwt: {},
  key: NO_KEY,
  team: NO_TEAM,
  model: '',
  request: { method: 'GET', path: '/v1/models', source: '', headers: {}, context_extensions: {} },
};

describe('Policy.compile: errors name the YAML path and the rule', () => {
  const cases: Array<[what: string, when: string, message: RegExp]> = [
    ['syntax error', "jwt.groups.exists(g, g == 'x'", /does not compile/],
    ['unbalanced quote', "model == 'llama", /does not compile/],
    ['type error', 'model + 1 == 2', /does not compile: .*overload/],
    ['unknown variable', "user == 'x'", /does not compile/],
    ['string result', 'model', /must be true or false, but its type is string/],
    ['int result', 'model.size()', /must be true or false, but its type is int/],
    ['misspelt request field', "request.hedaers['x'] == 'y'", /does not compile: .*hedaers/],
    ['misspelt key field', "key.alais == 'ci'", /does not compile: .*alais/],
    ['misspelt team field', "team.teamid == 'interns'", /does not compile: .*teamid/],
    ['a typed field compared to another type', 'key.models == 1', /does not compile/],
    ['a metadata value as the condition', 'key.metadata.owner', /must be true or false, but its type is dyn.*compare it/],
    ['a claim as the condition', 'jwt.admin', /must be true or false, but its type is dyn/],
    ['division by zero', '1 / 0 == 1', /can never be evaluated: `1 \/ 0 == 1` fails on every request \(division by zero\)/],
    ['a failing part beside a variable', 'jwt.x == 1 || 1 % 0 == 0', /`1 % 0 == 0` fails on every request \(modulo by zero\)/],
    ['a conversion that cannot succeed', "int('x') == 1 && model == 'a'", /`int\('x'\) == 1` fails on every request/],
    ['an overflow', '9223372036854775807 + 1 > 0', /fails on every request \(integer overflow/],
    ['an index out of a literal list', '[1, 2][5] == 1', /fails on every request/],
    ['a failing part in parentheses', "model == 'a' && ((1 / 0) > 2)", /`\(?1 \/ 0\)? > 2` fails on every request \(division by zero\)/],
    ['a negated failing part', "model == 'a' && !(1/0 == 1)", /fails on every request \(division by zero\)/],
    ['a parenthesised conversion', "model == 'a' && (int('x')) == 1", /fails on every request/],
  ];
  for (const [what, when, message] of cases) {
    test(what, () => {
      const r = Policy.compile([
        { name: 'fine', when: 'true', deny: 'a' },
        { name: `bad-${what}`, when, deny: 'b' },
      ]);
      assert.equal(r.policy, undefined);
      assert.equal(r.issues.length, 1);
      const issue = r.issues[0];
      assert.ok(issue);
      assert.equal(issue.path, 'policy.rules[1].when');
      assert.ok(issue.message.includes(`rule "bad-${what}"`), issue.message);
      assert.match(issue.message, message);
      assert.doesNotMatch(issue.message, /\n/, 'one line, no source excerpt');
    });
  }
  test("a part without variables that evaluates, or whose error CEL's || and && absorb, compiles", () => {
    for (const when of [
      'true || 1 / 0 == 1',
      "false && int('x') == 1",
      "'abc'.size() == 3 && model == 'a'",
      "model in ['a', 'b']",
      'double(1) / 0.0 > 1.0',
      // Parts whose own text is evaluated (a round trip through cel-js's serialize lost these).
      'double(jwt.score) > -1e100',
      'double(jwt.s) in [0.5, 1e-10]',
      "model in ['a','b'] || 1.0 / 1e-10 > 0.0",
      "request.headers['x-team'] in ['😀','a']",
      "model == '😀' + 'a'",
      "(((1 + 2))) == 3 && model == ('a')",
      "model == 'a' && ((true) || (1 / 0 == 1))",
      "model == ')(' && (('a') + ('b')) == 'ab'",
    ])
      assert.deepEqual(Policy.compile([{ name: 'r', when, deny: 'x' }]).issues, [], when);
  });
  test('every failing rule is reported, each at its own index', () => {
    const r = Policy.compile([
      { name: 'a', when: '(', deny: 'x' },
      { name: 'b', when: "model == 'x'", deny: 'x' },
      { name: 'c', when: '1 + 1', deny: 'x' },
    ]);
    assert.equal(r.policy, undefined);
    assert.deepEqual(
      r.issues.map((i) => i.path),
      ['policy.rules[0].when', 'policy.rules[2].when'],
    );
    assert.match(r.issues[0]?.message ?? '', /rule "a"/);
    assert.match(r.issues[1]?.message ?? '', /rule "c"/);
  });
  test('a claim or metadata value compared to a value compiles (its result is a bool)', () => {
    const r = Policy.compile([
      { name: 'claim', when: 'jwt.admin == true', deny: 'x' },
      { name: 'meta', when: "has(key.metadata.owner) && key.metadata.owner == 'ml'", deny: 'x' },
    ]);
    assert.ok(r.policy);
    assert.deepEqual(r.issues, []);
  });
  test('no rules → an empty policy that allows', () => {
    const p = compile([]);
    assert.equal(p.size, 0);
    assert.deepEqual(p.evaluate(INPUT), { allowed: true });
  });
});

const deny = (rule: string, message: string, error?: string): PolicyVerdict => ({ allowed: false, rule, message, error });
const ALLOWED: PolicyVerdict = { allowed: true };

describe('Policy.evaluate: rules over every variable', () => {
  const cases: Array<[name: string, when: string, input: PolicyInput, expected: 'deny' | 'allow']> = [
    ['jwt.groups membership', "'guests' in jwt.groups", INPUT, 'deny'],
    ['jwt.groups non-membership', "'admins' in jwt.groups", INPUT, 'allow'],
    ['jwt.groups.exists', "jwt.groups.exists(g, g.startsWith('gue'))", INPUT, 'deny'],
    ['a raw claim', "jwt.dept == 'research'", INPUT, 'deny'],
    ['mapped jwt.user and jwt.email', "jwt.user == 'alice' && jwt.email.endsWith('@example.com')", INPUT, 'deny'],
    ['key.metadata', "key.metadata.owner == 'platform-team'", INPUT, 'deny'],
    ['key.metadata other value', "key.metadata.env == 'prod'", INPUT, 'allow'],
    ['key.alias and key.models', "key.alias == 'ci-bot' && !(model in key.models)", INPUT, 'deny'],
    ['team.models', 'model in team.models', INPUT, 'deny'],
    ['team.metadata', "team.metadata.cost_center == '42'", INPUT, 'deny'],
    ['model', "model.startsWith('qwen')", INPUT, 'deny'],
    ['model mismatch', "model == 'llama'", INPUT, 'allow'],
    ['request.headers', "request.headers['x-env'] == 'prod'", INPUT, 'deny'],
    ['request.method and path', "request.method == 'POST' && request.path.startsWith('/v1/')", INPUT, 'deny'],
    ['request.source, the peer address', "request.source.startsWith('10.0.0.')", INPUT, 'deny'],
    ['request.context_extensions', "request.context_extensions.listener == 'internal'", INPUT, 'deny'],
    ['has() guard on a present claim', "has(jwt.dept) && jwt.dept == 'research'", INPUT, 'deny'],
    ['has() guard on an absent claim', 'has(jwt.contractor) && jwt.contractor == true', INPUT, 'allow'],
    ['has() guard over an empty jwt', "has(jwt.groups) && 'guests' in jwt.groups", EMPTY_INPUT, 'allow'],
    ['has() on a header', 'has(request.headers.x_missing)', INPUT, 'allow'],
    ["key in a map ('in' on keys)", "'x-env' in request.headers", INPUT, 'deny'],
    ['empty model on plain routes', "model == ''", EMPTY_INPUT, 'deny'],
  ];
  for (const [name, when, input, expected] of cases) {
    test(name, () => {
      const p = compile([{ name: 'r', when, deny: 'denied' }]);
      assert.deepEqual(p.evaluate(input), expected === 'deny' ? deny('r', 'denied') : ALLOWED);
    });
  }
});

describe('Policy.evaluate: a caller without a key, a team or a JWT sees their empty views', () => {
  const NOBODY: PolicyInput = { ...EMPTY_INPUT, jwt: NO_JWT };
  const cases: Array<[name: string, when: string, expected: 'deny' | 'allow']> = [
    ["the README's team rule, for a key without a team", "team.team_id == 'interns' && request.path.endsWith('/models')", 'allow'],
    ['team.models and team.alias', "'qwen' in team.models || team.alias == 'x'", 'allow'],
    ['key fields', "key.id == 'x' || key.alias == 'x' || key.user_id == 'x' || key.team_id == 'x' || 'x' in key.models", 'allow'],
    ['key.metadata guarded', 'has(key.metadata.owner)', 'allow'],
    ['jwt.groups without a JWT, as for a token without groups', "'guests' in jwt.groups", 'allow'],
    ['jwt.email and jwt.user without a JWT', "jwt.email.endsWith('@example.com') || jwt.user != ''", 'allow'],
    ['a rule that names the absence', "key.id == '' && jwt.user == ''", 'deny'],
  ];
  for (const [name, when, expected] of cases) {
    test(name, () => {
      const p = compile([{ name: 'r', when, deny: 'denied' }]);
      assert.deepEqual(p.evaluate(NOBODY), expected === 'deny' ? deny('r', 'denied') : ALLOWED);
    });
  }
});

describe('Policy.evaluate: first match wins', () => {
  const p = compile([
    { name: 'no-guests-on-qwen', when: "'guests' in jwt.groups && model == 'qwen'", deny: 'guests may not use qwen' },
    { name: 'no-prod-from-ci', when: "key.metadata.env == 'ci' && request.headers['x-env'] == 'prod'", deny: 'ci keys stay out of prod' },
    { name: 'catch-all-research', when: "jwt.dept == 'research'", deny: 'research is paused' },
  ]);
  const cases: Array<[name: string, input: PolicyInput, expected: PolicyVerdict]> = [
    ['all three match → the first', INPUT, deny('no-guests-on-qwen', 'guests may not use qwen')],
    ['first does not match → the second', { ...INPUT, model: 'llama' }, deny('no-prod-from-ci', 'ci keys stay out of prod')],
    [
      'only the third matches',
      { ...INPUT, model: 'llama', request: { ...INPUT.request, headers: { 'x-env': 'dev' } } },
      deny('catch-all-research', 'research is paused'),
    ],
    [
      'none match → allowed',
      { ...INPUT, jwt: { ...INPUT.jwt, dept: 'ops' }, model: 'llama', request: { ...INPUT.request, headers: { 'x-env': 'dev' } } },
      ALLOWED,
    ],
  ];
  for (const [name, input, expected] of cases) test(name, () => assert.deepEqual(p.evaluate(input), expected));
  test('size counts the compiled rules', () => assert.equal(p.size, 3));
});

describe('Policy.evaluate: a rule that fails at run time denies (fail closed)', () => {
  const cases: Array<[name: string, when: string, input: PolicyInput, error: RegExp]> = [
    ['missing claim without has()', 'jwt.contractor == true', INPUT, /contractor/],
    ['jwt.groups over an empty jwt (no JWT configured)', "'guests' in jwt.groups", EMPTY_INPUT, /groups/],
    ['missing header', "request.headers['x-absent'] == 'a'", INPUT, /x-absent/],
    ['bad conversion', 'int(jwt.tier) > 1', INPUT, /int/],
    ['absent metadata without has()', "key.metadata.owner == 'ml'", EMPTY_INPUT, /owner/],
  ];
  for (const [name, when, input, error] of cases) {
    test(name, () => {
      const p = compile([{ name: 'fragile', when, deny: 'denied by fragile' }]);
      const v = p.evaluate(input);
      assert.equal(v.allowed, false);
      if (v.allowed) return;
      assert.equal(v.rule, 'fragile');
      assert.equal(v.message, 'denied by fragile');
      assert.ok(v.error !== undefined, 'error set');
      assert.match(v.error, error);
      assert.doesNotMatch(v.error, /\n/);
    });
  }
  test('a failing rule stops evaluation: later rules are not reached', () => {
    const p = compile([
      { name: 'fragile', when: 'jwt.contractor == true', deny: 'first' },
      { name: 'never', when: 'true', deny: 'second' },
    ]);
    const v = p.evaluate(INPUT);
    assert.equal(v.allowed, false);
    if (!v.allowed) assert.equal(v.rule, 'fragile');
  });
  test('an earlier match wins over a later failing rule', () => {
    const p = compile([
      { name: 'match', when: "model == 'qwen'", deny: 'first' },
      { name: 'fragile', when: 'jwt.contractor == true', deny: 'second' },
    ]);
    assert.deepEqual(p.evaluate(INPUT), deny('match', 'first'));
  });
  test('a CEL short-circuit skips the failing part when the guard is false', () => {
    const p = compile([{ name: 'guarded', when: "model == 'llama' && jwt.contractor == true", deny: 'x' }]);
    assert.deepEqual(p.evaluate(INPUT), ALLOWED);
  });
});
