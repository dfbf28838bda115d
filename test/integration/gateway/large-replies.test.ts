/**
 * Non-streamed replies larger than the gateway parses whole: embeddings of hundreds of inputs of a
 * 4096-dimension model (the fake vLLM's `embeddingDims`), about 88 KB of JSON floats each. Up to 16 MiB a
 * reply is held and answered whole, with its length and its cost; past that it is relayed as it arrives,
 * renamed and charged for the usage at its end (forward.ts, json-relay.ts). Every test checks what the client
 * got against what the backend sent, byte for byte, and the spend row the request left.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import OpenAI from 'openai';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { startGateway, type GatewayApp } from '../../../src/main/gateway-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { estimateTokens } from '../../../src/gateway/sse.js';
import { InMemorySpendLog, type SpendEntry } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';

const KEY = 'sk-large-replies-test-key-01';
const SECRET = 'large-replies-context-key-0123456789abcdef';
const MODEL = 'intfloat/e5-mistral-7b-instruct';
const INPUT_COST = 0.000001;
const OUTPUT_COST = 0.000002;
/** The fake's prompt tokens per input. */
const TOKENS_PER_INPUT = 11;
/** What the gateway holds before it relays (forward.ts HELD_REPLY). */
const HELD = 16 * 1024 * 1024;
const T = { timeout: 30_000 };
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

/** `n` distinct inputs. */
const inputs = (n: number): string[] => Array.from({ length: n }, (_, i) => `passage ${i}: the quick brown fox`);

/**
 * A gateway over `apiBase` with two aliases: `<alias>` (timeout 20 s, priced) and `<alias>-<short>s` (timeout
 * `short` s, input priced only); deployment ids `<alias>-1` and `<alias>-<short>s-1`.
 */
async function gatewayOver(apiBase: string, alias: string, short: number, spend: InMemorySpendLog): Promise<GatewayApp> {
  const yaml = `
model_list:
  - model_name: ${alias}
    litellm_params: { model: openai/${MODEL}, api_base: "${apiBase}", timeout: 20 }
    model_info: { id: ${alias}-1, input_cost_per_token: ${INPUT_COST}, output_cost_per_token: ${OUTPUT_COST} }
  - model_name: ${alias}-${short}s
    litellm_params: { model: openai/${MODEL}, api_base: "${apiBase}", timeout: ${short} }
    model_info: { id: ${alias}-${short}s-1, input_cost_per_token: ${INPUT_COST} }
router_settings:
  num_retries: 1
general_settings:
  context_signing_key: ${SECRET}
keys:
  - key: sha256:${sha(KEY)}
    user_id: ci
`;
  const prepared = prepareConfigText(yaml, 'large-replies.yaml', {});
  const secret = contextSecret(SECRET, undefined) as Buffer;
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  return startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger: createLogger('silent'), spend });
}

