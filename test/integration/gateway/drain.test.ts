/**
 * The end of the drain (SIGTERM's grace, GatewayApp.close): requests still forwarded are cut off with an
 * answer their client can read — a stream's error event and [DONE], a 503 for one not answered yet — not a
 * reset connection, and their spend rows record what the client got (not 499, "client closed").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startFakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { startGateway } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';

const KEY = 'sk-drain-test-key-00001';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

test('at the drain deadline a stream ends with an error event and [DONE], a pending request gets a 503; both are recorded', async () => {
  // 40 chunks 100 ms apart: the stream outlives the 300 ms drain.
  const slow = await startFakeVllm({ models: [MODEL], name: 'slow', chunkDelayMs: 100 });
  const prepared = prepareConfigText(
    `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${slow.apiBase}" }
keys:
  - key: sha256:${sha(KEY)}
`,
    'drain.yaml',
    {},
  );
  const secret = contextSecret('drain-test-context-key-0123456789abcdef', undefined) as Buffer;
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const spend = new InMemorySpendLog();
  const gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger: createLogger('silent'), spend });
  let closed = false;
  try {
    const post = (body: object): Promise<Response> =>
      fetch(`http://127.0.0.1:${gw.port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], max_tokens: 40, ...body }),
      });
    const stream = await post({ stream: true });
    assert.equal(stream.status, 200);
    const streamText = stream.text();
    slow.setFault({ kind: 'delay-headers', ms: 5_000 });
    const pending = post({});
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await gw.close(300);
    closed = true;
    assert.ok(Date.now() - t0 < 2_000, `closed in ${Date.now() - t0} ms`);

    const text = await streamText;
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    const error = JSON.parse((events.at(-2) ?? '').slice('data: '.length)) as { error: { code: string; type: string; message: string } };
    assert.equal(error.error.code, 'gateway_unavailable');
    assert.equal(error.error.type, 'service_unavailable');
    assert.match(error.error.message, /shutting down/);
    assert.equal(events.at(-1), 'data: [DONE]');

    const refused = await pending;
    assert.equal(refused.status, 503);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, 'gateway_unavailable');

    const statuses = spend.rows.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 503], 'the stream had its 200 (and its error event); the other its 503');
    const streamed = spend.rows.find((r) => r.status === 200);
    assert.ok(streamed !== undefined && streamed.completionTokens > 0, 'charged for what was streamed');
    assert.match(streamed.upstream ?? '', /shutting down/);
  } finally {
    if (!closed) await gw.close(0);
    await slow.close();
  }
});
