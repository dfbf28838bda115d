#!/usr/bin/env node
/**
 * Writes charts/tollgate/values.schema.json: the chart's own values, with tollgate's config schema
 * (schema/config.schema.json, from `npm run schema`) embedded under `config`. Helm checks values against it
 * on install, upgrade, lint and template, so a misspelt config key fails there, before a pod starts.
 *
 * The config in values.yaml is what tollgate reads before it resolves `os.environ/NAME`, so every string in
 * the embedded schema also accepts `os.environ/NAME` (src/config/load.ts resolves any string value so
 * written). The config lands in a ConfigMap, readable by anyone who may read ConfigMaps, so the fields that
 * hold secrets accept ONLY `os.environ/NAME` (SECRET_FIELDS, and LiteLLM-only keys named like credentials).
 *
 * LiteLLM proxy keys tollgate does not implement are accepted by tollgate with a warning, so they pass here
 * too, as any value, per section: exactly the keys src/config/litellm-compat.ts sets aside (asked of the
 * compiled loader, dist/src/config/, so run `npm run build` first; `npm run schema` does). The keys tollgate
 * refuses (LiteLLM's access-control settings, which it does not implement) stay refused, as do misspellings.
 * Draft-07, which every Helm 3 validator supports.
 *
 *   node scripts/chart-schema.mjs            write the file
 *   node scripts/chart-schema.mjs --check    exit 1 if the file is not what this script writes
 *   options: --config-schema FILE (input), --out FILE (output or file to check)
 * test/unit/deploy/chart-schema.test.ts runs --check.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  COMPLETION_DEFAULTS,
  EMPTY_ONLY_ROUTER_SETTINGS,
  LITELLM_REDIS_KEYS,
  setAsideLiteLlmKeys,
} from '../dist/src/config/litellm-compat.js';
import {
  LITELLM_GENERAL_SETTINGS,
  LITELLM_MODEL_INFO,
  LITELLM_PARAMS,
  LITELLM_ROUTER_SETTINGS,
  LITELLM_SETTINGS,
  LITELLM_TOP_LEVEL,
} from '../dist/src/config/litellm-keys.js';

const root = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));

/** What src/config/load.ts resolves: os.environ/ followed by a variable name. */
export const ENV_REF_PATTERN = '^os\\.environ/[A-Za-z_][A-Za-z0-9_]*$';
const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
/** JSON Schema formats validators know; zod also emits its own (e.g. "starts_with"), which are dropped. */
const STANDARD_FORMATS = new Set([
  'date-time',
  'date',
  'time',
  'email',
  'hostname',
  'ipv4',
  'ipv6',
  'uri',
  'uri-reference',
  'uuid',
  'regex',
]);

/** Config fields that hold secrets, as paths of property names (`[]`: every item of a list). */
export const SECRET_FIELDS = [
  ['general_settings', 'master_key'],
  ['general_settings', 'context_signing_key'],
  ['general_settings', 'database_url'],
  ['general_settings', 'redis_url'],
  ['model_list', '[]', 'litellm_params', 'api_key'],
  ['credential_list', '[]', 'credential_values', 'api_key'],
];
/** LiteLLM-only keys that carry credentials by their name (aws_secret_access_key, langfuse_secret, ...). */
export const LITELLM_SECRET_NAME =
  /(^|_)(api_key|secret|secret_key|secret_access_key|password|session_token|identity_token|ad_token|license)$|^vertex_credentials$/;
const SECRET_DESCRIPTION =
  'A secret: write os.environ/NAME and set NAME from a Secret (secretEnv). The config is rendered into a ConfigMap, ' +
  'which is not a place for secrets, so a literal value is refused.';
const envOnly = (description = SECRET_DESCRIPTION) => ({ description, type: 'string', pattern: ENV_REF_PATTERN });

/**
 * The config schema as values.yaml holds it: every string may instead be os.environ/NAME, secrets may only be
 * that, and LiteLLM keys tollgate accepts with a warning pass as any value.
 */
export function configForValues(schema) {
  const { $schema: _drop, ...rest } = schema;
  const config = transform(rest);
  for (const path of SECRET_FIELDS) {
    const parent = schemaAt(config, path.slice(0, -1));
    const name = path.at(-1);
    if (parent.properties?.[name] === undefined) throw new Error(`config schema has no ${path.join('.')}`);
    parent.properties[name] = envOnly();
  }
  allowLiteLlmKeys(config);
  return config;
}

