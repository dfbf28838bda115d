/**
 * A LiteLLM proxy config.yaml must keep loading. Keys that LiteLLM knows and tollgate does not use are set
 * aside here, each reported as a warning (never silently); keys neither knows stay in place so the strict
 * schema reports them as errors. A few litellm_settings have a tollgate equivalent and are moved there; a
 * deployment's rpm / tpm written where LiteLLM also reads them, and the credential_list values it names, are
 * moved into its litellm_params; router_settings.disable_cooldowns becomes cooldown_time: 0.
 */
import { isIPv6 } from 'node:net';
import { formatPath, type PathSegment } from './issues.js';
import {
  LITELLM_GENERAL_SETTINGS,
  LITELLM_MODEL_INFO,
  LITELLM_PARAMS,
  LITELLM_ROUTER_SETTINGS,
  LITELLM_SETTINGS,
  LITELLM_TOP_LEVEL,
} from './litellm-keys.js';
import { configSchema, generalSettings, isEmpty, litellmParams, MODEL_MODES, modelInfo, routerSettings } from './schema.js';

/** A key the compatibility pass set aside, and what to tell the operator about it. */
export interface CompatNote {
  readonly path: PathSegment[];
  readonly message: string;
}

export interface CompatResult {
  readonly config: Record<string, unknown>;
  /** LiteLLM keys tollgate accepts without using them (or uses otherwise), each with why. */
  readonly warnings: readonly CompatNote[];
  readonly environmentVariables: Readonly<Record<string, string>>;
  /**
   * LiteLLM settings tollgate does not implement and that would allow more than the operator configured
   * (access control, limits, budgets): refused, since ignoring them would open a door.
   */
  readonly errors: readonly CompatNote[];
  /** router_settings keys that came from litellm_settings: router key → litellm_settings key. */
  readonly moved: ReadonlyMap<string, string>;
  /**
   * Values moved within a model_list entry, by their new path (formatPath) → where the file has them: a
   * deployment's `tpm` or `model_info.rpm` now in litellm_params, a credential's value merged in. Issues about
   * the new place are reported at the file's.
   */
  readonly relocated: ReadonlyMap<string, readonly PathSegment[]>;
  /**
   * LiteLLM's Redis for its router (`router_settings.redis_url`, or `redis_host`, `redis_port`,
   * `redis_password`, `redis_db`), as written (`os.environ/` references unresolved): tollgate's limits
   * store when `general_settings.redis_url` is not set (litellmRedisUrl).
   */
  readonly redis: Readonly<Record<string, unknown>>;
  /**
   * `litellm_settings.cache_params` naming a Redis response cache: an operator running LiteLLM so has a
   * shared Redis in mind, which tollgate's limits need as `general_settings.redis_url` (the loader checks).
   */
  readonly cacheRedis: PathSegment[] | undefined;
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
  'enforce_rbac',
]);
const SECURITY_MESSAGE =
  'a LiteLLM access-control setting that tollgate does not implement: write it as policy.rules or in Envoy, and remove it';

const ALLOWED_IPS_MESSAGE =
  "a LiteLLM access-control setting that tollgate does not implement: write it as a policy rule over the client's address, as " +
  `when: "!(request.source == '10.0.0.5' || request.source.startsWith('192.168.1.'))", or in Envoy (RBAC), and remove it`;

const PER_SECOND =
  'tollgate prices by token (input_cost_per_token, output_cost_per_token): priced by the second, spend would stay 0 and no budget would bite; then remove this';

/**
 * LiteLLM callbacks that guard requests (guardrails: PII masking, secret and prompt-injection detection,
 * moderation). tollgate runs none; a migrated config that names one believed its prompts were checked.
 */
const GUARD_CALLBACKS = new Set([
  'aim',
  'aporia',
  'aporia_prompt_injection',
  'azure_content_safety',
  'bedrock_guardrails',
  'detect_prompt_injection',
  'google_text_moderation',
  'guardrails_ai',
  'hide_secrets',
  'lakera',
  'lakera_prompt_injection',
  'lasso',
  'llamaguard_moderations',
  'llmguard_moderations',
  'openai_moderations',
  'pangea',
  'presidio',
  'secret_detection',
]);
const CALLBACK_KEYS = new Set(['callbacks', 'success_callback', 'failure_callback', 'input_callback', 'service_callback']);

