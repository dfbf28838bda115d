import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { pruneDeploymentSeries, registerDeploymentGauges, RequestObserver } from '../../../src/telemetry/request-observer.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { RequestLog } from '../../../src/telemetry/request-log.js';
import type { SpendEntry } from '../../../src/store/spend.js';

const entry = (deployment: string, model = 'llama'): SpendEntry => ({
  requestId: 'r',
  keyId: '0123456789abcdef',
  userId: 'u',
  teamId: undefined,
  model,
  deployment,
  promptTokens: 11,
  completionTokens: 5,
  cost: 0.016,
  status: 200,
  latencyMs: 3,
  estimated: false,
  at: 0,
  endpoint: 'chat/completions',
  backendMs: 2,
  ttftMs: 1,
});

test('each recorded request feeds the metrics once, with the alias (or "unknown") and the deployment as labels', async () => {
  const m = createMetrics({ defaultMetrics: false });
  const seen: SpendEntry[] = [];
  const o = new RequestObserver(
    { record: (e) => seen.push(e) },
    { metrics: m, log: new RequestLog(createLogger('silent')), knownModel: (a) => a === 'llama' },
  );
  o.record(entry('a'));
  o.record(entry('a', 'no-such-alias-from-a-client'));
  assert.equal(seen.length, 2, 'passed on to the spend log');
  const requests = (await m.modelRequests.get()).values;
  assert.deepEqual(
    requests.map((v) => [v.labels['model'], v.value]),
    [
      ['llama', 1],
      ['unknown', 1],
    ],
  );
  assert.equal((await m.tokens.get()).values.find((v) => v.labels['type'] === 'completion' && v.labels['model'] === 'llama')?.value, 5);
});

test('series of deployments that left the catalog are dropped, histograms included', async () => {
  const m = createMetrics({ defaultMetrics: false });
  const o = new RequestObserver(
    { record: () => undefined },
    { metrics: m, log: new RequestLog(createLogger('silent')), knownModel: () => true },
  );
  o.record(entry('stays'));
  o.record(entry('goes'));
  m.cooldowns.inc({ deployment: 'goes' });
  m.queueTimeouts.inc({ deployment: 'goes' });
  pruneDeploymentSeries(m, new Set(['stays']));
  const text = await m.registry.metrics();
  assert.ok(text.includes('deployment="stays"'));
  assert.ok(!text.includes('deployment="goes"'), text);
});

test("LiteLLM's metric names: requests, tokens, spend and latency by alias; litellm_deployment_state 0 or 2 (cooldown)", async () => {
  const m = createMetrics({ defaultMetrics: false });
  const o = new RequestObserver(
    { record: () => undefined },
    { metrics: m, log: new RequestLog(createLogger('silent')), knownModel: () => true },
  );
  o.record(entry('a'));
  o.record({ ...entry('a'), status: 502, promptTokens: 0, completionTokens: 0, cost: 0 });
  const deployments = [
    { id: 'a', alias: 'llama', provider: 'hosted_vllm', backendModel: 'meta-llama/Llama-3.1-8B-Instruct' },
    { id: 'b', alias: 'llama', provider: 'openai', backendModel: 'meta-llama/Llama-3.1-8B-Instruct' },
  ];
  registerDeploymentGauges(
    m,
    () => deployments,
    { isAvailable: (id) => id === 'a', inFlight: () => 0 },
    (id) => (id === 'b' ? 3 : 0),
  );
  const text = await m.registry.metrics();
  for (const line of [
    'litellm_proxy_total_requests_metric_total{requested_model="llama",status_code="200"} 1',
    'litellm_proxy_total_requests_metric_total{requested_model="llama",status_code="502"} 1',
    'litellm_total_tokens_total{model="llama"} 16',
    'litellm_spend_metric_total{model="llama"} 0.016',
    'litellm_request_total_latency_metric_count{model="llama"} 2',
    'litellm_deployment_state{litellm_model_name="hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",model_id="a",api_provider="hosted_vllm"} 0',
    'litellm_deployment_state{litellm_model_name="openai/meta-llama/Llama-3.1-8B-Instruct",model_id="b",api_provider="openai"} 2',
    // The requests waiting for a free connection of each deployment.
    'tollgate_deployment_queued{model="llama",deployment="a"} 0',
    'tollgate_deployment_queued{model="llama",deployment="b"} 3',
  ])
    assert.ok(text.includes(line), `missing: ${line}`);
});
