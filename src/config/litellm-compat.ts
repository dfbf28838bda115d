/**
 * A LiteLLM proxy config.yaml must keep loading. Keys that LiteLLM knows and tollgate does not use are set
 * aside here, each reported as a warning (never silently); keys neither knows stay in place so the strict
 * schema reports them as errors. A few litellm_settings have a tollgate equivalent and are moved there.
 */
import { isIPv6 } from 'node:net';
import type { PathSegment } from './issues.js';
import {
  LITELLM_GENERAL_SETTINGS,
  LITELLM_MODEL_INFO,
  LITELLM_PARAMS,
  LITELLM_ROUTER_SETTINGS,
  LITELLM_SETTINGS,
  LITELLM_TOP_LEVEL,
} from './litellm-keys.js';
import { configSchema, generalSettings, litellmParams, modelInfo, routerSettings } from './schema.js';

export interface CompatResult {
  readonly config: Record<string, unknown>;
  readonly ignored: readonly PathSegment[][];
  readonly environmentVariables: Readonly<Record<string, string>>;
  /** LiteLLM security settings tollgate does not implement: refused, since ignoring them would open a door. */
  readonly refused: readonly PathSegment[][];
  /** router_settings keys that came from litellm_settings: router key → litellm_settings key. */
  readonly moved: ReadonlyMap<string, string>;
  /**
   * LiteLLM's Redis for its router (`router_settings.redis_url`, or `redis_host`, `redis_port`,
   * `redis_password`, `redis_db`), as written (`os.environ/` references unresolved): tollgate's limits
   * store when `general_settings.redis_url` is not set (litellmRedisUrl).
   */
  readonly redis: Readonly<Record<string, unknown>>;
}

/** The router_settings keys LiteLLM connects its Redis with. */
export const LITELLM_REDIS_KEYS = ['redis_url', 'redis_host', 'redis_port', 'redis_password', 'redis_db'] as const;

/**
 * The Redis URL LiteLLM's router_settings name (values resolved), or a problem with the key at fault:
 * `redis_url` as it is, else `redis://[:password@]host:port[/db]` (port 6379 when absent); undefined
 * without either.
 */
export function litellmRedisUrl(r: Readonly<Record<string, unknown>>): { url: string } | { key: string; message: string } | undefined {
  const url = r['redis_url'];
  if (url !== undefined) {
    if (typeof url !== 'string' || !/^rediss?:\/\//.test(url))
      return { key: 'redis_url', message: 'not a Redis URL: write redis://host:6379' };
    return { url };
  }
  const host = r['redis_host'];
  // Without a host (or URL) LiteLLM connects no Redis either.
  if (host === undefined) return undefined;
  if (typeof host !== 'string' || host.startsWith('-') || !(isIPv6(host) || /^[A-Za-z0-9._-]+$/.test(host)))
    return { key: 'redis_host', message: 'not a host name or address: write e.g. redis.default.svc, and the port as redis_port' };
  const port = integer(r['redis_port'] ?? 6379);
  if (port === undefined || port < 1 || port > 65535)
    return { key: 'redis_port', message: 'not a port: write a number from 1 to 65535, e.g. 6379' };
  const db = r['redis_db'] === undefined ? 0 : integer(r['redis_db']);
  if (db === undefined || db < 0 || db > 100_000)
    return { key: 'redis_db', message: 'not a database number: write 0 or another small number' };
  const password = r['redis_password'];
  if (password !== undefined && typeof password !== 'string') return { key: 'redis_password', message: 'not a password: write a string' };
  const auth = password === undefined || password === '' ? '' : `:${encodeURIComponent(password)}@`;
  const name = isIPv6(host) ? `[${host}]` : host;
  const composed = `redis://${auth}${name}:${port}${db === 0 ? '' : `/${db}`}`;
  try {
    new URL(composed);
  } catch {
    return { key: 'redis_host', message: 'not a host name or address: write e.g. redis.default.svc' };
  }
  return { url: composed };
}

/** A whole number, from a number or a numeric string (an environment variable). */
function integer(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) ? n : undefined;
}

const OURS = {
  top: new Set(Object.keys(configSchema.shape)),
  general: new Set(Object.keys(generalSettings.shape)),
  router: new Set(Object.keys(routerSettings.shape)),
  params: new Set(Object.keys(litellmParams.shape)),
  info: new Set(Object.keys(modelInfo.shape)),
};