/**
 * LiteLLM limits, budgets and denials tollgate does not enforce. Accepting them with a warning would let a
 * migrated proxy allow more than its operator configured, so each is an error saying what to use instead.
 */
const LIMIT_SETTINGS: Readonly<Record<'general' | 'settings' | 'params' | 'info', Readonly<Record<string, string>>>> = {
  general: {
    max_parallel_requests:
      'tollgate does not read max_parallel_requests here: cap the requests in flight to a deployment with its litellm_params.max_parallel_requests (or router_settings.default_max_parallel_requests for all), and those of a caller with max_parallel_requests on keys[], teams[] or users[]; then remove this',
    global_max_parallel_requests:
      "tollgate has no proxy-wide cap on parallel requests: use Envoy's circuit breaker (max_requests) or max_parallel_requests on keys[], teams[] and users[]; then remove this",
    max_in_flight_requests_per_worker:
      "tollgate has no cap on requests in flight: use Envoy's circuit breaker (max_requests) or max_parallel_requests on keys[], teams[] and users[]; then remove this",
  },
  settings: {
    default_key_generate_params:
      'tollgate gives keys made by /key/generate no defaults: send max_budget, models and the limits in each call (or declare the keys under keys[]); then remove this',
    default_internal_user_params:
      'tollgate gives users made by /user/new no defaults: send max_budget and the limits in each call (or declare them under users[]); then remove this',
    guardrails:
      'tollgate runs no guardrails (PII masking, prompt-injection checks): run them in front of it (an Envoy ext_proc filter) or at the model server; then remove this',
    max_budget: 'tollgate has no proxy-wide budget: set max_budget (and budget_duration) on keys[], teams[] or users[]; then remove this',
    budget_duration:
      'tollgate has no proxy-wide budget: set budget_duration (with max_budget) on keys[], teams[] or users[]; then remove this',
    max_end_user_budget:
      "tollgate does not budget end users (a request's `user` field): set max_budget on users[] (the JWT user or a key's user_id), or on keys[]; then remove this",
    max_end_user_budget_id:
      "tollgate does not budget end users (a request's `user` field): set max_budget on users[] (the JWT user or a key's user_id), or on keys[]; then remove this",
    max_internal_user_budget:
      'tollgate gives users no default budget: set max_budget (and budget_duration) on users[], or on their keys[]; then remove this',
    default_max_internal_user_budget:
      'tollgate gives users no default budget: set max_budget (and budget_duration) on users[], or on their keys[]; then remove this',
    blocked_user_list:
      'tollgate does not read a blocked-user list: write a policy rule (e.g. when: "jwt.user in [\'bad-user\']"), or set blocked: true on their keys[]; then remove this',
    upperbound_key_generate_params:
      'tollgate does not cap what /key/generate may set: only the master key and auth.admin_groups may generate keys; then remove this',
  },
  params: {
    input_cost_per_second: PER_SECOND,
    output_cost_per_second: PER_SECOND,
    max_budget: 'tollgate has no per-deployment budget: set max_budget on keys[], teams[] or users[], or rpm / tpm here; then remove this',
  },
  info: {
    input_cost_per_second: PER_SECOND,
    output_cost_per_second: PER_SECOND,
    access_groups:
      'tollgate has no model access groups: list the model aliases in keys[].models or teams[].models (or write a policy rule over `model`); then remove this',
  },
};

/**
 * router_settings keys tollgate has no counterpart for and refuses unless they ask for nothing (null, {} or
 * []): budgets per provider, and second names for model groups (scripts/chart-schema.mjs types them so).
 */
export const EMPTY_ONLY_ROUTER_SETTINGS = ['provider_budget_config', 'model_group_alias'] as const;

