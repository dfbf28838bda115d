/**
 * The gateway under backend faults: fake vLLM servers with injected faults, the official `openai` SDK
 * (maxRetries: 0) and fetch as clients. Every fault gets the contract's OpenAI error JSON
 * (../shared/CONTRACT.md, "Denials"), promptly, and the gateway keeps serving afterwards.
 *
 * Deployment weights: where a test needs the first attempt to meet the fault, the faulty deployment has
 * weight 1 and the healthy one 1e-9, so authz's weighted first pick is the faulty one with probability
 * 1 - 1e-9, and the retry (which excludes what was tried) lands on the healthy one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { connect, createServer } from 'node:net';
import OpenAI from 'openai';
import { startFakeVllm, vllmErrorBody, type Fault, type FakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, startAuthz, type AuthzApp, type AuthzParts } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';
import { createMetrics } from '../../../src/telemetry/metrics.js';
import { applyOkResponse, deniedHeaders, EnvoyCheckClient } from '../../support/envoy.js';

const KEY = 'sk-faults-test-key-000001';
const SECRET = 'faults-test-context-key-0123456789abcdef';
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
/** Ray Serve LLM's LoRA model id: `base_model:adapter_name`. */
const ADAPTER = `${MODEL}:my-adapter`;
/** A backend model id no fake serves: a deployment misconfigured (vLLM answers 404, param "model"). */
const UNSERVED = 'org/not-served-here';
/** The deployments' own api_key (the fakes do not check it): a message quoting it must not reach the client. */
const BACKEND_KEY = 'backend-key-0123456789';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
/** Every test is bounded: a hang fails the test instead of the run. */
const T = { timeout: 15_000 };
const HI = [{ role: 'user' as const, content: 'hi' }];

type Obj = Record<string, unknown>;
interface OpenAiError {
  message: string;
  type: string;
  param: unknown;
  code: unknown;
}

interface Stack {
  readonly gw: GatewayApp;
  readonly base: string;
  readonly client: OpenAI;
  readonly spend: InMemorySpendLog;
  /** The gateway's authorizer (`tollgate serve` shares it with Check). */
  readonly parts: AuthzParts;
}

async function startStack(yaml: string): Promise<Stack> {
  const prepared = prepareConfigText(yaml, 'faults.yaml', {});
  const secret = contextSecret(SECRET, undefined) as Buffer;
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const spend = new InMemorySpendLog();
  const gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger: createLogger('silent'), spend });
  const base = `http://127.0.0.1:${gw.port}`;
  const client = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0, timeout: 10_000 });
  return { gw, base, client, spend, parts };
}

/**
 * A backend streaming far more than every socket buffer between it and a client that does not read, behind
 * a gateway whose deployment has `timeout` seconds.
 */
/** `timeouts`: the deployment's litellm_params timeout fields, e.g. `timeout: 30, stream_timeout: 1`. */
async function startBigStream(timeouts: string): Promise<{ big: FakeVllm; bigStack: Stack }> {
  const big = await startFakeVllm({ models: [MODEL], name: 'big', chunks: 200_000 });
  const bigStack = await startStack(`
model_list:
  - model_name: big
    litellm_params: { model: openai/${MODEL}, api_base: "${big.apiBase}", ${timeouts} }
    model_info: { id: big-1 }
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
  return { big, bigStack };
}

/** A loopback port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  assert.ok(typeof addr === 'object' && addr !== null);
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return addr.port;
}

function post(base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
}

/**
 * The contract's error: status, `content-type: application/json`, `{"error": {"message", "type", "param", "code"}}`;
 * `param` null unless the backend named the field at fault.
 */
async function expectError(res: Response, status: number, type: string, code: string, param: string | null = null): Promise<OpenAiError> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const body = JSON.parse(text) as { error: OpenAiError };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.type, type);
  assert.equal(body.error.code, code);
  assert.equal(body.error.param, param);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  return body.error;
}

/** Runs `fn` and checks it finished within `ms`. */
/**
 * "Promptly" for a fault answered without waiting on a backend's timeout (5 s on these deployments): the
 * margin under it is for a loaded two-core machine, where a 100 ms answer has taken over a second.
 */
const PROMPT_MS = 4500;

async function within<R>(ms: number, fn: () => Promise<R>): Promise<R> {
  const t0 = performance.now();
  const r = await fn();
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${Math.round(took)} ms, expected under ${ms} ms`);
  return r;
}

/** SSE `data:` payloads of a whole stream. */
function sseData(text: string): string[] {
  return text
    .split(/\r?\n\r?\n/)
    .filter((e) => e.startsWith('data:'))
    .map((e) => e.slice(5).trim());
}
const count = (text: string, needle: string): number => text.split(needle).length - 1;
const sentBody = (s: FakeVllm, i = 0): Obj => s.received[i]?.body as Obj;

