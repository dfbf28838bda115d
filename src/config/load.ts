/**
 * Loads a config file: YAML → LiteLLM compatibility pass → `os.environ/` references → schema → cross
 * checks. Collects every issue with its YAML path and line instead of stopping at the first, so
 * `tollgate config check` can print them all. Secrets from the environment never enter an issue.
 */
import type { z } from 'zod';
import { configSchema, KEY_HASH_PATTERN, litellmParams, type Config, type PolicyRule } from './schema.js';
import { formatPath, type ConfigIssue, type PathSegment } from './issues.js';
import { litellmRedisUrl, setAsideLiteLlmKeys } from './litellm-compat.js';
import { crossCheck, crossWarnings } from './cross-check.js';
import { composeIncludes, type IncludeOptions } from './include.js';
import { parseYamlSource, type Locate } from './yaml-source.js';
import { Policy } from '../policy/rules.js';
import { sha256Hex } from '../identity/keys.js';

export const ENV_PREFIX = 'os.environ/';

export interface LoadResult {
  readonly config: Config | undefined;
  /** The compiled policy rules, present with `config`. */
  readonly policy: Policy | undefined;
  readonly issues: readonly ConfigIssue[];
  /** Keys accepted for LiteLLM compatibility but not used by tollgate, and similar notices. */
  readonly warnings: readonly ConfigIssue[];
  /** The files `include:` named (and theirs), read with the config: a reload watches them too. */
  readonly included: readonly string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Parses and validates config text. `env` is where `os.environ/NAME` is read (process.env at boot); `opts.file`
 * and `opts.readFile` let `include:` read the files it names, relative to `opts.file`'s directory.
 */
export function loadConfigText(text: string, env: Env, opts: IncludeOptions = {}): LoadResult {
  let included: readonly string[] = [];
  const none = (issues: ConfigIssue[], warnings: ConfigIssue[] = []): LoadResult => ({
    config: undefined,
    policy: undefined,
    warnings,
    // A credential's value merged into several deployments is reported once, where it is written.
    issues: unique(issues),
    included,
  });
  const main = parseYamlSource(text, opts.file);
  if ('issues' in main) return none(main.issues);
  const top = main.data ?? {};
  if (!isPlainObject(top))
    return none([main.locate({ path: '', message: 'the file must hold a YAML mapping (model_list:, general_settings:, ...)' }, [])]);
  const issues: ConfigIssue[] = [];
  const warnings: ConfigIssue[] = [];
  const composed = composeIncludes(main, top, opts, issues, warnings);
  included = composed.included;
  if (issues.length > 0) return none(issues, warnings);
  const raw = composed.data;
  const locateNode = composed.locate;
  const compat = setAsideLiteLlmKeys(raw);
  const locateMoved = movedBack(locateNode, compat.moved);
  // The compatibility pass names the places the file has; what comes after may name where it moved values.
  for (const e of compat.errors) issues.push(locateMoved({ path: formatPath(e.path), message: e.message }, e.path));
  for (const w of compat.warnings) warnings.push(locateMoved({ path: formatPath(w.path), message: w.message }, w.path));
  const locate = relocate(locateMoved, compat.relocated);
  const mergedEnv: Env = { ...compat.environmentVariables, ...env };

  const resolved = resolveEnvRefs(compat.config, [], mergedEnv, issues, locate);
  hashDeclaredKeys(compat.config, resolved, env, mergedEnv, issues, locate);
  useLitellmRedis(compat.redis, resolved, mergedEnv, issues, warnings, locate);
  checkCacheRedis(compat.cacheRedis, resolved, mergedEnv, issues, warnings, locate);
  const masterFromEnv = useLitellmMasterKey(resolved, mergedEnv);
  applyRouterDefaults(resolved);

  // Validate even after reference errors, so one run lists every problem; a path already reported
  // (an unset variable) is not reported again as "required".
  const parsed = configSchema.safeParse(resolved);
  if (!parsed.success) {
    const where = (i: ConfigIssue): string => `${i.file ?? ''}\n${i.path}`;
    const reported = new Set(issues.map(where));
    for (const z of parsed.error.issues.flatMap((z) => zodIssue(z, locate))) {
      // The master key from LITELLM_MASTER_KEY: say so, as the file has no such line.
      const i =
        masterFromEnv && z.path === 'general_settings.master_key' ? { path: z.path, message: `LITELLM_MASTER_KEY: ${z.message}` } : z;
      if (!reported.has(where(i))) issues.push(i);
    }
  }
  if (!parsed.success || issues.length > 0) {
    // The policy's rules are compiled all the same, where their shape is right, so one run lists their
    // errors too (not only once every other error is fixed).
    const reported = new Set(issues.map((i) => i.path));
    for (const issue of Policy.compile(wellFormedRules(resolved)).issues)
      if (!reported.has(issue.path)) issues.push(locate(issue, issue.segments));
    return none(issues, warnings);
  }
  for (const issue of crossCheck(parsed.data)) issues.push(locate(issue, issue.segments));
  const compiled = Policy.compile(parsed.data.policy.rules);
  for (const issue of compiled.issues) issues.push(locate(issue, issue.segments));
  if (issues.length > 0 || compiled.policy === undefined) return none(issues, warnings);
  for (const w of crossWarnings(parsed.data)) warnings.push(locate({ path: w.path, message: w.message }, w.segments));
  return { config: deepFreeze(parsed.data), policy: compiled.policy, issues, warnings, included };
}

/**
 * The `policy.rules` of a config that failed validation, each at its own index, with a string `name` and
 * `when` (one without them is reported by the schema already): what Policy.compile can check. Entries of
 * another shape become rules that always compile (`false`), so the others keep their YAML paths.
 */
function wellFormedRules(resolved: unknown): PolicyRule[] {
  const rules = (resolved as { policy?: { rules?: unknown } } | null)?.policy?.rules;
  if (!Array.isArray(rules)) return [];
  return rules.map((r: unknown): PolicyRule => {
    const { name, when } = (typeof r === 'object' && r !== null ? r : {}) as { name?: unknown; when?: unknown };
    return typeof name === 'string' && typeof when === 'string' ? { name, when, deny: '' } : { name: '', when: 'false', deny: '' };
  });
}

/**
 * `litellm_settings.cache_params` naming a Redis (LiteLLM's response cache) while tollgate has none for its
 * limits: the operator runs several replicas sharing that Redis, and tollgate's rpm, tpm, parallel and budget
 * counters would silently count per replica. Refused, telling them to name the Redis for limits (not guessed
 * from the cache's: that is often another instance); with one, cache_params is only ignored.
 */
function checkCacheRedis(
  path: PathSegment[] | undefined,
  resolved: unknown,
  env: Env,
  issues: ConfigIssue[],
  warnings: ConfigIssue[],
  locate: Locate,
): void {
  if (path === undefined) return;
  const general = isPlainObject(resolved) && isPlainObject(resolved['general_settings']) ? resolved['general_settings'] : {};
  if (general['redis_url'] !== undefined || (env['REDIS_URL'] ?? '') !== '') {
    warnings.push(
      locate({ path: formatPath(path), message: "LiteLLM's response cache: tollgate does not cache responses; ignored" }, path),
    );
    return;
  }
  issues.push(
    locate(
      {
        path: formatPath(path),
        message:
          'a Redis response cache, so this proxy runs with a shared Redis, but tollgate has none for its limits and budgets (they would count per replica): set general_settings.redis_url (or REDIS_URL) to the Redis for limits (this one, if it may hold them); tollgate does not cache responses, so cache_params is then ignored',
      },
      path,
    ),
  );
}

/**
 * LiteLLM reads the master key from general_settings.master_key, else from the LITELLM_MASTER_KEY
 * environment variable (litellm/proxy/proxy_server.py, `ProxyConfig.load_config`). Returns true when the
 * variable supplied it.
 */
function useLitellmMasterKey(resolved: unknown, env: Env): boolean {
  const fromEnv = env['LITELLM_MASTER_KEY'];
  if (!isPlainObject(resolved) || fromEnv === undefined || fromEnv === '') return false;
  const general = resolved['general_settings'];
  if (general !== undefined && !isPlainObject(general)) return false; // the schema reports it
  if (general?.['master_key'] !== undefined) return false;
  resolved['general_settings'] = { ...general, master_key: fromEnv };
  return true;
}

/**
 * A deployment's timeout is its litellm_params.timeout, else router_settings.timeout (which
 * litellm_settings.request_timeout fills when the router sets none), else tollgate's default of 600 s
 * (the Router's `timeout or litellm.request_timeout`, with the deployment's own winning; LiteLLM docs
 * proxy/timeout); its stream_timeout likewise from router_settings.stream_timeout, and its
 * max_parallel_requests from router_settings.default_max_parallel_requests (LiteLLM's Router takes the
 * deployment's own first, then that default: router_utils/client_initalization_utils.py). Written into each
 * entry, so the config says what every deployment uses.
 */
function applyRouterDefaults(resolved: unknown): void {
  if (!isPlainObject(resolved)) return;
  const router = resolved['router_settings'];
  const list = resolved['model_list'];
  if (!isPlainObject(router) || !Array.isArray(list)) return;
  for (const [from, field] of ROUTER_DEFAULTS) {
    const value = router[from];
    // An invalid one is reported once, at router_settings, not again in every entry.
    if (value === undefined || !litellmParams.shape[field].safeParse(value).success) continue;
    resolved['model_list'] = (resolved['model_list'] as unknown[]).map((entry: unknown) => {
      if (!isPlainObject(entry) || !isPlainObject(entry['litellm_params']) || entry['litellm_params'][field] !== undefined) return entry;
      return { ...entry, litellm_params: { ...entry['litellm_params'], [field]: value } };
    });
  }
}

/** router_settings keys that are the default of a litellm_params key. */
const ROUTER_DEFAULTS = [
  ['timeout', 'timeout'],
  ['stream_timeout', 'stream_timeout'],
  ['default_max_parallel_requests', 'max_parallel_requests'],
] as const;

/**
 * LiteLLM's router Redis (router_settings.redis_host, redis_port, redis_password, redis_db, or redis_url)
 * becomes general_settings.redis_url, so limits stay shared across replicas for a config written for
 * LiteLLM. An empty redis_password (a variable set to '') means none. general_settings.redis_url, if set,
 * wins, and the router's keys are reported as ignored.
 */
function useLitellmRedis(
  parts: Readonly<Record<string, unknown>>,
  resolved: unknown,
  env: Env,
  issues: ConfigIssue[],
  warnings: ConfigIssue[],
  locate: Locate,
): void {
  const keys = Object.keys(parts);
  if (keys.length === 0 || !isPlainObject(resolved)) return;
  const general = isPlainObject(resolved['general_settings']) ? resolved['general_settings'] : {};
  const ignore = (why: string): void => {
    for (const k of keys) {
      const path = ['router_settings', k];
      warnings.push(locate({ path: formatPath(path), message: why }, path));
    }
  };
  if (general['redis_url'] !== undefined) return ignore('general_settings.redis_url is set and used; ignored');
  if (parts['redis_url'] === undefined && parts['redis_host'] === undefined)
    return ignore('without redis_host (or redis_url) LiteLLM connects no Redis; ignored');
  const values: Record<string, unknown> = {};
  for (const k of keys) {
    const v = parts[k];
    const path = ['router_settings', k];
    const emptyPassword =
      k === 'redis_password' && typeof v === 'string' && v.startsWith(ENV_PREFIX) && env[v.slice(ENV_PREFIX.length)] === '';
    values[k] = emptyPassword ? '' : resolveEnvRefs(v, path, env, issues, locate);
    if (values[k] === undefined) return; // reported
  }
  const url = litellmRedisUrl(values);
  if (url === undefined) return;
  if ('key' in url) {
    const path = ['router_settings', url.key];
    issues.push(locate({ path: formatPath(path), message: url.message }, path));
    return;
  }
  resolved['general_settings'] = { ...general, redis_url: url.url };
  if (env['REDIS_URL'] !== undefined && env['REDIS_URL'] !== '') {
    const path = ['router_settings', keys[0] ?? 'redis_host'];
    warnings.push(locate({ path: formatPath(path), message: "REDIS_URL is set too: this config's Redis is used instead" }, path));
  }
}

/**
 * Issues about values the compatibility pass moved within a model_list entry (a deployment's tpm, a
 * credential's api_key merged in) point back at where the file has them.
 */
function relocate(locate: Locate, relocated: ReadonlyMap<string, readonly PathSegment[]>): Locate {
  if (relocated.size === 0) return locate;
  return (issue, path) => {
    for (let n = path.length; n > 0; n--) {
      const origin = relocated.get(formatPath(path.slice(0, n)));
      if (origin === undefined) continue;
      const back = [...origin, ...path.slice(n)];
      return locate({ ...issue, path: formatPath(back) }, back);
    }
    return locate(issue, path);
  };
}

/** Issues without repeats (same file, path and message), in their order. */
function unique(issues: readonly ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.file ?? ''}\n${i.path}\n${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * Issues about keys the compatibility pass moved from litellm_settings into router_settings point back
 * at where the user wrote them.
 */
function movedBack(locate: Locate, moved: ReadonlyMap<string, string>): Locate {
  if (moved.size === 0) return locate;
  return (issue, path) => {
    const origin = path[0] === 'router_settings' && typeof path[1] === 'string' ? moved.get(path[1]) : undefined;
    if (origin === undefined) return locate(issue, path);
    const back = ['litellm_settings', origin, ...path.slice(2)];
    return locate({ ...issue, path: formatPath(back) }, back);
  };
}

function resolveEnvRefs(value: unknown, path: PathSegment[], env: Env, issues: ConfigIssue[], locate: Locate): unknown {
  if (typeof value === 'string') {
    if (!value.startsWith(ENV_PREFIX)) return value;
    const name = value.slice(ENV_PREFIX.length);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      issues.push(locate({ path: formatPath(path), message: `"${ENV_PREFIX}" must be followed by an environment variable name` }, path));
      return undefined;
    }
    const v = env[name];
    if (v === undefined || v === '') {
      issues.push(locate({ path: formatPath(path), message: `environment variable ${name} is not set` }, path));
      return undefined;
    }
    return v;
  }
  if (Array.isArray(value)) return value.map((v, i) => resolveEnvRefs(v, [...path, i], env, issues, locate));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = resolveEnvRefs(v, [...path, k], env, issues, locate);
    return out;
  }
  return value;
}

