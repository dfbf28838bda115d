/** parseModelBody: string and byte bodies → the model, max tokens and stream flag, or invalid_body / missing_model. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelBody, type BodyResult } from '../../../src/core/body.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
type Expected = Exclude<BodyResult, { ok: true }> | Omit<Extract<BodyResult, { ok: true }>, 'json'>;
const ok = (model: string, maxTokens: number | undefined = undefined, stream = false, choices = 1): Expected => ({
  ok: true,
  model,
  maxTokens,
  choices,
  stream,
});
const BAD_MAX: Expected = { ok: false, code: 'invalid_body', message: 'max_tokens must be a positive integer.' };
const BAD_MCT: Expected = {
  ok: false,
  code: 'invalid_body',
  message: 'max_completion_tokens must be a positive integer.',
};
const BAD_N: Expected = { ok: false, code: 'invalid_body', message: 'n must be an integer from 1 to 128.' };
const BAD_STREAM: Expected = { ok: false, code: 'invalid_body', message: 'stream must be true or false.' };
const INVALID: Expected = { ok: false, code: 'invalid_body' };
const BAD_MODEL: Expected = {
  ok: false,
  code: 'invalid_body',
  message: 'model must be a string of at most 256 characters: the name of a model (GET /v1/models lists them).',
};
const MISSING: Expected = { ok: false, code: 'missing_model' };

const cases: Array<[name: string, body: string | Uint8Array, expected: Expected]> = [
  ['string body', '{"model":"llama","messages":[]}', ok('llama')],
  ['byte body', enc('{"model":"llama"}'), ok('llama')],
  ['UTF-8 multi-byte model in bytes', enc('{"model":"modèle-日本"}'), ok('modèle-日本')],
  ['whitespace around the JSON', '  \n{"model":"llama"}\n ', ok('llama')],
  ['invalid UTF-8 bytes', new Uint8Array([0x7b, 0x22, 0x6d, 0x22, 0x3a, 0xff, 0xfe, 0x7d]), INVALID],
  ['a lone continuation byte inside a string', new Uint8Array([...enc('{"model":"a'), 0x80, ...enc('"}')]), INVALID],
  ['truncated multi-byte sequence', new Uint8Array([...enc('{"model":"a'), 0xe6, 0x97]), INVALID],
  ['empty string', '', INVALID],
  ['empty bytes', new Uint8Array(0), INVALID],
  ['not JSON', 'model=llama', INVALID],
  ['truncated JSON (cut by a size limit)', '{"model":"llama","messages":[{"role":', INVALID],
  ['JSON array', '[{"model":"llama"}]', INVALID],
  ['JSON null', 'null', INVALID],
  ['JSON number', '42', INVALID],
  ['JSON string', '"llama"', INVALID],
  ['model a number', '{"model":42}', BAD_MODEL],
  ['model an object', '{"model":{"name":"llama"}}', BAD_MODEL],
  ['model true', '{"model":true}', BAD_MODEL],
  ['model longer than 256 characters', JSON.stringify({ model: 'm'.repeat(257) }), BAD_MODEL],
  ['model of exactly 256 characters', JSON.stringify({ model: 'm'.repeat(256) }), ok('m'.repeat(256))],
  ['no model', '{"messages":[]}', MISSING],
  ['empty object', '{}', MISSING],
  ['model ""', '{"model":""}', MISSING],
  ['model null', '{"model":null}', MISSING],
  ['max_tokens', '{"model":"llama","max_tokens":128}', ok('llama', 128)],
  ['max_completion_tokens', '{"model":"llama","max_completion_tokens":64}', ok('llama', 64)],
  ['max_completion_tokens wins over max_tokens', '{"model":"llama","max_tokens":128,"max_completion_tokens":64}', ok('llama', 64)],
  [
    'max_completion_tokens null falls back to max_tokens',
    '{"model":"llama","max_tokens":128,"max_completion_tokens":null}',
    ok('llama', 128),
  ],
  // Token reservations rely on max_tokens, and vLLM would coerce "32000": anything but a positive integer is refused.
  ['max_tokens 0 refused', '{"model":"llama","max_tokens":0}', BAD_MAX],
  ['max_tokens negative refused', '{"model":"llama","max_tokens":-5}', BAD_MAX],
  ['max_tokens fractional refused', '{"model":"llama","max_tokens":1.5}', BAD_MAX],
  ['max_tokens a string refused', '{"model":"llama","max_tokens":"100"}', BAD_MAX],
  ['max_completion_tokens a string refused', '{"model":"llama","max_completion_tokens":"100"}', BAD_MCT],
  ['n counts the completions a reservation covers', '{"model":"llama","n":3,"max_tokens":10}', ok('llama', 10, false, 3)],
  ['n 0 refused', '{"model":"llama","n":0}', BAD_N],
  ['n a string refused', '{"model":"llama","n":"2"}', BAD_N],
  ['stream true', '{"model":"llama","stream":true}', ok('llama', undefined, true)],
  ['stream false', '{"model":"llama","stream":false}', ok('llama')],
  // vLLM would read these as true and stream where the gateway awaits JSON.
  ['stream "true" (a string) is refused', '{"model":"llama","stream":"true"}', BAD_STREAM],
  ['stream 1 is refused', '{"model":"llama","stream":1}', BAD_STREAM],
  ['stream null is no stream', '{"model":"llama","stream":null}', ok('llama')],
  ['stream with max_tokens', '{"model":"qwen","stream":true,"max_tokens":7}', ok('qwen', 7, true)],
];

describe('parseModelBody', () => {
  for (const [name, body, expected] of cases) {
    test(name, () => {
      const r = parseModelBody(body);
      if (!r.ok) return assert.deepEqual(r, expected);
      const { json, ...rest } = r;
      assert.equal(json['model'], r.model, 'the parsed body is kept');
      assert.deepEqual(rest, expected);
    });
  }
  test('never throws on hostile input', () => {
    for (const body of ['{"model":"a"'.repeat(1000), '\u0000', '{"__proto__":{"model":"x"}}', new Uint8Array([0xc0, 0x80])]) {
      const r = parseModelBody(body);
      assert.equal(typeof r.ok, 'boolean');
    }
  });
  test('__proto__ does not supply a model', () => {
    assert.deepEqual(parseModelBody('{"__proto__":{"model":"llama"}}'), MISSING);
  });
});
