import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { apiBaseAllowed, prepareModel, shownApiBase, storedApiKey } from '../../../src/gateway/admin-models.js';
import { modelNew } from '../../../src/gateway/admin-schemas.js';
import { SecretBox } from '../../../src/identity/secret-box.js';
import { ModelCatalog } from '../../../src/routing/deployments.js';

describe('allowed_api_bases (the SSRF guard of /model/new)', () => {
  const table: [string, string[], boolean][] = [
    ['http://vllm-llama.models.svc:8000/v1', ['vllm-*.models.svc'], true],
    ['http://vllm-llama.evil.com/v1', ['vllm-*.models.svc'], false],
    ['http://vllm-a.b.models.svc/v1', ['vllm-*.models.svc'], false], // * stays within one label
    ['http://VLLM-X.Models.Svc/v1', ['vllm-*.models.svc'], true],
    ['http://127.0.0.1:8000/v1', ['127.0.0.1'], true],
    ['http://127.0.0.1:8000/v1', ['127.0.0.1:8000'], true],
    ['http://127.0.0.1:8001/v1', ['127.0.0.1:8000'], false],
    ['https://api.internal/v1', ['api.internal:443'], true],
    ['http://169.254.169.254/latest', ['127.0.0.1', 'vllm-*.svc'], false],
    ['http://user:pw@127.0.0.1/v1', ['127.0.0.1'], false], // credentials in the URL are refused
    ['http://[::1]:8000/v1', ['[::1]:8000'], true],
    ['http://[::1]:8000/v1', ['::1'], true],
    ['http://127.0.0.1.nip.io/v1', ['127.0.0.1'], false],
    ['http://anything/v1', [], false],
    ['not a url', ['*'], false],
    // A wildcard never matches an IP address: `*` would take in any IPv6 literal.
    ['http://[::ffff:a9fe:a9fe]:8000/v1', ['*:8000'], false],
    ['http://[::1]/v1', ['*'], false],
    ['http://10.0.0.7/v1', ['10.0.0.*'], false],
    ['http://127.1:8000/v1', ['127.0.0.1'], true], // both sides normalised as URLs are
    ['http://[::FFFF:7F00:1]/v1', ['::ffff:127.0.0.1'], true],
    ['http://vllm-a:8000/v1', ['*:8000'], true],
  ];
  for (const [url, patterns, want] of table) {
    test(`${url} against ${JSON.stringify(patterns)}: ${want ? 'allowed' : 'refused'}`, () => {
      assert.equal(apiBaseAllowed(url, patterns), want);
    });
  }
});

describe('prepareModel', () => {
  const box = new SecretBox(Buffer.alloc(32, 7));
  const catalog = ModelCatalog.fromConfig([]);
  const body = (apiKey?: string) =>
    modelNew.parse({
      model_name: 'm',
      litellm_params: { model: 'openai/m', api_base: 'http://127.0.0.1:9/v1', ...(apiKey === undefined ? {} : { api_key: apiKey }) },
    });

  test('a plain api_key is sealed, and opens again with the same secret only', () => {
    const m = prepareModel(body('secret-backend-key'), { allowed: ['127.0.0.1'], catalog, box, env: {} });
    assert.ok(!('field' in m));
    const stored = String(m.litellmParams['api_key']);
    assert.ok(stored.startsWith('enc:v1:') && !stored.includes('secret-backend-key'));
    assert.equal(storedApiKey(stored, box, {}), 'secret-backend-key');
    assert.equal(storedApiKey(stored, new SecretBox(Buffer.alloc(32, 8)), {}), null);
    // One character of the sealed bytes changed (mid-string: every bit of it counts, unlike the last one's).
    const at = 'enc:v1:'.length + 10;
    const tampered = `${stored.slice(0, at)}${stored[at] === 'A' ? 'B' : 'A'}${stored.slice(at + 1)}`;
    assert.equal(storedApiKey(tampered, box, {}), null);
  });

  test('an os.environ/ reference is kept as it is, and must be set here', () => {
    const m = prepareModel(body('os.environ/BACKEND_KEY'), { allowed: ['127.0.0.1'], catalog, box, env: { BACKEND_KEY: 'x' } });
    assert.ok(!('field' in m));
    assert.equal(m.litellmParams['api_key'], 'os.environ/BACKEND_KEY');
    assert.equal(storedApiKey('os.environ/BACKEND_KEY', box, { BACKEND_KEY: 'v' }), 'v');
    assert.equal(storedApiKey('os.environ/BACKEND_KEY', box, {}), null);
    const unset = prepareModel(body('os.environ/NOT_SET'), { allowed: ['127.0.0.1'], catalog, box, env: {} });
    assert.ok('field' in unset && unset.field === 'litellm_params.api_key');
  });

  test("an os.environ/ reference to one of tollgate's own secrets is refused", () => {
    const env = { TOLLGATE_MASTER_KEY: 'sk-master', DB: 'postgres://x', OK: 'backend' };
    const ownSecret = (v: string): boolean => v === 'postgres://x';
    for (const ref of ['os.environ/TOLLGATE_MASTER_KEY', 'os.environ/DB']) {
      const m = prepareModel(body(ref), { allowed: ['127.0.0.1'], catalog, box, env, ownSecret });
      assert.ok('field' in m && /own secrets/.test(m.message), ref);
    }
    assert.ok(!('field' in prepareModel(body('os.environ/OK'), { allowed: ['127.0.0.1'], catalog, box, env, ownSecret })));
  });

  test('without a shared secret a plain api_key is refused with what to set', () => {
    const m = prepareModel(body('k'), { allowed: ['127.0.0.1'], catalog, box: undefined, env: {} });
    assert.ok('field' in m);
    assert.match(m.message, /context_signing_key/);
  });

  test('an id already routed is a conflict', () => {
    const taken = ModelCatalog.fromConfig([
      {
        model_name: 'x',
        litellm_params: { model: 'openai/x', api_base: 'http://127.0.0.1:9/v1', weight: 1, timeout: 600 },
        model_info: { id: 'dup' },
      },
    ]);
    const b = modelNew.parse({
      model_name: 'm',
      litellm_params: { model: 'openai/m', api_base: 'http://127.0.0.1:9/v1' },
      model_info: { id: 'dup' },
    });
    const m = prepareModel(b, { allowed: ['127.0.0.1'], catalog: taken, box, env: {} });
    assert.ok('field' in m && m.conflict === true);
  });
});

describe('shownApiBase (api_base as /model/info and /health show it)', () => {
  test('credentials and query strings in a configured api_base are replaced; a plain one is shown as it is', () => {
    assert.equal(shownApiBase('http://vllm-a.models.svc:8000/v1'), 'http://vllm-a.models.svc:8000/v1');
    assert.equal(shownApiBase('http://user:s3cret@vllm-a:8000/v1'), 'http://[redacted]@vllm-a:8000/v1');
    assert.equal(shownApiBase('https://ray.internal/v1?api-key=s3cret'), 'https://ray.internal/v1?[redacted]');
    assert.equal(shownApiBase('https://:s3cret@ray.internal/v1#x'), 'https://[redacted]@ray.internal/v1');
    assert.equal(shownApiBase('not a url s3cret'), '[redacted]');
  });
});