/** general_settings.disable_reset_budget: true — LiteLLM's budgets then never reset; tollgate's would. */
const NO_BUDGET_RESET =
  'tollgate resets a budget at the end of each budget_duration, so spend past it would be allowed again: for a budget that never resets, leave budget_duration out of that key, team or user (keys[], teams[], users[]); then remove this';
/** router_settings.provider_budget_config: LiteLLM stops routing to a provider past its budget. */
const PROVIDER_BUDGETS =
  'tollgate does not budget providers or deployments, so they would be used past these budgets: set max_budget (and budget_duration) on keys[], teams[] or users[], or rpm / tpm on the deployments; then remove this';

/**
 * router_settings.model_group_alias (`{gpt-4: llama}` or `{gpt-4: {model: llama, hidden: true}}`): LiteLLM
 * routes a request for the alias to the group (Router._get_model_from_alias), checking keys' `models`
 * against the name sent. tollgate has no second name for a group, and guessing one would widen or narrow
 * what keys, teams and policy rules written for either name allow, so each alias is refused, saying how to
 * serve it as a model of its own.
 */
function groupAliasErrors(aliases: unknown, path: PathSegment[] = ['router_settings', 'model_group_alias']): CompatNote[] {
  const how = (alias: string, group: string): string =>
    `tollgate has no model group aliases, so a client sending "${alias}" would get 404 model_not_found: to serve that name, add a model_list entry with model_name: ${alias} and the litellm_params of each ${group} deployment, and allow "${alias}" where keys[].models, teams[].models or policy rules should (it is listed by GET /v1/models, hidden or not); then remove this`;
  if (!isObject(aliases)) return [{ path, message: how('<alias>', 'target') }];
  return Object.entries(aliases).map(([alias, target]) => {
    const group =
      typeof target === 'string' ? target : isObject(target) && typeof target['model'] === 'string' ? target['model'] : undefined;
    return { path: [...path, alias], message: how(alias, group === undefined ? 'target' : `"${group}"`) };
  });
}

/**
 * router_settings.disable_cooldowns: true is tollgate's cooldown_time: 0 (LiteLLM's cooldown handler returns
 * before cooling anything down); false changes nothing. With a cooldown_time other than 0 beside it, which
 * was meant is not for tollgate to guess.
 */
function cooldownsOff(config: Record<string, unknown>, disable: unknown, moved: ReadonlyMap<string, string>, errors: CompatNote[]): void {
  if (disable === undefined || disable === null || disable === false) return;
  const path: PathSegment[] = ['router_settings', 'disable_cooldowns'];
  if (disable !== true) {
    errors.push({ path, message: 'not true or false: write true (no deployment is ever cooled down, as cooldown_time: 0) or false' });
    return;
  }
  const router = config['router_settings'] ?? {};
  if (!isObject(router)) return; // the schema reports it
  const time = router['cooldown_time'];
  if (time === undefined || time === null || time === 0) {
    config['router_settings'] = { ...router, cooldown_time: 0 };
    return;
  }
  const from = moved.get('cooldown_time');
  errors.push({
    path,
    message: `${from === undefined ? 'router_settings.cooldown_time' : `litellm_settings.${from}`} is set too and cools deployments down: keep one (disable_cooldowns: true is cooldown_time: 0)`,
  });
}

/**
 * litellm_params LiteLLM sends to the backend as request parameters when the client sets none
 * (`LiteLLM_Params` is `extra="allow"`: every other key reaches `litellm.completion()`). Sources: OpenAI's
 * chat/completions parameters; vLLM's extra sampling parameters (docs.vllm.ai, "OpenAI-Compatible Server");
 * LiteLLM's `extra_body`, `additional_drop_params`, `cache_control_injection_points`.
 */