/** The object schema at a path of property names (`[]`: a list's items). */
function schemaAt(root, path) {
  let node = root;
  for (const key of path) {
    node = key === '[]' ? node.items : node.properties?.[key];
    if (node === undefined) throw new Error(`config schema has no ${path.join('.')}`);
  }
  return node;
}

/**
 * Adds, per section, the LiteLLM keys tollgate sets aside with a warning (asked of the loader itself, so this
 * schema and tollgate cannot disagree), and the litellm_settings keys tollgate moves to router_settings, typed
 * as their router_settings counterparts.
 */
function allowLiteLlmKeys(config) {
  const keys = (set, value = null) => Object.fromEntries([...set].map((k) => [k, value]));
  const params = keys(new Set([...LITELLM_PARAMS, ...COMPLETION_DEFAULTS]));
  const probe = {
    // Not null: a section written empty is no section at all.
    ...keys(LITELLM_TOP_LEVEL, 0),
    // A credential's values pass the litellm_params set-aside too.
    credential_list: [{ credential_name: 'probe', credential_values: params }],
    general_settings: keys(LITELLM_GENERAL_SETTINGS),
    router_settings: keys(LITELLM_ROUTER_SETTINGS),
    litellm_settings: keys(LITELLM_SETTINGS),
    model_list: [{ litellm_params: params, model_info: keys(LITELLM_MODEL_INFO) }],
  };
  const ignored = setAsideLiteLlmKeys(probe).warnings.map((w) => w.path);
  // Alone, as a router_settings key of the same meaning takes precedence over the moved one.
  const { moved } = setAsideLiteLlmKeys({ litellm_settings: keys(LITELLM_SETTINGS) });
  const sections = new Map([
    ['', config],
    ['general_settings', schemaAt(config, ['general_settings'])],
    ['router_settings', schemaAt(config, ['router_settings'])],
    ['litellm_settings', schemaAt(config, ['litellm_settings'])],
    ['model_list.0.litellm_params', schemaAt(config, ['model_list', '[]', 'litellm_params'])],
    ['model_list.0.model_info', schemaAt(config, ['model_list', '[]', 'model_info'])],
    ['credential_list.0.credential_values', schemaAt(config, ['credential_list', '[]', 'credential_values'])],
  ]);
  for (const path of ignored) {
    const name = String(path.at(-1));
    // The chart renders the config into one ConfigMap file: there is nothing beside it to include.
    if (path.length === 1 && name === 'include') continue;
    const section = sections.get(path.slice(0, -1).join('.'));
    if (section === undefined) throw new Error(`LiteLLM key ${path.join('.')}: no section for it here`);
    section.properties ??= {};
    if (section.properties[name] !== undefined) continue;
    // Any value: tollgate ignores it (with a warning), so only a credential's form matters here.
    section.properties[name] = LITELLM_SECRET_NAME.test(name)
      ? envOnly(`LiteLLM's ${name}, ignored by tollgate. ${SECRET_DESCRIPTION}`)
      : {};
  }
  // Flags the loader refuses only when true (what they ask for tollgate does not do): false or absent passes.
  for (const [section, name] of [
    ['general_settings', 'disable_reset_budget'],
    ['router_settings', 'enable_tag_filtering'],
  ]) {
    sections.get(section).properties[name] = {
      description: `LiteLLM's ${name}: true is refused (config check says what to use instead); false changes nothing`,
      // Anything but true (`not` is beyond the validators Helm charts can count on).
      anyOf: [{ enum: [false, null] }, { type: ['string', 'number', 'object', 'array'] }],
    };
  }
  // model_info is free-form in LiteLLM (ModelInfo is extra="allow"): tollgate accepts any other key as information.
  // The keys tollgate refuses there (model_info.access_groups) stay refused.
  const info = sections.get('model_list.0.model_info');
  info.additionalProperties = true;
  for (const e of setAsideLiteLlmKeys(probe).errors)
    if (e.path.slice(0, -1).join('.') === 'model_list.0.model_info') info.properties[String(e.path.at(-1))] = false;
  const router = sections.get('router_settings');
  // LiteLLM's router Redis, which tollgate reads as general_settings.redis_url when that is not set.
  const redis = {
    redis_host: { type: 'string', description: "LiteLLM's router Redis host: tollgate's Redis when general_settings.redis_url is not set" },
    redis_port: { anyOf: [{ type: 'integer' }, { type: 'string' }], description: "LiteLLM's router Redis port (6379 when absent)" },
    redis_db: { anyOf: [{ type: 'integer' }, { type: 'string' }], description: "LiteLLM's router Redis database number" },
    redis_password: envOnly(`LiteLLM's router Redis password. ${SECRET_DESCRIPTION}`),
    redis_url: envOnly(`LiteLLM's router Redis URL (it may hold a password). ${SECRET_DESCRIPTION}`),
  };
  // The host, port and database also as os.environ/NAME (transform); the password and URL only so.
  for (const k of LITELLM_REDIS_KEYS) router.properties[k] ??= k === 'redis_password' || k === 'redis_url' ? redis[k] : transform(redis[k]);
  // What the loader refuses unless it asks for nothing (null, {} or []), and disable_cooldowns, read as cooldown_time: 0.
  const nothing = { anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: false }, { type: 'array', maxItems: 0 }] };
  for (const k of EMPTY_ONLY_ROUTER_SETTINGS)
    router.properties[k] = {
      description: `LiteLLM's ${k}: tollgate has no counterpart and refuses it (config check says what to use)`,
      ...nothing,
    };
  router.properties['disable_cooldowns'] = {
    description: "LiteLLM's disable_cooldowns: true is cooldown_time: 0",
    type: ['boolean', 'null'],
  };
  const settings = sections.get('litellm_settings');
  settings.properties ??= {};
  settings.properties['model_alias_map'] = {
    description: "LiteLLM's model_alias_map: tollgate has no second names for models and refuses it (config check says what to use)",
    ...nothing,
  };
  for (const [routerKey, settingsKey] of moved) {
    const { description: _d, default: _default, ...typed } = router.properties[routerKey];
    settings.properties[settingsKey] = {
      ...typed,
      description: `LiteLLM's ${settingsKey}: tollgate reads it as router_settings.${routerKey}`,
    };
  }
}