/**
 * LiteLLM access-control settings. An operator migrating would believe they still apply, so they are errors
 * rather than warnings: the same intent is written as policy rules or Envoy configuration.
 */
const SECURITY_SETTINGS = new Set([
  'allowed_ips',
  'admin_only_routes',
  'allowed_routes',
  'public_routes',
  'enable_jwt_auth',
  'litellm_jwtauth',
  'custom_auth',
  'custom_auth_settings',
]);

/** litellm_settings keys that mean the same as a router_settings key (LiteLLM applies them to its Router). */
const SETTINGS_TO_ROUTER: Readonly<Record<string, string>> = {
  num_retries: 'num_retries',
  fallbacks: 'fallbacks',
  request_timeout: 'timeout',
};

/** Returns a shallow-copied config with LiteLLM-only keys removed, and where they were. */
export function setAsideLiteLlmKeys(raw: Record<string, unknown>): CompatResult {
  const ignored: PathSegment[][] = [];
  const refused: PathSegment[][] = [];
  const moved = new Map<string, string>();
  const config: Record<string, unknown> = {};
  let environmentVariables: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'environment_variables' && isObject(v)) {
      environmentVariables = Object.fromEntries(Object.entries(v).map(([name, val]) => [name, String(val)]));
    } else if (!OURS.top.has(k) && LITELLM_TOP_LEVEL.has(k)) {
      ignored.push([k]);
    } else {
      config[k] = v;
    }
  }
  const general = config['general_settings'];
  if (isObject(general)) for (const k of Object.keys(general)) if (SECURITY_SETTINGS.has(k)) refused.push(['general_settings', k]);
  config['general_settings'] = strip(config['general_settings'], ['general_settings'], LITELLM_GENERAL_SETTINGS, OURS.general, ignored);
  const redis: Record<string, unknown> = {};
  const routerSection = config['router_settings'];
  if (isObject(routerSection)) {
    const rest = { ...routerSection };
    for (const k of LITELLM_REDIS_KEYS) {
      if (k in rest) {
        redis[k] = rest[k];
        delete rest[k];
      }
    }
    config['router_settings'] = rest;
  }
  config['router_settings'] = strip(config['router_settings'], ['router_settings'], LITELLM_ROUTER_SETTINGS, OURS.router, ignored);
  const settings = config['litellm_settings'];
  if (isObject(settings)) {
    const rest: Record<string, unknown> = {};
    const router = isObject(config['router_settings']) ? { ...config['router_settings'] } : {};
    for (const [k, v] of Object.entries(settings)) {
      const target = SETTINGS_TO_ROUTER[k];
      if (target !== undefined) {
        if (!(target in router)) {
          router[target] = v;
          moved.set(target, k);
        }
      } else if (LITELLM_SETTINGS.has(k)) {
        ignored.push(['litellm_settings', k]);
      } else {
        rest[k] = v;
      }
    }
    if (Object.keys(router).length > 0) config['router_settings'] = router;
    if (Object.keys(rest).length > 0) config['litellm_settings'] = rest;
    else delete config['litellm_settings'];
  }
  const list = config['model_list'];
  if (Array.isArray(list)) {
    config['model_list'] = list.map((entry: unknown, i) => {
      if (!isObject(entry)) return entry;
      return {
        ...entry,
        litellm_params: strip(entry['litellm_params'], ['model_list', i, 'litellm_params'], LITELLM_PARAMS, OURS.params, ignored),
        model_info: strip(entry['model_info'], ['model_list', i, 'model_info'], LITELLM_MODEL_INFO, OURS.info, ignored),
      };
    });
  }
  for (const k of Object.keys(config)) if (config[k] === undefined) delete config[k];
  return {
    config,
    ignored: ignored.filter((p) => !refused.some((r) => r.join('.') === p.join('.'))),
    refused,
    environmentVariables,
    moved,
    redis,
  };
}

function strip(
  section: unknown,
  path: PathSegment[],
  litellm: ReadonlySet<string>,
  ours: ReadonlySet<string>,
  ignored: PathSegment[][],
): unknown {
  if (!isObject(section)) return section;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(section)) {
    if (!ours.has(k) && litellm.has(k)) ignored.push([...path, k]);
    else out[k] = v;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