export const COMPLETION_DEFAULTS: ReadonlySet<string> = new Set([
  'add_generation_prompt',
  'additional_drop_params',
  'allowed_token_ids',
  'audio',
  'bad_words',
  'best_of',
  'cache_control_injection_points',
  'chat_template',
  'chat_template_kwargs',
  'continue_final_message',
  'echo',
  'extra_body',
  'frequency_penalty',
  'function_call',
  'functions',
  'guided_choice',
  'guided_grammar',
  'guided_json',
  'guided_regex',
  'ignore_eos',
  'include_stop_str_in_output',
  'length_penalty',
  'logit_bias',
  'logprobs',
  'max_completion_tokens',
  'max_tokens',
  'min_p',
  'min_tokens',
  'modalities',
  'n',
  'parallel_tool_calls',
  'prediction',
  'presence_penalty',
  'priority',
  'prompt_logprobs',
  'reasoning_effort',
  'repetition_penalty',
  'response_format',
  'seed',
  'service_tier',
  'skip_special_tokens',
  'spaces_between_special_tokens',
  'stop',
  'stop_token_ids',
  'stream_options',
  'structured_outputs',
  'suffix',
  'temperature',
  'thinking',
  'tool_choice',
  'tools',
  'top_k',
  'top_logprobs',
  'top_p',
  'truncate_prompt_tokens',
  'use_beam_search',
  'user',
  'verbosity',
  'web_search_options',
]);
const COMPLETION_DEFAULT_MESSAGE =
  'a request parameter LiteLLM adds when the client sets none; tollgate does not add it (requests reach the backend as the client sent them): set it in the clients, or as the backend default (vLLM --generation-config / --override-generation-config)';

/**
 * model_info keys that change what LiteLLM does (routing, health checks, pricing, limits): accepted with a
 * warning, as tollgate does not act on them. LiteLLM's other model_info keys are information (`supports_*`,
 * …) and are accepted quietly, as are the free-form ones people write for themselves (`description`,
 * `metadata`); other keys LiteLLM does not define (`ModelInfo` is `extra="allow"`) are accepted with a
 * warning naming them.
 */
/** model_info keys people write for themselves (LiteLLM's docs and UI show them), which nothing reads. */
const FREE_FORM_INFO = new Set(['description', 'metadata', 'notes', 'owner', 'tags']);

function behaviouralModelInfo(k: string): boolean {
  if (!LITELLM_MODEL_INFO.has(k)) return false;
  if (k.startsWith('supports_') || k.startsWith('bedrock_')) return false;
  return !INFORMATIONAL_MODEL_INFO.has(k);
}
const INFORMATIONAL_MODEL_INFO = new Set([
  'created_at',
  'created_by',
  'db_model',
  'discoverable',
  'litellm_provider',
  'max_input_tokens',
  'output_vector_size',
  'provider_specific_entry',
  'supported_environments',
  'supported_openai_params',
  'team_public_model_name',
  'updated_at',
  'updated_by',
  'version',
]);

const SERVED_MODES = new Set(['chat', 'completion', 'embedding']);

/** litellm_settings keys that mean the same as a router_settings key (LiteLLM applies them to its Router). */
const SETTINGS_TO_ROUTER: Readonly<Record<string, string>> = {
  num_retries: 'num_retries',
  fallbacks: 'fallbacks',
  request_timeout: 'timeout',
  allowed_fails: 'allowed_fails',
  cooldown_time: 'cooldown_time',
};

const IGNORED = 'a LiteLLM setting that tollgate does not use; ignored';

/** Top-level sections; each may be written empty (`general_settings:`), which LiteLLM reads as none. */
const SECTIONS = new Set([...OURS.top, ...LITELLM_TOP_LEVEL]);

