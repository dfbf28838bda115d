/**
 * JsonRewriter: a non-streamed reply read as it arrives — its top-level `model` renamed to the alias, its
 * `usage` read, everything else passed on byte for byte. Chunk boundaries are arbitrary (TCP), so the tests
 * that matter feed the same bytes split at every position, and one byte at a time, and compare.
 * Wire shapes: vLLM's EmbeddingResponse (id, object, created, model, data, usage) and ChatCompletionResponse
 * (… choices, usage, prompt_logprobs, kv_transfer_params), compact as Starlette's JSONResponse writes them.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientLink, type Exchange } from '../../../src/gateway/exchange.js';
import type { HttpResponse } from '../../../src/gateway/http-response.js';
import { completionEstimate, JsonRelay, JsonRewriter } from '../../../src/gateway/json-relay.js';
import { replyUsage } from '../../../src/gateway/sse.js';
import { estimateTokens } from '../../../src/gateway/sse.js';

const MODEL = 'BAAI/bge-large-en-v1.5';
const ALIAS = 'embed-large';

/** Leaves the model member out. */
const OMIT = Symbol('omit');
const embeddings = (model: string | typeof OMIT = MODEL): string =>
  JSON.stringify({
    id: 'embd-1',
    object: 'list',
    created: 1,
    ...(model === OMIT ? {} : { model }),
    data: [0, 1, 2].map((index) => ({ index, object: 'embedding', embedding: [0.25, -0.125, 1e-7, index] })),
    usage: { prompt_tokens: 33, total_tokens: 33, completion_tokens: 0, prompt_tokens_details: null },
  });

/** Every way of cutting `text` in two, and one byte at a time: each must give `expect` (or what `check` says). */
function everySplit(text: string, check: (rw: JsonRewriter, out: string) => void): void {
  const bytes = Buffer.from(text);
  const cuts: number[][] = [];
  for (let at = 0; at <= bytes.length; at++) cuts.push([at]);
  cuts.push(Array.from({ length: bytes.length }, (_, i) => i + 1));
  for (const points of cuts) {
    const rw = new JsonRewriter(ALIAS);
    const out: Buffer[] = [];
    let from = 0;
    for (const p of [...points, bytes.length]) {
      out.push(rw.push(bytes.subarray(from, p)));
      from = p;
    }
    check(rw, Buffer.concat(out).toString('utf8'));
  }
}

function rewrite(text: string): { rw: JsonRewriter; out: string } {
  const rw = new JsonRewriter(ALIAS);
  return { rw, out: rw.push(Buffer.from(text)).toString('utf8') };
}

