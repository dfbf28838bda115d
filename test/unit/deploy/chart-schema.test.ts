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
import { stringify } from 'yaml';
import { LITELLM_REDIS_KEYS } from '../../../src/config/litellm-compat.js';
import { loadConfigText } from '../../../src/config/load.js';
import {
  LITELLM_GENERAL_SETTINGS,
  LITELLM_MODEL_INFO,
  LITELLM_PARAMS,
  LITELLM_ROUTER_SETTINGS,
  LITELLM_SETTINGS,
  LITELLM_TOP_LEVEL,
} from '../../../src/config/litellm-keys.js';
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

  it('embeds every config section under `config`, each string also accepting os.environ/NAME, each secret only that', () => {
    const values = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as { $schema: string; properties: { config: Node } };
    const config = JSON.parse(readFileSync(CONFIG_SCHEMA, 'utf8')) as { properties: Node };
    assert.equal(values.$schema, 'http://json-schema.org/draft-07/schema#');
    const embedded = values.properties.config;
    const sections = embedded['properties'] as Node;
    // tollgate's sections, then the LiteLLM top-level keys tollgate accepts with a warning (any value).
    assert.deepEqual(Object.keys(sections).slice(0, Object.keys(config.properties).length), Object.keys(config.properties));
    for (const k of Object.keys(sections).slice(Object.keys(config.properties).length)) {
      assert.ok(LITELLM_TOP_LEVEL.has(k), `${k} is a LiteLLM key`);
      assert.deepEqual(sections[k], {}, `${k}: any value`);
    }
    assert.equal(embedded['additionalProperties'], false);
    let strings = 0;
    let secrets = 0;
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
      if (n['type'] === 'string' && n['pattern'] === ENV_REF) {
        secrets++;
        assert.match(String(n['description']), /ConfigMap/);
        return;
      }
      assert.notEqual(n['type'], 'string', `a string without the os.environ/ alternative: ${JSON.stringify(n)}`);
      for (const [k, v] of Object.entries(n)) if (k !== 'propertyNames') walk(v);
    };
    walk(embedded);
    assert.ok(strings > 20, `${strings} string fields`);
    // master_key, context_signing_key, database_url, redis_url, api_key, and LiteLLM-only credentials.
    assert.ok(secrets > 5, `${secrets} secret fields`);
    // The alternative accepts exactly what the loader resolves.
    const prefix = ((embedded['properties'] as Node)['general_settings'] as { properties: Node }).properties['redis_key_prefix'];
    assert.deepEqual(validateJsonSchema(prefix, 'os.environ/KEY_PREFIX'), []);
    assert.deepEqual(validateJsonSchema(prefix, 'tollgate:'), []);
    assert.equal(validateJsonSchema(prefix, 'os.environ/not a name').length, 1);
    assert.equal(validateJsonSchema(prefix, 'not a prefix').length, 1);
  });

  describe('secrets: only os.environ/NAME, since the config is rendered into a ConfigMap', () => {
    const values = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as Node;
    const issues = (config: Node): string[] => validateJsonSchema(values, { image: { repository: 'tollgate' }, envoy: {}, config });
    const model = (litellmParams: Node): Node => ({
      model_list: [{ model_name: 'm', litellm_params: { model: 'openai/m', api_base: 'http://vllm:8000/v1', ...litellmParams } }],
    });
    const credential = (values: Node): Node => ({ credential_list: [{ credential_name: 'c', credential_values: values }] });

    it('refuses a literal master_key, context_signing_key, database_url (with its password), redis_url and api_key', () => {
      const refused: Array<[Node, string]> = [
        [{ general_settings: { master_key: 'sk-0123456789abcdefghij' } }, 'config.general_settings.master_key'],
        [{ general_settings: { context_signing_key: 'x'.repeat(40) } }, 'config.general_settings.context_signing_key'],
        [{ general_settings: { database_url: 'postgres://tollgate:hunter2@db:5432/tollgate' } }, 'config.general_settings.database_url'],
        [{ general_settings: { redis_url: 'redis://:hunter2@valkey:6379/0' } }, 'config.general_settings.redis_url'],
        [model({ api_key: 'vllm-secret-key' }), 'config.model_list[0].litellm_params.api_key'],
        // A LiteLLM-only credential tollgate ignores would still land in the ConfigMap.
        [model({ aws_secret_access_key: 'wJalrXUtnFEMI/K7MDENG' }), 'config.model_list[0].litellm_params.aws_secret_access_key'],
        // A credential_list entry's values reach the deployments naming it: its api_key is as secret there.
        [credential({ api_key: 'vllm-secret-key' }), 'config.credential_list[0].credential_values.api_key'],
        [
          credential({ aws_secret_access_key: 'wJalrXUtnFEMI/K7MDENG' }),
          'config.credential_list[0].credential_values.aws_secret_access_key',
        ],
      ];
      for (const [config, path] of refused) assert.deepEqual(issues(config), [`${path}: does not match ${ENV_REF}`], path);
    });

    it('accepts each as os.environ/NAME, as the loader resolves it', () => {
      assert.deepEqual(
        issues({
          general_settings: {
            master_key: 'os.environ/TOLLGATE_MASTER_KEY',
            context_signing_key: 'os.environ/CONTEXT_KEY',
            database_url: 'os.environ/DATABASE_URL',
            redis_url: 'os.environ/REDIS_URL',
          },
          ...model({ api_key: 'os.environ/VLLM_API_KEY', aws_secret_access_key: 'os.environ/AWS_SECRET' }),
          ...credential({ api_key: 'os.environ/VLLM_API_KEY', api_base: 'http://vllm:8000/v1', api_version: '2024-06-01' }),
        }),
        [],
      );
      assert.deepEqual(issues({ general_settings: { master_key: 'os.environ/not a name' } }), [
        `config.general_settings.master_key: does not match ${ENV_REF}`,
      ]);
    });
  });

  describe('LiteLLM proxy keys: accepted where tollgate accepts them (with a warning), refused where it refuses them', () => {
    const values = JSON.parse(readFileSync(VALUES_SCHEMA, 'utf8')) as Node;
    const issues = (config: Node): string[] => validateJsonSchema(values, { image: { repository: 'tollgate' }, envoy: {}, config });
    const model = (litellmParams: Node, modelInfo: Node = {}): Node => ({
      model_list: [
        {
          model_name: 'm',
          litellm_params: { model: 'openai/m', api_base: 'http://vllm:8000/v1', ...litellmParams },
          model_info: modelInfo,
        },
      ],
    });
    /** What tollgate's loader says of the same config: its errors and its warnings. */
    const load = (config: Node): { issues: number; warnings: number } => {
      const loaded = loadConfigText(stringify(config), { SECRET: 'sk-0123456789abcdefghij' });
      return { issues: loaded.issues.length, warnings: loaded.warnings.length };
    };

    it('a LiteLLM-only key passes in each section; a misspelt tollgate key still fails', () => {
      const litellm: Node = {
        general_settings: { store_model_in_db: true, master_key: 'os.environ/SECRET' },
        litellm_settings: { drop_params: true, request_timeout: 600, num_retries: 3 },
        router_settings: { redis_host: 'valkey', num_retries: 1 },
        ...model({ max_retries: 3 }, { supports_function_calling: true }),
      };
      assert.deepEqual(issues(litellm), []);
      // router_settings.redis_host is read (as the Redis URL), not ignored.
      assert.deepEqual(load(litellm), { issues: 0, warnings: 4 });
      assert.deepEqual(issues({ general_settings: { master_kee: 'os.environ/K' } }), ['config.general_settings.master_kee: unknown key']);
      assert.deepEqual(issues(model({ max_retrys: 3 })), ['config.model_list[0].litellm_params.max_retrys: unknown key']);
      assert.deepEqual(issues({ litellm_settings: { drop_param: true } }), ['config.litellm_settings.drop_param: unknown key']);
      assert.deepEqual(issues({ router_settings: { routing_strategi: 'least-busy' } }), [
        'config.router_settings.routing_strategi: unknown key',
      ]);
      // tollgate's own keys keep their types; a litellm_settings key tollgate reads as a router_settings one takes its type.
      assert.equal(issues({ general_settings: { failure_mode: 'sometimes' } }).length, 1);
      assert.match(
        issues({ litellm_settings: { request_timeout: 'long' } }).join('\n'),
        /config\.litellm_settings\.request_timeout: expected number/,
      );
    });

    it("refuses LiteLLM's access-control settings, which tollgate refuses rather than ignore", () => {
      for (const k of [
        'allowed_ips',
        'allowed_routes',
        'public_routes',
        'admin_only_routes',
        'enable_jwt_auth',
        'custom_auth',
        'litellm_jwtauth',
      ]) {
        const config = { general_settings: { [k]: true } };
        assert.deepEqual(issues(config), [`config.general_settings.${k}: unknown key`], k);
        assert.ok(load(config).issues > 0, `tollgate refuses general_settings.${k}`);
      }
    });

    it('agrees with the loader on every LiteLLM-only key, in every section', () => {
      type Section = { properties?: Record<string, { items?: Section; properties?: Record<string, Section> }> };
      const own = (JSON.parse(readFileSync(CONFIG_SCHEMA, 'utf8')) as Section).properties ?? {};
      const ours = (s: Section | undefined): Set<string> => new Set(Object.keys(s?.properties ?? {}));
      const entry = own['model_list']?.items?.properties ?? {};
      // Any value will do for a key tollgate ignores; a credential's must be a reference, which the loader resolves.
      const v = 'os.environ/SECRET';
      const sections: Array<[string, ReadonlySet<string>, Set<string>, (k: string) => Node]> = [
        ['general_settings', LITELLM_GENERAL_SETTINGS, ours(own['general_settings']), (k) => ({ general_settings: { [k]: v } })],
        ['router_settings', LITELLM_ROUTER_SETTINGS, ours(own['router_settings']), (k) => ({ router_settings: { [k]: v } })],
        ['litellm_settings', LITELLM_SETTINGS, ours(own['litellm_settings']), (k) => ({ litellm_settings: { [k]: v } })],
        ['litellm_params', LITELLM_PARAMS, ours(entry['litellm_params']), (k) => model({ [k]: v })],
        ['model_info', LITELLM_MODEL_INFO, ours(entry['model_info']), (k) => model({}, { [k]: v })],
        ['(top level)', LITELLM_TOP_LEVEL, new Set(Object.keys(own)), (k) => ({ [k]: v })],
      ];
      let checked = 0;
      for (const [section, keys, tollgates, config] of sections) {
        for (const k of keys) {
          // tollgate's own, and LiteLLM's router Redis, which tollgate reads (typed, checked below).
          if (tollgates.has(k) || (section === 'router_settings' && (LITELLM_REDIS_KEYS as readonly string[]).includes(k))) continue;
          const c = config(k);
          const schemaOk = issues(c).length === 0;
          const loaderOk = load(c).issues === 0;
          assert.equal(
            schemaOk,
            loaderOk,
            `${section}.${k}: the chart schema ${schemaOk ? 'accepts' : 'refuses'} what tollgate ${loaderOk ? 'accepts' : 'refuses'}`,
          );
          checked++;
        }
      }
      assert.ok(checked > 500, `${checked} keys`);
    });

    it('takes what the loader reads from LiteLLM (credentials, deployment-level tpm, disable_cooldowns) and refuses what it refuses', () => {
      const config: Node = {
        general_settings: { master_key: 'os.environ/SECRET' },
        credential_list: [{ credential_name: 'c', credential_values: { api_key: 'os.environ/SECRET', api_base: 'http://vllm:8000/v1' } }],
        model_list: [
          { model_name: 'm', tpm: 1000, litellm_params: { model: 'openai/m', litellm_credential_name: 'c' }, model_info: { rpm: 10 } },
        ],
        router_settings: { disable_cooldowns: true, model_group_alias: {} },
      };
      assert.deepEqual(issues(config), []);
      assert.equal(load(config).issues, 0);
      // Without a credential, api_base stays required.
      const bare = { model_list: [{ model_name: 'm', litellm_params: { model: 'openai/m' } }] };
      assert.match(issues(bare).join('\n'), /config\.model_list\[0\]\.litellm_params: matches none of anyOf/);
      assert.ok(load(bare).issues > 0);
      for (const router of [{ model_group_alias: { 'gpt-4': 'm' } }, { provider_budget_config: { openai: { budget_limit: 1 } } }]) {
        assert.equal(issues({ router_settings: router }).length, 1, JSON.stringify(router));
        assert.ok(load({ router_settings: router }).issues > 0, JSON.stringify(router));
      }
      // Flags refused only when true: the chart refuses what the loader refuses, and takes false as it does.
      for (const [section, name] of [
        ['general_settings', 'disable_reset_budget'],
        ['router_settings', 'enable_tag_filtering'],
      ] as const) {
        for (const value of [true, false]) {
          const c: Node = { [section]: { [name]: value } };
          assert.equal(issues(c).length === 0, load(c).issues === 0, `${section}.${name}: ${String(value)}`);
          assert.equal(issues(c).length === 0, !value, `${section}.${name}: ${String(value)}`);
        }
      }
      assert.deepEqual(issues({ litellm_settings: { model_alias_map: {} } }), []);
      assert.equal(issues({ litellm_settings: { model_alias_map: { 'gpt-3.5-turbo': 'm' } } }).length, 1);
    });

    it("takes LiteLLM's router Redis as the loader does; its password and URL only as os.environ/NAME", () => {
      const router = (r: Node): Node => ({ router_settings: r });
      const ok = router({ redis_host: 'valkey', redis_port: 6380, redis_db: '1', redis_password: 'os.environ/REDIS_PASSWORD' });
      assert.deepEqual(issues(ok), []);
      assert.deepEqual(issues(router({ redis_url: 'os.environ/REDIS_URL' })), []);
      assert.deepEqual(issues(router({ redis_password: 'hunter2-in-a-configmap' })), [
        `config.router_settings.redis_password: does not match ${ENV_REF}`,
      ]);
      assert.deepEqual(issues(router({ redis_url: 'redis://:pw@valkey:6379' })), [
        `config.router_settings.redis_url: does not match ${ENV_REF}`,
      ]);
      assert.equal(issues(router({ redis_port: [6379] })).length, 1);
    });
  });
});