/** Returns a shallow-copied config with LiteLLM-only keys removed, and where they were. */
export function setAsideLiteLlmKeys(raw: Record<string, unknown>): CompatResult {
  const warnings: CompatNote[] = [];
  const errors: CompatNote[] = [];
  const ignored = (path: PathSegment[], message = IGNORED): void => {
    warnings.push({ path, message });
  };
  const moved = new Map<string, string>();
  const config: Record<string, unknown> = {};
  let environmentVariables: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw)) {
    if (v === null && SECTIONS.has(k)) continue; // `general_settings:` with nothing under it: LiteLLM reads None as {}
    // `x-…` keys hold YAML anchors for `<<: *name` merges (the docker-compose and OpenAPI convention).
    if (k.startsWith('x-')) continue;
    if (k === 'environment_variables' && isObject(v)) {
      environmentVariables = Object.fromEntries(Object.entries(v).map(([name, val]) => [name, String(val)]));
    } else if (k === 'guardrails' && v !== null && !(Array.isArray(v) && v.length === 0)) {
      errors.push({ path: [k], message: LIMIT_SETTINGS.settings['guardrails'] as string });
    } else if (!OURS.top.has(k) && LITELLM_TOP_LEVEL.has(k)) {
      ignored([k]);
    } else {
      config[k] = v;
    }
  }
  const general = config['general_settings'];
  if (isObject(general)) {
    const rest: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(general)) {
      const limit = own(LIMIT_SETTINGS.general, k);
      if (k === 'allowed_ips') errors.push({ path: ['general_settings', k], message: ALLOWED_IPS_MESSAGE });
      else if (k === 'disable_reset_budget' && v === true) errors.push({ path: ['general_settings', k], message: NO_BUDGET_RESET });
      else if (SECURITY_SETTINGS.has(k)) errors.push({ path: ['general_settings', k], message: SECURITY_MESSAGE });
      else if (limit !== undefined) errors.push({ path: ['general_settings', k], message: limit });
      else if (!OURS.general.has(k) && LITELLM_GENERAL_SETTINGS.has(k)) ignored(['general_settings', k]);
      else rest[k] = v;
    }
    config['general_settings'] = rest;
  }
  const redis: Record<string, unknown> = {};
  let disableCooldowns: unknown;
  const routerSection = config['router_settings'];
  if (isObject(routerSection)) {
    const rest = { ...routerSection };
    for (const k of LITELLM_REDIS_KEYS) {
      if (k in rest) {
        redis[k] = rest[k];
        delete rest[k];
      }
    }
    for (const k of EMPTY_ONLY_ROUTER_SETTINGS) {
      if (isEmpty(rest[k])) continue; // asks for nothing: ignored, with a warning
      errors.push(
        ...(k === 'model_group_alias' ? groupAliasErrors(rest[k]) : [{ path: ['router_settings', k], message: PROVIDER_BUDGETS }]),
      );
      delete rest[k];
    }
    if ('disable_cooldowns' in rest) {
      disableCooldowns = rest['disable_cooldowns'];
      delete rest['disable_cooldowns'];
    }
    if (rest['enable_tag_filtering'] === true) {
      errors.push({
        path: ['router_settings', 'enable_tag_filtering'],
        message:
          'tollgate does not route by tags, so no deployment would be kept from a request: give tagged deployments an alias of their own and allow it per key or team (models), or write a policy rule; then remove this',
      });
      delete rest['enable_tag_filtering'];
    }
    config['router_settings'] = rest;
  }
  config['router_settings'] = strip(config['router_settings'], ['router_settings'], LITELLM_ROUTER_SETTINGS, OURS.router, ignored);
  let cacheRedis: PathSegment[] | undefined;
  const settings = config['litellm_settings'];
  if (isObject(settings)) {
    const rest: Record<string, unknown> = {};
    const router = isObject(config['router_settings']) ? { ...config['router_settings'] } : {};
    for (const [k, v] of Object.entries(settings)) {
      const target = own(SETTINGS_TO_ROUTER, k);
      const limit = own(LIMIT_SETTINGS.settings, k);
      if (target !== undefined) {
        // docs.litellm.ai/docs/proxy/config_settings, router_settings: "settings on router_settings will
        // override those on litellm_settings".
        if (target in router) {
          if (v !== null && v !== undefined)
            ignored(['litellm_settings', k], `router_settings.${target} is set too and wins (as in LiteLLM): this value is not used`);
        } else {
          router[target] = v;
          moved.set(target, k);
        }
      } else if (limit !== undefined) {
        errors.push({ path: ['litellm_settings', k], message: limit });
      } else if (CALLBACK_KEYS.has(k) && guards(v).length > 0) {
        errors.push({
          path: ['litellm_settings', k],
          message: `${guards(v).join(', ')}: LiteLLM guardrails that tollgate does not run; run them in front of it (an Envoy ext_proc filter) or at the model server, and remove them here (other callbacks may stay: they are ignored)`,
        });
      } else if (k === 'model_alias_map' && !isEmpty(v)) {
        // litellm.model_alias_map: a model name sent, answered by another (`{gpt-3.5-turbo: llama}`): the same
        // second name for a model as router_settings.model_group_alias, refused for the same reasons.
        errors.push(...groupAliasErrors(v, ['litellm_settings', 'model_alias_map']));
      } else if (k === 'cache_params' && isObject(v) && namesRedis(v)) {
        cacheRedis = ['litellm_settings', k];
      } else if (LITELLM_SETTINGS.has(k)) {
        ignored(['litellm_settings', k]);
      } else {
        rest[k] = v;
      }
    }
    if (Object.keys(router).length > 0) config['router_settings'] = router;
    if (Object.keys(rest).length > 0) config['litellm_settings'] = rest;
    else delete config['litellm_settings'];
  }
  cooldownsOff(config, disableCooldowns, moved, errors);
  const relocated = new Map<string, readonly PathSegment[]>();
  const credentials = readCredentials(config, errors, ignored);
  const list = config['model_list'];
  if (Array.isArray(list)) {
    config['model_list'] = list.map((entry: unknown, i) => {
      if (!isObject(entry)) return entry;
      const at = (section: string, k: string): PathSegment[] => ['model_list', i, section, k];
      const params = entry['litellm_params'];
      let outParams: unknown = params;
      if (isObject(params)) {
        const rest = setAsideParams(params, (k) => at('litellm_params', k), errors, ignored);
        const model = rest['model'];
        if (typeof model === 'string' && model.startsWith('text-completion-openai/'))
          ignored(
            at('litellm_params', 'model'),
            'text-completion-openai/: an OpenAI-compatible server, as openai/; tollgate forwards each request to the API it came to (LiteLLM turns chat requests into /v1/completions prompts, tollgate does not)',
          );
        const credential = rest['litellm_credential_name'];
        delete rest['litellm_credential_name'];
        // LiteLLM skips a credential name of None (`if credential_name and litellm.credential_list`).
        if (credential !== undefined && credential !== null) {
          const path = at('litellm_params', 'litellm_credential_name');
          const found = typeof credential === 'string' ? credentials.get(credential) : undefined;
          if (typeof credential !== 'string' || credential === '')
            errors.push({ path, message: 'not a credential name: write the credential_name of a credential_list entry' });
          else if (found === undefined)
            errors.push({
              path,
              message: `no credential_list entry is named ${JSON.stringify(credential)}, so this deployment would reach its backend without its credentials: add one (credential_name: ${JSON.stringify(credential)}, credential_values: {api_key: os.environ/NAME, api_base: ...}) or correct the name`,
            });
          else
            for (const [k, v] of Object.entries(found.values)) {
              // The deployment's own value wins (LiteLLM's load_credentials_from_list: `if key not in kwargs`).
              if (k === 'model' || !OURS.params.has(k) || Object.hasOwn(rest, k) || ownLimit(entry, k)) continue;
              rest[k] = v;
              relocated.set(formatPath(at('litellm_params', k)), ['credential_list', found.index, 'credential_values', k]);
            }
        }
        outParams = rest;
      }
      const info = entry['model_info'];
      let outInfo: unknown = info === null ? {} : info;
      if (isObject(info)) {
        const rest: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(info)) {
          const limit = zeroPrice(k, v) ? undefined : own(LIMIT_SETTINGS.info, k);
          if (OURS.info.has(k)) rest[k] = v;
          else if (limit !== undefined) errors.push({ path: at('model_info', k), message: limit });
          else if (behaviouralModelInfo(k)) ignored(at('model_info', k));
          else if (!LITELLM_MODEL_INFO.has(k) && nearMiss(k, OURS.info))
            rest[k] = v; // a misspelt key tollgate reads (input_cost_per_tokens): the schema reports it
          // A key neither reads (`description`, or a misspelling far from any: `inputCostPerToken`) is kept as
          // information, as LiteLLM's ModelInfo (extra="allow") keeps it — but said, so a price written wrong
          // does not make a model free without a word.
          else if (!LITELLM_MODEL_INFO.has(k) && !FREE_FORM_INFO.has(k))
            ignored(at('model_info', k), 'not a model_info key tollgate or LiteLLM reads: kept as information only (check its spelling)');
          // else: LiteLLM's own information (supports_*, …), accepted quietly
        }
        const mode = rest['mode'];
        if (typeof mode === 'string' && (MODEL_MODES as readonly string[]).includes(mode) && !SERVED_MODES.has(mode))
          ignored(
            at('model_info', 'mode'),
            `tollgate serves /v1/chat/completions, /v1/completions and /v1/embeddings only: this deployment gets no ${mode} requests`,
          );
        outInfo = rest;
      }
      const out: Record<string, unknown> = { ...entry, litellm_params: outParams, model_info: outInfo };
      if (isObject(outParams) && isObject(outInfo)) deploymentLimits(out, outParams, outInfo, i, errors, relocated);
      return out;
    });
  }
  for (const k of Object.keys(config)) if (config[k] === undefined) delete config[k];
  return { config, warnings, errors, environmentVariables, moved, relocated, redis, cacheRedis };
}

