/**
 * SseRewriter: a backend's OpenAI/vLLM SSE stream rewritten event by event. Chunk boundaries are arbitrary
 * (TCP), so every test that matters feeds the same bytes split at every position and compares.
 * Wire shapes: vLLM chat_completion/serving.py (role chunk, content deltas, usage chunk with `choices: []`
 * only with include_usage, then `data: [DONE]`; an in-stream failure is `data: {"error": {...}}`).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backendMessage,
  backendParam,
  estimateTokens,
  SseRewriter,
  spliceJson,
  withModel,
  withoutEchoes,
} from '../../../src/gateway/sse.js';

type Obj = Record<string, unknown>;
const enc = new TextEncoder();
const MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
const USAGE = { prompt_tokens: 11, completion_tokens: 3, total_tokens: 14 };

const chat = (delta: Obj, extra: Obj = {}): Obj => ({
  id: 'chatcmpl-1',
  object: 'chat.completion.chunk',
  created: 1,
  model: MODEL,
  choices: [{ index: 0, delta, logprobs: null, finish_reason: null }],
  ...extra,
});
const text = (t: string): Obj => ({
  id: 'cmpl-1',
  object: 'text_completion',
  created: 1,
  model: MODEL,
  choices: [{ index: 0, text: t, logprobs: null, finish_reason: null, stop_reason: null }],
});
const usageChunk: Obj = { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: MODEL, choices: [], usage: USAGE };
/** One SSE event, as vLLM writes it (Python's json.dumps separators do not matter to the parser). */
const ev = (data: Obj | string, sep = '\n\n'): string => `data: ${typeof data === 'string' ? data : JSON.stringify(data)}${sep}`;

/** A complete vLLM chat stream with multi-byte content (2-, 3- and 4-byte UTF-8 characters). */
function chatStream(opts: { usage?: boolean; sep?: string } = {}): string {
  const sep = opts.sep ?? '\n\n';
  return [
    ev(chat({ role: 'assistant', content: '' }), sep),
    ev(chat({ content: 'Héllo' }), sep),
    ev(chat({ content: ' 世界' }), sep),
    ev(chat({ content: ' 😀' }), sep),
    ev(chat({ content: '' }, { choices: [{ index: 0, delta: { content: '' }, finish_reason: 'stop' }] }), sep),
    ...(opts.usage === false ? [] : [ev(usageChunk, sep)]),
    ev('[DONE]', sep),
  ].join('');
}

interface Run {
  out: string;
  rw: SseRewriter;
}

/** Feeds `bytes` cut at `cuts` (byte offsets), then end(cutShort). */
function run(input: string | Uint8Array, cuts: number[] = [], opts: { keepUsage?: boolean; cutShort?: boolean } = {}): Run {
  const bytes = typeof input === 'string' ? enc.encode(input) : input;
  const rw = new SseRewriter({ keepUsage: opts.keepUsage ?? false, model: 'llama' });
  let out = '';
  let at = 0;
  for (const c of [...cuts, bytes.length]) {
    out += rw.push(bytes.subarray(at, c));
    at = c;
  }
  out += rw.end(opts.cutShort ?? false);
  return { out, rw };
}

/** The `data:` payloads of the rewritten stream; every event must be `data: …\n\n`. */
function events(out: string): string[] {
  assert.ok(out === '' || out.endsWith('\n\n'), `output ends mid-event: ${JSON.stringify(out.slice(-40))}`);
  return out
    .split('\n\n')
    .filter((e) => e !== '')
    .map((e) => {
      assert.ok(e.startsWith('data: '), `not a data event: ${e}`);
      return e.slice('data: '.length);
    });
}
const parsed = (out: string): (Obj | '[DONE]')[] => events(out).map((d) => (d === '[DONE]' ? d : (JSON.parse(d) as Obj)));
const count = (out: string, needle: string): number => out.split(needle).length - 1;

function assertErrorEvent(data: Obj | '[DONE]' | undefined, message: RegExp): void {
  assert.ok(data !== undefined && data !== '[DONE]', 'an error event');
  const err = data['error'] as Obj;
  assert.deepEqual(Object.keys(err).sort(), ['code', 'message', 'param', 'type']);
  assert.match(String(err['message']), message);
  assert.equal(err['param'], null);
  assert.equal(typeof err['type'], 'string');
  assert.equal(Object.keys(data).length, 1, 'only the error member');
}