/**
 * `keys[].key` is `sha256:<hex>` in the file, or `os.environ/NAME` holding `sk-…`, which is hashed here
 * so the clear key never reaches the config object. A clear key written in the file is refused.
 */
function hashDeclaredKeys(
  raw: Record<string, unknown>,
  resolved: unknown,
  processEnv: Env,
  env: Env,
  issues: ConfigIssue[],
  locate: Locate,
): void {
  const rawKeys = raw['keys'];
  const outKeys = isPlainObject(resolved) ? resolved['keys'] : undefined;
  if (!Array.isArray(rawKeys) || !Array.isArray(outKeys)) return;
  rawKeys.forEach((entry: unknown, i) => {
    if (!isPlainObject(entry)) return;
    const rawKey = entry['key'];
    const out: unknown = outKeys[i];
    if (typeof rawKey !== 'string' || !isPlainObject(out)) return;
    const path: PathSegment[] = ['keys', i, 'key'];
    if (rawKey.startsWith(ENV_PREFIX)) {
      const name = rawKey.slice(ENV_PREFIX.length);
      const value = env[name];
      if (value === undefined || value === '') return; // reported by resolveEnvRefs
      if (processEnv[name] === undefined) {
        // Supplied by the file's own environment_variables: a clear key in the file after all.
        issues.push(
          locate(
            {
              path: formatPath(path),
              message: `${name} comes from environment_variables in this file: a key in clear text; set it in the process environment or write sha256:<hex>`,
            },
            path,
          ),
        );
        return;
      }
      if (!value.startsWith('sk-') || value.length < 8) {
        issues.push(
          locate(
            { path: formatPath(path), message: `environment variable ${rawKey.slice(ENV_PREFIX.length)} does not hold an sk- key` },
            path,
          ),
        );
        return;
      }
      out['key'] = `sha256:${sha256Hex(value)}`;
    } else if (rawKey.startsWith('sk-')) {
      issues.push(
        locate(
          {
            path: formatPath(path),
            message: 'a key in clear text: write its hash (tollgate keys hash sk-...) as sha256:<hex>, or os.environ/NAME',
          },
          path,
        ),
      );
    } else if (!KEY_HASH_PATTERN.test(rawKey.toLowerCase())) {
      return; // the schema reports it
    } else {
      out['key'] = rawKey.toLowerCase();
    }
  });
}

function zodIssue(issue: z.core.$ZodIssue, locate: Locate): ConfigIssue[] {
  const path = issue.path.filter((p): p is PathSegment => typeof p === 'string' || typeof p === 'number');
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) =>
      locate({ path: formatPath([...path, k]), message: 'unknown key: remove it or check its spelling' }, [...path, k]),
    );
  }
  if (issue.code === 'invalid_union' && path.length > 0) {
    return [locate({ path: formatPath(path), message: 'not a valid value here' }, path)];
  }
  return [locate({ path: formatPath(path), message: humanMessage(issue) }, path)];
}

function humanMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') {
    return issue.message.includes('received undefined') ? `required (${issue.expected})` : issue.message.replace(/^Invalid input: /, '');
  }
  return issue.message.replace(/^Invalid (option|input): /, '');
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}