/**
 * The litellm_params keys tollgate reads, and the LiteLLM-only ones set aside (each with a warning) or refused
 * (limits tollgate does not enforce); keys neither knows stay, for the strict schema to report. `at` names a
 * key's path: a deployment's litellm_params, or a credential's values that one takes.
 */
function setAsideParams(
  params: Record<string, unknown>,
  at: (k: string) => PathSegment[],
  errors: CompatNote[],
  ignored: (path: PathSegment[], message?: string) => void,
): Record<string, unknown> {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) {
    const limit = zeroPrice(k, v) ? undefined : own(LIMIT_SETTINGS.params, k);
    if (OURS.params.has(k)) rest[k] = v;
    else if (limit !== undefined) errors.push({ path: at(k), message: limit });
    else if (k === 'max_tokens')
      ignored(
        at(k),
        `${COMPLETION_DEFAULT_MESSAGE}; or set this deployment's model_info.max_output_tokens, the max_tokens tollgate sends when a request has none (up to general_settings.default_max_tokens)`,
      );
    else if (k === 'additional_drop_params')
      ignored(
        at(k),
        'request parameters LiteLLM removes before calling this backend; tollgate forwards requests as the client sent them: drop them in the clients',
      );
    else if (COMPLETION_DEFAULTS.has(k)) ignored(at(k), COMPLETION_DEFAULT_MESSAGE);
    else if (LITELLM_PARAMS.has(k)) ignored(at(k));
    else rest[k] = v;
  }
  return rest;
}