describe('large non-streamed replies', () => {
  let fake: FakeVllm;
  let gw: GatewayApp;
  let base: string;
  let client: OpenAI;
  const spend = new InMemorySpendLog();

  before(async () => {
    fake = await startFakeVllm({ models: [MODEL], name: 'embedder', embeddingDims: 4096, promptTokens: TOKENS_PER_INPUT });
    gw = await gatewayOver(fake.apiBase, 'embed', 3, spend);
    base = `http://127.0.0.1:${gw.port}`;
    client = new OpenAI({ apiKey: KEY, baseURL: `${base}/v1`, maxRetries: 0, timeout: 20_000 });
  });
  after(async () => {
    await gw.close(500);
    await fake.close();
  });

  const reset = (): void => {
    fake.received.length = 0;
    fake.setFault(undefined);
  };

  const embed = (n: number, model = 'embed', format: 'float' | 'base64' = 'float', signal?: AbortSignal): Promise<Response> =>
    fetch(`${base}/v1/embeddings`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, input: inputs(n), encoding_format: format }),
      signal: signal ?? AbortSignal.timeout(20_000),
    });

  /** The backend's last reply as the client should get it: the alias in `model`, nothing else changed. */
  const expected = (alias = 'embed'): string => {
    const sent = fake.received.at(-1)?.reply;
    assert.ok(sent !== undefined, 'the backend answered');
    const renamed = sent.replace(`"model":"${MODEL}"`, `"model":"${alias}"`);
    assert.notEqual(renamed, sent);
    return renamed;
  };

  /** The spend row of the request `before` rows ago ended: it is written as the forwarder finishes, just after the client's last byte. */
  const nextRow = async (before: number): Promise<SpendEntry> => {
    for (let i = 0; i < 200 && spend.rows.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(spend.rows.length, before + 1, 'the request left one spend row');
    return spend.rows.at(-1) as SpendEntry;
  };

  const stillServing = async (): Promise<void> => {
    reset();
    const e = await client.embeddings.create({ model: 'embed', input: ['one', 'two'], encoding_format: 'float' });
    assert.equal(e.model, 'embed');
    assert.equal(e.data[1]?.embedding.length, 4096);
  };

  test('a reply past what is held reaches the client whole, the alias in model, charged for the usage at its end', T, async () => {
    reset();
    const rows = spend.rows.length;
    const res = await embed(250);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    assert.equal(res.headers.get('content-length'), null, 'relayed: its length is not known when its head goes');
    assert.equal(res.headers.get('transfer-encoding'), 'chunked');
    assert.equal(res.headers.get('x-tollgate-response-cost'), null, 'its usage comes after its head');
    assert.ok(res.headers.get('x-tollgate-request-id'));
    const text = await res.text();
    assert.ok(Buffer.byteLength(text) > HELD, `a ${Buffer.byteLength(text)}-byte reply, past what is held`);
    assert.equal(text, expected());
    const row = await nextRow(rows);
    assert.equal(row.status, 200);
    assert.equal(row.model, 'embed');
    assert.equal(row.deployment, 'embed-1');
    assert.equal(row.promptTokens, 250 * TOKENS_PER_INPUT);
    assert.equal(row.completionTokens, 0);
    assert.equal(row.cost, 250 * TOKENS_PER_INPUT * INPUT_COST + 0 * OUTPUT_COST);
    assert.equal(row.estimated, false);
    assert.equal(row.upstream, undefined);
    // The SDK reads it as any other reply.
    const e = await client.embeddings.create({ model: 'embed', input: inputs(250), encoding_format: 'float' });
    assert.equal(e.model, 'embed');
    assert.equal(e.data.length, 250);
    assert.equal(e.data[249]?.embedding.length, 4096);
    assert.equal(e.usage.prompt_tokens, 250 * TOKENS_PER_INPUT);
  });

  test('the relay goes on as the reply arrives: the client reads it before the backend has sent its end', T, async () => {
    reset();
    const rows = spend.rows.length;
    let release!: () => void;
    fake.setFault({ kind: 'hold-reply-tail', release: new Promise<void>((resolve) => (release = resolve)), bytes: 200 });
    const res = await embed(250);
    assert.equal(res.status, 200);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const parts: Uint8Array[] = [];
    let got = 0;
    // The backend holds its last 200 bytes (its usage among them) until released.
    const deadline = Date.now() + 10_000;
    while (got < HELD + 1024 * 1024) {
      const read = await Promise.race([
        reader.read(),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), deadline - Date.now()).unref()),
      ]);
      assert.ok(read !== undefined, `only ${got} bytes reached the client while the backend held its end`);
      assert.ok(!read.done, 'the reply ended before the backend sent its end');
      parts.push(read.value);
      got += read.value.length;
    }
    assert.equal(spend.rows.length, rows, 'not over yet');
    release();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parts.push(value);
    }
    assert.equal(Buffer.concat(parts).toString('utf8'), expected());
    const row = await nextRow(rows);
    assert.equal(row.promptTokens, 250 * TOKENS_PER_INPUT);
    assert.equal(row.estimated, false);
  });

  test('a reply past what is parsed but within what is held is answered whole, with its length and its cost', T, async () => {
    reset();
    const rows = spend.rows.length;
    let release!: () => void;
    fake.setFault({ kind: 'hold-reply-tail', release: new Promise<void>((resolve) => (release = resolve)) });
    let answered = false;
    const pending = embed(60).then((r) => ((answered = true), r));
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(answered, false, 'nothing reaches the client before the whole reply is in');
    release();
    const res = await pending;
    const text = await res.text();
    const size = Buffer.byteLength(text);
    assert.ok(size > 1024 * 1024 && size < HELD, `a ${size}-byte reply`);
    assert.equal(text, expected());
    assert.equal(res.headers.get('content-length'), String(size));
    const cost = 60 * TOKENS_PER_INPUT * INPUT_COST;
    assert.equal(res.headers.get('x-tollgate-response-cost'), String(Number(cost.toPrecision(12))));
    const row = await nextRow(rows);
    assert.equal(row.cost, cost);
    assert.equal(row.estimated, false);
    // The SDK's default asks for base64 (a quarter of the size): 250 inputs are held, not relayed.
    reset();
    const e = await client.embeddings.create({ model: 'embed', input: inputs(250) });
    assert.equal(e.model, 'embed');
    assert.equal(e.data[0]?.embedding.length, 4096);
    assert.ok(Buffer.byteLength(fake.received.at(-1)?.reply ?? '') > 1024 * 1024);
  });

  test(
    'a reply the backend cuts off mid-relay: the client sees its connection close, the request is charged for its prompt',
    T,
    async () => {
      reset();
      const rows = spend.rows.length;
      fake.queueFaults({ kind: 'cut-reply', afterBytes: 20 * 1024 * 1024 });
      const res = await embed(250);
      assert.equal(res.status, 200);
      await assert.rejects(res.text(), 'the body ends before its framing does');
      const row = await nextRow(rows);
      assert.equal(fake.received.length, 1, 'not sent again: the client had its head');
      assert.equal(row.status, 200, 'what the client was sent');
      assert.equal(row.estimated, true, 'its usage never came');
      assert.equal(row.promptTokens, estimateTokens(JSON.stringify(inputs(250))));
      assert.equal(row.completionTokens, 0);
      assert.equal(row.cost, row.promptTokens * INPUT_COST);
      assert.match(row.upstream ?? '', /^embed-1: reply broke off: SOCKET_CLOSED$/);
      await stillServing();
    },
  );

  test('a reply cut off while it is still held is tried again; the client gets the whole reply', T, async () => {
    reset();
    const rows = spend.rows.length;
    fake.queueFaults({ kind: 'cut-reply', afterBytes: 3 * 1024 * 1024 });
    const res = await embed(250);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), expected());
    assert.equal(fake.received.length, 2);
    const row = await nextRow(rows);
    assert.equal(row.promptTokens, 250 * TOKENS_PER_INPUT);
    assert.equal(row.upstream, 'embed-1: SOCKET_CLOSED', 'the attempt cut off while held');
  });

  test('a client that leaves mid-relay: the backend request is aborted, 499, charged for the prompt', T, async () => {
    reset();
    const rows = spend.rows.length;
    fake.setFault({ kind: 'hold-reply-tail', release: new Promise<void>(() => undefined) });
    const ctrl = new AbortController();
    const res = await embed(250, 'embed', 'float', ctrl.signal);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    ctrl.abort();
    const aborted = await fake.waitForAbort(5_000);
    assert.equal(aborted.path, '/v1/embeddings');
    const row = await nextRow(rows);
    assert.equal(row.status, 499);
    assert.equal(row.estimated, true);
    assert.equal(row.promptTokens, estimateTokens(JSON.stringify(inputs(250))));
    await stillServing();
  });

  test(
    'a client that stops reading holds the backend back (the reply does not pile up) and is cut off at the timeout: 499',
    T,
    async () => {
      reset();
      const rows = spend.rows.length;
      const socket = connect(gw.port, '127.0.0.1');
      try {
        await once(socket, 'connect');
        const body = JSON.stringify({ model: 'embed-3s', input: inputs(1000), encoding_format: 'float' });
        socket.write(
          `POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${KEY}\r\ncontent-type: application/json\r\n` +
            `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
        const [first] = (await once(socket, 'data')) as [Buffer];
        assert.match(first.toString('latin1'), /^HTTP\/1\.1 200/);
        // Read nothing more: the gateway's writes back up, and it stops reading the backend.
        socket.pause();
        const row = await (async () => {
          for (let i = 0; i < 800 && spend.rows.length === rows; i++) await new Promise((r) => setTimeout(r, 10));
          return nextRow(rows);
        })();
        assert.equal(row.status, 499, 'the client did not read it in time');
        assert.equal(row.estimated, true, 'the usage at its end never came');
        // What was buffered for the client is readable, then the connection ends, well short of the reply.
        const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
        let read = first.length;
        socket.on('data', (d: Buffer) => (read += d.length));
        socket.on('error', () => undefined);
        socket.resume();
        await closed;
        const whole = Buffer.byteLength(fake.received.at(-1)?.reply ?? '');
        assert.ok(whole > 80_000_000);
        assert.ok(read < whole / 2, `the client could read ${read} of the ${whole} bytes`);
      } finally {
        socket.destroy();
      }
      await stillServing();
    },
  );
});

/**
 * A backend of the test's own making (raw HTTP/1.1 on a socket): each test says how it answers — late, in
 * 16-byte chunks, without usage, or with JSON where a stream was asked for.
 */
describe('large replies: timing, charging and memory', () => {
  type Answer = (socket: Socket, body: string, n: number) => void;
  let answer: Answer = (s) => s.destroy();
  let requests = 0;
  let backend: Server;
  const sockets = new Set<Socket>();
  let gw: GatewayApp;
  let base: string;
  const spend = new InMemorySpendLog();

  /** A whole reply with its length. */
  const reply = (s: Socket, contentType: string, body: Buffer | string): void => {
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    s.write(`HTTP/1.1 200 OK\r\ncontent-type: ${contentType}\r\ncontent-length: ${b.length}\r\n\r\n`);
    s.write(b);
  };

  before(async () => {
    backend = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      let buf = Buffer.alloc(0);
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        for (;;) {
          const h = buf.indexOf('\r\n\r\n');
          if (h < 0) return;
          const len = Number(/content-length: *(\d+)/i.exec(buf.toString('latin1', 0, h))?.[1] ?? 0);
          if (buf.length < h + 4 + len) return;
          const body = buf.toString('utf8', h + 4, h + 4 + len);
          buf = buf.subarray(h + 4 + len);
          answer(s, body, ++requests);
        }
      });
    });
    backend.listen(0, '127.0.0.1');
    await once(backend, 'listening');
    const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}/v1`;
    gw = await gatewayOver(url, 'm', 1, spend);
    base = `http://127.0.0.1:${gw.port}`;
  });
  after(async () => {
    await gw.close(500);
    for (const s of sockets) s.destroy();
    await new Promise((r) => backend.close(r));
  });

  const post = (path: string, body: unknown): Promise<Response> =>
    fetch(`${base}/v1/${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });

  const nextRow = async (before: number): Promise<SpendEntry> => {
    for (let i = 0; i < 300 && spend.rows.length === before; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(spend.rows.length, before + 1, 'the request left one spend row');
    return spend.rows.at(-1) as SpendEntry;
  };

  /** An embeddings reply of `size` bytes (one base64-like string), its usage at its end unless `usage` is given. */
  const embeddingsReply = (size: number, usage: string = '{"prompt_tokens":5,"total_tokens":5,"completion_tokens":0}'): Buffer => {
    const head = `{"id":"e","object":"list","created":1,"model":"${MODEL}","data":[{"index":0,"object":"embedding","embedding":"`;
    const tail = `"}],"usage":${usage}}`;
    const b = Buffer.alloc(size, 0x41);
    b.write(head);
    b.write(tail, size - tail.length);
    return b;
  };

  test(
    "a client reading a relayed reply steadily is not cut off by the attempt's timeout: it bounds the backend, not the download",
    T,
    async () => {
      // Generated in 0.6 s of the deployment's 1 s; 40 MiB read at 20 MB/s takes 2 s more.
      const sent = embeddingsReply(40 * 1024 * 1024);
      answer = (s) => setTimeout(() => reply(s, 'application/json', sent), 600);
      const rows = spend.rows.length;
      const got = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
        const t0 = performance.now();
        const req = httpRequest(`${base}/v1/embeddings`, {
          method: 'POST',
          headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        });
        req.on('response', (res) => {
          const parts: Buffer[] = [];
          let bytes = 0;
          let first = 0;
          res.on('data', (d: Buffer) => {
            first ||= performance.now();
            parts.push(d);
            bytes += d.length;
            const ahead = bytes / 20e3 - (performance.now() - first);
            if (ahead > 1) {
              res.pause();
              setTimeout(() => res.resume(), ahead);
            }
          });
          res.on('end', () => {
            assert.ok(performance.now() - t0 > 2_000, 'read slower than the timeout');
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) });
          });
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(JSON.stringify({ model: 'm-1s', input: ['x'] }));
      });
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(Buffer.from(sent.toString('latin1').replace(`"model":"${MODEL}"`, '"model":"m-1s"'), 'latin1')));
      const row = await nextRow(rows);
      assert.equal(row.status, 200);
      assert.equal(row.estimated, false);
      assert.equal(row.promptTokens, 5);
      assert.equal(row.upstream, undefined);
    },
  );

  test(
    'a JSON 2xx past 1 MiB answering a stream is tried again as any 2xx that is not an event stream, not refused as too large',
    T,
    async () => {
      const json = JSON.stringify({
        id: 'c',
        object: 'chat.completion',
        created: 1,
        model: MODEL,
        choices: [{ index: 0, message: { role: 'assistant', content: 'x'.repeat(2 * 1024 * 1024) }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 3, completion_tokens: 1 },
      });
      const chunk = (o: object): string => `data: ${JSON.stringify(o)}\n\n`;
      const sse =
        chunk({
          id: 'c',
          object: 'chat.completion.chunk',
          created: 1,
          model: MODEL,
          choices: [{ index: 0, delta: { content: 'hi' }, finish_reason: 'stop' }],
        }) +
        chunk({
          id: 'c',
          object: 'chat.completion.chunk',
          created: 1,
          model: MODEL,
          choices: [],
          usage: { prompt_tokens: 3, completion_tokens: 1 },
        }) +
        'data: [DONE]\n\n';
      const first = requests;
      answer = (s, _body, n) => (n === first + 1 ? reply(s, 'application/json', json) : reply(s, 'text/event-stream', sse));
      const rows = spend.rows.length;
      const res = await post('chat/completions', { model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const text = await res.text();
      assert.match(text, /"content":"hi"/);
      assert.match(text, /data: \[DONE\]\n\n$/);
      assert.equal(requests - first, 2, 'asked again');
      const row = await nextRow(rows);
      assert.equal(row.status, 200);
      assert.equal(row.completionTokens, 1);
      assert.equal(row.upstream, 'm-1: a 2xx reply to a stream that is not an event stream');
    },
  );

  test('a reply without usage is charged alike at every size: its prompt and text, estimated, the cost header saying so', T, async () => {
    const prompt = 'hello there';
    for (const [size, how] of [
      [100_000, 'parsed whole'],
      [4_000_000, 'held'],
      [20_000_000, 'relayed'],
    ] as const) {
      const json = JSON.stringify({
        id: 'c',
        object: 'text_completion',
        created: 1,
        model: MODEL,
        choices: [{ index: 0, text: 'y'.repeat(size), finish_reason: 'length' }],
      });
      answer = (s) => reply(s, 'application/json', json);
      const rows = spend.rows.length;
      const res = await post('completions', { model: 'm', prompt, max_tokens: 10 });
      assert.equal(res.status, 200);
      const body = await res.text();
      assert.equal(Buffer.byteLength(body), Buffer.byteLength(json) - MODEL.length + 1, how);
      const row = await nextRow(rows);
      assert.equal(row.estimated, true, `${how}: estimated`);
      assert.equal(row.promptTokens, estimateTokens(JSON.stringify(prompt)), how);
      assert.equal(row.completionTokens, size / 4, `${how}: four ASCII bytes a token, as a stream's text`);
      assert.equal(row.cost, row.promptTokens * INPUT_COST + row.completionTokens * OUTPUT_COST);
      // Answered whole: the header carries what was charged (never "0" for a cost not known); relayed: none.
      assert.equal(res.headers.get('x-tollgate-response-cost'), how === 'relayed' ? null : String(Number(row.cost.toPrecision(12))), how);
    }
  });

  test('a usage that is null, or past the 64 KiB read of it, is charged as none: estimated', T, async () => {
    for (const [size, usage] of [
      [500, 'null'],
      [4_000_000, 'null'],
      [4_000_000, `{"prompt_tokens":5,"completion_tokens":0,"pad":"${'p'.repeat(70_000)}"}`],
    ] as const) {
      answer = (s) => reply(s, 'application/json', embeddingsReply(size, usage));
      const rows = spend.rows.length;
      const res = await post('embeddings', { model: 'm', input: ['one two three'] });
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      const row = await nextRow(rows);
      const label = `${size} bytes, usage ${usage.slice(0, 20)}`;
      assert.equal(row.estimated, true, label);
      assert.equal(row.promptTokens, estimateTokens(JSON.stringify(['one two three'])), label);
      assert.equal(row.completionTokens, 0, label);
      assert.equal(res.headers.get('x-tollgate-response-cost'), String(Number(row.cost.toPrecision(12))), label);
      assert.notEqual(row.cost, 0, label);
    }
  });

  test('a reply in 16-byte chunks is held at about its size: the heap does not grow by a Buffer a chunk', T, async () => {
    // 12 MiB, chunked in 16-byte chunks: 786 432 chunks. Held one Buffer each, they took ~150 MiB of heap.
    const sent = embeddingsReply(12 * 1024 * 1024);
    const framed: Buffer[] = [];
    for (let i = 0; i < sent.length; i += 16) {
      const p = sent.subarray(i, i + 16);
      framed.push(Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n'));
    }
    framed.push(Buffer.from('0\r\n\r\n'));
    const wire = Buffer.concat(framed);
    framed.length = 0;
    answer = (s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
      s.write(wire);
    };
    const rows = spend.rows.length;
    // The heap without the earlier tests' garbage (collected meanwhile, it would hide what this one adds).
    setFlagsFromString('--expose-gc');
    (runInNewContext('gc') as () => void)();
    const heap0 = process.memoryUsage().heapUsed;
    let peak = heap0;
    const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().heapUsed)), 5);
    try {
      const res = await post('embeddings', { model: 'm', input: ['x'] });
      assert.equal(res.status, 200);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(res.headers.get('content-length'), String(body.length), 'held and answered whole');
      assert.ok(body.equals(Buffer.from(sent.toString('latin1').replace(`"model":"${MODEL}"`, '"model":"m"'), 'latin1')));
    } finally {
      clearInterval(sample);
    }
    const grew = (peak - heap0) / 1024 / 1024;
    assert.ok(grew < 64, `the heap grew by ${grew.toFixed(0)} MiB holding a 12 MiB reply`);
    const row = await nextRow(rows);
    assert.equal(row.promptTokens, 5);
  });
});