describe('gateway faults', () => {
  let a: FakeVllm;
  let b: FakeVllm;
  let s: FakeVllm;
  let lora: FakeVllm;
  let stack: Stack;
  let fakes: FakeVllm[];

  before(async () => {
    [a, b, s, lora] = await Promise.all([
      startFakeVllm({ models: [MODEL], name: 'a' }),
      startFakeVllm({ models: [MODEL], name: 'b' }),
      startFakeVllm({ models: [MODEL], name: 's' }),
      startFakeVllm({ models: [MODEL], loras: { [ADAPTER]: MODEL }, name: 'lora' }),
    ]);
    fakes = [a, b, s, lora];
    const [dead1, dead2] = [await closedPort(), await closedPort()];
    stack = await startStack(`
model_list:
  - model_name: pair
    litellm_params: { model: openai/${MODEL}, api_base: "${a.apiBase}", api_key: ${BACKEND_KEY}, timeout: 5 }
    model_info: { id: pair-a }
  - model_name: pair
    litellm_params: { model: openai/${MODEL}, api_base: "${b.apiBase}", api_key: ${BACKEND_KEY}, timeout: 5, weight: 1.0e-9 }
    model_info: { id: pair-b }
  - model_name: unserved
    litellm_params: { model: openai/${UNSERVED}, api_base: "${a.apiBase}", timeout: 5 }
    model_info: { id: unserved-a }
  - model_name: unserved
    litellm_params: { model: openai/${UNSERVED}, api_base: "${b.apiBase}", timeout: 5 }
    model_info: { id: unserved-b }
  - model_name: dead-first
    litellm_params: { model: openai/${MODEL}, api_base: "http://127.0.0.1:${dead1}/v1", timeout: 5 }
    model_info: { id: dead-first-down }
  - model_name: dead-first
    litellm_params: { model: openai/${MODEL}, api_base: "${b.apiBase}", timeout: 5, weight: 1.0e-9 }
    model_info: { id: dead-first-up }
  - model_name: all-dead
    litellm_params: { model: openai/${MODEL}, api_base: "http://127.0.0.1:${dead1}/v1", timeout: 5 }
    model_info: { id: all-dead-1 }
  - model_name: all-dead
    litellm_params: { model: openai/${MODEL}, api_base: "http://127.0.0.1:${dead2}/v1", timeout: 5 }
    model_info: { id: all-dead-2 }
  - model_name: slow
    litellm_params: { model: openai/${MODEL}, api_base: "${s.apiBase}", timeout: 0.6, stream_timeout: 0.3 }
    model_info: { id: slow-1 }
  - model_name: slow
    litellm_params: { model: openai/${MODEL}, api_base: "${s.apiBase}", timeout: 0.6, stream_timeout: 0.3 }
    model_info: { id: slow-2 }
  - model_name: adapter
    litellm_params: { model: "openai/${ADAPTER}", api_base: "${lora.apiBase}" }
    model_info: { id: adapter-1 }
router_settings:
  num_retries: 2
  allowed_fails: 1000
  cooldown_time: 30
general_settings:
  context_signing_key: ${SECRET}
  default_max_tokens: 321
keys:
  - key: sha256:${sha(KEY)}
    user_id: ci
`);
  });
  after(async () => {
    await stack.gw.close(500);
    await Promise.all(fakes.map((f) => f.close()));
  });

  const reset = (): void => {
    for (const f of fakes) {
      f.received.length = 0;
      f.setFault(undefined);
    }
  };
  /** After each fault: faults cleared, an ordinary request through the SDK succeeds. */
  const stillServing = async (model = 'pair'): Promise<void> => {
    reset();
    const r = await stack.client.chat.completions.create({ model, messages: HI });
    assert.equal(r.model, model);
    assert.match(r.choices[0]?.message.content ?? '', /Hello from/);
  };

  test("a stream's head reaches the client before its first token does, however long that takes", T, async () => {
    reset();
    let release!: () => void;
    a.setFault({ kind: 'hold-first-event', release: new Promise<void>((resolve) => (release = resolve)) });
    b.setFault({ kind: 'hold-first-event', release: new Promise<void>(() => undefined) });
    // fetch resolves with the response head; the backend has sent no event yet.
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    release();
    const events = sseData(await res.text());
    assert.equal(events.at(-1), '[DONE]');
    assert.match(
      events
        .map((e) =>
          e === '[DONE]' ? '' : String((JSON.parse(e) as { choices: [{ delta: { content?: string } }] }).choices[0].delta.content ?? ''),
        )
        .join(''),
      /Hello from a/,
    );
    await stillServing();
  });

  test(
    "a backend's keep-alive comment before the first token reaches the client as ': ping'; the SDK reads the stream as usual",
    T,
    async () => {
      reset();
      let release!: () => void;
      a.setFault({ kind: 'hold-first-event', release: new Promise<void>((resolve) => (release = resolve)), ping: true });
      b.setFault({ kind: 'hold-first-event', release: new Promise<void>(() => undefined), ping: true });
      const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const first = await within(PROMPT_MS, () => reader.read());
      assert.equal(Buffer.from(first.value ?? []).toString('utf8'), ': ping\n\n', "tollgate's own comment, not the backend's text");
      release();
      await reader.cancel();
      a.setFault({ kind: 'hold-first-event', release: Promise.resolve(), ping: true });
      b.setFault({ kind: 'hold-first-event', release: Promise.resolve(), ping: true });
      let text = '';
      const stream = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI, stream: true }));
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      assert.match(text, /Hello from/);
      await stillServing();
    },
  );

  test('backend down (closed port): the retry lands on the healthy deployment', T, async () => {
    reset();
    for (let i = 0; i < 3; i++) {
      const r = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'dead-first', messages: HI }));
      assert.equal(r.model, 'dead-first');
      assert.match(r.choices[0]?.message.content ?? '', /Hello from b/);
    }
    assert.equal(b.received.length, 3);
    await stillServing('dead-first');
  });

  test('every deployment down: 502 upstream_error, promptly', T, async () => {
    reset();
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'all-dead', messages: HI }));
    await expectError(res, 502, 'api_error', 'upstream_error');
    // The spend row names the deployment that failed last, so the failure can be traced to it.
    const row = stack.spend.rows.at(-1);
    assert.equal(row?.status, 502);
    assert.match(row?.deployment ?? '', /^all-dead-[12]$/);
    const streamed = await within(PROMPT_MS, () =>
      post(stack.base, '/v1/chat/completions', { model: 'all-dead', messages: HI, stream: true }),
    );
    await expectError(streamed, 502, 'api_error', 'upstream_error');
    await stillServing();
  });

  test('a reply larger than tollgate forwards is a 502 at once, not retried on the other deployment', T, async () => {
    reset();
    // An error body past the 64 KiB read for errors; every deployment would send as much.
    const huge = { error: { message: 'x'.repeat(70 * 1024), type: 'BadRequestError', code: 400 } };
    a.setFault({ kind: 'status', status: 400, body: huge });
    b.setFault({ kind: 'status', status: 400, body: huge });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    const err = await expectError(res, 502, 'api_error', 'upstream_error');
    assert.match(err.message, /larger than tollgate forwards/);
    assert.equal(a.received.length + b.received.length, 1, 'one attempt');
    await stillServing();
  });

  test('every deployment answers 500: 502 after exactly num_retries + 1 attempts', T, async () => {
    reset();
    a.setFault({ kind: 'status', status: 500 });
    b.setFault({ kind: 'status', status: 500 });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    await expectError(res, 502, 'api_error', 'upstream_error');
    assert.equal(a.received.length + b.received.length, 3, 'num_retries: 2 → three attempts');
    assert.ok(a.received.length >= 1 && b.received.length >= 1, 'the retry went to the other deployment');
    // The same before the first byte of a stream.
    a.received.length = 0;
    b.received.length = 0;
    const streamed = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
    await expectError(streamed, 502, 'api_error', 'upstream_error');
    assert.equal(a.received.length + b.received.length, 3);
    await stillServing();
  });

  test(
    'every deployment answers 429 with retry-after: the client gets 429 rate_limit_exceeded and that retry-after, streams too',
    T,
    async () => {
      reset();
      const busy: Fault = { kind: 'status', status: 429, headers: { 'retry-after': '7' } };
      a.setFault(busy);
      b.setFault(busy);
      const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
      assert.equal(res.headers.get('retry-after'), '7');
      const err = await expectError(res, 429, 'rate_limit_error', 'rate_limit_exceeded');
      assert.match(err.message, /overloaded/);
      assert.doesNotMatch(err.message, /Injected|from [ab]\b/, "the backend's own message is not passed");
      // Retried on the other deployment, not on one asking for 7 s again (the client's SDK waits that out).
      assert.equal(a.received.length + b.received.length, 2, 'retried on the other deployment, then answered');
      assert.equal(stack.spend.rows.at(-1)?.status, 429);
      // Before a stream's first byte, the same.
      const streamed = await within(PROMPT_MS, () =>
        post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }),
      );
      assert.equal(streamed.headers.get('retry-after'), '7');
      await expectError(streamed, 429, 'rate_limit_error', 'rate_limit_exceeded');
      // The SDK's RateLimitError, with the header its own retries wait on.
      await assert.rejects(stack.client.chat.completions.create({ model: 'pair', messages: HI }), (e: unknown) => {
        assert.ok(e instanceof OpenAI.RateLimitError);
        assert.equal(e.code, 'rate_limit_exceeded');
        assert.equal(e.headers.get('retry-after'), '7');
        return true;
      });
      // An HTTP-date passes as it is; no retry-after, one that is neither form, or a wait past a day is not
      // passed (nor made up).
      const inAnHour = new Date(Date.now() + 3_600_000).toUTCString();
      for (const [sent, passed] of [
        [inAnHour, inAnHour],
        [undefined, null],
        ['soon, http://10.0.0.7:8000', null],
        ['Wed, 21 Oct 2099 07:28:00 GMT', null],
        ['9999999999', null],
      ] as const) {
        const fault: Fault = { kind: 'status', status: 429, ...(sent === undefined ? {} : { headers: { 'retry-after': sent } }) };
        a.setFault(fault);
        b.setFault(fault);
        const r = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
        assert.equal(r.headers.get('retry-after'), passed, String(sent));
        const e = await expectError(r, 429, 'rate_limit_error', 'rate_limit_exceeded');
        assert.match(e.message, passed === null ? /retry shortly/ : /retry-after/);
      }
      await stillServing();
    },
  );

  test("a backend 429's valid retry-after-ms is passed on with a retry-after saying the same wait; an invalid one never", T, async () => {
    reset();
    const answer = async (headers: Record<string, string>): Promise<[string | null, string | null, string]> => {
      const fault: Fault = { kind: 'status', status: 429, headers };
      a.setFault(fault);
      b.setFault(fault);
      const r = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
      const e = await expectError(r, 429, 'rate_limit_error', 'rate_limit_exceeded');
      return [r.headers.get('retry-after-ms'), r.headers.get('retry-after'), e.message];
    };
    // Valid: passed on, and retry-after is that wait in whole seconds rounded up — the backend's own
    // retry-after too, should it disagree (the SDKs read retry-after-ms first: both say what they would wait).
    for (const [sent, expected] of [
      [{ 'retry-after-ms': '1500', 'retry-after': '2' }, ['1500', '2']],
      [{ 'retry-after-ms': '1500' }, ['1500', '2']],
      [{ 'retry-after-ms': '250', 'retry-after': '30' }, ['250', '1']],
      [{ 'retry-after-ms': '2500.25' }, ['2501', '3']],
      [{ 'retry-after-ms': ' 0 ' }, ['0', '0']],
      [{ 'retry-after-ms': '86400000' }, ['86400000', '86400']],
    ] as const) {
      const [ms, secs, message] = await answer(sent);
      assert.deepEqual([ms, secs], expected, JSON.stringify(sent));
      assert.match(message, /retry-after/);
    }
    // Invalid (a sign, an exponent, not a number, past a day, the header sent twice, empty): dropped; a valid
    // retry-after beside it passes as it came, and without one nothing is made up.
    for (const bad of ['-1', '1e3', 'Infinity', 'NaN', '0x10', '1.5.2', '86400001', '1500, 1500', '', 'soon']) {
      const [ms, secs] = await answer({ 'retry-after-ms': bad, 'retry-after': '7' });
      assert.deepEqual([ms, secs], [null, '7'], `retry-after-ms: ${JSON.stringify(bad)}`);
      const [alone, none, message] = await answer({ 'retry-after-ms': bad });
      assert.deepEqual([alone, none], [null, null], `retry-after-ms: ${JSON.stringify(bad)} alone`);
      assert.match(message, /retry shortly/);
    }
    // Before a stream's first byte, the same; and the SDK's RateLimitError carries both headers its retries read.
    const fault: Fault = { kind: 'status', status: 429, headers: { 'retry-after-ms': '1200' } };
    a.setFault(fault);
    b.setFault(fault);
    const streamed = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
    assert.deepEqual([streamed.headers.get('retry-after-ms'), streamed.headers.get('retry-after')], ['1200', '2']);
    await expectError(streamed, 429, 'rate_limit_error', 'rate_limit_exceeded');
    await assert.rejects(stack.client.chat.completions.create({ model: 'pair', messages: HI }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.RateLimitError);
      assert.equal(e.headers.get('retry-after-ms'), '1200');
      assert.equal(e.headers.get('retry-after'), '2');
      return true;
    });
    await stillServing();
  });

  test("the last attempt's failure decides: a 429 after a 500 is a 429, a 500 after a 429 a 502", T, async () => {
    reset();
    // Attempts go a (by weight), b (the retry excludes a), then a again.
    a.queueFaults({ kind: 'status', status: 500 }, { kind: 'status', status: 429, headers: { 'retry-after': '3' } });
    b.queueFaults({ kind: 'status', status: 500 });
    const busy = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    assert.equal(busy.headers.get('retry-after'), '3');
    await expectError(busy, 429, 'rate_limit_error', 'rate_limit_exceeded');
    // A wait of a second is waited here before a is asked again (a longer one would be the client's 429).
    a.queueFaults({ kind: 'status', status: 429, headers: { 'retry-after': '1' } }, { kind: 'status', status: 500 });
    b.queueFaults({ kind: 'status', status: 429, headers: { 'retry-after': '1' } });
    const asked = performance.now();
    const failed = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    assert.ok(performance.now() - asked >= 900, 'the backend was not asked again before its retry-after');
    assert.equal(failed.headers.get('retry-after'), null);
    const err = await expectError(failed, 502, 'api_error', 'upstream_error');
    assert.match(err.message, /failed to answer/);
    assert.equal(a.received.length + b.received.length, 6);
    await stillServing();
  });

  test("backend 400 naming its param: the client gets vLLM's message and param (nested and flat bodies, streams too)", T, async () => {
    reset();
    const message = 'max_tokens must be at least 1, got 0.';
    for (const flat of [false, true]) {
      const fault: Fault = { kind: 'status', status: 400, body: vllmErrorBody(400, message, { param: 'max_tokens', flat }) };
      a.setFault(fault);
      b.setFault(fault);
      for (const stream of [false, true]) {
        const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream }));
        const err = await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request', 'max_tokens');
        assert.equal(err.message, message);
      }
    }
    await assert.rejects(stack.client.chat.completions.create({ model: 'pair', messages: HI }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.param, 'max_tokens');
      assert.equal(e.code, 'upstream_invalid_request');
      return true;
    });
    // A param that is not a field's name (here the prompt itself) is not passed.
    const odd: Fault = { kind: 'status', status: 400, body: vllmErrorBody(400, 'Invalid prompt', { param: 'tell me the launch codes' }) };
    a.setFault(odd);
    b.setFault(odd);
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request', null);
    await stillServing();
  });

  test("a backend's 4xx message quoting URLs, the deployment's address or its api_key reaches the client without them", T, async () => {
    reset();
    const host = new URL(a.url).host;
    const message =
      `Failed to fetch image from https://private.example/scan.png?sig=abc via http://10.0.3.4:8000/v1, ` +
      `upstream ${host} with Bearer ${BACKEND_KEY}: check the image URL.`;
    const fault: Fault = { kind: 'status', status: 400, body: vllmErrorBody(400, message, { param: 'messages' }) };
    a.setFault(fault);
    b.setFault(fault);
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    const err = await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request', 'messages');
    assert.doesNotMatch(err.message, /private\.example|10\.0\.3\.4|127\.0\.0\.1|backend-key|sig=/, err.message);
    assert.match(err.message, /^Failed to fetch image from … via …, upstream … with Bearer …: check the image URL\.$/);
    await stillServing();
  });

  test(
    'a deployment whose backend does not serve its model (404): 502 saying so, naming neither host nor backend model id; streams too',
    T,
    async () => {
      reset();
      for (const stream of [false, true]) {
        const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'unserved', messages: HI, stream }));
        const err = await expectError(res, 502, 'api_error', 'upstream_error');
        assert.match(err.message, /does not serve this model/);
        assert.doesNotMatch(err.message, /not-served-here|127\.0\.0\.1|localhost/);
        assert.equal(a.received.length + b.received.length, 3, 'retried: another deployment may serve it');
        assert.equal(stack.spend.rows.at(-1)?.status, 502);
        reset();
      }
      // A path the backend has not (an api_base without /v1: FastAPI's {"detail": "Not Found"}) and a backend that
      // refuses the deployment's api_key: the deployment is misconfigured too.
      for (const [fault, said] of [
        [{ kind: 'status', status: 404, body: { detail: 'Not Found' } }, /does not serve this endpoint/],
        [{ kind: 'status', status: 401, body: { error: 'Unauthorized' } }, /refused tollgate's credentials/],
      ] as const) {
        a.setFault(fault);
        b.setFault(fault);
        const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
        const err = await expectError(res, 502, 'api_error', 'upstream_error');
        assert.match(err.message, said);
      }
      await stillServing();
    },
  );

  test('a backend slower than stream_timeout (streaming) or timeout: 504 upstream_timeout, promptly', T, async () => {
    reset();
    s.setFault({ kind: 'delay-headers', ms: 10_000 });
    // stream_timeout 0.3 s × 3 attempts (the backend would take 10 s).
    const streamed = await within(7000, () => post(stack.base, '/v1/chat/completions', { model: 'slow', messages: HI, stream: true }));
    await expectError(streamed, 504, 'timeout', 'upstream_timeout');
    assert.equal(s.received.length, 3);
    // timeout 0.6 s × 3 attempts.
    s.received.length = 0;
    const whole = await within(8000, () => post(stack.base, '/v1/chat/completions', { model: 'slow', messages: HI }));
    await expectError(whole, 504, 'timeout', 'upstream_timeout');
    assert.equal(s.received.length, 3);
    await stillServing('slow');
    await stillServing();
  });

  test("Ray Serve's 408 is retried on another deployment; 408 everywhere is a 504", T, async () => {
    reset();
    a.queueFaults({ kind: 'ray-timeout' });
    const r = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI }));
    assert.match(r.choices[0]?.message.content ?? '', /Hello from b/);
    assert.equal(a.received.length, 1);
    assert.equal(b.received.length, 1);
    a.setFault({ kind: 'ray-timeout' });
    b.setFault({ kind: 'ray-timeout' });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    await expectError(res, 504, 'timeout', 'upstream_timeout');
    await stillServing();
  });

  test("backend 400 (vLLM's nested error): 400 upstream_invalid_request with vLLM's message, not retried", T, async () => {
    reset();
    a.setFault({ kind: 'status', status: 400 });
    b.setFault({ kind: 'status', status: 400 });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    const err = await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request');
    assert.match(err.message, /Injected error \(400\) from [ab]/);
    assert.equal(a.received.length + b.received.length, 1, 'another deployment would refuse it too');
    await stillServing();
  });

  test('backend 400 with the older flat error body: the same normalised shape (seen through the SDK)', T, async () => {
    reset();
    a.setFault({ kind: 'status', status: 400, flatError: true });
    b.setFault({ kind: 'status', status: 400, flatError: true });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    const err = await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request');
    assert.match(err.message, /Injected error \(400\) from [ab]/);
    assert.equal(a.received.length + b.received.length, 1);
    await assert.rejects(stack.client.chat.completions.create({ model: 'pair', messages: HI }), (e: unknown) => {
      assert.ok(e instanceof OpenAI.BadRequestError);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'upstream_invalid_request');
      assert.equal(e.type, 'invalid_request_error');
      assert.match(e.message, /Injected error \(400\) from [ab]/);
      return true;
    });
    await stillServing();
  });

  test('a non-JSON 200 reply is retried; garbage everywhere is a 502', T, async () => {
    reset();
    a.queueFaults({ kind: 'garbage' });
    const r = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI }));
    assert.match(r.choices[0]?.message.content ?? '', /Hello from b/);
    assert.equal(a.received.length, 1);
    assert.equal(b.received.length, 1);
    a.setFault({ kind: 'garbage' });
    b.setFault({ kind: 'garbage' });
    a.received.length = 0;
    b.received.length = 0;
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
    await expectError(res, 502, 'api_error', 'upstream_error');
    assert.equal(a.received.length + b.received.length, 3);
    await stillServing();
  });

  test('timeout bounds the whole reply: one that keeps trickling in is a 504 after it, each attempt aborted', T, async () => {
    reset();
    // A byte every 100 ms: no silence reaches the 0.6 s timeout, the whole reply never ends.
    s.setFault({ kind: 'trickle', everyMs: 100 });
    const t0 = performance.now();
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'slow', messages: HI }));
    await expectError(res, 504, 'timeout', 'upstream_timeout');
    assert.ok(performance.now() - t0 >= 3 * 600 - 50, 'three attempts of 0.6 s');
    assert.equal(s.received.length, 3);
    for (let i = 0; i < 3; i++) assert.equal((await s.waitForAbort(2000)).aborted, true, 'the backend request was aborted');
    await stillServing('slow');
  });

  test('a redirect or a 405 from a deployment is a deployment fault: retried elsewhere, a 502 when all answer so', T, async () => {
    for (const status of [301, 307, 405]) {
      reset();
      const headers: Record<string, string> = status === 405 ? { allow: 'GET' } : { location: 'https://vllm.example/v1/chat/completions' };
      a.queueFaults({ kind: 'status', status, body: { detail: 'Moved' }, headers });
      const r = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI }));
      assert.match(r.choices[0]?.message.content ?? '', /Hello from b/, `${status} retried on b`);
      a.setFault({ kind: 'status', status, body: { detail: 'Moved' }, headers });
      b.setFault({ kind: 'status', status, body: { detail: 'Moved' }, headers });
      const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }));
      await expectError(res, 502, 'api_error', 'upstream_error');
      assert.equal(res.headers.get('location'), null, 'no redirect reaches the client');
    }
    await stillServing();
  });

  test('a stream answered with plain JSON is retried elsewhere, never relayed as an empty stream', T, async () => {
    reset();
    const reply = { id: 'chatcmpl-x', object: 'chat.completion', created: 1, model: MODEL, choices: [] };
    a.queueFaults({ kind: 'status', status: 200, body: reply });
    const stream = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI, stream: true }));
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    assert.match(text, /Hello from b/);
    a.setFault({ kind: 'status', status: 200, body: reply });
    b.setFault({ kind: 'status', status: 200, body: reply });
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
    await expectError(res, 502, 'api_error', 'upstream_error');
    await stillServing();
  });

  test('embeddings with stream: true get the JSON reply (the embeddings API has no stream)', T, async () => {
    reset();
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/embeddings', { model: 'pair', input: 'hello', stream: true }));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    const body = (await res.json()) as { data: { embedding: number[] }[] };
    assert.ok((body.data[0]?.embedding.length ?? 0) > 0);
  });

  test('a stream flag that is not a boolean is refused (vLLM would read "true" as a stream); no backend is asked', T, async () => {
    reset();
    for (const stream of ['true', 1]) {
      const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream }));
      const err = await expectError(res, 400, 'invalid_request_error', 'invalid_body');
      assert.match(err.message, /stream must be true or false/);
    }
    assert.equal(a.received.length + b.received.length, 0);
    await stillServing();
  });

  test("vLLM's old guided_* fields reach the backend as structured_outputs (v0.12 ignores the old names)", T, async () => {
    reset();
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } } };
    const res = await within(PROMPT_MS, () =>
      post(stack.base, '/v1/chat/completions', {
        model: 'pair',
        messages: HI,
        guided_json: schema,
        guided_whitespace_pattern: ' ',
        guided_decoding_backend: 'xgrammar',
        structured_outputs: { disable_any_whitespace: true },
      }),
    );
    assert.equal(res.status, 200, await res.text());
    const sent = [...a.received, ...b.received][0]?.body as Record<string, unknown>;
    assert.deepEqual(sent['structured_outputs'], { json: schema, whitespace_pattern: ' ', disable_any_whitespace: true });
    for (const old of ['guided_json', 'guided_whitespace_pattern', 'guided_decoding_backend']) assert.equal(sent[old], undefined, old);
    assert.equal(sent['model'], MODEL);
    assert.equal(sent['max_tokens'], 321);
    reset();
    await post(stack.base, '/v1/completions', { model: 'pair', prompt: 'x', guided_choice: ['yes', 'no'], guided_regex: null });
    const text = [...a.received, ...b.received][0]?.body as Record<string, unknown>;
    assert.deepEqual(text['structured_outputs'], { choice: ['yes', 'no'] });
    assert.equal(Object.hasOwn(text, 'guided_regex'), false);
    // A constraint of the client's own in structured_outputs is the one kept (vLLM v0.12+ reads only it;
    // two kinds merged would be refused); the old fields' options still move.
    reset();
    await post(stack.base, '/v1/completions', {
      model: 'pair',
      prompt: 'x',
      guided_choice: ['yes', 'no'],
      guided_whitespace_pattern: ' ',
      structured_outputs: { regex: 'a+' },
    });
    const own = [...a.received, ...b.received][0]?.body as Record<string, unknown>;
    assert.deepEqual(own['structured_outputs'], { regex: 'a+', whitespace_pattern: ' ' });
  });

  test('a garbage stream after the 200 reaches the SDK as an APIError, not a hang', T, async () => {
    reset();
    a.setFault({ kind: 'garbage' });
    b.setFault({ kind: 'garbage' });
    const stream = await stack.client.chat.completions.create({ model: 'pair', messages: HI, stream: true });
    await within(PROMPT_MS, () =>
      assert.rejects(
        async () => {
          for await (const _ of stream) {
            /* consume */
          }
        },
        (e: unknown) => e instanceof OpenAI.APIError && !(e instanceof OpenAI.APIConnectionError),
      ),
    );
    const raw = await (await post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true })).text();
    assert.ok(raw.endsWith('data: [DONE]\n\n'));
    assert.equal(count(raw, 'data: [DONE]'), 1);
    await stillServing();
  });

  test('an in-stream error event reaches the SDK stream consumer as a thrown APIError, and the SSE ends', T, async () => {
    reset();
    a.setFault({ kind: 'stream-error', afterChunks: 2, message: 'CUDA out of memory' });
    b.setFault({ kind: 'stream-error', afterChunks: 2, message: 'CUDA out of memory' });
    const stream = await stack.client.chat.completions.create({ model: 'pair', messages: HI, stream: true });
    let text = '';
    await within(PROMPT_MS, () =>
      assert.rejects(
        async () => {
          for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
        },
        (e: unknown) => {
          assert.ok(e instanceof OpenAI.APIError);
          assert.ok(!(e instanceof OpenAI.APIConnectionError), 'an error event, not a broken connection');
          assert.match(e.message, /CUDA out of memory/);
          return true;
        },
      ),
    );
    assert.match(text, /Hello from [ab]/, 'what came before the error was delivered');
    assert.equal(a.received.length + b.received.length, 1, 'no retry after the first byte');
    // The SDK closes once it read the error: the row says the stream failed (200 and its error), not 499.
    const rows = stack.spend.rows.length;
    for (let i = 0; i < 100 && stack.spend.rows.length === rows; i++) await new Promise((r) => setTimeout(r, 10));
    const row = stack.spend.rows.at(-1);
    assert.equal(row?.status, 200, JSON.stringify(row));
    assert.match(row.upstream ?? '', /error event in the stream|stream broke off/);

    // On the wire: the error in OpenAI's shape, then exactly one [DONE] — with or without vLLM's own [DONE].
    for (const done of [true, false]) {
      reset();
      a.setFault({ kind: 'stream-error', afterChunks: 1, message: 'engine died', done });
      b.setFault({ kind: 'stream-error', afterChunks: 1, message: 'engine died', done });
      const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI, stream: true }));
      assert.equal(res.status, 200);
      const raw = await res.text();
      const data = sseData(raw);
      assert.equal(data.at(-1), '[DONE]', `done: ${done}`);
      assert.equal(count(raw, 'data: [DONE]'), 1, `done: ${done}`);
      const errors = data.filter((d) => d.startsWith('{"error"')).map((d) => (JSON.parse(d) as { error: OpenAiError }).error);
      assert.equal(errors.length, 1);
      assert.deepEqual(Object.keys(errors[0] ?? {}).sort(), ['code', 'message', 'param', 'type']);
      assert.match(errors[0]?.message ?? '', /engine died/);
    }
    await stillServing();
  });

  test('a connection closed before the headers is retried', T, async () => {
    reset();
    a.queueFaults({ kind: 'close-before-headers' });
    const r = await within(PROMPT_MS, () => stack.client.chat.completions.create({ model: 'pair', messages: HI }));
    assert.match(r.choices[0]?.message.content ?? '', /Hello from b/);
    assert.equal(a.received.length, 1);
    assert.equal(b.received.length, 1);
    await stillServing();
  });

  test("a fresh x-request-id per attempt, never the client's", T, async () => {
    reset();
    a.queueFaults({ kind: 'status', status: 500 });
    const res = await post(stack.base, '/v1/chat/completions', { model: 'pair', messages: HI }, { 'x-request-id': 'client-rid-0001' });
    assert.equal(res.status, 200);
    await res.text();
    const ida = a.received[0]?.headers['x-request-id'];
    const idb = b.received[0]?.headers['x-request-id'];
    assert.equal(typeof ida, 'string');
    assert.equal(typeof idb, 'string');
    assert.notEqual(ida, idb);
    assert.notEqual(ida, 'client-rid-0001');
    assert.notEqual(idb, 'client-rid-0001');
    await stillServing();
  });

  test("a LoRA alias passes Ray Serve's base:adapter model id through unchanged", T, async () => {
    reset();
    const r = await stack.client.chat.completions.create({ model: 'adapter', messages: HI });
    assert.equal(r.model, 'adapter');
    assert.equal(sentBody(lora)['model'], ADAPTER);
    const stream = await stack.client.chat.completions.create({ model: 'adapter', messages: HI, stream: true });
    let text = '';
    for await (const chunk of stream) {
      assert.equal(chunk.model, 'adapter');
      text += chunk.choices[0]?.delta.content ?? '';
    }
    assert.match(text, /Hello from lora/);
    assert.equal(sentBody(lora, 1)['model'], ADAPTER);
    await stillServing('adapter');
  });

  test('/v1/completions and /v1/embeddings through the SDK', T, async () => {
    reset();
    const c = await stack.client.completions.create({ model: 'pair', prompt: 'Say hello' });
    assert.equal(c.model, 'pair');
    assert.match(c.choices[0]?.text ?? '', /Hello from/);
    const first = a.received[0] ?? b.received[0];
    assert.equal(first?.path, '/v1/completions');
    assert.equal((first?.body as Obj)['max_tokens'], 321, 'the default cap');
    assert.equal((first?.body as Obj)['model'], MODEL);

    reset();
    const e = await stack.client.embeddings.create({ model: 'pair', input: ['one', 'two'], encoding_format: 'float' });
    assert.equal(e.model, 'pair');
    assert.equal(e.data.length, 2);
    assert.equal(e.data[0]?.embedding.length, 8);
    const sent = a.received[0] ?? b.received[0];
    assert.equal(sent?.path, '/v1/embeddings');
    assert.equal((sent?.body as Obj)['max_tokens'], undefined, 'no max_tokens on embeddings');
    assert.equal((sent?.body as Obj)['model'], MODEL);

    // A streamed completion through the SDK too.
    const stream = await stack.client.completions.create({ model: 'pair', prompt: 'Say hello', stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    assert.match(text, /Hello from/);
    await stillServing();
  });

  test("the client's max_tokens (or max_completion_tokens) is kept", T, async () => {
    reset();
    await stack.client.chat.completions.create({ model: 'pair', messages: HI, max_tokens: 7 });
    assert.equal(sentBody(a)['max_tokens'], 7);
    reset();
    await stack.client.chat.completions.create({ model: 'pair', messages: HI, max_completion_tokens: 9 });
    assert.equal(sentBody(a)['max_completion_tokens'], 9);
    assert.equal(sentBody(a)['max_tokens'], undefined);
    reset();
    await stack.client.completions.create({ model: 'pair', prompt: 'x', max_tokens: 5 });
    assert.equal(sentBody(a)['max_tokens'], 5);
  });

  test('a client that stops reading a stream and goes away is still charged; the request does not stay stuck', T, async () => {
    const { big, bigStack } = await startBigStream('timeout: 10');
    try {
      const ctrl = new AbortController();
      const res = await fetch(`${bigStack.base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'big', messages: HI, stream: true }),
        signal: ctrl.signal,
      });
      assert.equal(res.status, 200);
      // Never read the body: the gateway's writes back up. Then leave.
      await new Promise((r) => setTimeout(r, 500));
      ctrl.abort();
      const deadline = Date.now() + 3000;
      while (bigStack.spend.rows.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(bigStack.spend.rows.length, 1, 'the cut-short stream leaves its spend row');
      assert.equal(bigStack.spend.rows[0]?.status, 499, 'recorded as closed by the client');
      const r = await bigStack.client.chat.completions.create({ model: 'big', messages: HI, max_tokens: 1 });
      assert.equal(r.model, 'big');
    } finally {
      await bigStack.gw.close(200);
      await big.close();
    }
  });

  test(
    'a client that stays connected but stops reading a stream is cut off after the stream_timeout; the backend request ends and the spend is kept',
    T,
    async () => {
      const { big, bigStack } = await startBigStream('timeout: 30, stream_timeout: 2');
      const socket = connect(bigStack.gw.port, '127.0.0.1');
      try {
        const body = JSON.stringify({ model: 'big', messages: HI, stream: true });
        await once(socket, 'connect');
        const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
        // Read the first bytes (the head), then never again: the gateway's writes back up while the socket stays open.
        socket.write(
          `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY}\r\ncontent-type: application/json\r\n` +
            `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
        const [first] = (await once(socket, 'data')) as [Buffer];
        assert.match(first.toString('latin1'), /^HTTP\/1\.1 200/);
        socket.pause();
        const started = Date.now();
        assert.equal(big.inFlight(), 1);
        // The fake writes its whole reply without waiting; the gateway stops taking it once the client's socket
        // is full, and after two seconds without progress (a stream_timeout long enough that
        // a loaded machine's backend still sends its head within it) drops the client and the backend request, and charges.
        const deadline = Date.now() + 8000;
        while (bigStack.spend.rows.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        const waited = Date.now() - started;
        assert.equal(bigStack.spend.rows.length, 1, 'the cut-off stream leaves its spend row');
        assert.ok(waited >= 1900, `cut off after ${waited} ms, before the 2 s stream_timeout`);
        assert.ok((bigStack.spend.rows[0]?.completionTokens ?? 0) > 0, 'charged for what was streamed');
        assert.equal(bigStack.spend.rows[0]?.status, 499, 'recorded as closed by the client (it stopped reading)');
        // The backend's connection went with it (the fake's reply could not have been flushed otherwise).
        const until = Date.now() + 3000;
        while (big.inFlight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        assert.equal(big.inFlight(), 0, 'the backend request was aborted');
        // What the kernel had buffered is readable, then the connection ends: the gateway closed it.
        socket.on('data', () => undefined);
        socket.on('error', () => undefined);
        socket.resume();
        await closed;
        const r = await bigStack.client.chat.completions.create({ model: 'big', messages: HI, max_tokens: 1 });
        assert.equal(r.model, 'big');
      } finally {
        socket.destroy();
        await bigStack.gw.close(200);
        await big.close();
      }
    },
  );
});

describe('gateway cooldowns and request size', () => {
  let ca: FakeVllm;
  let cb: FakeVllm;
  let stack: Stack;

  before(async () => {
    [ca, cb] = await Promise.all([startFakeVllm({ models: [MODEL], name: 'ca' }), startFakeVllm({ models: [MODEL], name: 'cb' })]);
    stack = await startStack(`
model_list:
  - model_name: cool
    litellm_params: { model: openai/${MODEL}, api_base: "${ca.apiBase}", timeout: 5 }
    model_info: { id: cool-a }
  - model_name: cool
    litellm_params: { model: openai/${MODEL}, api_base: "${cb.apiBase}", timeout: 5, weight: 1.0e-9 }
    model_info: { id: cool-b }
  - model_name: solo
    litellm_params: { model: openai/${MODEL}, api_base: "${ca.apiBase}", timeout: 5 }
    model_info: { id: solo-a }
router_settings:
  num_retries: 2
  allowed_fails: 0
  cooldown_time: 30
general_settings:
  context_signing_key: ${SECRET}
  max_request_size_mb: 0.05
keys:
  - key: sha256:${sha(KEY)}
`);
  });
  after(async () => {
    await stack.gw.close(500);
    await Promise.all([ca.close(), cb.close()]);
  });

  const stillServing = async (): Promise<void> => {
    const r = await stack.client.chat.completions.create({ model: 'cool', messages: HI });
    assert.equal(r.model, 'cool');
  };

  test('allowed_fails: 0 — after one failure on A, the next requests all go to B (A is cooling down)', T, async () => {
    ca.queueFaults({ kind: 'status', status: 500 });
    const first = await stack.client.chat.completions.create({ model: 'cool', messages: HI });
    assert.match(first.choices[0]?.message.content ?? '', /Hello from cb/);
    assert.equal(ca.received.length, 1);
    assert.equal(cb.received.length, 1);
    // A carries nearly all the weight: without the cooldown, these would go to A.
    for (let i = 0; i < 5; i++) {
      const r = await stack.client.chat.completions.create({ model: 'cool', messages: HI });
      assert.match(r.choices[0]?.message.content ?? '', /Hello from cb/);
    }
    assert.equal(ca.received.length, 1, 'A received nothing while cooling down');
    assert.equal(cb.received.length, 6);
  });

  test("the only deployment of an alias is never cooled down: one request's failures do not fail the next", T, async () => {
    ca.received.length = 0;
    ca.queueFaults({ kind: 'status', status: 500 }, { kind: 'status', status: 500 }, { kind: 'status', status: 500 });
    const asked = performance.now();
    const res = await post(stack.base, '/v1/chat/completions', { model: 'solo', messages: HI });
    await expectError(res, 502, 'api_error', 'upstream_error');
    assert.equal(ca.received.length, 3, 'retried on the one deployment');
    // Not at once: after about 0.5 s, then about 1 s (LiteLLM's backoff when no other deployment is left).
    const took = performance.now() - asked;
    assert.ok(took >= 1_100 && took < 4_000, `retried after a backoff: ${Math.round(took)} ms`);
    const r = await stack.client.chat.completions.create({ model: 'solo', messages: HI });
    assert.equal(r.model, 'solo');
    assert.equal(ca.received.length, 4);
  });

  test("the max_tokens tollgate adds past the context's room is asked again with the room; a client's own is not", T, async () => {
    const refusal = (message: string): Fault => ({
      kind: 'status',
      status: 400,
      body: { error: { message, type: 'BadRequestError', param: null, code: 400 } },
    });
    const NEW =
      "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length is 8192 tokens and your request has 5112 input tokens (4096 > 8192 - 5112).";
    const OLD =
      "This model's maximum context length is 4096 tokens. However, you requested 4200 tokens (104 in the messages, 4096 in the completion). Please reduce the length of the messages or completion.";
    for (const [message, room] of [
      [NEW, 8192 - 5112],
      [OLD, 4096 - 104],
    ] as const) {
      ca.received.length = 0;
      ca.queueFaults(refusal(message));
      const r = await stack.client.chat.completions.create({ model: 'solo', messages: HI });
      assert.equal(r.model, 'solo');
      assert.deepEqual(
        ca.received.map((q) => (q.body as { max_tokens?: unknown }).max_tokens),
        [4096, room],
        'the default cap, then the room left',
      );
    }
    // A batch of prompts, refused at each too long for the cap in turn: asked again until the room fits them all.
    ca.received.length = 0;
    ca.queueFaults(refusal(NEW), refusal(NEW.replace('5112 input tokens (4096 > 8192 - 5112)', '6000 input tokens (3080 > 8192 - 6000)')));
    const batch = await stack.client.completions.create({ model: 'solo', prompt: ['a long one', 'a longer one'] });
    assert.equal(batch.model, 'solo');
    assert.deepEqual(
      ca.received.map((q) => (q.body as { max_tokens?: unknown }).max_tokens),
      [4096, 8192 - 5112, 8192 - 6000],
    );
    // The client's own max_tokens, or a prompt that alone fills the context: vLLM's 400 as it is, asked once.
    for (const [body, message] of [
      [{ model: 'solo', messages: HI, max_tokens: 5000 }, NEW],
      [
        { model: 'solo', messages: HI },
        "'max_tokens' or 'max_completion_tokens' is too large: 4096. This model's maximum context length is 8192 tokens and your request has 8192 input tokens (4096 > 8192 - 8192).",
      ],
    ] as const) {
      ca.received.length = 0;
      ca.queueFaults(refusal(message));
      const res = await post(stack.base, '/v1/chat/completions', body);
      const err = await expectError(res, 400, 'invalid_request_error', 'upstream_invalid_request');
      assert.match(err.message, /maximum context length/);
      assert.equal(ca.received.length, 1);
    }
  });

  test('a body over max_request_size_mb (content-length): 413 request_too_large', T, async () => {
    const big = JSON.stringify({ model: 'cool', messages: [{ role: 'user', content: 'x'.repeat(100_000) }] });
    const forwarded = ca.received.length + cb.received.length;
    const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', big));
    const err = await expectError(res, 413, 'invalid_request_error', 'request_too_large');
    // It says how large a body may be (max_request_size_mb: 0.05 is 51 KiB).
    assert.match(err.message, /larger than this gateway takes \(51 KiB\): send a smaller request/);
    assert.equal(ca.received.length + cb.received.length, forwarded, 'nothing forwarded');
    await stillServing();
  });

  test('a body over max_request_size_mb sent chunked (no content-length): 413 request_too_large, not a reset connection', T, async () => {
    const chunk = new TextEncoder().encode('x'.repeat(16 * 1024));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      start(ctrl) {
        ctrl.enqueue(new TextEncoder().encode('{"model":"cool","messages":[{"role":"user","content":"'));
      },
      pull(ctrl) {
        if (sent >= 8) {
          ctrl.enqueue(new TextEncoder().encode('"}]}'));
          ctrl.close();
          return;
        }
        sent++;
        ctrl.enqueue(chunk);
      },
    });
    const res = await within(PROMPT_MS, () =>
      fetch(`${stack.base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body,
        duplex: 'half',
        signal: AbortSignal.timeout(10_000),
      }),
    );
    await expectError(res, 413, 'invalid_request_error', 'request_too_large');
    await stillServing();
  });
});

describe('fallbacks while every deployment of the model cools down', () => {
  let pa: FakeVllm;
  let pb: FakeVllm;
  let spare: FakeVllm;
  let stack: Stack;

  before(async () => {
    [pa, pb, spare] = await Promise.all([
      startFakeVllm({ models: [MODEL], name: 'pa' }),
      startFakeVllm({ models: [MODEL], name: 'pb' }),
      startFakeVllm({ models: [MODEL], name: 'spare' }),
    ]);
    stack = await startStack(`
model_list:
  - model_name: prim
    litellm_params: { model: openai/${MODEL}, api_base: "${pa.apiBase}", timeout: 5 }
    model_info: { id: prim-a }
  - model_name: prim
    litellm_params: { model: openai/${MODEL}, api_base: "${pb.apiBase}", timeout: 5 }
    model_info: { id: prim-b }
  - model_name: spare
    litellm_params: { model: openai/${MODEL}, api_base: "${spare.apiBase}", timeout: 5 }
    model_info: { id: spare-a }
  - model_name: lone
    litellm_params: { model: openai/${MODEL}, api_base: "${pa.apiBase}", timeout: 5 }
    model_info: { id: lone-a }
  - model_name: lone
    litellm_params: { model: openai/${MODEL}, api_base: "${pb.apiBase}", timeout: 5 }
    model_info: { id: lone-b }
router_settings:
  num_retries: 1
  allowed_fails: 0
  cooldown_time: 30
  fallbacks: [{ prim: [spare] }]
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
  });
  after(async () => {
    await stack.gw.close(500);
    await Promise.all([pa.close(), pb.close(), spare.close()]);
  });

  test('the fallback answers at once, the cooling deployments get nothing; without a fallback, 503 no_healthy_deployment', T, async () => {
    pa.queueFaults({ kind: 'status', status: 500 });
    pb.queueFaults({ kind: 'status', status: 500 });
    const first = await stack.client.chat.completions.create({ model: 'prim', messages: HI });
    assert.match(first.choices[0]?.message.content ?? '', /Hello from spare/);
    assert.deepEqual([pa.received.length, pb.received.length], [1, 1], 'each deployment failed once and cooled down');
    for (let i = 0; i < 3; i++) {
      const r = await stack.client.chat.completions.create({ model: 'prim', messages: HI });
      assert.match(r.choices[0]?.message.content ?? '', /Hello from spare/, `request ${i + 2}`);
      assert.equal(r.model, 'spare');
    }
    assert.deepEqual([pa.received.length, pb.received.length], [1, 1], 'nothing sent to a deployment cooling down');
    assert.equal(spare.received.length, 4);
    // `lone` shares the cooled backends but not their deployments: it still answers.
    const lone = await stack.client.chat.completions.create({ model: 'lone', messages: HI });
    assert.equal(lone.model, 'lone');
    pa.queueFaults({ kind: 'status', status: 500 });
    pb.queueFaults({ kind: 'status', status: 500 });
    await expectError(await post(stack.base, '/v1/chat/completions', { model: 'lone', messages: HI }), 502, 'api_error', 'upstream_error');
    const res = await post(stack.base, '/v1/chat/completions', { model: 'lone', messages: HI });
    await expectError(res, 503, 'service_unavailable', 'no_healthy_deployment');
  });
});

describe('backend 429s and cooldowns: when every deployment is cooling down, the client is told when to come back', () => {
  let ra: FakeVllm;
  let rb: FakeVllm;
  let stack: Stack;
  /** Check on its own authorizer, which does not know the gateway's cooldowns (as in `tollgate authz` behind Envoy). */
  let authz: AuthzApp;
  let envoy: EnvoyCheckClient;
  /** Check on the gateway's authorizer, which does (as in `tollgate serve`). */
  let serveAuthz: AuthzApp;
  let serveEnvoy: EnvoyCheckClient;

  before(async () => {
    [ra, rb] = await Promise.all([startFakeVllm({ models: [MODEL], name: 'ra' }), startFakeVllm({ models: [MODEL], name: 'rb' })]);
    // Each test has its aliases (cooldowns are per deployment, and last 30 s or more); `a` carries the weight,
    // so the first attempt goes to ra and the retry (num_retries: 1) to rb.
    const pair = (alias: string): string => `
  - model_name: ${alias}
    litellm_params: { model: openai/${MODEL}, api_base: "${ra.apiBase}", timeout: 5 }
    model_info: { id: ${alias}-a }
  - model_name: ${alias}
    litellm_params: { model: openai/${MODEL}, api_base: "${rb.apiBase}", timeout: 5, weight: 1.0e-9 }
    model_info: { id: ${alias}-b }`;
    const yaml = `
model_list:${['busy', 'broken', 'long', 'long-ms', 'envoy-busy', 'envoy-broken'].map(pair).join('')}
  - model_name: solo
    litellm_params: { model: openai/${MODEL}, api_base: "${ra.apiBase}", timeout: 5 }
    model_info: { id: solo-a }
router_settings:
  num_retries: 1
  allowed_fails: 0
  cooldown_time: 30
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`;
    stack = await startStack(yaml);
    const prepared = prepareConfigText(yaml, 'faults.yaml', {});
    authz = await startAuthz(buildAuthorizer(prepared.config, prepared.policy, contextSecret(SECRET, undefined) as Buffer), {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('silent'),
      metrics: createMetrics({ defaultMetrics: false }),
    });
    envoy = new EnvoyCheckClient(authz.port);
    serveAuthz = await startAuthz(stack.parts, {
      host: '127.0.0.1',
      port: 0,
      logger: createLogger('silent'),
      metrics: createMetrics({ defaultMetrics: false }),
    });
    serveEnvoy = new EnvoyCheckClient(serveAuthz.port);
  });
  after(async () => {
    envoy.close();
    serveEnvoy.close();
    await authz.close(500);
    await serveAuthz.close(500);
    await stack.gw.close(500);
    await Promise.all([ra.close(), rb.close()]);
  });

  const busy = (headers: Record<string, string> = {}): Fault => ({ kind: 'status', status: 429, headers });
  const sent = (): number => ra.received.length + rb.received.length;
  const ask = (model: string, stream = false): Promise<Response> =>
    within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model, messages: HI, ...(stream ? { stream: true } : {}) }));
  /** The reply's retry-after is in [lo, hi] whole seconds, and its retry-after-ms says the same wait. */
  const waits = (res: Response | Headers, lo: number, hi: number): void => {
    const h = res instanceof Headers ? res : res.headers;
    const secs = Number(h.get('retry-after'));
    const ms = Number(h.get('retry-after-ms'));
    assert.ok(Number.isInteger(secs) && secs >= lo && secs <= hi, `retry-after ${h.get('retry-after')}, expected ${lo}..${hi}`);
    assert.ok(
      Number.isInteger(ms) && ms > (secs - 1) * 1000 && ms <= secs * 1000,
      `retry-after-ms ${h.get('retry-after-ms')} vs ${secs} s`,
    );
  };

  test(
    'every deployment cooled down by 429s: 429 rate_limit_exceeded with a retry-after until the first is back, not a 503',
    T,
    async () => {
      ra.queueFaults(busy());
      rb.queueFaults(busy({ 'retry-after': '7' }));
      const first = await ask('busy');
      // The request whose 429s cooled both down (allowed_fails: 0): told to come back when the first is back
      // (cooldown_time 30 s), not after the backend's 7 s, when it would be refused again.
      waits(first, 29, 30);
      await expectError(first, 429, 'rate_limit_error', 'rate_limit_exceeded');
      assert.equal(sent(), 2);
      // A client that comes back meanwhile: a 429 again, with the time left; nothing reaches the backends.
      const again = await ask('busy');
      waits(again, 25, 30);
      const err = await expectError(again, 429, 'rate_limit_error', 'rate_limit_exceeded');
      assert.match(err.message, /rate limited by its model server: retry after the time given in the retry-after header/);
      assert.equal(stack.spend.rows.at(-1)?.status, 429);
      const streamed = await ask('busy', true);
      waits(streamed, 25, 30);
      await expectError(streamed, 429, 'rate_limit_error', 'rate_limit_exceeded');
      // The OpenAI SDK's RateLimitError (which its retries wait out by these headers), not an InternalServerError.
      await assert.rejects(stack.client.chat.completions.create({ model: 'busy', messages: HI }), (e: unknown) => {
        assert.ok(e instanceof OpenAI.RateLimitError, String(e));
        assert.equal(e.code, 'rate_limit_exceeded');
        waits(e.headers, 25, 30);
        return true;
      });
      assert.equal(sent(), 2, 'nothing sent to a deployment cooling down');
    },
  );

  test('every deployment cooled down by 5xx: 503 no_healthy_deployment, with a retry-after until the first is back', T, async () => {
    ra.received.length = 0;
    rb.received.length = 0;
    ra.queueFaults({ kind: 'status', status: 500 });
    rb.queueFaults({ kind: 'status', status: 503 });
    const first = await ask('broken');
    // The request that cooled them down keeps its own answer (the last attempt's), and says when to come back.
    waits(first, 29, 30);
    const firstErr = await expectError(first, 502, 'api_error', 'upstream_error');
    assert.match(firstErr.message, /retry after the time given in the retry-after header/, 'not "retry shortly" beside a 30 s wait');
    const again = await ask('broken');
    waits(again, 25, 30);
    const err = await expectError(again, 503, 'service_unavailable', 'no_healthy_deployment');
    assert.match(err.message, /retry after the time given in the retry-after header/);
    assert.equal(sent(), 2, 'nothing sent to a deployment cooling down');
  });

  test("a 429's retry-after longer than cooldown_time keeps the deployment out until then", T, async () => {
    ra.queueFaults(busy({ 'retry-after': '90' }));
    rb.queueFaults(busy({ 'retry-after': '90' }));
    const first = await ask('long');
    // The backend's own retry-after, as it came: no deployment is back sooner.
    assert.deepEqual([first.headers.get('retry-after'), first.headers.get('retry-after-ms')], ['90', null]);
    await expectError(first, 429, 'rate_limit_error', 'rate_limit_exceeded');
    // Past cooldown_time's 30 s: out for the 90 s the backends asked for.
    waits(await ask('long'), 85, 90);
    // retry-after-ms the same way, and passed on.
    ra.queueFaults(busy({ 'retry-after-ms': '45000' }));
    rb.queueFaults(busy({ 'retry-after-ms': '45000' }));
    const ms = await ask('long-ms');
    assert.deepEqual([ms.headers.get('retry-after-ms'), ms.headers.get('retry-after')], ['45000', '45']);
    await expectError(ms, 429, 'rate_limit_error', 'rate_limit_exceeded');
    waits(await ask('long-ms'), 40, 45);
  });

  test('the only deployment of an alias is never cooled down, not even by a 429 asking for a long wait', T, async () => {
    ra.received.length = 0;
    ra.queueFaults(busy({ 'retry-after': '90' }));
    const res = await ask('solo');
    assert.equal(res.headers.get('retry-after'), '90');
    await expectError(res, 429, 'rate_limit_error', 'rate_limit_exceeded');
    // Not asked again by this request: it asked for 90 s, which the client's SDK waits out.
    assert.equal(ra.received.length, 1, 'not retried on the one deployment that asked for 90 s');
    const r = await stack.client.chat.completions.create({ model: 'solo', messages: HI });
    assert.equal(r.model, 'solo');
    assert.equal(ra.received.length, 2);
  });

  test('behind Envoy: Check answers so where it knows the cooldowns (serve), else the gateway does; nothing is sent', T, async () => {
    ra.queueFaults(busy(), { kind: 'status', status: 500 });
    rb.queueFaults(busy(), { kind: 'status', status: 500 });
    await expectError(await ask('envoy-busy'), 429, 'rate_limit_error', 'rate_limit_exceeded');
    await expectError(await ask('envoy-broken'), 502, 'api_error', 'upstream_error');
    const before = sent();
    for (const [model, status, type, code, envoyStatus] of [
      ['envoy-busy', 429, 'rate_limit_error', 'rate_limit_exceeded', 'TooManyRequests'],
      ['envoy-broken', 503, 'service_unavailable', 'no_healthy_deployment', 'ServiceUnavailable'],
    ] as const) {
      const body = JSON.stringify({ model, messages: HI });
      const reqHeaders = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
      // `tollgate serve`: Check shares the gateway's cooldowns and denies, with the same headers and body.
      const denial = await serveEnvoy.check({ headers: reqHeaders, body });
      assert.notEqual(denial.status?.code, 0, `Check denies ${model}`);
      const d = denial.denied_response;
      assert.ok(d);
      assert.equal(d.status?.code, envoyStatus);
      assert.equal((JSON.parse(d.body) as { error: { code: string } }).error.code, code);
      waits(new Headers(deniedHeaders(d)), 25, 30);
      // `tollgate authz` apart: Check allows, and the gateway answers it.
      const check = await envoy.check({ headers: reqHeaders, body });
      assert.equal(check.status?.code, 0, 'Check allows it, with a deployment that is cooling down in the gateway');
      const headers: Record<string, string> = {};
      for (const [k, v] of applyOkResponse(reqHeaders, check.ok_response as NonNullable<typeof check.ok_response>))
        if (!k.startsWith(':')) headers[k] = v.join(',');
      const res = await within(PROMPT_MS, () =>
        fetch(`${stack.base}/v1/chat/completions`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) }),
      );
      waits(res, 25, 30);
      await expectError(res, status, type, code);
    }
    assert.equal(sent(), before, 'nothing sent to a deployment cooling down');
  });
});