/** The entry sets its own rpm or tpm beside litellm_params (itself, or in model_info), which a credential's does not override. */
function ownLimit(entry: Record<string, unknown>, k: string): boolean {
  if (k !== 'rpm' && k !== 'tpm') return false;
  const info = entry['model_info'];
  return (entry[k] ?? (isObject(info) ? info[k] : undefined) ?? null) !== null;
}

/** A credential_list entry a deployment may name: where it is, and the values tollgate takes from it. */
interface Credential {
  readonly index: number;
  readonly values: Readonly<Record<string, unknown>>;
}

/**
 * LiteLLM's `credential_list` (docs.litellm.ai/docs/proxy/configs, "Centralized Credential Management"): each
 * entry's credential_values pass through the litellm_params set-aside (LiteLLM-only values such as
 * aws_access_key_id warn), and are kept for the schema to check where they are written. A name written twice
 * is refused: LiteLLM's CredentialAccessor.find_credential would take the first without a word.
 */
function readCredentials(
  config: Record<string, unknown>,
  errors: CompatNote[],
  ignored: (path: PathSegment[], message?: string) => void,
): ReadonlyMap<string, Credential> {
  const byName = new Map<string, Credential>();
  const list = config['credential_list'];
  if (!Array.isArray(list)) return byName; // absent, or not a list: the schema reports it
  config['credential_list'] = list.map((entry: unknown, j) => {
    if (!isObject(entry) || !isObject(entry['credential_values'])) return entry; // the schema reports it
    const values = setAsideParams(entry['credential_values'], (k) => ['credential_list', j, 'credential_values', k], errors, ignored);
    const name = entry['credential_name'];
    if (typeof name === 'string' && name !== '') {
      if (byName.has(name))
        errors.push({
          path: ['credential_list', j, 'credential_name'],
          message: `a second credential named ${JSON.stringify(name)} (LiteLLM would take the first without a word): give each credential a name of its own`,
        });
      else byName.set(name, { index: j, values });
    }
    return { ...entry, credential_values: values };
  });
  return byName;
}

