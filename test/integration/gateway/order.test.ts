/**
 * LiteLLM's `order` end to end: a primary pair (order 1) and a backup (order 2) behind the gateway, fake vLLM
 * servers as backends, standalone (the gateway's own authorization picks the first deployment with the
 * gateway's cooldowns, as Check does under `tollgate serve`). The backup carries most of the weight, so a
 * router that ignored `order` would send it most requests.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import OpenAI from 'openai';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';

const KEY = 'sk-order-test-key-0000001';
const SECRET = 'order-test-context-key-0123456789abcdef';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const HI = [{ role: 'user' as const, content: 'hi' }];
const T = { timeout: 20_000 };
/** cooldown_time of the config below, in seconds. */
const COOLDOWN_S = 1;

describe('deployment order: the primary takes the traffic, the backup only while the primary is cooling down', () => {
  let p1: FakeVllm;
  let p2: FakeVllm;
  let backup: FakeVllm;
  let gw: GatewayApp;
  let client: OpenAI;

  before(async () => {
    [p1, p2, backup] = await Promise.all([
      startFakeVllm({ models: [MODEL], name: 'p1' }),
      startFakeVllm({ models: [MODEL], name: 'p2' }),
      startFakeVllm({ models: [MODEL], name: 'backup' }),
    ]);
    const prepared = prepareConfigText(
      `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${backup.apiBase}", order: 2, weight: 50, timeout: 5 }
    model_info: { id: llama-backup }
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${p1.apiBase}", order: 1, timeout: 5 }
    model_info: { id: llama-p1 }
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${p2.apiBase}", order: 1, timeout: 5 }
    model_info: { id: llama-p2 }
router_settings:
  num_retries: 2
  allowed_fails: 1
  cooldown_time: ${COOLDOWN_S}
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`,
      'order.yaml',
      {},
    );
    assert.deepEqual(
      prepared.warnings.map((w) => w.path),
      [],
      '`order` is read, not set aside as a LiteLLM setting tollgate ignores',
    );
    const secret = contextSecret(SECRET, undefined) as Buffer;
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
    gw = await startGateway(prepared.config, parts, secret, {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('silent'),
      spend: new InMemorySpendLog(),
    });
    client = new OpenAI({ apiKey: KEY, baseURL: `http://127.0.0.1:${gw.port}/v1`, maxRetries: 0, timeout: 10_000 });
  });
  after(async () => {
    await gw.close(500);
    await Promise.all([p1.close(), p2.close(), backup.close()]);
  });

  /** Requests each backend has received so far. */
  const counts = () => ({ p1: p1.received.length, p2: p2.received.length, backup: backup.received.length });
  const ask = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const r = await client.chat.completions.create({ model: 'llama', messages: HI });
      assert.equal(r.model, 'llama');
    }
  };

  test('order 1 while it is up; order 2 once every order-1 deployment is cooling down; order 1 again when it is back', T, async () => {
    await ask(20);
    const up = counts();
    assert.equal(up.backup, 0, 'the backup got nothing while the primaries were up');
    assert.equal(up.p1 + up.p2, 20);
    assert.ok(up.p1 > 0 && up.p2 > 0, 'the primaries share the traffic (simple-shuffle within order 1)');

    // Both primaries fail. A request's retries go to the other primary first, then to the backup; the second
    // failure of each (allowed_fails: 1) cools it down.
    p1.setFault({ kind: 'status', status: 500 });
    p2.setFault({ kind: 'status', status: 500 });
    const r = await client.chat.completions.create({ model: 'llama', messages: HI });
    assert.match(r.choices[0]?.message.content ?? '', /Hello from backup/);
    const first = counts();
    assert.deepEqual(
      [first.p1 - up.p1, first.p2 - up.p2, first.backup],
      [1, 1, 1],
      'the retry went to the other order-1 deployment before the order-2 one',
    );
    await ask(1); // second failure of each primary: both cool down
    const cooled = counts();
    assert.deepEqual([cooled.p1, cooled.p2], [up.p1 + 2, up.p2 + 2]);
    await ask(10);
    const down = counts();
    assert.deepEqual([down.p1, down.p2], [cooled.p1, cooled.p2], 'nothing sent to the primaries while they cool down');
    assert.equal(down.backup, cooled.backup + 10, 'the backup takes every request meanwhile');

    // The primaries recover; once their cooldown is over, they take the traffic again.
    p1.setFault(undefined);
    p2.setFault(undefined);
    await new Promise((resolve) => setTimeout(resolve, COOLDOWN_S * 1000 + 200));
    await ask(10);
    const back = counts();
    assert.equal(back.backup, down.backup, 'the backup got nothing once the primaries were back');
    assert.equal(back.p1 + back.p2 - down.p1 - down.p2, 10);
  });
});
