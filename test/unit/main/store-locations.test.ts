/**
 * The start-up line saying where records and counters live: the config's URLs or DATABASE_URL / REDIS_URL
 * (which the embedded default uses too), named with where they came from and never with a password.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configSchema, type ConfigInput } from '../../../src/config/schema.js';
import { storeLocations } from '../../../src/main/store-app.js';

const config = (general: NonNullable<ConfigInput['general_settings']> = {}) => configSchema.parse({ general_settings: general });

test('no URL anywhere: embedded PGlite (in data_dir, or in memory) and counters in this process', () => {
  assert.deepEqual(storeLocations(config({ data_dir: './.tollgate' }), {}, true), {
    records: 'embedded PGlite in .tollgate/pglite',
    counters: 'this process (no redis_url)',
  });
  assert.equal(storeLocations(config(), {}, true).records, 'embedded PGlite in memory (lost at exit)');
  assert.equal(storeLocations(config(), {}, false).records, 'none (no database_url)');
});

test("DATABASE_URL and REDIS_URL from the environment (LiteLLM's, say) win over data_dir, and the line says so", () => {
  const env = {
    DATABASE_URL: 'postgresql://litellm:db-pass-51e2@db.internal:5432/litellm?schema=proxy&password=q-pass-7a&sslmode=require',
    REDIS_URL: 'redis://default:redis-pass-9d0c@redis.internal:6379/2',
  };
  const where = storeLocations(config({ data_dir: './.tollgate' }), env, true);
  assert.deepEqual(where, {
    records: 'PostgreSQL postgresql://litellm@db.internal:5432/litellm?schema=proxy (from DATABASE_URL)',
    counters: 'Redis redis://default@redis.internal:6379/2 (from REDIS_URL)',
  });
  for (const secret of ['db-pass-51e2', 'q-pass-7a', 'redis-pass-9d0c']) assert.ok(!JSON.stringify(where).includes(secret), secret);
  // Empty variables are none, as at boot.
  assert.equal(storeLocations(config(), { DATABASE_URL: '', REDIS_URL: '' }, true).counters, 'this process (no redis_url)');
});

test("the config's URLs win over the environment's and are named as the config's", () => {
  const where = storeLocations(
    config({ database_url: 'postgres://tollgate:pw@pg:5432/tollgate', redis_url: 'redis://:pw@redis:6379' }),
    { DATABASE_URL: 'postgres://litellm@elsewhere/litellm', REDIS_URL: 'redis://elsewhere:6379' },
    true,
  );
  assert.deepEqual(where, {
    records: 'PostgreSQL postgres://tollgate@pg:5432/tollgate (from config)',
    counters: 'Redis redis://redis:6379 (from config)',
  });
});