describe('SseRewriter', () => {
  test('a stream split at every byte offset (inside multi-byte characters, inside "\\n\\n") rewrites like the whole', () => {
    const input = chatStream();
    const bytes = enc.encode(input);
    const whole = run(bytes);
    const expected = whole.out;
    assert.match(expected, /Héllo/);
    assert.match(expected, / 世界/);
    assert.match(expected, / 😀/);
    for (let i = 0; i <= bytes.length; i++) {
      const r = run(bytes, [i]);
      assert.equal(r.out, expected, `cut at byte ${i}`);
      assert.deepEqual(r.rw.usage, whole.rw.usage);
      assert.equal(r.rw.contentChunks, whole.rw.contentChunks);
    }
    // Two cuts: every pair around the 4-byte emoji and its event separator.
    const emoji = bytes.indexOf(0xf0);
    assert.ok(emoji > 0);
    for (let i = emoji - 3; i <= emoji + 8; i++) {
      for (let j = i; j <= emoji + 40; j++) assert.equal(run(bytes, [i, j]).out, expected, `cuts at ${i}, ${j}`);
    }
  });

  test('one byte at a time', () => {
    const bytes = enc.encode(chatStream());
    const cuts = Array.from({ length: bytes.length }, (_, i) => i);
    assert.equal(run(bytes, cuts).out, run(bytes).out);
  });

  test('CRLF event separators (and CRLF split across chunks) give the same events as LF', () => {
    const lf = run(chatStream()).out;
    const crlfInput = enc.encode(chatStream({ sep: '\r\n\r\n' }));
    assert.equal(run(crlfInput).out, lf);
    for (let i = 0; i <= crlfInput.length; i++) assert.equal(run(crlfInput, [i]).out, lf, `cut at byte ${i}`);
  });

  test('the usage chunk is removed when the client did not ask for it; usage is learnt either way', () => {
    const hidden = run(chatStream(), [], { keepUsage: false });
    const chunks = parsed(hidden.out);
    assert.ok(
      chunks.every((c) => c === '[DONE]' || (c['choices'] as unknown[]).length > 0),
      'no choices: [] chunk',
    );
    assert.ok(chunks.every((c) => c === '[DONE]' || !('usage' in c)));
    assert.deepEqual(hidden.rw.usage, { promptTokens: 11, completionTokens: 3 });

    const kept = run(chatStream(), [], { keepUsage: true });
    const last = parsed(kept.out).at(-2);
    assert.ok(last !== undefined && last !== '[DONE]');
    assert.deepEqual(last['choices'], []);
    assert.deepEqual(last['usage'], USAGE);
    assert.equal(last['model'], 'llama');
    assert.deepEqual(kept.rw.usage, { promptTokens: 11, completionTokens: 3 });
  });

  test('a "usage" member on content chunks (null, or continuous usage stats) is stripped unless the client asked for usage', () => {
    const input =
      ev(chat({ content: 'a' }, { usage: null })) +
      ev(chat({ content: 'b' }, { usage: { prompt_tokens: 11, completion_tokens: 2, total_tokens: 13 } })) +
      ev('[DONE]');
    const hidden = run(input, [], { keepUsage: false });
    for (const c of parsed(hidden.out)) if (c !== '[DONE]') assert.ok(!('usage' in c), JSON.stringify(c));
    assert.deepEqual(hidden.rw.usage, { promptTokens: 11, completionTokens: 2 });
    const kept = parsed(run(input, [], { keepUsage: true }).out);
    assert.equal((kept[0] as Obj)['usage'], null);
    assert.deepEqual((kept[1] as Obj)['usage'], { prompt_tokens: 11, completion_tokens: 2, total_tokens: 13 });
  });

  test('"model" is rewritten to the alias in every chunk; the rest of the chunk is unchanged', () => {
    const { out } = run(chatStream(), [], { keepUsage: true });
    const chunks = parsed(out);
    const original = events(chatStream()).map((d) => (d === '[DONE]' ? d : (JSON.parse(d) as Obj)));
    assert.equal(chunks.length, original.length);
    chunks.forEach((c, i) => {
      const o = original[i];
      if (c === '[DONE]' || o === '[DONE]' || o === undefined) return assert.equal(c, o);
      assert.equal(c['model'], 'llama');
      assert.deepEqual({ ...c, model: MODEL }, o);
    });
  });

  test('events after the first are renamed from what the first taught; one that repeats "model" or escapes a key later is not', () => {
    const first = JSON.stringify(chat({ content: 'a' }));
    // The same id, created and model (as every chunk of a stream), then a second "model" member, then an escaped one.
    const dup = `${first.slice(0, -1)},"model":"other"}`;
    const escaped = `${first.slice(0, -1)},"\\u006dodel":"other"}`;
    const nested = JSON.stringify(chat({ content: 'b', model: 'inner' }));
    const { out } = run(`data: ${first}\n\ndata: ${dup}\n\ndata: ${escaped}\n\ndata: ${nested}\n\n`, [], { keepUsage: true });
    const [a, b, c, d] = parsed(out) as Obj[];
    assert.equal(a?.['model'], 'llama');
    // JSON.parse keeps the last of a repeated key: the client must get the alias there too, never the backend's.
    assert.equal(b?.['model'], 'llama');
    assert.ok(!events(out)[1]?.includes('"other"'), 'the repeated member is gone (serialized again)');
    assert.equal(c?.['model'], 'llama');
    assert.equal(d?.['model'], 'llama');
    assert.deepEqual(
      (d?.['choices'] as Obj[])[0]?.['delta'],
      { content: 'b', model: 'inner' },
      'a nested "model" is not the top-level one',
    );
  });

  test("vLLM's in-stream error (nested) becomes an OpenAI error event carrying its message", () => {
    const input =
      ev(chat({ content: 'a' })) +
      'data: {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "param": null, "code": 500}}\n\n' +
      ev('[DONE]');
    const { out, rw } = run(input);
    const chunks = parsed(out);
    assert.equal(chunks.length, 3);
    assertErrorEvent(chunks[1], /CUDA out of memory/);
    assert.equal(chunks[2], '[DONE]');
    assert.equal(rw.sawError, true);
    assert.equal(count(out, 'data: [DONE]'), 1);
  });

  test('the older flat {"object": "error"} body is rendered the same way', () => {
    const flat = { object: 'error', message: 'prompt too long', type: 'BadRequestError', param: null, code: 400 };
    const { out } = run(ev(chat({ content: 'a' })) + ev(flat));
    const chunks = parsed(out);
    assertErrorEvent(chunks[1], /prompt too long/);
    assert.equal(chunks.at(-1), '[DONE]', '[DONE] added after the error when the backend ended without it');
    assert.equal(count(out, 'data: [DONE]'), 1);
  });

  test('an error event without a message still reads as an error', () => {
    const chunks = parsed(run(ev({ error: {} })).out);
    assertErrorEvent(chunks[0], /./);
  });

  test('a data line that is not JSON becomes an error event', () => {
    const { out, rw } = run(ev(chat({ content: 'a' })) + 'data: {"id": "chatcmpl-broken", "choices": [{\n\n' + ev('[DONE]'));
    const chunks = parsed(out);
    assertErrorEvent(chunks[1], /./);
    assert.equal(rw.sawError, true);
    assert.equal(count(out, 'data: [DONE]'), 1);
  });

  test('event:, id: and retry: lines produce nothing; a comment (keep-alive) is passed on as tollgate\'s own ": ping"', () => {
    const { out } = run(
      ': ping - 2026-12-07 19:30:00.123456+00:00\n\nevent: ping\n\nid: 7\nretry: 1000\n\n' + ev(chat({ content: 'a' })) + ev('[DONE]'),
    );
    assert.ok(out.startsWith(': ping\n\n'), out);
    assert.doesNotMatch(out, /2026/, "the backend's comment text is not passed");
    assert.doesNotMatch(out, /event:|id:|retry:/);
    const chunks = parsed(out.slice(': ping\n\n'.length));
    assert.equal(chunks.length, 2);
  });

  test('end(cutShort=true) appends an error event and data: [DONE]', () => {
    const { out, rw } = run(ev(chat({ role: 'assistant', content: '' })) + ev(chat({ content: 'a' })), [], { cutShort: true });
    const chunks = parsed(out);
    assert.equal(chunks.length, 4);
    assertErrorEvent(chunks[2], /./);
    assert.equal(chunks[3], '[DONE]');
    assert.equal(rw.sawError, true);
  });

  test('end(cutShort=true) in the middle of an event: one error event, one [DONE]', () => {
    const { out } = run(ev(chat({ content: 'a' })) + 'data: {"id": "chatcmpl-1", "cho', [], { cutShort: true });
    assert.equal(count(out, '"error"'), 1);
    assert.equal(count(out, 'data: [DONE]'), 1);
    assert.ok(out.endsWith('data: [DONE]\n\n'));
  });

  test('[DONE] is never duplicated: after the backend sent it, end() adds nothing, cut short or not', () => {
    const input = chatStream();
    for (const cutShort of [false, true]) {
      const { out } = run(input, [], { cutShort });
      assert.equal(count(out, 'data: [DONE]'), 1);
      assert.ok(out.endsWith('data: [DONE]\n\n'));
      assert.equal(count(out, '"error"'), 0);
    }
    // An error followed by the backend's [DONE], then the connection drops.
    const err = run(ev({ error: { message: 'boom' } }) + ev('[DONE]'), [], { cutShort: true }).out;
    assert.equal(count(err, 'data: [DONE]'), 1);
    assert.equal(count(err, '"error"'), 1);
    // The last event without its blank line (the backend ended right after "data: [DONE]\n").
    const tail = run(ev(chat({ content: 'a' })) + 'data: [DONE]\n').out;
    assert.equal(count(tail, 'data: [DONE]'), 1);
  });

  test('a stream that ends cleanly without [DONE] after its finish_reason gets one, and no error', () => {
    const finished = chat({});
    finished['choices'] = [{ index: 0, delta: {}, logprobs: null, finish_reason: 'stop' }];
    const { out } = run(ev(chat({ content: 'a' })) + ev(finished));
    assert.equal(count(out, 'data: [DONE]'), 1);
    assert.equal(count(out, '"error"'), 0);
  });

  test('a stream that ends cleanly without [DONE] before any choice finished is marked cut: an error event, then [DONE]', () => {
    const { out, rw } = run(ev(chat({ role: 'assistant', content: '' })) + ev(chat({ content: 'a' })));
    const chunks = parsed(out);
    assertErrorEvent(chunks[2], /closed the stream before it finished/);
    assert.equal(chunks[3], '[DONE]');
    assert.equal(rw.sawError, true);
  });

  test('contentChunks counts non-empty chat deltas and completions text, not the role chunk or the usage chunk', () => {
    assert.equal(run(chatStream()).rw.contentChunks, 3);
    const completions = ev(text('Hello')) + ev(text(' world')) + ev(text('')) + ev(usageChunk) + ev('[DONE]');
    const r = run(completions);
    assert.equal(r.rw.contentChunks, 2);
    const chunks = parsed(r.out);
    assert.equal(chunks.length, 4, 'three text chunks and [DONE]; the usage chunk is dropped');
    assert.equal((chunks[0] as Obj)['model'], 'llama');
  });

  test('a choice whose delta is null (or not an object) counts no content and does not break the stream', () => {
    const input = ev(chat({ content: 'a' })) + ev({ ...chat({}), choices: [{ index: 0, delta: null }, 7, null] }) + ev('[DONE]');
    const { out, rw } = run(input);
    const chunks = parsed(out);
    assert.equal(chunks.length, 3);
    assert.deepEqual((chunks[1] as Obj)['choices'], [{ index: 0, delta: null }, 7, null]);
    assert.equal(rw.contentChunks, 1);
    assert.equal(rw.sawError, false);
  });

  test('a stream cut short counts what was streamed and has no usage', () => {
    const { rw } = run(ev(chat({ role: 'assistant', content: '' })) + ev(chat({ content: 'a' })) + ev(chat({ content: 'b' })), [], {
      cutShort: true,
    });
    assert.equal(rw.contentChunks, 2);
    assert.equal(rw.completionEstimate, 2, 'a token a chunk');
    assert.equal(rw.usage, undefined);
  });

  test('a stream cut short is estimated from its reasoning and its tool calls too, not from its content alone', () => {
    const reasoning = ev(chat({ reasoning_content: 'Let me think' })) + ev(chat({ reasoning: ' about it' }));
    const tool = ev(
      chat({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }] }),
    );
    const more = ev(chat({ tool_calls: [{ index: 0, function: { arguments: ' "Paris"}' } }] }));
    const { rw } = run(reasoning + tool + more, [], { cutShort: true });
    assert.equal(rw.contentChunks, 4);
    assert.equal(
      rw.completionEstimate,
      Math.ceil(('Let me think'.length + ' about it'.length + 'get_weather{"city":'.length + ' "Paris"}'.length) / 4),
    );
  });

  test('a stream cut short whose chunks carry several tokens each is estimated from its text', () => {
    const { rw } = run(ev(chat({ content: 'The quick brown fox jumps over' })) + ev(chat({ content: ' 敏捷的棕色狐狸' })), [], {
      cutShort: true,
    });
    assert.equal(rw.contentChunks, 2);
    assert.equal(rw.completionEstimate, Math.ceil((30 + 1 + 7 * 4) / 4));
  });
});