describe('JsonRewriter: the model renamed, the rest byte for byte', () => {
  test('an embeddings reply, split anywhere: the alias in model, usage read, the reply whole', () => {
    const text = embeddings();
    const expected = text.replace(`"model":"${MODEL}"`, `"model":"${ALIAS}"`);
    everySplit(text, (rw, out) => {
      assert.equal(out, expected);
      assert.equal(rw.complete, true);
      assert.deepEqual(rw.usage, { promptTokens: 33, completionTokens: 0 });
      assert.equal(rw.malformed, undefined);
      assert.equal(rw.errorBody, false);
    });
  });

  test('a chunk the model is not in is passed on as it is (no copy)', () => {
    const rw = new JsonRewriter(ALIAS);
    rw.push(Buffer.from(`{"id":"x","model":"${MODEL}","data":[`));
    const chunk = Buffer.from('1,2,3,4');
    assert.equal(rw.push(chunk), chunk);
  });

  test('strings holding quotes, backslashes, brackets and "model" are not read as structure, split anywhere', () => {
    const tricky = {
      id: 'a"b\\',
      object: '{"model":"x"}',
      created: 1,
      note: 'ends in a backslash \\\\',
      q: '\\"',
      model: MODEL,
      data: [{ embedding: 'AAAA\\"==', model: 'nested stays' }],
      usage: { prompt_tokens: 4, completion_tokens: 0 },
    };
    const text = JSON.stringify(tricky);
    everySplit(text, (rw, out) => {
      assert.deepEqual(JSON.parse(out), { ...tricky, model: ALIAS });
      assert.equal(rw.complete, true);
      assert.deepEqual(rw.usage, { promptTokens: 4, completionTokens: 0 });
    });
  });

  test('a reply without a model gets the alias as its last member; an empty object gets it alone', () => {
    everySplit(embeddings(OMIT), (_rw, out) => {
      const o = JSON.parse(out) as Record<string, unknown>;
      assert.equal(o['model'], ALIAS);
      assert.equal(out.replace(`,"model":"${ALIAS}"}`, '}'), embeddings(OMIT));
    });
    assert.equal(rewrite('{}').out, `{"model":"${ALIAS}"}`);
    assert.equal(rewrite(' { } \n').out, ` { "model":"${ALIAS}"} \n`);
  });

  test('a model written with spaces, escapes, twice, or not as a string is renamed all the same', () => {
    for (const text of [
      `{ "id" : "x" , "model" : "${MODEL}" , "data" : [ ] }`,
      `{"id":"x","mod\\u0065l":"${MODEL}","data":[]}`,
      `{"model":"first","data":[],"model":"${MODEL}"}`,
      `{"id":"x","model":null,"data":[]}`,
      `{"id":"x","model":{"name":"${MODEL}","v":[1,2]},"data":[]}`,
      `{"id":"x","model":"a \\"quoted\\", {braced} name","data":[]}`,
    ]) {
      everySplit(text, (rw, out) => {
        const o = JSON.parse(out) as Record<string, unknown>;
        assert.equal(o['model'], ALIAS, `${text} → ${out}`);
        assert.deepEqual(o['data'], []);
        assert.equal(rw.complete, true);
      });
    }
  });

  test('an alias that needs escaping is written as JSON', () => {
    const rw = new JsonRewriter('odd "alias" \\ é');
    const out = rw.push(Buffer.from(embeddings())).toString('utf8');
    assert.equal((JSON.parse(out) as { model: string }).model, 'odd "alias" \\ é');
  });
});

describe('JsonRewriter: what is read on the way', () => {
  test("a chat reply's usage, before a large prompt_logprobs, is read", () => {
    const reply = {
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1,
      model: MODEL,
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 7, total_tokens: 10, completion_tokens: 3 },
      prompt_logprobs: Array.from({ length: 2000 }, (_, i) => ({ [String(i)]: { logprob: -1.5, rank: 1, decoded_token: 'x' } })),
      kv_transfer_params: null,
    };
    const { rw, out } = rewrite(JSON.stringify(reply));
    assert.deepEqual(rw.usage, { promptTokens: 7, completionTokens: 3 });
    assert.equal((JSON.parse(out) as { model: string }).model, ALIAS);
  });

  test('a usage past 64 KiB, or not an object, is not taken; the last of two is', () => {
    assert.equal(rewrite(`{"model":"m","usage":{"prompt_tokens":1,"pad":"${'x'.repeat(70_000)}"}}`).rw.usage, undefined);
    assert.equal(rewrite('{"model":"m","usage":[1,2]}').rw.usage, undefined);
    assert.equal(rewrite('{"model":"m","usage":null}').rw.usage, undefined);
    assert.deepEqual(rewrite('{"usage":{"prompt_tokens":1},"model":"m","usage":{"prompt_tokens":2,"completion_tokens":-4}}').rw.usage, {
      promptTokens: 2,
      completionTokens: 0,
    });
    // Nested usage is not the reply's.
    assert.equal(rewrite('{"model":"m","data":[{"usage":{"prompt_tokens":5}}]}').rw.usage, undefined);
  });

  test('an error body sent with a 2xx is told apart: a top-level error, or object "error"', () => {
    assert.equal(rewrite('{"error":{"message":"boom","code":500}}').rw.errorBody, true);
    assert.equal(rewrite('{"object":"error","message":"boom"}').rw.errorBody, true);
    assert.equal(rewrite(embeddings()).rw.errorBody, false);
    assert.equal(rewrite('{"object":"list","data":[{"error":null,"object":"error"}]}').rw.errorBody, false);
  });

  test("a chat reply cut before its usage: the generated text so far is estimated, not the logprobs' tokens", () => {
    const content = 'Bonjour, ça va? '.repeat(20);
    const args = '{"city":"Paris"}';
    const reply = JSON.stringify({
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1,
      model: MODEL,
      choices: [
        {
          index: 0,
          message: {
            role: 'assistant',
            content,
            tool_calls: [{ id: 'call-1', type: 'function', function: { name: 'weather', arguments: args } }],
          },
          logprobs: { content: [{ token: 'Bonjour', logprob: -0.1, bytes: [66], top_logprobs: [{ token: 'Hello', logprob: -2 }] }] },
          finish_reason: 'stop',
        },
      ],
      usage: { prompt_tokens: 7, total_tokens: 10, completion_tokens: 3 },
    });
    const cut = reply.slice(0, reply.indexOf('"finish_reason"'));
    everySplit(cut, (rw) => {
      assert.equal(rw.usage, undefined);
      assert.equal(rw.complete, false);
      // The estimate sse.ts makes of a stream's text: each string's own, summed (JSON escapes aside).
      const quarters = [content, 'weather', args].reduce((q, s) => q + estimateTokens(s) * 4, 0);
      assert.ok(Math.abs(rw.completionEstimate - quarters / 4) <= 3, `${rw.completionEstimate} against ${quarters / 4}`);
    });
    // A completion's text counts too; an embeddings reply has none.
    assert.equal(rewrite('{"choices":[{"text":"abcdefgh"}]}').rw.completionEstimate, 2);
    assert.equal(rewrite(embeddings()).rw.completionEstimate, 0);
  });
});

