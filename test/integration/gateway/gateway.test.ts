/**
 * The HTTP gateway end to end: the official `openai` SDK as the client, fake vLLM servers as backends,
 * standalone (the gateway authorizes itself) and behind an Envoy stand-in (Check, then forward with
 * Envoy's header semantics).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import OpenAI from 'openai';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { ContextSigner, contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { parsePrometheus } from '../../support/prometheus.js';
import { applyOkResponse, EnvoyCheckClient } from '../../support/envoy.js';

const KEY = 'sk-gateway-test-key-0001';
const LLAMA_ONLY = 'sk-gateway-llama-only-02';
/** A key the policy keeps to llama (as the contract's example rule keeps guests to one model). */
const GUEST = 'sk-gateway-guest-key-003';
const BACKEND_KEY = 'backend-secret-token';
const SECRET = 'gateway-test-context-key-0123456789abcdef';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';

function config(a: FakeVllm, b: FakeVllm, q: FakeVllm): string {
  return `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${a.apiBase}", api_key: ${BACKEND_KEY}, timeout: 5, stream_timeout: 2 }
    model_info: { id: llama-a, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }
  - model_name: llama
    litellm_params: { model: openai/${MODEL}, api_base: "${b.apiBase}", api_key: ${BACKEND_KEY}, timeout: 5, stream_timeout: 2 }
    model_info: { id: llama-b, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }
  - model_name: qwen
    litellm_params: { model: openai/${MODEL}, api_base: "${q.apiBase}" }
    model_info: { id: qwen-a, input_cost_per_token: 0.01, output_cost_per_token: 0.02 }
  - model_name: Qwen-Large
    litellm_params: { model: openai/${MODEL}, api_base: "${q.apiBase}" }
    model_info: { id: qwen-large-a }
  - model_name: org/slashed
    litellm_params: { model: openai/${MODEL}, api_base: "${q.apiBase}" }
    model_info: { id: slashed-a }
router_settings:
  num_retries: 2
  allowed_fails: 100
  fallbacks: [{ llama: [qwen] }]
general_settings:
  context_signing_key: ${SECRET}
  default_max_tokens: 321
keys:
  - key: sha256:${sha(KEY)}
    user_id: ci
  - key: sha256:${sha(LLAMA_ONLY)}
    models: [llama]
  - key: sha256:${sha(GUEST)}
    key_alias: guest
policy:
  rules:
    - name: guests-llama-only
      when: "key.alias == 'guest' && !model.startsWith('llama')"
      deny: guests may only use llama
`;
}