describe('withModel: the top-level model renamed in the text', () => {
  const rename = (json: string, alias = 'llama'): string | undefined => withModel(json, JSON.parse(json) as Obj, alias);

  test("only the model changes; every other byte is the backend's (spacing, number forms, escapes)", () => {
    const json = '{"id":"c1","model":"meta/llama-8b","n":1.50,"e":1e2,"s":"caf\\u00e9 \\"model\\":\\"x\\"","choices":[ {"index":0} ]}';
    assert.equal(rename(json), json.replace('"model":"meta/llama-8b"', '"model":"llama"'));
  });

  test('an alias that needs escaping is written as JSON', () => {
    const out = rename('{"model":"m","x":1}', 'a"b\\c');
    assert.deepEqual(JSON.parse(out ?? 'null'), { model: 'a"b\\c', x: 1 });
  });

  test('the same model: the text unchanged', () => {
    const json = '{"model":"llama","x":1}';
    assert.equal(rename(json), json);
  });

  test('left to a full re-serialization when the text cannot be edited safely', () => {
    const cases: Record<string, string> = {
      'a nested "model" before the top-level one': '{"meta":{"model":"m"},"model":"m"}',
      'a nested "model" only': '{"meta":{"model":"m"}}',
      'duplicate top-level keys (JSON.parse keeps the last)': '{"model":"a","model":"m"}',
      'duplicate top-level keys with the same value': '{"model":"m","model":"m"}',
      'a duplicate key spelt with escapes': '{"model":"m","mod\\u0065l":"m"}',
      'a nested "model" after the top-level one': '{"model":"m","meta":{"model":"m"}}',
      'a space after the colon': '{"model": "m"}',
      'an escaped model string': '{"model":"m\\/x"}',
      'a model that is not a string': '{"model":7}',
      'no model': '{"x":1}',
      'a "model" key inside an array of objects first': '{"list":[{"model":"m"}],"model":"m"}',
    };
    for (const [why, json] of Object.entries(cases)) assert.equal(rename(json), undefined, why);
  });

  test('braces and brackets inside strings before the model do not hide it', () => {
    const json = '{"a":"{[","b":"]}}","model":"m"}';
    assert.deepEqual(JSON.parse(rename(json) ?? 'null'), { a: '{[', b: ']}}', model: 'llama' });
  });

  test('a "model" that appears first inside a string value is not taken for the key', () => {
    // Inside a JSON string the quotes are escaped, so the text holds \"model\" and the first bare "model" is the key.
    const json = '{"note":"say \\"model\\": \\"m\\"","model":"m"}';
    assert.deepEqual(JSON.parse(rename(json) ?? 'null'), { note: 'say "model": "m"', model: 'llama' });
  });
});