describe('JsonRewriter: what is not one JSON object', () => {
  for (const [label, text, why] of [
    ['an array', '[{"model":"m"}]', 'not a JSON object'],
    ['an HTML page', '<html>502 Bad Gateway</html>', 'not a JSON object'],
    ['bytes after the object', '{"model":"m"} {"model":"n"}', 'bytes after its object'],
    ['garbage after the object', '{"model":"m"}x', 'bytes after its object'],
    ['a bracket that does not match', '{"model":"m","data":[1,2}', 'a bracket that does not match'],
    ['nesting past 512 levels', `{"data":${'['.repeat(600)}`, 'nested too deep'],
  ] as const) {
    test(`${label}: malformed, and nothing more is passed on`, () => {
      const rw = new JsonRewriter(ALIAS);
      rw.push(Buffer.from(text));
      assert.match(rw.malformed ?? '', new RegExp(why));
      assert.equal(rw.complete, false);
      assert.equal(rw.push(Buffer.from('{"more":1}')).length, 0);
    });
  }

  test('an object not closed yet is not complete', () => {
    const rw = new JsonRewriter(ALIAS);
    rw.push(Buffer.from(embeddings().slice(0, -1)));
    assert.equal(rw.complete, false);
    assert.equal(rw.malformed, undefined);
    rw.push(Buffer.from('}\r\n'));
    assert.equal(rw.complete, true);
  });
});

describe('JsonRewriter: the keys it looks for are its own', () => {
  test('a member named as an Object.prototype member is passed on, not captured; the usage is still read', () => {
    const text =
      '{"constructor":{"prompt_tokens":9},"__proto__":{"prompt_tokens":8},"toString":[1],"model":"m","usage":{"prompt_tokens":3}}';
    everySplit(text, (rw, out) => {
      assert.equal(out, text.replace('"model":"m"', `"model":"${ALIAS}"`));
      assert.deepEqual(rw.usage, { promptTokens: 3, completionTokens: 0 });
    });
  });

  test('a property an Object.prototype was given elsewhere does not make its key one to capture', () => {
    // The capture table was a plain object: `CAPTURE[key]` found what the prototype held, so a polluted
    // prototype (any dependency's bug) turned a member of that name into the reply's usage.
    Object.defineProperty(Object.prototype, 'billing', { value: 64 * 1024, configurable: true, writable: true });
    try {
      const { rw } = rewrite('{"model":"m","billing":{"prompt_tokens":1000000,"completion_tokens":1000000}}');
      assert.equal(rw.usage, undefined);
    } finally {
      delete (Object.prototype as Record<string, unknown>)['billing'];
    }
  });
});

