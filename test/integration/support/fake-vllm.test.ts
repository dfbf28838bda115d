/**
 * Self-check of test/support/fake-vllm.ts: every behaviour and fault kind, exercised over real HTTP with undici.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request, type Dispatcher } from 'undici';
import { embeddingVector, startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';

const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
type Obj = Record<string, unknown>;
const chat = (extra: Obj = {}): Obj => ({ model: MODEL, messages: [{ role: 'user', content: 'hi' }], ...extra });

/** SSE `data:` payloads, in order (unparsed). */
function events(text: string): string[] {
  return text
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
}
const json = (s: string | undefined): Obj => JSON.parse(s ?? 'null') as Obj;

describe('fake vLLM', () => {
  let fake: FakeVllm;
  let agent: Agent;
  const call = (path: string, body?: unknown, init: Partial<Dispatcher.RequestOptions> = {}) =>
    request(`${fake.url}${path}`, {
      dispatcher: agent,
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...init,
    });

  before(async () => {
    fake = await startFakeVllm({ name: 'backend-a', loras: { 'sql-lora': MODEL } });
    agent = new Agent({ keepAliveTimeout: 10 });
  });
  after(async () => {
    await agent.close();
    await fake.close();
  });

  test('GET /health is 200 with an empty body; /v1/models lists models and LoRA adapters', async () => {
    const h = await call('/health');
    assert.equal(h.statusCode, 200);
    assert.equal(await h.body.text(), '');
    const m = await call('/v1/models');
    const list = (await m.body.json()) as { object: string; data: Obj[] };
    assert.equal(list.object, 'list');
    assert.deepEqual(
      list.data.map((d) => [d['id'], d['object'], d['owned_by'], d['parent'], d['max_model_len']]),
      [
        [MODEL, 'model', 'vllm', null, 8192],
        ['sql-lora', 'model', 'vllm', MODEL, 8192],
      ],
    );
  });

  test('non-streaming chat completion has vLLM shape, names the backend, and is recorded', async () => {
    const r = await call('/v1/chat/completions', chat(), { headers: { 'content-type': 'application/json', 'X-Trace': 't1' } });
    assert.equal(r.statusCode, 200);
    const b = (await r.body.json()) as Obj;
    assert.match(String(b['id']), /^chatcmpl-/);
    assert.equal(b['object'], 'chat.completion');
    const choice = (b['choices'] as Obj[])[0] as Obj;
    const msg = choice['message'] as Obj;
    assert.equal(msg['role'], 'assistant');
    assert.match(String(msg['content']), /backend-a/);
    assert.deepEqual([msg['reasoning_content'], msg['tool_calls']], [null, []]);
    assert.deepEqual([choice['finish_reason'], choice['stop_reason'], choice['logprobs']], ['stop', null, null]);
    assert.deepEqual(b['usage'], { prompt_tokens: 11, total_tokens: 16, completion_tokens: 5, prompt_tokens_details: null });
    assert.equal(b['prompt_logprobs'], null);
    const rec = fake.received.at(-1);
    assert.equal(rec?.path, '/v1/chat/completions');
    assert.equal(rec?.headers['x-trace'], 't1');
    assert.deepEqual(rec?.body, chat());
    assert.equal(rec?.aborted, false);
  });

  test('unknown model is 404 NotFoundError (nested)', async () => {
    const r = await call('/v1/chat/completions', chat({ model: 'nope' }));
    assert.equal(r.statusCode, 404);
    assert.deepEqual(await r.body.json(), {
      error: { message: 'The model `nope` does not exist.', type: 'NotFoundError', param: 'model', code: 404 },
    });
  });

  test('streaming chat without include_usage: role chunk, content chunks, stop chunk, [DONE]; no usage anywhere', async () => {
    const r = await call('/v1/chat/completions', chat({ stream: true }));
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream; charset=utf-8');
    const ev = events(await r.body.text());
    assert.equal(ev.at(-1), '[DONE]');
    const chunks = ev.slice(0, -1).map(json);
    assert.equal(chunks.length, 1 + 5 + 1);
    for (const c of chunks) {
      assert.equal(c['object'], 'chat.completion.chunk');
      assert.equal('usage' in c, false);
      assert.equal((c['choices'] as Obj[]).length, 1);
    }
    const choices = chunks.map((c) => (c['choices'] as Obj[])[0] as Obj);
    assert.deepEqual(choices[0], { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    assert.deepEqual(choices[1], { index: 0, delta: { content: 'Hello from backend-a.' }, logprobs: null, finish_reason: null });
    assert.equal(choices.at(-1)?.['finish_reason'], 'stop');
    assert.equal(new Set(chunks.map((c) => c['id'])).size, 1);
  });

  test('streaming chat with include_usage: a last chunk with choices [] and usage, before [DONE]', async () => {
    const r = await call('/v1/chat/completions', chat({ stream: true, stream_options: { include_usage: true } }));
    const ev = events(await r.body.text());
    assert.equal(ev.at(-1), '[DONE]');
    const last = json(ev.at(-2));
    assert.deepEqual(last['choices'], []);
    assert.deepEqual(last['usage'], { prompt_tokens: 11, total_tokens: 16, completion_tokens: 5 });
    assert.equal(ev.slice(0, -2).filter((e) => 'usage' in json(e)).length, 0);
  });

  test('completions (plain and streaming) and embeddings', async () => {
    const c = (await (await call('/v1/completions', { model: MODEL, prompt: 'x' })).body.json()) as Obj;
    assert.equal(c['object'], 'text_completion');
    assert.match(String(((c['choices'] as Obj[])[0] as Obj)['text']), /backend-a/);
    const s = events(
      await (
        await call('/v1/completions', { model: 'sql-lora', prompt: 'x', stream: true, stream_options: { include_usage: true } })
      ).body.text(),
    );
    assert.equal(s.at(-1), '[DONE]');
    assert.equal(json(s[0])['object'], 'text_completion');
    assert.equal(json(s[0])['model'], 'sql-lora');
    assert.deepEqual(json(s.at(-2))['choices'], []);
    const e = (await (await call('/v1/embeddings', { model: MODEL, input: ['a', 'b'] })).body.json()) as Obj;
    const data = e['data'] as Obj[];
    assert.equal(e['object'], 'list');
    assert.deepEqual(
      data.map((d) => [d['object'], d['index'], (d['embedding'] as number[]).length]),
      [
        ['embedding', 0, 8],
        ['embedding', 1, 8],
      ],
    );
    assert.deepEqual(e['usage'], { prompt_tokens: 22, total_tokens: 22, completion_tokens: 0, prompt_tokens_details: null });
    const one = (await (await call('/v1/embeddings', { model: MODEL, input: 'a' })).body.json()) as Obj;
    assert.deepEqual(((one['data'] as Obj[])[0] as Obj)['embedding'], data[0]?.['embedding']);
  });

  test('status faults: nested by default, flat on request, custom body; queued faults are consumed in order', async () => {
    fake.queueFaults(
      { kind: 'status', status: 400 },
      { kind: 'status', status: 400, flatError: true },
      { kind: 'status', status: 503, body: { error: 'custom' }, headers: { 'retry-after': '3' } },
    );
    const a = await call('/v1/chat/completions', chat());
    assert.equal(a.statusCode, 400);
    const ab = (await a.body.json()) as { error: Obj };
    assert.deepEqual([ab.error['type'], ab.error['param'], ab.error['code']], ['BadRequestError', null, 400]);
    const b = await call('/v1/chat/completions', chat());
    const bb = (await b.body.json()) as Obj;
    assert.deepEqual([bb['object'], bb['type'], bb['code'], 'error' in bb], ['error', 'BadRequestError', 400, false]);
    const c = await call('/v1/chat/completions', chat());
    assert.equal(c.statusCode, 503);
    assert.equal(c.headers['retry-after'], '3');
    assert.deepEqual(await c.body.json(), { error: 'custom' });
    const d = await call('/v1/chat/completions', chat());
    assert.equal(d.statusCode, 200);
    await d.body.dump();
  });

  test('setFault applies to every inference request until cleared; /health is not faulted', async () => {
    fake.setFault({ kind: 'status', status: 500 });
    for (let i = 0; i < 2; i++) {
      const r = await call('/v1/chat/completions', chat());
      assert.equal(r.statusCode, 500);
      assert.equal(((await r.body.json()) as { error: Obj }).error['type'], 'InternalServerError');
    }
    assert.equal((await call('/health')).statusCode, 200);
    fake.setFault(undefined);
    const ok = await call('/v1/chat/completions', chat());
    assert.equal(ok.statusCode, 200);
    await ok.body.dump();
  });

  test('delay-headers delays the status line', async () => {
    fake.queueFaults({ kind: 'delay-headers', ms: 150 });
    const t0 = Date.now();
    const r = await call('/v1/chat/completions', chat());
    assert.ok(Date.now() - t0 >= 140, `answered after ${Date.now() - t0}ms`);
    assert.equal(r.statusCode, 200);
    await r.body.dump();
  });

  test('close-before-headers destroys the socket without answering (not counted as a client abort)', async () => {
    fake.queueFaults({ kind: 'close-before-headers' });
    await assert.rejects(call('/v1/chat/completions', chat()), (e: Error & { code?: string }) => /SOCKET|ECONNRESET/.test(String(e.code)));
    assert.equal(fake.received.at(-1)?.aborted, false);
  });

  test('close-mid-stream: 200, N content chunks, then the connection drops (no [DONE])', async () => {
    fake.queueFaults({ kind: 'close-mid-stream', afterChunks: 2 });
    const r = await call('/v1/chat/completions', chat({ stream: true }));
    assert.equal(r.statusCode, 200);
    let text = '';
    await assert.rejects(async () => {
      for await (const c of r.body) text += String(c);
    });
    const ev = events(text);
    assert.equal(ev.length, 1 + 2);
    assert.ok(!ev.includes('[DONE]'));
    fake.queueFaults({ kind: 'close-mid-stream', afterChunks: 0 });
    const plain = await call('/v1/chat/completions', chat());
    assert.equal(plain.statusCode, 200);
    await assert.rejects(plain.body.text());
  });

  test('embeddingDims: unit vectors of that many float32s; base64 is their little-endian bytes, as vLLM encodes them', async () => {
    const wide = await startFakeVllm({ models: [MODEL], embeddingDims: 4096 });
    try {
      const post = async (body: Obj): Promise<Obj> =>
        (await (
          await request(`${wide.url}/v1/embeddings`, { dispatcher: agent, method: 'POST', body: JSON.stringify(body) })
        ).body.json()) as Obj;
      const floats = (((await post({ model: MODEL, input: ['a', 'b'] }))['data'] as Obj[])[1] as Obj)['embedding'] as number[];
      assert.equal(floats.length, 4096);
      assert.deepEqual(floats, embeddingVector('b', 4096));
      assert.ok(Math.abs(Math.hypot(...floats) - 1) < 1e-5);
      assert.ok(
        floats.every((v) => Math.fround(v) === v),
        'float32 values',
      );
      const b64 = (((await post({ model: MODEL, input: ['a', 'b'], encoding_format: 'base64' }))['data'] as Obj[])[1] as Obj)['embedding'];
      const bytes = Buffer.from(String(b64), 'base64');
      assert.equal(bytes.length, 4096 * 4);
      assert.deepEqual(
        Array.from({ length: 4096 }, (_, i) => bytes.readFloatLE(i * 4)),
        floats,
      );
      assert.ok((wide.received.at(-1)?.reply?.length ?? 0) > 2 * 4096 * 4, 'the reply as sent is kept');
    } finally {
      await wide.close();
    }
  });

  test('hold-reply-tail: a JSON reply but for its last bytes, which follow on release; cut-reply: cut off after N bytes', async () => {
    let release!: () => void;
    fake.queueFaults({ kind: 'hold-reply-tail', release: new Promise<void>((resolve) => (release = resolve)), bytes: 10 });
    const r = await call('/v1/embeddings', { model: MODEL, input: 'a' });
    assert.equal(r.statusCode, 200);
    const parts: Buffer[] = [];
    r.body.on('data', (c: Buffer) => parts.push(c));
    const sent = fake.received.at(-1)?.reply ?? '';
    for (let i = 0; i < 100 && Buffer.concat(parts).length < sent.length - 10; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(Buffer.concat(parts).toString(), sent.slice(0, -10), 'all but the last 10 bytes');
    release();
    await new Promise((resolve) => r.body.once('end', resolve));
    assert.equal(Buffer.concat(parts).toString(), sent);
    fake.queueFaults({ kind: 'cut-reply', afterBytes: 30 });
    const cut = await call('/v1/chat/completions', chat());
    assert.equal(cut.statusCode, 200);
    assert.equal(Number(cut.headers['content-length']), Buffer.byteLength(fake.received.at(-1)?.reply ?? ''));
    await assert.rejects(cut.body.text());
    assert.equal(fake.received.at(-1)?.aborted, false, 'closed by the fake, not the client');
  });

  test("stream-error: after N chunks vLLM's in-stream error event, then [DONE]; status stays 200", async () => {
    fake.queueFaults({ kind: 'stream-error', afterChunks: 1, message: 'engine died' });
    const r = await call('/v1/chat/completions', chat({ stream: true }));
    assert.equal(r.statusCode, 200);
    const ev = events(await r.body.text());
    assert.equal(ev.length, 1 + 1 + 2);
    assert.deepEqual(json(ev[2]), { error: { message: 'engine died', type: 'InternalServerError', param: null, code: 500 } });
    assert.equal(ev[3], '[DONE]');
    fake.queueFaults({ kind: 'stream-error', afterChunks: 0, done: false });
    const ev2 = events(await (await call('/v1/chat/completions', chat({ stream: true }))).body.text());
    assert.equal(ev2.length, 2);
    assert.ok('error' in json(ev2[1]));
  });

  test('garbage: 200 with a non-JSON body, or unparseable SSE when streaming', async () => {
    fake.queueFaults({ kind: 'garbage' }, { kind: 'garbage' });
    const r = await call('/v1/chat/completions', chat());
    assert.equal(r.statusCode, 200);
    const text = await r.body.text();
    assert.throws(() => JSON.parse(text));
    const s = await call('/v1/chat/completions', chat({ stream: true }));
    assert.equal(s.statusCode, 200);
    const ev = events(await s.body.text());
    assert.ok(ev.length > 0);
    for (const e of ev) assert.throws(() => JSON.parse(e));
  });

  test("ray-timeout: Ray Serve's 408 (plain text)", async () => {
    fake.queueFaults({ kind: 'ray-timeout', timeoutS: 30 });
    const r = await call('/v1/chat/completions', chat());
    assert.equal(r.statusCode, 408);
    assert.match(String(r.headers['content-type']), /^text\/plain/);
    assert.match(await r.body.text(), /^Request \S+ timed out after 30s\.$/);
  });

  test('client abort mid-stream is detected: waitForAbort resolves, inFlight returns to 0', async () => {
    const slow = await startFakeVllm({ chunkDelayMs: 30, chunks: 50 });
    try {
      const ac = new AbortController();
      const r = await request(`${slow.apiBase}/chat/completions`, {
        dispatcher: agent,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(chat({ stream: true })),
        signal: ac.signal,
      });
      const it = r.body[Symbol.asyncIterator]();
      await it.next();
      assert.equal(slow.inFlight(), 1);
      ac.abort();
      const rec = await slow.waitForAbort(2000);
      assert.equal(rec.aborted, true);
      assert.equal(rec.path, '/v1/chat/completions');
      assert.equal(slow.inFlight(), 0);
      await assert.rejects(slow.waitForAbort(50));
    } finally {
      await slow.close();
    }
  });

  test('abort while waiting for headers is detected too', async () => {
    fake.queueFaults({ kind: 'delay-headers', ms: 5000 });
    const ac = new AbortController();
    const p = call('/v1/chat/completions', chat(), { signal: ac.signal });
    while (fake.inFlight() === 0) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    await assert.rejects(p);
    const rec = await fake.waitForAbort(2000);
    assert.equal(rec.aborted, true);
  });

  test('requireApiKey: 401 {"error":"Unauthorized"} on /v1 without the key; /health stays open', async () => {
    const locked = await startFakeVllm({ requireApiKey: 'sk-backend' });
    try {
      const no = await request(`${locked.apiBase}/models`, { dispatcher: agent });
      assert.equal(no.statusCode, 401);
      assert.deepEqual(await no.body.json(), { error: 'Unauthorized' });
      const bad = await request(`${locked.apiBase}/models`, { dispatcher: agent, headers: { authorization: 'Bearer wrong' } });
      assert.equal(bad.statusCode, 401);
      await bad.body.dump();
      const ok = await request(`${locked.apiBase}/models`, { dispatcher: agent, headers: { authorization: 'Bearer sk-backend' } });
      assert.equal(ok.statusCode, 200);
      await ok.body.dump();
      const h = await request(`${locked.url}/health`, { dispatcher: agent });
      assert.equal(h.statusCode, 200);
      await h.body.dump();
    } finally {
      await locked.close();
    }
  });
});
