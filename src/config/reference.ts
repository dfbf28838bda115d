/**
 * The configuration reference in the README, generated from the schema itself (`npm run docs` writes it,
 * a test checks it is current): every setting with its type, default and meaning. A setting without a
 * description here fails that test, so the reference cannot fall behind the schema.
 */
import { configJsonSchema } from './schema.js';

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  default?: unknown;
  pattern?: string;
  minimum?: number;
  exclusiveMinimum?: number;
  maximum?: number;
  minLength?: number;
  format?: string;
}

export interface ReferenceRow {
  readonly path: string;
  readonly type: string;
  readonly default: string;
}

function typeOf(s: JsonSchema): string {
  if (s.enum !== undefined) return s.enum.map((v) => `\`${String(v)}\``).join(' \\| ');
  if (s.anyOf !== undefined) return s.anyOf.map(typeOf).join(' or ');
  if (s.type === 'array') return `list of ${s.items === undefined ? 'any' : typeOf(s.items)}`;
  if (s.type === 'object') {
    if (s.properties !== undefined) return 'object';
    return typeof s.additionalProperties === 'object' ? `map of ${typeOf(s.additionalProperties)}` : 'map';
  }
  if (Array.isArray(s.type)) return s.type.join(' or ');
  return s.type ?? 'any';
}

/** Every leaf setting of the schema (objects are walked; lists of objects as `[]`). */
export function referenceRows(schema: JsonSchema = configJsonSchema() as JsonSchema, prefix = ''): ReferenceRow[] {
  const rows: ReferenceRow[] = [];
  for (const [name, s] of Object.entries(schema.properties ?? {})) {
    const path = prefix === '' ? name : `${prefix}.${name}`;
    if (s.type === 'object' && s.properties !== undefined) rows.push(...referenceRows(s, path));
    else if (s.type === 'array' && s.items?.type === 'object' && s.items.properties !== undefined)
      rows.push(...referenceRows(s.items, `${path}[]`));
    else
      rows.push({
        path,
        type: typeOf(s),
        default: s.default === undefined || typeof s.default === 'object' ? '' : `\`${JSON.stringify(s.default)}\``,
      });
  }
  return rows;
}

const LIMIT_DESCRIPTIONS: Readonly<Record<string, string>> = {
  max_budget: 'USD that may be spent per `budget_duration` (all time without one); 429 `budget_exceeded` past it',
  budget_duration:
    'budget period, as LiteLLM resets it (at midnight, or `budget_reset_time`, in `litellm_settings.timezone`, UTC by default): `1d` or `24h` daily, `1w` or `7d` on Monday, `1mo` or `30d` on the 1st of the month; `Nh` within the day, `Nm` within the hour; `10d`, `2w`, `48h` run on from 1970',
  rpm_limit: 'requests per minute (sliding 60 s window, exact across replicas with Redis)',
  tpm_limit:
    'tokens per minute: `max_tokens` (or the default) × `n` plus the prompt is reserved at admission (an embedding: its input only), settled with real usage',
  max_parallel_requests: 'requests in flight at once',
  metadata:
    "free-form, visible to policy rules as `key.metadata` / `team.metadata`; on keys and teams, LiteLLM's restrictions kept there (`model_rpm_limit`, `model_tpm_limit`, `guardrails`, `enforced_params`…) are refused, as tollgate does not enforce them",
  models: 'model aliases allowed; empty: all',
};