describe("the chart's two lists of secret field names agree", () => {
  it('the render check (_helpers.tpl) and the values schema (scripts/chart-schema.mjs) take the same names for secrets', async () => {
    const { SECRET_FIELDS, LITELLM_SECRET_NAME } = (await import(SCRIPT)) as {
      SECRET_FIELDS: string[][];
      LITELLM_SECRET_NAME: RegExp;
    };
    const helpers = readFileSync(new URL('charts/tollgate/templates/_helpers.tpl', ROOT), 'utf8');
    const source = /\$secret := or \$\.secret \(regexMatch `([^`]+)`/.exec(helpers)?.[1];
    assert.ok(source !== undefined, 'the render check names secrets by a regexMatch');
    const template = new RegExp(source);
    const ownSecrets = new Set(SECRET_FIELDS.map((p) => p.at(-1) ?? ''));
    const schemaSays = (name: string): boolean => ownSecrets.has(name) || LITELLM_SECRET_NAME.test(name);
    const names = [
      ...ownSecrets,
      'api_key',
      'aws_secret_access_key',
      'aws_session_token',
      'langfuse_secret',
      'langfuse_secret_key',
      'password',
      'redis_password',
      'azure_ad_token',
      'vertex_credentials',
      'license',
      'model',
      'api_base',
      'key_alias',
      'timeout',
      'secret_manager_settings',
      'password_hint',
    ];
    // `key` is the render check's own: keys[].key must be a sha256: hash or os.environ/ (the schema's pattern).
    for (const name of names) assert.equal(template.test(name), schemaSays(name), name);
  });
});
