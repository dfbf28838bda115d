/** The committed JSON Schema (schema/config.schema.json) is what the zod schema exports: regenerate with `npm run schema`. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { configJsonSchema } from '../../../src/config/schema.js';

test('schema/config.schema.json matches the config schema (run `npm run schema` after changing it)', () => {
  const committed: unknown = JSON.parse(readFileSync(new URL('../../../../schema/config.schema.json', import.meta.url), 'utf8'));
  assert.deepEqual(committed, JSON.parse(JSON.stringify(configJsonSchema())));
});

test('the JSON Schema rejects unknown top-level keys and names the sections', () => {
  const schema = configJsonSchema() as { properties: Record<string, unknown>; additionalProperties: unknown };
  assert.equal(schema.additionalProperties, false);
  for (const section of ['model_list', 'router_settings', 'general_settings', 'auth', 'policy', 'keys', 'teams']) {
    assert.ok(section in schema.properties, section);
  }
});