describe('JsonRelay: a reply held until it outgrows the bound', () => {
  /** A response that records what it is sent. */
  const response = (): { res: HttpResponse; heads: number; wrote: Buffer[] } => {
    const rec = { heads: 0, wrote: [] as Buffer[], res: undefined as unknown as HttpResponse };
    rec.res = {
      writeHead: () => (rec.heads++, rec.res),
      write: (b: Buffer) => (rec.wrote.push(Buffer.from(b)), true),
      end: () => undefined,
      destroy: () => undefined,
      ondrain: undefined,
    } as unknown as HttpResponse;
    return rec;
  };
  const relay = (res: HttpResponse, hold: number): JsonRelay =>
    new JsonRelay({ res, client: new ClientLink(), requestId: 'r', extra: undefined, alias: ALIAS, stallMs: 1_000, hold });

  test('a reply in 16-byte chunks is held in few buffers, renamed, byte for byte', () => {
    const text = JSON.stringify({ model: MODEL, data: [{ embedding: 'A'.repeat(200_000) }], usage: { prompt_tokens: 2 } });
    const { res, heads } = response();
    const r = relay(res, 1024 * 1024);
    const headSent: string[] = [];
    r.start({ headSent: () => headSent.push('head') } as unknown as Exchange, []);
    const bytes = Buffer.from(text);
    for (let i = 0; i < bytes.length; i += 16) r.data(bytes.subarray(i, i + 16));
    r.end(undefined);
    assert.equal(heads, 0, 'held: nothing sent');
    assert.deepEqual(headSent, []);
    // One Buffer a chunk was 12 500 of them, ten times the reply's bytes in heap.
    assert.ok(r.held.list().length <= 16, `${r.held.list().length} buffers`);
    assert.equal(r.held.length, Buffer.byteLength(text) - MODEL.length + ALIAS.length);
    assert.equal(r.held.concat().toString(), text.replace(MODEL, ALIAS));
  });

  test('past the bound the head goes with what was held, and the exchange is told (its whole bound ends there)', () => {
    const text = JSON.stringify({ model: MODEL, data: [{ embedding: 'A'.repeat(5_000) }], usage: { prompt_tokens: 2 } });
    const rec = response();
    const r = relay(rec.res, 1_000);
    const headSent: string[] = [];
    r.start({ headSent: () => headSent.push('head') } as unknown as Exchange, []);
    const bytes = Buffer.from(text);
    for (let i = 0; i < bytes.length; i += 100) r.data(bytes.subarray(i, i + 100));
    assert.equal(rec.heads, 1);
    assert.deepEqual(headSent, ['head']);
    assert.equal(r.held.length, 0);
    assert.equal(Buffer.concat(rec.wrote).toString(), text.replace(MODEL, ALIAS));
  });
});

describe('a whole reply read for what tollgate charges', () => {
  test('replyUsage: an object gives its counts; absent, null, an array or a string gives none (estimated then)', () => {
    assert.deepEqual(replyUsage({ prompt_tokens: 4, completion_tokens: 2 }), { promptTokens: 4, completionTokens: 2 });
    assert.deepEqual(replyUsage({ prompt_tokens: -1 }), { promptTokens: 0, completionTokens: 0 });
    for (const v of [undefined, null, [1, 2], 'usage', 7]) assert.equal(replyUsage(v), undefined, JSON.stringify(v));
  });

  test("completionEstimate: a whole reply's generated text, as the relay counts it", () => {
    const reply = Buffer.from(JSON.stringify({ model: 'm', choices: [{ index: 0, text: 'abcdefgh'.repeat(10) }] }));
    assert.equal(completionEstimate(reply), 20);
    assert.equal(completionEstimate(Buffer.from(embeddings())), 0);
  });
});