describe("spliceJson: the request a deployment gets, edited in the client's text", () => {
  const splice = (json: string, add: Obj = {}, model = 'meta/llama-8b'): string | undefined =>
    spliceJson(json, JSON.parse(json) as Obj, model, add);

  test("the model renamed and the additions appended; the rest is the client's bytes", () => {
    const json = '{"model":"llama","messages":[{"role":"user","content":"caf\\u00e9 }"}],"temperature":0.50}\n';
    const out = splice(json, { max_tokens: 256, stream_options: { include_usage: true } });
    assert.equal(
      out,
      '{"model":"meta/llama-8b","messages":[{"role":"user","content":"caf\\u00e9 }"}],"temperature":0.50,"max_tokens":256,"stream_options":{"include_usage":true}}',
    );
    assert.deepEqual(JSON.parse(out ?? 'null'), {
      model: 'meta/llama-8b',
      messages: [{ role: 'user', content: 'café }' }],
      temperature: 0.5,
      max_tokens: 256,
      stream_options: { include_usage: true },
    });
  });

  test('members are counted as written: nested objects, arrays and strings with commas and braces do not confuse it', () => {
    const json = '{"model":"llama","messages":[{"role":"user","content":"a, b } { [ \\" ,"}],"tools":[],"x":{},"y":[1,[2,3]]}';
    assert.deepEqual(JSON.parse(splice(json, { max_tokens: 1 }) ?? 'null'), {
      ...(JSON.parse(json) as Obj),
      model: 'meta/llama-8b',
      max_tokens: 1,
    });
  });

  test('nothing to add: only the model renamed', () => {
    assert.equal(splice('{"model":"llama","max_tokens":5}'), '{"model":"meta/llama-8b","max_tokens":5}');
  });

  test('members there already are set in place, members removed; whatever the spacing or escapes', () => {
    const cases: [string, Obj, string[], string][] = [
      ['{"model":"llama","max_tokens":null}', { max_tokens: 9 }, [], '{"model":"meta/llama-8b","max_tokens":9}'],
      [
        '{"model":"llama","stream_options":{"include_usage":false},"n":2}',
        { stream_options: { include_usage: true } },
        [],
        '{"model":"meta/llama-8b","stream_options":{"include_usage":true},"n":2}',
      ],
      ['{"model":"llama","max\\u005ftokens":null}', { max_tokens: 9 }, [], '{"model":"meta/llama-8b","max\\u005ftokens":9}'],
      // A Python client's spacing: kept where the members are kept.
      ['{ "model": "llama", "n": 1 }', { max_tokens: 9 }, [], '{"model": "meta/llama-8b","n": 1,"max_tokens":9}'],
      ['{"meta":{"model":"x"},"model":"llama"}', {}, [], '{"meta":{"model":"x"},"model":"meta/llama-8b"}'],
      [
        '{"model":"llama","guided_json":{"type":"object"},"max_completion_tokens":null}',
        { structured_outputs: { json: { type: 'object' } }, max_tokens: 9 },
        ['guided_json', 'max_completion_tokens'],
        '{"model":"meta/llama-8b","structured_outputs":{"json":{"type":"object"}},"max_tokens":9}',
      ],
    ];
    for (const [json, set, remove, want] of cases) {
      const out = spliceJson(json, JSON.parse(json) as Obj, 'meta/llama-8b', set, remove);
      assert.equal(out, want, json);
      assert.doesNotThrow(() => JSON.parse(out ?? ''), json);
    }
  });

  test('a number past 2^53 (a 64-bit seed) reaches the backend as the client wrote it, whatever else is edited', () => {
    const json =
      '{"model":"llama","seed":9223372036854775807,"stream":true,"stream_options":{"include_usage":false},"guided_choice":["a"]}';
    const out = spliceJson(json, JSON.parse(json) as Obj, 'meta/llama-8b', { stream_options: { include_usage: true } }, ['guided_choice']);
    assert.equal(out, '{"model":"meta/llama-8b","seed":9223372036854775807,"stream":true,"stream_options":{"include_usage":true}}');
  });

  test('a repeated member is left to a full re-serialization of what was decided on (the authorizer saw the last)', () => {
    const cases: Record<string, string> = {
      'a repeated member': '{"model":"llama","n":128,"n":1}',
      'a repeated member spelt with escapes': '{"model":"llama","n":128,"\\u006e":1}',
      'a repeated stream_options': '{"model":"llama","stream_options":{"include_usage":false},"stream_options":{}}',
      'a repeated model': '{"model":"a","model":"llama"}',
    };
    for (const [why, json] of Object.entries(cases)) assert.equal(splice(json, {}), undefined, why);
  });
});

