/**
 * An unknown key is looked up in the records (made on another replica a moment ago) only when the answer can
 * matter: never for a request the token already denies, nor for a probe — unauthenticated traffic must not
 * fill the database's read slots.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RequestFacts } from '../../../src/authorizer/authorizer.js';
import type { KeyDirectory, KeyRecord } from '../../../src/identity/keys.js';
import { buildAuthorizer } from '../../../src/main/authz-app.js';
import { prepareConfigText } from '../../../src/main/config-source.js';

const UNKNOWN = 'sk-unknown-key-000000000001';

function setup(jwt: boolean): { lookups: string[]; authorize: (facts: Partial<RequestFacts>) => Promise<unknown> } {
  const lookups: string[] = [];
  const keys: KeyDirectory = {
    get: () => undefined,
    byId: () => undefined,
    lookupMissing: (hash: string): Promise<KeyRecord | undefined> => {
      lookups.push(hash);
      return Promise.resolve(undefined);
    },
  };
  const auth = jwt ? 'auth:\n  jwt:\n    issuer: https://idp.example.com\n    audience: https://tollgate.internal\n' : '';
  const prepared = prepareConfigText(
    `${auth}model_list:\n  - model_name: llama\n    litellm_params: { model: openai/llama, api_base: "http://127.0.0.1:9/v1" }\n`,
    'lookup.yaml',
    {},
  );
  const parts = buildAuthorizer(prepared.config, prepared.policy, Buffer.alloc(32, 7), { keys });
  const base: RequestFacts = {
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { authorization: `Bearer ${UNKNOWN}` },
    body: '{"model":"llama"}',
    json: undefined,
    partialBody: false,
    contextExtensions: {},
    signContext: false,
  };
  return {
    lookups,
    authorize: async (facts) => (await parts.authorizer.authorize({ ...base, ...facts }, Date.now())).decision,
  };
}

test('a required JWT that is missing or malformed decides first: the records are not asked about the key', async () => {
  const s = setup(true);
  assert.deepEqual(await s.authorize({}), { allow: false, code: 'missing_jwt', message: undefined, detail: undefined });
  const bad = (await s.authorize({ headers: { authorization: `Bearer ${UNKNOWN}`, 'x-cake-authorization': 'not-a-jwt' } })) as {
    code: string;
  };
  assert.equal(bad.code, 'invalid_jwt');
  assert.deepEqual(s.lookups, []);
});

test('a probe asks nothing; without a JWT required, an unknown key is looked up once and refused', async () => {
  const s = setup(false);
  const probe = (await s.authorize({ method: 'GET', path: '/health/readiness', body: undefined })) as { allow: boolean };
  assert.equal(probe.allow, true);
  assert.deepEqual(s.lookups, []);
  const refused = (await s.authorize({})) as { code: string };
  assert.equal(refused.code, 'invalid_api_key');
  assert.equal(s.lookups.length, 1);
});
