/**
 * charts/tollgate/values.schema.json is generated (scripts/chart-schema.mjs) from schema/config.schema.json:
 * the committed file must be what the generator writes, so a config schema change cannot leave Helm
 * validating values against an old one.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { validateJsonSchema } from '../../support/json-schema.js';

const ROOT = new URL('../../../../', import.meta.url);
const SCRIPT = new URL('scripts/chart-schema.mjs', ROOT).pathname;
const VALUES_SCHEMA = new URL('charts/tollgate/values.schema.json', ROOT).pathname;
const CONFIG_SCHEMA = new URL('schema/config.schema.json', ROOT).pathname;
const ENV_REF = '^os\\.environ/[A-Za-z_][A-Za-z0-9_]*$';

function generator(...args: string[]): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

type Node = { [k: string]: unknown };

describe('charts/tollgate/values.schema.json', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tollgate-schema-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('is what scripts/chart-schema.mjs generates from schema/config.schema.json (run it after `npm run schema`)', () => {
    const r = generator('--check');
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
  });

  it('--check fails on a hand-edited file and on a config schema the file was not generated from', () => {
    const edited = path.join(dir, 'edited.json');
    const committed = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as { properties: Node };
    delete committed.properties['logLevel'];
    writeFileSync(edited, `${JSON.stringify(committed, null, 2)}\n`);
    const r = generator('--check', '--out', edited);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /edited\.json is out of date: run node scripts\/chart-schema\.mjs/);

    const config = JSON.parse(readFileSync(CONFIG_SCHEMA, 'utf8')) as { properties: Node };
    config.properties['new_section'] = { type: 'object' };
    const newer = path.join(dir, 'config.schema.json');
    writeFileSync(newer, JSON.stringify(config));
    assert.equal(generator('--check', '--config-schema', newer).status, 1);
  });

  it('embeds every config section under `config`, each string also accepting os.environ/NAME', () => {
    const values = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as { $schema: string; properties: { config: Node } };
    const config = JSON.parse(readFileSync(CONFIG_SCHEMA, 'utf8')) as { properties: Node };
    assert.equal(values.$schema, 'http://json-schema.org/draft-07/schema#');
    const embedded = values.properties.config;
    assert.deepEqual(Object.keys(embedded['properties'] as Node), Object.keys(config.properties));
    assert.equal(embedded['additionalProperties'], false);
    let strings = 0;
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) return node.forEach(walk);
      if (typeof node !== 'object' || node === null) return;
      const n = node as Node;
      assert.ok(n['format'] === undefined || n['format'] === 'uri' || n['format'] === 'date-time', `format ${String(n['format'])}`);
      const anyOf = n['anyOf'];
      if (Array.isArray(anyOf) && anyOf.some((b) => (b as Node)['pattern'] === ENV_REF)) {
        strings++;
        anyOf.forEach((b) => assert.equal((b as Node)['type'], 'string'));
        return;
      }
      assert.notEqual(n['type'], 'string', `a string without the os.environ/ alternative: ${JSON.stringify(n)}`);
      for (const [k, v] of Object.entries(n)) if (k !== 'propertyNames') walk(v);
    };
    walk(embedded);
    assert.ok(strings > 20, `${strings} string fields`);
    // The alternative accepts exactly what the loader resolves.
    const masterKey = ((embedded['properties'] as Node)['general_settings'] as { properties: Node }).properties['master_key'];
    assert.deepEqual(validateJsonSchema(masterKey, 'os.environ/TOLLGATE_MASTER_KEY'), []);
    assert.deepEqual(validateJsonSchema(masterKey, 'sk-0123456789abcdefghij'), []);
    assert.equal(validateJsonSchema(masterKey, 'os.environ/not a name').length, 1);
    assert.equal(validateJsonSchema(masterKey, 'hunter2').length, 1);
  });
});
