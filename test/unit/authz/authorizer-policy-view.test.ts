/**
 * What the policy sees of a request, whichever door it came through: `request.source` (the peer address,
 * IPv4-mapped IPv6 written as IPv4) and `request.headers` (the same names on Check and on the gateway).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RequestFacts } from '../../../src/authorizer/authorizer.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { prepareConfigText } from '../../../src/main/config-source.js';

const MASTER = 'sk-master-policy-view-0001';

/** Each rule denies when what it names is visible, so the rule in the decision says what the policy saw. */
function setup(when: string): (facts: Partial<RequestFacts>) => Promise<string | undefined> {
  const prepared = prepareConfigText(
    `general_settings:\n  master_key: ${MASTER}\nmodel_list:\n  - model_name: llama\n    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:9/v1" }\n` +
      `policy:\n  rules:\n    - name: seen\n      when: ${JSON.stringify(when)}\n      deny: seen\n`,
    'view.yaml',
    {},
  );
  const parts = buildAuthorizer(prepared.config, prepared.policy, Buffer.alloc(32, 7));
  const base: RequestFacts = {
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${MASTER}` },
    body: '{"model":"llama"}',
    partialBody: false,
    contextExtensions: {},
    signContext: false,
  };
  return async (facts) => {
    const headers = { ...base.headers, ...facts.headers };
    const d = (await parts.authorizer.authorize({ ...base, ...facts, headers }, Date.now())).decision;
    return d.allow ? undefined : d.detail;
  };
}

test('request.source: the peer address, an IPv4-mapped IPv6 one as IPv4, empty when unknown', async () => {
  const seen = setup("request.source == '10.1.2.3'");
  assert.equal(await seen({ source: '10.1.2.3' }), 'rule seen');
  assert.equal(await seen({ source: '::ffff:10.1.2.3' }), 'rule seen');
  assert.equal(await seen({ source: '10.9.9.9' }), undefined);
  assert.equal(await setup("request.source == ''")({}), 'rule seen');
  assert.equal(await setup("request.source == '2001:db8::1'")({ source: '2001:db8::1' }), 'rule seen');
});

test('request.headers: no pseudo-headers, x-tollgate-* or x-request-id; the authority as host', async () => {
  const names = "request.headers.exists(h, h.startsWith(':') || h.startsWith('x-tollgate-') || h == 'x-request-id')";
  const check = { ':authority': 'api.example.com', ':path': '/v1/chat/completions', ':method': 'POST', ':scheme': 'https' };
  const doors: Record<string, string>[] = [
    { ...check, 'x-request-id': 'r-1', 'x-tollgate-user': 'root' },
    { host: 'api.example.com', 'x-request-id': 'r-1', 'x-tollgate-user': 'root' },
  ];
  for (const headers of doors) {
    assert.equal(await setup(names)({ headers }), undefined, JSON.stringify(headers));
    assert.equal(await setup("request.headers.host == 'api.example.com'")({ headers }), 'rule seen', JSON.stringify(headers));
  }
  assert.equal(await setup("'x-env' in request.headers")({ headers: { 'x-env': 'prod' } }), 'rule seen');
  assert.equal(await setup("'authorization' in request.headers")({}), undefined);
});