describe('a stream event past the largest one held (64 MiB)', () => {
  test('the client gets an error event and [DONE], and the backend request is cut off', T, async () => {
    let closedEarly = false;
    let sentMiB = 0;
    const backend = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"');
      const piece = 'x'.repeat(1024 * 1024);
      const more = (): void => {
        // Up to 100 MiB of one event, never ended: only a cut-off stops it early.
        while (sentMiB < 100 && !res.destroyed) {
          sentMiB++;
          if (!res.write(piece)) return void res.once('drain', more);
        }
        if (!res.destroyed) res.end('"}}]}\n\n');
      };
      res.on('close', () => {
        if (!res.writableFinished) closedEarly = true;
      });
      more();
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    const port = (backend.address() as { port: number }).port;
    const stack = await startStack(`
model_list:
  - model_name: huge
    litellm_params: { model: openai/m, api_base: "http://127.0.0.1:${port}/v1", timeout: 10 }
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
    try {
      const res = await post(stack.base, '/v1/chat/completions', { model: 'huge', messages: HI, stream: true });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.match(text, /malformed stream/);
      assert.ok(text.endsWith('data: [DONE]\n\n'));
      assert.ok(text.length < 1024 * 1024, 'none of the oversized event reached the client');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(closedEarly, true, `the backend was cut off (it sent ${sentMiB} MiB)`);
      assert.ok(sentMiB < 100);
    } finally {
      await stack.gw.close(500);
      backend.closeAllConnections();
      await new Promise<void>((resolve) => backend.close(() => resolve()));
    }
  });
});

describe('a stream tollgate cuts off at a timeout', () => {
  test("says it was the deployment's timeout or stream_timeout (upstream_timeout), not the model server closing it", T, async () => {
    // 30 chunks 150 ms apart: 4.5 s in all, past a timeout of 1 s; and a stream whose events are 600 ms apart,
    // past a stream_timeout of 0.3 s, after its head went to the client.
    const steady = await startFakeVllm({ models: [MODEL], name: 'steady', chunks: 30, chunkDelayMs: 150 });
    const sparse = await startFakeVllm({ models: [MODEL], name: 'sparse', chunks: 5, chunkDelayMs: 600 });
    const stack = await startStack(`
model_list:
  - model_name: long
    litellm_params: { model: openai/${MODEL}, api_base: "${steady.apiBase}", timeout: 1 }
  - model_name: sparse
    litellm_params: { model: openai/${MODEL}, api_base: "${sparse.apiBase}", timeout: 10, stream_timeout: 0.3 }
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
`);
    try {
      for (const [model, limit] of [
        ['long', /timeout and tollgate cut the stream off/],
        ['sparse', /stream_timeout and tollgate cut the stream off/],
      ] as const) {
        const res = await within(PROMPT_MS, () => post(stack.base, '/v1/chat/completions', { model, messages: HI, stream: true }));
        assert.equal(res.status, 200);
        const text = await res.text();
        const events = text.split('\n\n').filter((e) => e.startsWith('data: {"error"'));
        assert.equal(events.length, 1, text);
        const err = (JSON.parse((events[0] as string).slice('data: '.length)) as { error: OpenAiError }).error;
        assert.equal(err.code, 'upstream_timeout', text);
        assert.equal(err.type, 'timeout');
        assert.match(err.message, limit);
        assert.ok(text.endsWith('data: [DONE]\n\n'));
      }
    } finally {
      await stack.gw.close(500);
      await Promise.all([steady.close(), sparse.close()]);
    }
  });
});