describe('SseRewriter passes chunks as the backend wrote them', () => {
  test('a content chunk keeps its bytes but for the model; one that must lose "usage" is re-serialized', () => {
    const chunk = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"${MODEL}","choices":[{"index":0,"delta":{"content":"caf\\u00e9"},"logprobs":null,"finish_reason":null}]}`;
    const { out } = run(ev(chunk) + ev('[DONE]'));
    assert.equal(out, ev(chunk.replace(`"model":"${MODEL}"`, '"model":"llama"')) + ev('[DONE]'));
    const withUsage = chunk.replace('}]}', '}],"usage":null}');
    const hidden = events(run(ev(withUsage)).out);
    assert.equal(hidden[0], JSON.stringify({ ...(JSON.parse(withUsage) as Obj), model: 'llama', usage: undefined }));
  });
});

describe("backendMessage: the backend's message, without the request values it quotes", () => {
  test("pydantic's input_value (vLLM's request validation) is not echoed; what is wrong and where stays", () => {
    const pydantic =
      '1 validation error for ChatCompletionRequest\nmessages.0.content\n  Input should be a valid string ' +
      "[type=string_type, input_value={'secret prompt': 'about the merger'}, input_type=dict]";
    const out = withoutEchoes(pydantic);
    assert.doesNotMatch(out, /secret prompt|merger/);
    assert.match(out, /messages\.0\.content/);
    assert.match(out, /input_value=…, input_type=dict\]/);
    // Two errors: both values gone.
    const two = withoutEchoes(
      `${pydantic}\nmessages.1.role\n  Input should be 'user' [type=literal_error, input_value='the plan', input_type=str]`,
    );
    assert.doesNotMatch(two, /merger|the plan/);
  });

  test("FastAPI's own {detail} bodies: the message and where, never the input", () => {
    assert.equal(backendMessage({ detail: 'Unsupported Media Type' }), 'Unsupported Media Type');
    const out = backendMessage({
      detail: [
        { type: 'missing', loc: ['body', 'messages'], msg: 'Field required', input: { secret: 'the merger' } },
        { type: 'int_parsing', loc: ['body', 'n'], msg: 'Input should be a valid integer', input: 'the plan' },
      ],
    });
    assert.equal(out, 'body.messages: Field required; body.n: Input should be a valid integer');
    assert.equal(backendMessage({ detail: [{ input: 'x' }] }), undefined);
  });

  test("vLLM's VLLMValidationError (parameter=…, value=…) keeps the parameter, not the value", () => {
    const out = backendMessage({ error: { message: 'Invalid prompt (parameter=prompt, value=tell me the launch codes)', code: 400 } });
    assert.equal(out, 'Invalid prompt (parameter=prompt, value=…)');
  });

  test('a value holding brackets is cut whole; text that only looks like a value stays; a long message is cut first', () => {
    assert.equal(
      withoutEchoes('Invalid prompt (parameter=prompt, value=tell me (the secret) codes)'),
      'Invalid prompt (parameter=prompt, value=…)',
    );
    assert.equal(withoutEchoes('Invalid prompt (value=a (b) c)'), 'Invalid prompt (value=…)');
    const hint = 'Invalid value=abc for field, see the docs';
    assert.equal(withoutEchoes(hint), hint);
    // input_value without its input_type (cut short): redacted to the end.
    assert.equal(withoutEchoes('x [type=string_type, input_value={"secret": 1'), 'x [type=string_type, input_value=…');
    // backendMessage cuts a message to 1,000 characters before it looks for values (one pass over them).
    const hostile = 'input_value= (value='.repeat(40_000);
    assert.ok((backendMessage({ message: hostile }) ?? '').length <= 1_000);
  });

  test("URLs in a message (the client's own, or internal addresses) are cut, the sentence around them kept", () => {
    assert.equal(
      backendMessage({ error: { message: 'Failed to fetch https://img.example/a.png?sig=x, or http://10.0.0.7:8000/v1.', code: 400 } }),
      'Failed to fetch …, or ….',
    );
    assert.equal(backendMessage({ message: 'Could not reach redis://cache.internal:6379 (timeout)' }), 'Could not reach … (timeout)');
    // In a stream's error event too.
    const sse = new SseRewriter({ keepUsage: false, model: 'm' });
    const out = sse.push(Buffer.from('data: {"error": {"message": "image http://cam.internal/x.jpg unreadable", "code": 400}}\n\n'));
    assert.match(out, /"message":"image … unreadable"/);
    // And what the deployment's own scrub removes (its short host name, its api_key).
    const own = new SseRewriter({ keepUsage: false, model: 'm', scrub: (m) => m.split('vllm0').join('…') });
    assert.match(own.push(Buffer.from('data: {"error": {"message": "vllm0 is draining", "code": 500}}\n\n')), /"message":"… is draining"/);
  });

  test('network addresses outside URLs (a replica, a neighbour, a cluster name) are cut; versions, times and field paths stay', () => {
    const cut: [string, string][] = [
      ['Failed to connect to replica at 10.0.3.7:8000 after 3 tries', 'Failed to connect to replica at … after 3 tries'],
      ['upstream [fd00::7]:8000 refused; also fe80::1%eth0 and ::1', 'upstream … refused; also … and …'],
      ['2001:db8:0:0:0:0:0:1 down, 10.0.0.255 too', '… down, … too'],
      ['replica llama-b.models.svc.cluster.local:8000 died', 'replica … died'],
      ['cannot reach localhost:8000, or ray-head.internal', 'cannot reach …, or …'],
      ['proxy api.example.com:443 timed out', 'proxy … timed out'],
      ['cannot reach vllm-llama.models.svc', 'cannot reach …'],
      ['Cannot connect to host vllm-b:8000 ssl:default', 'Cannot connect to host … ssl:default'],
      ['peer addr:10.0.3.7, LOCALHOST:8000', 'peer addr:…, …'],
      ['mapped ::ffff:10.0.3.7 and [::ffff:10.0.3.7]:80', 'mapped … and …'],
    ];
    for (const [message, want] of cut) assert.equal(backendMessage({ error: { message, code: 400 } }), want);
    for (const kept of [
      'vLLM 0.10.2 needs temperature in 0.0..2.0, at 12:30:45',
      'got 1.2.3.4.5 and 256.1.1.1',
      'model qwen2.5:72b not found; messages.0.content: field required',
      'A::B type error in std::vector',
      'The model `base-model:12345` does not exist.',
      "stop sequence 'END-OF-TEXT:100' is too long",
    ])
      assert.equal(backendMessage({ message: kept }), kept);
  });

  test("backendParam: a field's name from vLLM's nested or flat error, nothing else", () => {
    assert.equal(backendParam({ error: { message: 'm', param: 'max_tokens' } }), 'max_tokens');
    assert.equal(backendParam({ object: 'error', message: 'm', param: 'messages.0.content' }), 'messages.0.content');
    assert.equal(backendParam({ error: { message: 'm', param: 'tools[0].function' } }), 'tools[0].function');
    for (const param of [null, 3, '', 'tell me the launch codes', 'x'.repeat(65), '{"a":1}', 'a=b'])
      assert.equal(backendParam({ error: { message: 'm', param } }), undefined, String(param));
    assert.equal(backendParam({ detail: 'Not Found' }), undefined);
  });

  test('a message without quoted values is passed as it is', () => {
    const msg = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.";
    assert.equal(backendMessage({ object: 'error', message: msg }), msg);
  });
});

test('estimateTokens: four ASCII characters a token, two Cyrillic, one CJK character', () => {
  assert.equal(estimateTokens(''), 0);
  assert.equal(estimateTokens('abcd'), 1);
  assert.equal(estimateTokens('Hello, world'), 3);
  assert.equal(estimateTokens('привет'), 3);
  assert.equal(estimateTokens('你好世界'), 4, 'each Han character a token, not a quarter of one');
  assert.equal(estimateTokens('日本語 text'), 3 + 2);
});

describe('SseRewriter: long events', () => {
  /** `input` in pieces of `size` bytes, and one cut at `at` besides; the rewriter's output and state. */
  const inPieces = (input: string, size: number, at: number): Run => {
    const bytes = enc.encode(input);
    const rw = new SseRewriter({ keepUsage: false, model: 'llama' });
    let out = '';
    let from = 0;
    while (from < bytes.length) {
      const next = from < at && from + size > at ? at : Math.min(from + size, bytes.length);
      out += rw.push(bytes.subarray(from, next));
      from = next;
    }
    out += rw.end(false);
    return { out, rw };
  };

  test("an echo's 3 MB first chunk passes whole, its end split across two pieces", () => {
    const prompt = 'x'.repeat(3 * 1024 * 1024);
    const input =
      ev(text(prompt)) + ev({ ...text(''), choices: [{ index: 0, text: '', logprobs: null, finish_reason: 'stop' }] }) + ev('[DONE]');
    // A cut between the two line feeds that end the first event.
    const { out, rw } = inPieces(input, 64 * 1024, input.indexOf('\n\n') + 1);
    const chunks = parsed(out);
    assert.equal(((chunks[0] as Obj)['choices'] as { text: string }[])[0]?.text, prompt);
    assert.equal((chunks[0] as Obj)['model'], 'llama');
    assert.equal(chunks.length, 3);
    assert.equal(chunks.at(-1), '[DONE]');
    assert.equal(rw.sawError, false);
  });

  test("a long event's end split into pieces of a character, or of none, is still its end", () => {
    const big = ev(text(`${'y'.repeat(100_000)}€`), '\r\n\r\n');
    const end = enc.encode(big).length;
    // The last event has no blank line after it: the stream stops there.
    const bytes = enc.encode(`${big}data: [DONE]`);
    const rw = new SseRewriter({ keepUsage: false, model: 'llama' });
    let out = rw.push(bytes.subarray(0, end - 6));
    // The closing bytes one at a time, an empty piece between each (a piece of a split character decodes to none).
    for (let at = end - 6; at < bytes.length; at++) out += rw.push(bytes.subarray(at, at + 1)) + rw.push(new Uint8Array(0));
    out += rw.end(false);
    assert.equal(rw.sawError, false, out.slice(-300));
    const chunks = parsed(out);
    assert.equal(chunks.length, 2);
    assert.ok((((chunks[0] as Obj)['choices'] as { text: string }[])[0]?.text ?? '').endsWith('€'));
    assert.equal(chunks[1], '[DONE]');
  });

  test('an event past 64 MiB is a malformed stream, not unbounded memory', () => {
    const rw = new SseRewriter({ keepUsage: false, model: 'llama' });
    const piece = enc.encode('x'.repeat(1024 * 1024));
    let out = rw.push(enc.encode('data: {"x":"'));
    for (let i = 0; i < 65 && !rw.sawError; i++) out += rw.push(piece);
    assert.equal(rw.sawError, true);
    assertErrorEvent(parsed(out)[0], /malformed stream/);
  });
});