function transform(node) {
  if (Array.isArray(node)) return node.map(transform);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'format' && !STANDARD_FORMATS.has(v)) continue;
    // Object keys are not resolved from the environment, only values.
    out[k] = k === 'propertyNames' || k === 'enum' || k === 'const' || k === 'default' || k === 'required' ? v : transformChildren(k, v);
  }
  if (out.type !== 'string') return out;
  const { default: dflt, description, ...constraints } = out;
  return {
    ...(description === undefined ? {} : { description }),
    ...(dflt === undefined ? {} : { default: dflt }),
    anyOf: [constraints, { type: 'string', pattern: ENV_REF_PATTERN }],
  };
}

function transformChildren(key, v) {
  if (key === 'properties') return Object.fromEntries(Object.entries(v).map(([name, s]) => [name, transform(s)]));
  return transform(v);
}

const str = { type: 'string' };
const bool = { type: 'boolean' };
const int = (minimum = 0) => ({ type: 'integer', minimum });
const duration = { type: 'string', pattern: '^\\d+(\\.\\d+)?s$' };
const promDuration = { type: 'string', pattern: '^\\d+(ms|s|m|h)$' };
const stringMap = { type: 'object', additionalProperties: str };
const k8sObject = { type: 'object' };
const k8sList = { type: 'array', items: k8sObject };
const quantity = { type: ['string', 'number'] };
const resources = {
  type: 'object',
  properties: {
    requests: { type: 'object', additionalProperties: quantity },
    limits: { type: 'object', additionalProperties: quantity },
  },
  additionalProperties: false,
};
const image = (tagDescription) => ({
  type: 'object',
  properties: {
    repository: { type: 'string', minLength: 1 },
    tag: { type: 'string', description: tagDescription },
    pullPolicy: { enum: ['Always', 'IfNotPresent', 'Never'] },
  },
  required: ['repository'],
  additionalProperties: false,
});
const probe = {
  type: 'object',
  properties: { periodSeconds: int(1), timeoutSeconds: int(1), failureThreshold: int(1) },
  additionalProperties: false,
};
const obj = (properties, extra = {}) => ({ type: 'object', properties, additionalProperties: false, ...extra });