/** What each setting means. A setting missing here fails the reference test. */
export const DESCRIPTIONS: Readonly<Record<string, string>> = {
  'model_list[].model_name': 'the alias clients send as `model`; several entries with one alias are load-balanced',
  'model_list[].litellm_params.model':
    '`openai/<backend model id>`, `hosted_vllm/<id>` or `text-completion-openai/<id>`: any OpenAI-compatible server (vLLM, Ray Serve LLM)',
  'model_list[].litellm_params.api_base': "the server's OpenAI base URL, e.g. `http://vllm-llama:8000/v1`",
  'model_list[].litellm_params.api_key': 'sent to the backend as `Authorization: Bearer`; use `os.environ/NAME`',
  'model_list[].litellm_params.rpm': 'requests per minute this deployment takes (retries and fallbacks are counted too)',
  'model_list[].litellm_params.tpm': 'tokens per minute this deployment takes',
  'model_list[].litellm_params.weight': 'share of traffic under `simple-shuffle`',
  'model_list[].litellm_params.order':
    'priority within the alias: the lowest `order` with a deployment available takes all the traffic, higher ones only while every lower one is cooling down or at its `rpm`/`tpm`; absent: after every ordered one (see **Deployment order**)',
  'model_list[].litellm_params.timeout':
    'seconds for each attempt whole, from when it has its connection (a wait for a free one past `max_parallel_requests` is not counted), and for each silence in a stream; absent: `router_settings.timeout`, else 600',
  'model_list[].litellm_params.stream_timeout': 'seconds to the first byte of a stream',
  'model_list[].litellm_params.max_parallel_requests':
    "requests in flight to this deployment from each replica, at most (LiteLLM's meaning; its own connections, not shared with other deployments of the same `api_base`); the rest wait for a connection — for `stream_timeout` (else `timeout`), not counted in it — then 503 `no_healthy_deployment`. Absent: `router_settings.default_max_parallel_requests`, else 1024",
  'model_list[].litellm_params.input_cost_per_token': 'USD per prompt token (`model_info` wins when both are set)',
  'model_list[].litellm_params.output_cost_per_token': 'USD per completion token',
  'model_list[].litellm_params.litellm_credential_name':
    'the `credential_list` entry whose values this deployment takes where it sets none (its own win, as in LiteLLM); a name no entry has is an error',
  'model_list[].model_info.id': 'deployment id (metrics, logs, `x-tollgate-deployment`); derived from the entry when absent',
  'model_list[].model_info.input_cost_per_token': 'USD per prompt token',
  'model_list[].model_info.output_cost_per_token': 'USD per completion token',
  'model_list[].model_info.max_tokens': 'caps the `max_tokens` sent when a request has none',
  'model_list[].model_info.max_input_tokens': 'informational (LiteLLM compatibility)',
  'model_list[].model_info.max_output_tokens': 'caps the `max_tokens` sent when a request has none (wins over `max_tokens`)',
  'model_list[].model_info.mode':
    "informational (LiteLLM compatibility); tollgate serves `chat`, `completion` and `embedding`, and warns for LiteLLM's other modes",
  'model_list[].model_info.base_model': 'informational (LiteLLM compatibility)',
  'model_list[].model_info.order':
    '`litellm_params.order` written here, as LiteLLM keeps it for models added through its API (`litellm_params` wins)',
  'model_list[].model_info.rpm':
    "LiteLLM's third place for the deployment's `rpm`, read as `litellm_params.rpm` when neither the entry nor `litellm_params` sets one",
  'model_list[].model_info.tpm':
    "LiteLLM's third place for the deployment's `tpm`, read as `litellm_params.tpm` when neither the entry nor `litellm_params` sets one",
  'model_list[].rpm':
    "LiteLLM's first place for the deployment's `rpm` (as in its load_balancer.yaml), read as `litellm_params.rpm`; a different value in `litellm_params` or `model_info` is an error",
  'model_list[].tpm':
    "LiteLLM's first place for the deployment's `tpm` (as in its load_balancer.yaml), read as `litellm_params.tpm`; a different value in `litellm_params` or `model_info` is an error",
  'credential_list[].credential_name':
    "the name deployments give as `litellm_params.litellm_credential_name` (LiteLLM's centralized credentials); unique",
  'credential_list[].credential_info': 'free-form (a description, the provider); not read',
  'router_settings.routing_strategy': "how a deployment is picked among an alias's healthy ones",
  'router_settings.num_retries': 'further deployments tried after a failure (connect error, 5xx, 408, 429, timeout)',
  'router_settings.fallbacks': '`[{alias: [other aliases]}]`: tried when every deployment of an alias failed',
  'router_settings.allowed_fails': "failures tolerated within a minute; the next one puts the deployment in cooldown (LiteLLM's count)",
  'router_settings.cooldown_time':
    "seconds a deployment is skipped after `allowed_fails` (longer when a backend's 429 asked for longer, up to 5 minutes; `0`: never)",
  'router_settings.timeout':
    "the `timeout` of every deployment that sets none (LiteLLM's `litellm_settings.request_timeout` when this is absent); absent: 600",
  'router_settings.stream_timeout': 'the `stream_timeout` of every deployment that sets none; absent: `timeout` bounds streams too',
  'router_settings.default_max_parallel_requests': 'the `max_parallel_requests` of every deployment that sets none; absent: 1024',
  'general_settings.master_key': 'admin credential (`sk-…`); also derives the context signing secret. Use `os.environ/NAME`',
  'general_settings.database_url':
    'PostgreSQL for records and the spend log (`DATABASE_URL` too); `?schema=` picks a schema. Absent: embedded PGlite',
  'general_settings.data_dir': 'where embedded PGlite keeps its files (absent: in memory)',
  'general_settings.redis_url':
    "Redis / Valkey for limits, budgets and the revocation broadcast (LiteLLM's `router_settings.redis_host`, `redis_port`, `redis_password`, `redis_db` or `redis_url`, or `REDIS_URL`, too). Absent: in-process (one replica)",
  'general_settings.redis_key_prefix': 'prefix of every Redis key and channel, so deployments can share a Redis',
  'general_settings.failure_mode': 'Redis unreachable: `closed` answers 503 `store_unavailable`, `open` admits and logs',
  'general_settings.allowed_api_bases': 'hosts (`*` within one label, optional `:port`) that `POST /model/new` may point at; empty: none',
  'general_settings.default_max_tokens':
    '`max_tokens` sent to vLLM when a request has none (vLLM would generate to the end of the context)',
  'general_settings.max_request_size_mb':
    "largest request body, at most 1024; 413 `request_too_large` past it (match Envoy's `max_request_bytes`)",
  'general_settings.context_signing_key':
    'secret (≥ 32 characters) that signs `x-tollgate-context` and seals backend keys, the same on every replica; absent: derived from `master_key`',
  'general_settings.log_level': 'log level; `LOG_LEVEL` in the environment wins',
  'general_settings.enforce_user_param':
    "LiteLLM's: every model request must carry a `user` field, else 400 `invalid_body` (as `enforced_params: [user]`)",
  'general_settings.enforced_params':
    "LiteLLM's: body fields every model request must carry (`metadata.generation_name` for a nested one), else 400 `invalid_body` naming it",
  'auth.jwt.header': 'header carrying the JWT (raw or `Bearer <JWT>`)',
  'auth.jwt.issuer': "the IdP's issuer; `<issuer>/.well-known/openid-configuration` is read for the JWKS",
  'auth.jwt.audience': 'accepted `aud` value(s)',
  'auth.jwt.jwks_uri': 'JWKS URL, skipping discovery',
  'auth.jwt.algorithms': 'accepted signature algorithms (asymmetric only)',
  'auth.jwt.clock_tolerance_s': 'seconds of clock skew tolerated on `exp`/`nbf`/`iat`',
  'auth.jwt.allow_insecure_http': 'allow an `http://` issuer or JWKS (tests, loopback)',
  'auth.jwt.claims.user': 'claim naming the user (`x-tollgate-user`, user limits)',
  'auth.jwt.claims.email': 'claim carrying the e-mail (policy)',
  'auth.jwt.claims.groups': 'claim carrying the groups (policy, `admin_groups`)',
  'auth.jwt.required': 'a JWT is demanded on every route (default once an issuer is set)',
  'auth.admin_groups': 'JWT groups that may call the admin API besides the master key',
  'auth.keys.required': 'a virtual key (`Authorization: Bearer sk-…`) is demanded',
  'policy.rules[].name': 'rule name (logs, metrics)',
  'policy.rules[].when': 'CEL over `jwt`, `key`, `team`, `model`, `request`; true denies',
  'policy.rules[].deny': 'the message the client gets (403 `policy_denied`)',
  'keys[].key': '`sha256:<hex>` (`tollgate keys hash`) or `os.environ/NAME` holding the `sk-` key',
  'keys[].key_alias': 'a name for the key (logs, `x-tollgate-key-alias`)',
  'keys[].user_id': 'the user the key belongs to (user limits)',
  'keys[].team_id':
    'the team the key belongs to (team models, limits and budget); a key whose team exists nowhere (removed, misspelt) is refused, 403 `key_blocked`',
  'keys[].expires': 'ISO 8601 date-time after which the key is refused (401 `expired_api_key`)',
  'keys[].blocked': 'refused with 403 `key_blocked`',
  'teams[].team_id': 'the team id keys refer to',
  'teams[].team_alias': 'a display name',
  'teams[].blocked': 'every key of the team is refused',
  'users[].user_id': "the JWT user claim or a key's `user_id`",
  environment_variables: "values for `os.environ/` references the environment does not set (LiteLLM's section)",
  'litellm_settings.timezone':
    "IANA time zone budget periods reset in (LiteLLM's setting): `US/Eastern` resets a `1d` budget at midnight New York time. Absent: UTC",
  'litellm_settings.budget_reset_time':
    'time of day (`"HH:MM"`, 24-hour, quoted) daily, weekly and monthly budget periods start at, in `timezone` (LiteLLM\'s setting). Absent: midnight',
};

/** A credential's values are what a deployment's litellm_params take, given to each deployment naming it. */
const CREDENTIAL_VALUES = 'credential_list[].credential_values.';

function describe(path: string): string | undefined {
  if (path.startsWith(CREDENTIAL_VALUES)) {
    const k = path.slice(CREDENTIAL_VALUES.length);
    const own = DESCRIPTIONS[`model_list[].litellm_params.${k}`];
    return own === undefined ? undefined : `\`litellm_params.${k}\` of each deployment naming this credential that sets none: ${own}`;
  }
  return DESCRIPTIONS[path] ?? LIMIT_DESCRIPTIONS[path.slice(path.lastIndexOf('.') + 1)];
}

/** Settings of the schema that have no description (the reference test wants none). */
export function undescribed(): string[] {
  return referenceRows()
    .filter((r) => describe(r.path) === undefined)
    .map((r) => r.path);
}

/** The Markdown table the README carries between its config-reference markers. */
export function referenceMarkdown(): string {
  const lines = ['| setting | type | default | meaning |', '|---|---|---|---|'];
  for (const r of referenceRows()) lines.push(`| \`${r.path}\` | ${r.type} | ${r.default} | ${describe(r.path) ?? ''} |`);
  return lines.join('\n');
}
