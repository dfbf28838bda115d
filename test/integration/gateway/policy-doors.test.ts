/**
 * The policy as each door runs it, the standalone gateway and Envoy's Check: the rule that denied is named
 * in the gateway's log line as in Check's, a rule failing on the model listing is counted on both, and
 * `request.source` is the peer each door saw.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics, type Metrics } from '../../../src/telemetry/metrics.js';
import { parsePrometheus } from '../../support/prometheus.js';
import { EnvoyCheckClient } from '../../support/envoy.js';

const SECRET = 'policy-doors-context-key-0123456789abcdef';
const GUEST = 'sk-policy-doors-guest-0001';
const FRAGILE = 'sk-policy-doors-fragile-02';
const SOURCE = 'sk-policy-doors-source-003';
const HEADERS = 'sk-policy-doors-headers-04';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

const CONFIG = `
model_list:
  - model_name: llama
    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:9/v1" }
  - model_name: qwen
    litellm_params: { model: openai/qwen, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(GUEST)}
    key_alias: guest
  - key: sha256:${sha(FRAGILE)}
    key_alias: fragile
    metadata: { tier: abc }
  - key: sha256:${sha(SOURCE)}
    key_alias: source
  - key: sha256:${sha(HEADERS)}
    key_alias: headers
policy:
  rules:
    - name: no-guests
      when: "key.alias == 'guest'"
      deny: guests are paused
    - name: tier-limit
      when: "key.alias == 'fragile' && int(key.metadata.tier) > 1"
      deny: tier too high
    - name: headers-differ
      when: "key.alias == 'headers' && (request.headers.exists(h, h.startsWith(':') || h.startsWith('x-tollgate-') || h == 'x-request-id') || request.headers.host != request.headers['x-expect-host'])"
      deny: the policy saw another view of the headers
    - name: source-seen
      when: "key.alias == 'source' && request.source == request.headers['x-expect-source']"
      deny: the rule saw the peer
`;

describe('policy on both doors', () => {
  let gw: GatewayApp;
  let authz: AuthzApp;
  let envoy: EnvoyCheckClient;
  let base: string;
  const lines: Record<string, unknown>[] = [];
  const gatewayMetrics = createMetrics({ defaultMetrics: false });
  const authzMetrics = createMetrics({ defaultMetrics: false });
  const ruleErrors = async (metrics: Metrics, rule: string): Promise<number> =>
    parsePrometheus(await metrics.registry.metrics())
      .filter((x) => x.name === 'tollgate_policy_rule_errors_total' && x.labels['rule'] === rule)
      .reduce((n, x) => n + x.value, 0);

  before(async () => {
    const prepared = prepareConfigText(CONFIG, 'doors.yaml', {});
    const secret = contextSecret(SECRET, undefined) as Buffer;
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
    const logger = createLogger('info', { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
    authz = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics: authzMetrics });
    gw = await startGateway(prepared.config, parts, secret, {
      host: '127.0.0.1',
      port: 0,
      logger,
      spend: new InMemorySpendLog(),
      metrics: gatewayMetrics,
    });
    base = `http://127.0.0.1:${gw.port}`;
    envoy = new EnvoyCheckClient(authz.port);
  });
  after(async () => {
    envoy.close();
    await gw.close(500);
    await authz.close(500);
  });

  const chat = (key: string, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] }),
    });

  test("the gateway's log line of a policy denial names the rule, as Check's does", async () => {
    const res = await chat(GUEST);
    assert.equal(res.status, 403);
    const id = res.headers.get('x-tollgate-request-id');
    await res.text();
    const line = lines.find((l) => l['msg'] === 'request' && l['request_id'] === id);
    assert.ok(line, JSON.stringify(lines));
    assert.equal(line['code'], 'policy_denied');
    assert.equal(line['detail'], 'rule no-guests');

    const check = await envoy.check({ headers: { authorization: `Bearer ${GUEST}` }, body: '{"model":"llama"}' });
    assert.notEqual(check.status?.code, 0);
    const denied = lines.find((l) => l['msg'] === 'check denied' && l['detail'] === 'rule no-guests');
    assert.ok(denied, JSON.stringify(lines));
  });

  test('a rule failing on the model listing hides the aliases and is counted, on both doors', async () => {
    const before = await ruleErrors(gatewayMetrics, 'tier-limit');
    const res = await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${FRAGILE}` } });
    assert.equal(res.status, 200);
    assert.deepEqual(((await res.json()) as { data: unknown[] }).data, []);
    assert.equal(await ruleErrors(gatewayMetrics, 'tier-limit'), before + 1);

    const checkBefore = await ruleErrors(authzMetrics, 'tier-limit');
    const check = await envoy.check({ method: 'GET', path: '/v1/models', headers: { authorization: `Bearer ${FRAGILE}` } });
    assert.equal(check.status?.code, 0);
    assert.equal(await ruleErrors(authzMetrics, 'tier-limit'), checkBefore + 1);
  });

  test('request.source is the socket peer standalone and the downstream peer Envoy names on Check', async () => {
    const res = await chat(SOURCE, { 'x-expect-source': '127.0.0.1' });
    assert.equal(res.status, 403);
    await res.text();
    const check = await envoy.check({
      headers: { authorization: `Bearer ${SOURCE}`, 'x-expect-source': '203.0.113.9' },
      body: '{"model":"llama"}',
      source: '203.0.113.9',
    });
    assert.notEqual(check.status?.code, 0);
    assert.match(check.denied_response?.body ?? '', /the rule saw the peer/);
  });

  test('request.headers is the same view on both doors: host, no pseudo-headers, x-tollgate-* or x-request-id', async () => {
    const sent = { 'x-tollgate-user': 'root', 'x-request-id': 'client-chosen' };
    // Allowed, the request goes on to a backend that is not there (502); the rule would have made it 403.
    const res = await chat(HEADERS, { 'x-expect-host': `127.0.0.1:${gw.port}`, ...sent });
    const body = await res.text();
    assert.notEqual(res.status, 403, body);
    // Envoy's CheckRequest carries :authority (tollgate.example.com), :path, :method, :scheme and x-request-id.
    const check = await envoy.check({
      headers: { authorization: `Bearer ${HEADERS}`, 'x-expect-host': 'tollgate.example.com', ...sent },
      body: '{"model":"llama"}',
    });
    assert.equal(check.status?.code, 0, check.denied_response?.body);
  });
});