/** The chart's values schema around the config schema. */
export function valuesSchema(configSchema) {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'tollgate chart values',
    description: 'Generated by scripts/chart-schema.mjs from schema/config.schema.json; do not edit.',
    type: 'object',
    properties: {
      global: k8sObject,
      nameOverride: str,
      fullnameOverride: str,
      replicaCount: int(1),
      image: image('default: the chart appVersion'),
      imagePullSecrets: k8sList,
      logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
      config: {
        ...configForValues(configSchema),
        description: "tollgate's config.yaml; any string may be os.environ/NAME, and secrets must be",
      },
      secretEnv: {
        type: 'array',
        items: obj(
          {
            name: { type: 'string', pattern: ENV_NAME_PATTERN },
            key: { type: 'string', minLength: 1 },
            secretName: { type: 'string', minLength: 1 },
          },
          { required: ['name'] },
        ),
      },
      secret: obj({
        name: str,
        create: bool,
        values: { type: 'object', propertyNames: { pattern: ENV_NAME_PATTERN }, additionalProperties: { type: 'string', minLength: 1 } },
      }),
      extraEnv: { type: 'array', items: { type: 'object', required: ['name'] } },
      resources,
      probes: obj({ startup: probe, liveness: probe, readiness: probe }),
      envoy: obj({
        image: image('an envoyproxy/envoy release'),
        logLevel: { enum: ['trace', 'debug', 'info', 'warning', 'warn', 'error', 'critical', 'off'] },
        authzTimeout: duration,
        streamIdleTimeout: duration,
        // HttpConnectionManager.xff_num_trusted_hops: the proxies in front of Envoy that append to x-forwarded-for.
        xffNumTrustedHops: { type: 'integer', minimum: 0, maximum: 10 },
        // Envoy's --concurrency: worker threads (else one per hardware thread of the node).
        concurrency: { type: 'integer', minimum: 1, maximum: 64 },
        tls: obj({ secretName: str }),
        preStopSleepSeconds: int(0),
        overload: obj({
          heapPercentOfMemoryLimit: { type: 'integer', minimum: 1, maximum: 100 },
          maxHeapSizeBytes: int(0),
        }),
        resources,
        securityContext: k8sObject,
      }),
      preStopSleepSeconds: int(0),
      // TOLLGATE_DRAIN_SECONDS: tollgate accepts 0-3600.
      drainSeconds: { type: 'integer', minimum: 0, maximum: 3600 },
      terminationGracePeriodSeconds: int(1),
      podSecurityContext: k8sObject,
      securityContext: k8sObject,
      dataDir: obj({
        sizeLimit: quantity,
        persistence: obj({ enabled: bool, existingClaim: str, storageClassName: str, size: quantity }),
      }),
      service: obj({
        type: { enum: ['ClusterIP', 'NodePort', 'LoadBalancer'] },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        // Local keeps the client's source address (NodePort and LoadBalancer only); Cluster SNATs it to a node's.
        externalTrafficPolicy: { enum: ['Cluster', 'Local'] },
        annotations: stringMap,
      }),
      autoscaling: obj({
        enabled: bool,
        minReplicas: int(1),
        maxReplicas: int(1),
        targetCPUUtilizationPercentage: { type: 'integer', minimum: 0, maximum: 100 },
        targetMemoryUtilizationPercentage: { type: 'integer', minimum: 0, maximum: 100 },
        behavior: k8sObject,
      }),
      podDisruptionBudget: obj({
        enabled: bool,
        maxUnavailable: { type: ['integer', 'string'] },
        minAvailable: { type: ['integer', 'string'] },
      }),
      networkPolicy: obj({ enabled: bool, clientsFrom: k8sList, metricsFrom: k8sList }),
      serviceMonitor: obj({ enabled: bool, interval: promDuration, scrapeTimeout: promDuration, labels: stringMap }),
      serviceAccount: obj({ create: bool, name: str, annotations: stringMap }),
      podAnnotations: stringMap,
      podLabels: stringMap,
      priorityClassName: str,
      nodeSelector: stringMap,
      tolerations: k8sList,
      affinity: k8sObject,
      topologySpreadConstraints: k8sList,
    },
    required: ['image', 'config', 'envoy'],
    additionalProperties: false,
  };
}

function main() {
  const { values } = parseArgs({
    options: {
      check: { type: 'boolean', default: false },
      'config-schema': { type: 'string', default: root('schema/config.schema.json') },
      out: { type: 'string', default: root('charts/tollgate/values.schema.json') },
    },
  });
  const config = JSON.parse(readFileSync(values['config-schema'], 'utf8'));
  const text = `${JSON.stringify(valuesSchema(config), null, 2)}\n`;
  if (!values.check) {
    writeFileSync(values.out, text);
    return 0;
  }
  let current = '';
  try {
    current = readFileSync(values.out, 'utf8');
  } catch {
    // missing: reported below
  }
  if (current === text) return 0;
  process.stderr.write(`${values.out} is out of date: run node scripts/chart-schema.mjs\n`);
  return 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main();