describe('gateway', () => {
  let a: FakeVllm;
  let b: FakeVllm;
  let q: FakeVllm;
  let gw: GatewayApp;
  let authz: AuthzApp;
  let spend: InMemorySpendLog;
  let client: OpenAI;
  let base: string;
  const authzMetrics = createMetrics({ defaultMetrics: false });
  const gatewayMetrics = createMetrics({ defaultMetrics: false });
  /** A sample's value in `metrics` (0 when absent). */
  const sample = async (metrics: typeof authzMetrics, name: string, labels: Record<string, string>): Promise<number> =>
    parsePrometheus(await metrics.registry.metrics())
      .filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
      .reduce((n, x) => n + x.value, 0);

  before(async () => {
    [a, b, q] = await Promise.all([
      startFakeVllm({ models: [MODEL], name: 'a' }),
      startFakeVllm({ models: [MODEL], name: 'b' }),
      startFakeVllm({ models: [MODEL], name: 'q' }),
    ]);
    const prepared = prepareConfigText(config(a, b, q), 'gw.yaml', {});
    const secret = contextSecret(SECRET, undefined) as Buffer;
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
    const logger = createLogger('silent');
    spend = new InMemorySpendLog();
    authz = await startAuthz(parts, { host: '127.0.0.1', port: 0, logger, metrics: authzMetrics });
    gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, spend, metrics: gatewayMetrics });
    base = `http://127.0.0.1:${gw.port}`;
    client = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0 });
  });
  after(async () => {
    await gw.close(500);
    await authz.close(500);
    await Promise.all([a.close(), b.close(), q.close()]);
  });
  const reset = (): void => {
    for (const s of [a, b, q]) {
      s.received.length = 0;
      s.setFault(undefined);
    }
  };

  test('chat completion through the openai SDK; the backend sees its own key, the backend model and the default max_tokens', async () => {
    reset();
    const before = spend.rows.length;
    const res = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] }).withResponse();
    assert.equal(res.data.model, 'llama');
    assert.ok(res.data.choices[0]?.message.content);
    const got = [...a.received, ...b.received];
    assert.equal(got.length, 1);
    const r = got[0];
    assert.ok(r);
    assert.equal(r.headers['authorization'], `Bearer ${BACKEND_KEY}`);
    assert.equal((r.body as { model: string }).model, MODEL);
    assert.equal((r.body as { max_tokens: number }).max_tokens, 321);
    assert.ok(!Object.keys(r.headers).some((h) => h.startsWith('x-tollgate-')));
    const row = spend.rows[before];
    assert.ok(row);
    const usage = res.data.usage;
    assert.ok(usage);
    assert.equal(row.cost, usage.prompt_tokens * 0.001 + usage.completion_tokens * 0.002);
    // The header carries the cost to twelve significant digits (no float noise like 0.020999999999999998).
    assert.equal(res.response.headers.get('x-tollgate-response-cost'), String(Number(row.cost.toPrecision(12))));
    assert.ok(Math.abs(Number(res.response.headers.get('x-tollgate-response-cost')) - row.cost) < 1e-12);
    assert.equal(row.keyId, sha(KEY).slice(0, 16));
    // The SDK's request id is tollgate's (x-request-id), on replies and on errors alike.
    assert.equal(res.request_id, row.requestId);
    assert.equal(res.response.headers.get('x-tollgate-request-id'), row.requestId);
    const stream = await client.chat.completions
      .create({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], stream: true })
      .withResponse();
    for await (const _ of stream.data) {
      /* read to the end */
    }
    assert.match(stream.response.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    const err = await client.chat.completions
      .create({ model: 'nope', messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.match(err.requestID ?? '', /^[0-9a-f-]{36}$/);
  });

  test("the backend gets the client's body with only the model, the cap and stream_options changed", async () => {
    reset();
    let raw = '';
    const send = async (body: string): Promise<Record<string, unknown>> => {
      const r = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body,
      });
      assert.equal(r.status, 200, await r.text());
      const got = [...a.received, ...b.received];
      reset();
      raw = got[0]?.raw ?? '';
      return got[0]?.body as Record<string, unknown>;
    };
    const messages = [{ role: 'user', content: 'a, "b" } {' }];
    // As the OpenAI SDKs send it: the text edited, every other member as sent.
    const sdkBody = JSON.stringify({ model: 'llama', messages, temperature: 0.5, seed: 7 });
    assert.deepEqual(await send(sdkBody), { model: MODEL, messages, temperature: 0.5, seed: 7, max_tokens: 321 });
    assert.equal(raw, `${sdkBody.replace('"model":"llama"', `"model":${JSON.stringify(MODEL)}`).slice(0, -1)},"max_tokens":321}`);
    // null limits count as none; a null max_completion_tokens is dropped (vLLM would take it over max_tokens).
    assert.deepEqual(await send(JSON.stringify({ model: 'llama', messages, max_tokens: null, max_completion_tokens: null })), {
      model: MODEL,
      messages,
      max_tokens: 321,
    });
    // A repeated member reaches the backend once, as the authorizer read it (the last).
    assert.deepEqual(await send(`{"model":"llama","messages":${JSON.stringify(messages)},"n":3,"n":1,"max_tokens":5}`), {
      model: MODEL,
      messages,
      n: 1,
      max_tokens: 5,
    });
    assert.equal(raw.split('"n":').length, 2, `one n in ${raw}`);
    // A Python client's spacing.
    assert.deepEqual(await send('{"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9}'), {
      model: MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      max_completion_tokens: 9,
    });
    // A 64-bit seed reaches the backend as written, though stream_options and guided_* are edited around it
    // (JSON.parse would round it to 9223372036854776000, past what vLLM takes).
    await send(
      '{"model":"llama","messages":[{"role":"user","content":"hi"}],"seed":9223372036854775807,"stream":false,"guided_choice":["a","b"],"max_tokens":4}',
    );
    assert.match(raw, /"seed":9223372036854775807,/);
    assert.match(raw, /"structured_outputs":\{"choice":\["a","b"\]\}/);
    assert.doesNotMatch(raw, /guided_choice/);
  });

  test('streaming: chunks end with [DONE]; the usage chunk reaches only a client that asked for it', async () => {
    reset();
    const plain = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'hi' }], stream: true });
    let text = '';
    let sawUsage = false;
    for await (const chunk of plain) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) sawUsage = true;
    }
    assert.ok(text.length > 0);
    assert.equal(sawUsage, false);
    const sent = [...a.received, ...b.received][0]?.body as { stream_options?: { include_usage?: boolean } };
    assert.equal(sent.stream_options?.include_usage, true, 'tollgate asks the backend for usage');
    const asked = await client.chat.completions.create({
      model: 'llama',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: unknown;
    for await (const chunk of asked) if (chunk.usage) usage = chunk.usage;
    assert.ok(usage);
  });

  test('a 500 is retried on the other deployment; when the group is exhausted the fallback alias answers', async () => {
    reset();
    a.setFault({ kind: 'status', status: 500 });
    const r1 = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }] });
    assert.ok(r1.choices[0]?.message.content?.includes('b'), 'answered by b');
    b.setFault({ kind: 'status', status: 503 });
    const r2 = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r2.model, 'qwen', 'the fallback alias answered');
    assert.equal(q.received.length, 1);
    // The log line says what each failed attempt met, so an operator tells a wrong api_key from a timeout.
    const upstream = new Set((spend.rows.at(-1)?.upstream ?? '').split('; '));
    assert.deepEqual([...upstream].sort(), ['llama-a: HTTP 500', 'llama-b: HTTP 503']);
  });

  test('connection resets are retried, then the fallback answers; the log line names the socket error', async () => {
    reset();
    a.setFault({ kind: 'reset-before-headers' });
    b.setFault({ kind: 'reset-before-headers' });
    const r = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.model, 'qwen', 'the fallback alias answered');
    const upstream = new Set((spend.rows.at(-1)?.upstream ?? '').split('; '));
    assert.deepEqual([...upstream].sort(), ['llama-a: SOCKET_CLOSED (ECONNRESET)', 'llama-b: SOCKET_CLOSED (ECONNRESET)']);
  });

  test('no retry after the first byte: a stream cut mid-way ends with an error event, and is charged for what was streamed', async () => {
    reset();
    a.setFault({ kind: 'close-mid-stream', afterChunks: 2 });
    b.setFault({ kind: 'close-mid-stream', afterChunks: 2 });
    const before = spend.rows.length;
    const stream = await client.chat.completions.create({ model: 'llama', messages: [{ role: 'user', content: 'x' }], stream: true });
    await assert.rejects(async () => {
      for await (const _ of stream) {
        /* consume */
      }
    });
    assert.equal(a.received.length + b.received.length, 1, 'not retried');
    const row = spend.rows[before];
    assert.ok(row);
    assert.equal(row.estimated, true);
    assert.ok(row.completionTokens >= 2);
    assert.equal(row.status, 200, 'the client had its 200; the break is an error event in the stream');
  });

  test('a cut stream whose messages nest too deep to serialise again is still charged (estimated from the body text)', async () => {
    reset();
    a.setFault({ kind: 'close-mid-stream', afterChunks: 2 });
    b.setFault({ kind: 'close-mid-stream', afterChunks: 2 });
    const before = spend.rows.length;
    const deep = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: `{"model":"llama","stream":true,"messages":[{"role":"user","content":"x","deep":${deep}}]}`,
    });
    assert.equal(r.status, 200);
    assert.match(await r.text(), /"error"/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const row = spend.rows[before];
    assert.ok(row, 'the request left its row');
    assert.ok(row.promptTokens >= 25_000, `prompt estimated from the text: ${row.promptTokens}`);
  });

  test('a client that disconnects aborts the backend request', async () => {
    reset();
    a.setFault({ kind: 'delay-headers', ms: 3000 });
    b.setFault({ kind: 'delay-headers', ms: 3000 });
    const ctrl = new AbortController();
    const p = fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [] }),
      signal: ctrl.signal,
    }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    ctrl.abort();
    await p;
    const aborted = await Promise.race([a.waitForAbort(2000), b.waitForAbort(2000)]);
    assert.equal(aborted.aborted, true);
  });

  test('bad input: not JSON, no model, unknown alias, a model the key may not use, no key', async () => {
    reset();
    const post = (body: string, key = KEY): Promise<Response> =>
      fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body,
      });
    const code = async (r: Response): Promise<[number, string]> => [r.status, ((await r.json()) as { error: { code: string } }).error.code];
    assert.deepEqual(await code(await post('nope')), [400, 'invalid_body']);
    assert.deepEqual(await code(await post('{}')), [400, 'missing_model']);
    assert.deepEqual(await code(await post('{"model":"gpt-9"}')), [404, 'model_not_found']);
    assert.deepEqual(await code(await post('{"model":"qwen"}', LLAMA_ONLY)), [403, 'model_not_allowed']);
    assert.deepEqual(await code(await fetch(`${base}/v1/models`)), [401, 'missing_api_key']);
    // The message names the field at fault (the contract keeps `param` null), and a model that is not a string
    // is not called "not an object".
    for (const [body, message] of [
      ['{"model":5}', /model must be a string/],
      ['{"model":"llama","n":0}', /n must be an integer/],
      ['{"model":"llama","stream":"yes"}', /stream must be true or false/],
      ['{"model":"llama","max_tokens":-1}', /max_tokens must be a positive integer/],
    ] as const) {
      const r = await post(body);
      assert.equal(r.status, 400, body);
      const err = ((await r.json()) as { error: { param: unknown; message: string } }).error;
      assert.equal(err.param, null, body);
      assert.match(err.message, message, body);
    }
    // An OpenAI endpoint asked with GET: 405, naming the method it takes.
    const get = await fetch(`${base}/v1/chat/completions`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    assert.equal(((await get.json()) as { error: { code: string } }).error.code, 'method_not_allowed');
  });

  test('GET /v1/models lists only the aliases the caller may use', async () => {
    const limited = new OpenAI({ apiKey: LLAMA_ONLY, baseURL: `${base}/v1`, maxRetries: 0 });
    const ids = [];
    for await (const m of limited.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['llama']);
  });

  test('GET /v1/models/{model} answers for an alias the caller may use, and 404 for any other, existing or not', async () => {
    const all = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0 });
    const limited = new OpenAI({ apiKey: LLAMA_ONLY, baseURL: `${base}/v1`, maxRetries: 0 });
    const qwen = await all.models.retrieve('qwen');
    assert.equal(qwen.id, 'qwen');
    assert.equal(qwen.object, 'model');
    assert.equal(qwen.owned_by, 'tollgate');
    assert.ok(Number.isInteger(qwen.created));
    assert.equal((await limited.models.retrieve('llama')).id, 'llama');
    for (const [client, alias] of [
      [limited, 'qwen'],
      [all, 'gpt-9'],
    ] as const) {
      const err = await client.models.retrieve(alias).then(
        () => assert.fail(`${alias} retrieved`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof OpenAI.NotFoundError, String(err));
      assert.equal((err.error as { code?: string }).code, 'model_not_found');
    }
    // The id is read as sent: aliases keep their case (the routed path is lower-cased), and no key, no answer.
    const upper = await fetch(`${base}/models/LLAMA`, { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(upper.status, 404);
    assert.equal(((await upper.json()) as { error: { code: string } }).error.code, 'model_not_found');
    assert.equal((await all.models.retrieve('Qwen-Large')).id, 'Qwen-Large');
    assert.equal((await fetch(`${base}/v1/models/llama`)).status, 401);
  });

  test('an alias with a / (a vLLM model id as alias) is retrieved as the SDKs send it (encoded) and as written', async () => {
    const auth = { authorization: `Bearer ${KEY}` };
    for (const path of ['/v1/models/org/slashed', '/models/org/slashed']) {
      const r = await fetch(`${base}${path}`, { headers: auth });
      assert.equal(r.status, 200, path);
      assert.equal(((await r.json()) as { id: string }).id, 'org/slashed');
    }
    const all = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of all.models.list()) ids.push(m.id);
    assert.ok(ids.includes('org/slashed'));
    // The SDK encodes the / (org%2Fslashed): decoded here; Envoy keeps it as sent (KEEP_UNCHANGED).
    assert.equal((await all.models.retrieve('org/slashed')).id, 'org/slashed');
    const encoded = await fetch(`${base}/v1/models/org%2Fslashed`, { headers: auth });
    assert.equal(encoded.status, 200);
    const climbing = await fetch(`${base}/v1/models/org%2F..%2F..%2Fkey%2Fgenerate`, { headers: auth });
    assert.equal(climbing.status, 404);
    const missing = await fetch(`${base}/v1/models/org/other`, { headers: auth });
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, 'model_not_found');
  });

  test('the model listing follows the policy alias by alias, standalone and behind Envoy: a rule about models hides the others', async () => {
    const guest = new OpenAI({ apiKey: GUEST, baseURL: `${base}/v1`, maxRetries: 0 });
    const ids: string[] = [];
    for await (const m of guest.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['llama']);
    assert.equal((await guest.models.retrieve('llama')).id, 'llama');
    const hidden = await guest.models.retrieve('qwen').then(
      () => assert.fail('qwen retrieved'),
      (e: unknown) => e,
    );
    assert.ok(hidden instanceof OpenAI.NotFoundError, String(hidden));
    const denied = await guest.chat.completions.create({ model: 'qwen', messages: [{ role: 'user', content: 'x' }] }).then(
      () => assert.fail('qwen served'),
      (e: unknown) => e,
    );
    assert.ok(denied instanceof OpenAI.PermissionDeniedError, String(denied));
    // Behind Envoy: Check signs what the policy hides into the context, and the gateway lists the rest.
    const envoy = new EnvoyCheckClient(authz.port);
    try {
      for (const [path, expected] of [
        ['/v1/models', ['llama']],
        ['/v1/models/qwen', 404],
      ] as const) {
        const reqHeaders = { authorization: `Bearer ${GUEST}` };
        const check = await envoy.check({ method: 'GET', path, headers: reqHeaders });
        assert.equal(check.status?.code, 0, `${path}: Check allows the listing`);
        const fwd = applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>);
        const headers: Record<string, string> = {};
        for (const [k, v] of fwd) if (!k.startsWith(':')) headers[k] = v.join(',');
        assert.equal(headers['authorization'], undefined, 'the key was removed');
        // Three of four aliases hidden: the context names the one left instead, the shorter list.
        const claims = JSON.parse(Buffer.from(String(headers['x-tollgate-context']).split('.')[1] ?? '', 'base64url').toString('utf8')) as {
          h?: unknown;
          v?: unknown;
        };
        assert.deepEqual([claims.h, claims.v], [undefined, ['llama']]);
        const r = await fetch(`${base}${path}`, { headers });
        if (typeof expected === 'number') assert.equal(r.status, expected);
        else
          assert.deepEqual(
            ((await r.json()) as { data: { id: string }[] }).data.map((m) => m.id),
            expected,
          );
      }
    } finally {
      envoy.close();
    }
  });

  test('behind Envoy: a valid context is trusted; a forged one is not, and the removed credentials leave the request unauthenticated', async () => {
    reset();
    const envoy = new EnvoyCheckClient(authz.port);
    const decided = (source: string, decision: string): Promise<number> =>
      sample(source === 'ext_authz' ? authzMetrics : gatewayMetrics, 'tollgate_authz_decisions_total', { source, decision });
    const [checkAllowed, gatewayAllowed, gatewayMissing] = [
      await decided('ext_authz', 'allowed'),
      await decided('gateway', 'allowed'),
      await decided('gateway', 'missing_api_key'),
    ];
    try {
      const body = JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] });
      const reqHeaders = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'x-tollgate-user': 'root' };
      const check = await envoy.check({ headers: reqHeaders, body });
      assert.equal(check.status?.code, 0);
      const fwd = applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>);
      const headers: Record<string, string> = {};
      for (const [k, v] of fwd) if (!k.startsWith(':')) headers[k] = v.join(',');
      const ok = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers, body });
      assert.equal(ok.status, 200);
      const forged = { ...headers, 'x-tollgate-context': `${headers['x-tollgate-context']?.slice(0, -4)}AAAA` };
      const bad = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: forged, body });
      assert.equal(bad.status, 401);
      // The context is bound to its model: reusing it for another model is refused.
      const other = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ model: 'qwen', messages: [] }),
      });
      assert.equal(other.status, 401);
      // Check's decision is counted where it was made; the trusted context made none in the gateway, each
      // refused one a denial of the gateway's own.
      assert.equal(await decided('ext_authz', 'allowed'), checkAllowed + 1);
      assert.equal(await decided('gateway', 'allowed'), gatewayAllowed);
      assert.equal(await decided('gateway', 'missing_api_key'), gatewayMissing + 2);
    } finally {
      envoy.close();
    }
  });

  test('behind Envoy: a request whose context expired while it waited in front of the gateway is a retryable 503, not a 401', async () => {
    reset();
    const envoy = new EnvoyCheckClient(authz.port);
    try {
      const body = JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] });
      const reqHeaders = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
      const check = await envoy.check({ headers: reqHeaders, body });
      assert.equal(check.status?.code, 0);
      const fwd = applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>);
      const headers: Record<string, string> = {};
      for (const [k, v] of fwd) if (!k.startsWith(':')) headers[k] = v.join(',');
      assert.equal(headers['authorization'], undefined, 'Envoy took the key off');
      // The same context as Check signed it, its time run out (as after 30 s in Envoy's queue).
      const claims = JSON.parse(
        Buffer.from(String(headers['x-tollgate-context']).split('.')[1] ?? '', 'base64url').toString('utf8'),
      ) as Record<string, unknown>;
      const stale = new ContextSigner(contextSecret(SECRET, undefined) as Buffer).sign({ ...claims, x: Date.now() - 1_000 } as never);
      const late = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...headers, 'x-tollgate-context': stale },
        body,
      });
      assert.equal(late.status, 503);
      assert.equal(late.headers.get('retry-after'), '1');
      const err = ((await late.json()) as { error: { code: string; message: string } }).error;
      assert.equal(err.code, 'gateway_unavailable');
      assert.match(err.message, /waited in front of tollgate longer than its authorization holds/);
      assert.equal(a.received.length + b.received.length + q.received.length, 0, 'nothing reached a backend');
      // Still carrying its key (an Envoy that does not take it off): authorized here, as any request without a context.
      const keyed = await fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { ...headers, authorization: `Bearer ${KEY}`, 'x-tollgate-context': stale },
        body,
      });
      assert.equal(keyed.status, 200);
    } finally {
      envoy.close();
    }
  });
});