/**
 * A deployment's rpm and tpm, which LiteLLM reads from the model_list entry itself, else litellm_params, else
 * model_info (router_strategy/lowest_tpm_rpm_v2.py: `_deployment.get("tpm")`, then
 * `litellm_params.get("tpm")`, then `model_info.get("tpm")`, each when the one before is None), all become
 * litellm_params', where tollgate enforces them. Two places with different values are refused: which one the
 * writer meant is not for tollgate to guess.
 */
function deploymentLimits(
  entry: Record<string, unknown>,
  params: Record<string, unknown>,
  info: Record<string, unknown>,
  i: number,
  errors: CompatNote[],
  relocated: Map<string, readonly PathSegment[]>,
): void {
  for (const k of ['rpm', 'tpm'] as const) {
    const places: Array<{ path: PathSegment[]; value: unknown }> = [];
    for (const [holder, path] of [
      [entry, ['model_list', i, k]],
      [params, ['model_list', i, 'litellm_params', k]],
      [info, ['model_list', i, 'model_info', k]],
    ] as const) {
      const value = holder[k];
      delete holder[k];
      if (value !== undefined && value !== null) places.push({ path: [...path], value });
    }
    const [first, ...others] = places;
    if (first === undefined) continue;
    params[k] = first.value;
    if (first.path[2] !== 'litellm_params') relocated.set(formatPath(['model_list', i, 'litellm_params', k]), first.path);
    for (const o of others)
      if (o.value !== first.value)
        errors.push({
          path: o.path,
          message: `differs from ${formatPath(first.path)}, which LiteLLM reads first: write this deployment's ${k} in one place`,
        });
  }
}

/**
 * cache_params that make LiteLLM connect a Redis: `type: redis` (or `redis-semantic`), or no type with a
 * host or URL (LiteLLM's default type is redis).
 */
function namesRedis(p: Record<string, unknown>): boolean {
  const type = p['type'];
  if (type === 'redis' || type === 'redis-semantic') return true;
  return type === undefined && (p['host'] !== undefined || p['url'] !== undefined || p['redis_url'] !== undefined);
}

/** A key within two edits of one of `known` (and not shorter than 4): a misspelling rather than information. */
function nearMiss(key: string, known: ReadonlySet<string>): boolean {
  if (key.length < 4) return false;
  for (const k of known) if (Math.abs(k.length - key.length) <= 2 && editDistance(k, key) <= 2) return true;
  return false;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

function strip(
  section: unknown,
  path: PathSegment[],
  litellm: ReadonlySet<string>,
  ours: ReadonlySet<string>,
  ignored: (path: PathSegment[]) => void,
): unknown {
  if (!isObject(section)) return section;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(section)) {
    if (!ours.has(k) && litellm.has(k)) ignored([...path, k]);
    else out[k] = v;
  }
  return out;
}

/** `rec[k]` for an own key only: a config key named `constructor` is not Object.prototype's. */
/** A price by the second of 0: no cost to miss (the chart's schema, which cannot see values, refuses them all). */
function zeroPrice(k: string, v: unknown): boolean {
  return k.endsWith('_cost_per_second') && v === 0;
}

/** The guardrail callbacks a callbacks list names (a list, or one name as a string). */
function guards(v: unknown): string[] {
  const names = Array.isArray(v) ? v : [v];
  return names.filter((n): n is string => typeof n === 'string' && GUARD_CALLBACKS.has(n));
}

function own(rec: Readonly<Record<string, string>>, k: string): string | undefined {
  return Object.hasOwn(rec, k) ? rec[k] : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
