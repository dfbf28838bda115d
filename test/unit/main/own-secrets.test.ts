/** The values the admin API never takes as a backend api_key reference: tollgate's own secrets. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ownSecrets } from '../../../src/main/cli.js';

test("tollgate's keys, its database and Redis URLs, and the passwords inside them (decoded)", () => {
  const own = ownSecrets(
    {
      master_key: 'sk-master-0123456789abcdef',
      context_signing_key: undefined,
      database_url: 'postgres://tollgate:db%2Fpass@pg:5432/tollgate',
      // As LiteLLM's router_settings.redis_password becomes it.
      redis_url: 'redis://:p%40ss%2Fw%3Ard@redis:6379',
    },
    { REDIS_URL: 'redis://other:6379', DATABASE_URL: '' },
  );
  assert.deepEqual(own.sort(), [
    'db/pass',
    'p@ss/w:rd',
    'postgres://tollgate:db%2Fpass@pg:5432/tollgate',
    'redis://:p%40ss%2Fw%3Ard@redis:6379',
    'redis://other:6379',
    'sk-master-0123456789abcdef',
  ]);
});

test('nothing from what is not set, nor from a URL without a password or one that does not parse', () => {
  assert.deepEqual(
    ownSecrets(
      { master_key: undefined, context_signing_key: undefined, database_url: 'postgres://pg/db', redis_url: undefined },
      {
        REDIS_URL: 'not a url',
      },
    ),
    ['postgres://pg/db', 'not a url'],
  );
});
