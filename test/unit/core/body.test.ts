/** parseModelBody: string and byte bodies → the model, max tokens and stream flag, or invalid_body / missing_model. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseModelBody, type BodyResult } from '../../../src/core/body.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const ok = (model: string, maxTokens: number | undefined = undefined, stream = false): BodyResult => ({
  ok: true,
  model,
  maxTokens,
  stream,
});
const INVALID: BodyResult = { ok: false, code: 'invalid_body' };
const MISSING: BodyResult = { ok: false, code: 'missing_model' };

const cases: Array<[name: string, body: string | Uint8Array, expected: BodyResult]> = [
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
  ['model a number', '{"model":42}', INVALID],
  ['model an object', '{"model":{"name":"llama"}}', INVALID],
  ['model true', '{"model":true}', INVALID],
  ['model longer than 256 characters', JSON.stringify({ model: 'm'.repeat(257) }), INVALID],
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
  ['max_tokens 0 ignored', '{"model":"llama","max_tokens":0}', ok('llama')],
  ['max_tokens negative ignored', '{"model":"llama","max_tokens":-5}', ok('llama')],
  ['max_tokens fractional ignored', '{"model":"llama","max_tokens":1.5}', ok('llama')],
  ['max_tokens a string ignored', '{"model":"llama","max_tokens":"100"}', ok('llama')],
  ['stream true', '{"model":"llama","stream":true}', ok('llama', undefined, true)],
  ['stream false', '{"model":"llama","stream":false}', ok('llama')],
  ['stream "true" (a string) is not streaming', '{"model":"llama","stream":"true"}', ok('llama')],
  ['stream 1 is not streaming', '{"model":"llama","stream":1}', ok('llama')],
  ['stream with max_tokens', '{"model":"qwen","stream":true,"max_tokens":7}', ok('qwen', 7, true)],
];

describe('parseModelBody', () => {
  for (const [name, body, expected] of cases) {
    test(name, () => assert.deepEqual(parseModelBody(body), expected));
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
