/**
 * The configuration schema (../shared/CONTRACT.md, "Configuration"): LiteLLM proxy `config.yaml` keys as
 * they are, plus tollgate's `auth`, `policy`, `keys` and `teams`. Validated once at boot; every object is
 * strict, so a misspelt key is an error (LiteLLM keys tollgate does not implement are accepted with a
 * warning by the loader before this schema runs, see litellm-compat.ts).
 */
import { z } from 'zod';
import { DURATION_PATTERN, isTimeZone, parseTimeOfDay } from '../store/calendar.js';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();
const price = z.number().nonnegative().finite();

export { DURATION_PATTERN };
const DAY_MS = 86_400_000;
/** One of each unit in ms; a month at its longest (calendar months are counted as such where it matters). */
export const DURATION_UNIT_MS: Readonly<Record<string, number>> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: DAY_MS,
  w: 7 * DAY_MS,
  mo: 31 * DAY_MS,
};
export const duration = z
  .string()
  .regex(DURATION_PATTERN, { error: 'not a duration: write a number and a unit s, m, h, d, w or mo (e.g. 30d, 1w, 1mo)' })
  // A zero length would end (or reset) at once: no unit rounds it up to something the writer did not ask for.
  .refine((v) => Number(DURATION_PATTERN.exec(v)?.[1] ?? 1) > 0, {
    error: 'zero: write at least 1 of a unit (e.g. 1d); leave the field out for no duration',
  })
  .refine(
    (v) => {
      const m = DURATION_PATTERN.exec(v);
      return Number(m?.[1] ?? 1) * (DURATION_UNIT_MS[m?.[2] ?? 'd'] ?? DAY_MS) <= 100 * 366 * DAY_MS;
    },
    { error: 'too long: at most 100 years' },
  );

const httpUrl = z.url({
  protocol: /^https?$/,
  error: (issue) =>
    issue.input === undefined ? 'missing: write an http:// or https:// URL' : 'not a URL: write an http:// or https:// URL',
});

/**
 * Providers whose servers speak the OpenAI API: vLLM, Ray Serve LLM, any OpenAI-compatible server
 * (LiteLLM's `text-completion-openai/` is one too, used for base models served on /v1/completions).
 */
export const SUPPORTED_PROVIDERS = ['openai', 'hosted_vllm', 'text-completion-openai'] as const;
/** LiteLLM's wildcard routes (`model_name: "*"`, `openai/*`): every alias a caller may use is listed here. */
const WILDCARD =
  'a wildcard route, which tollgate does not serve (every model a key may use is named, listed and priced): list each model the server serves as a model_list entry of its own (GET <api_base>/models names them)';

const providerModel = z
  .string()
  .refine((m) => SUPPORTED_PROVIDERS.some((p) => m.startsWith(`${p}/`) && m.length > p.length + 1), {
    error: `not a supported model: write openai/<backend model id> (or hosted_vllm/<id>, text-completion-openai/<id>); tollgate forwards to OpenAI-compatible servers such as vLLM and Ray Serve`,
  })
  .refine((m) => !m.endsWith('*'), { error: WILDCARD });

/** LiteLLM's model_info.mode values; tollgate serves chat, completion and embedding (the loader warns for the rest). */
export const MODEL_MODES = [
  'chat',
  'completion',
  'embedding',
  'audio_speech',
  'audio_transcription',
  'batch',
  'image_edit',
  'image_generation',
  'moderation',
  'ocr',
  'realtime',
  'rerank',
  'responses',
  'search',
  'vector_store',
  'video_generation',
] as const;

/** A deployment's timeout when neither its litellm_params nor router_settings set one. */
export const DEFAULT_TIMEOUT_S = 600;

/**
 * A deployment's cap on requests in flight (connections) from one replica when neither its litellm_params
 * nor router_settings set one: an `api_base` is often a Kubernetes Service in front of several vLLM pods,
 * each batching hundreds of sequences (vLLM's --max-num-seqs), so a low cap would be a ceiling of its own.
 */
export const DEFAULT_MAX_PARALLEL_REQUESTS = 1024;

/** More connections than this to one deployment from one replica is no cap (and would run out of file descriptors). */
const maxParallelRequests = positiveInt.max(65_536, { error: 'too many: write at most 65536 (connections from one replica)' });

/** Parses as a URL with a numeric port, if any (the value itself never goes into the error). */
export function isUrl(v: string): boolean {
  try {
    new URL(v);
    return true;
  } catch {
    return false;
  }
}

/**
 * A deployment's priority in its alias (LiteLLM's `order`): 1 is asked first. Whole numbers from 1 only, so
 * a typo (`0`, `1.5`, `"primary"`) is not silently a priority of its own.
 */
const order = z
  .number({ error: 'not an order: write a whole number, 1 for the deployments used first, 2 for their backups, and so on' })
  .int({ error: 'not an order: write a whole number (1, 2, …), 1 for the deployments used first' })
  .min(1, { error: 'not an order: write 1 or more; 1 is used first, 2 only when every 1 is unavailable' });

export const litellmParams = z
  .object({
    model: providerModel,
    api_base: httpUrl,
    api_key: z.string().min(1).optional(),
    rpm: positiveInt.optional(),
    tpm: positiveInt.optional(),
    weight: z.number().positive().finite().default(1),
    order: order.optional(),
    /** Absent: router_settings.timeout, else DEFAULT_TIMEOUT_S (the loader and the catalog apply them). */
    timeout: z.number().positive().finite().optional(),
    stream_timeout: z.number().positive().finite().optional(),
    /** LiteLLM's: at most this many requests in flight to this deployment from one replica; the rest wait their turn. */
    max_parallel_requests: maxParallelRequests.optional(),
    input_cost_per_token: price.optional(),
    output_cost_per_token: price.optional(),
    /**
     * LiteLLM's centralized credentials: the credential_list entry whose values this deployment takes where
     * it sets none. The loader merges them in and removes this (litellm-compat.ts); it never reaches a Config.
     */
    litellm_credential_name: z.string().min(1).optional(),
  })
  .strict();

/**
 * A credential_list entry's values: what a deployment's litellm_params takes (but `model`), given to each
 * deployment naming it where it sets none (LiteLLM's `load_credentials_from_list`, litellm/utils.py).
 */
export const credentialValues = litellmParams
  .omit({ model: true, weight: true, litellm_credential_name: true })
  // No default here: a deployment naming the credential keeps its own weight (1 unless set).
  .extend({ weight: z.number().positive().finite().optional() })
  .partial()
  .strict();

/** LiteLLM's `credential_list` entry (docs.litellm.ai/docs/proxy/configs, "Centralized Credential Management"). */
export const credentialEntry = z
  .object({
    credential_name: z.string().min(1),
    credential_values: credentialValues,
    credential_info: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export const modelInfo = z
  .object({
    id: z
      .string()
      .min(1)
      .regex(/^[A-Za-z0-9._:-]+$/, { error: 'not a deployment id: use letters, digits, ".", "_", ":" or "-"' })
      .optional(),
    input_cost_per_token: price.optional(),
    output_cost_per_token: price.optional(),
    max_tokens: positiveInt.optional(),
    max_input_tokens: positiveInt.optional(),
    max_output_tokens: positiveInt.optional(),
    mode: z.enum(MODEL_MODES).optional(),
    base_model: z.string().optional(),
    /** Where LiteLLM's models added through its API keep `order`; litellm_params.order wins. */
    order: order.optional(),
    /** LiteLLM reads a deployment's limits here too: the loader moves them to litellm_params (litellm-compat.ts). */
    rpm: positiveInt.optional(),
    tpm: positiveInt.optional(),
  })
  .strict();

/** An alias clients send as `model`; never a wildcard. */
export const modelName = z
  .string()
  .min(1)
  .refine((m) => !m.includes('*'), { error: WILDCARD });

export const modelEntry = z
  .object({
    model_name: modelName,
    litellm_params: litellmParams,
    model_info: modelInfo.default({}),
    /** LiteLLM reads a deployment's limits here first: the loader moves them to litellm_params (litellm-compat.ts). */
    rpm: positiveInt.optional(),
    tpm: positiveInt.optional(),
  })
  .strict();

export const ROUTING_STRATEGIES = [
  'simple-shuffle',
  'least-busy',
  'latency-based-routing',
  'usage-based-routing',
  'usage-based-routing-v2',
] as const;

export const routerSettings = z
  .object({
    routing_strategy: z.enum(ROUTING_STRATEGIES).default('simple-shuffle'),
    num_retries: nonNegativeInt.default(2),
    fallbacks: z.array(z.record(z.string(), z.array(z.string()))).default([]),
    allowed_fails: nonNegativeInt.default(3),
    cooldown_time: z.number().nonnegative().finite().default(5),
    timeout: z.number().positive().finite().optional(),
    stream_timeout: z.number().positive().finite().optional(),
    /** LiteLLM's: the max_parallel_requests of every deployment that sets none; absent: DEFAULT_MAX_PARALLEL_REQUESTS. */
    default_max_parallel_requests: maxParallelRequests.optional(),
  })
  .strict();

export const generalSettings = z
  .object({
    master_key: z
      .string()
      .startsWith('sk-', { error: 'not a master key: it must start with "sk-" (as in LiteLLM)' })
      .min(19, {
        error:
          'too short for a master key (the key in LiteLLM\'s samples is a placeholder): write "sk-" and at least 16 random characters, e.g. sk-$(openssl rand -hex 24), best kept in the environment (os.environ/NAME or LITELLM_MASTER_KEY)',
      })
      .optional(),
    database_url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, { error: 'not a PostgreSQL URL: write postgres://user@host:5432/db' })
      .refine(isUrl, { error: 'not a PostgreSQL URL (it does not parse): write postgres://user:password@host:5432/db' })
      .optional(),
    data_dir: z.string().min(1).optional(),
    redis_url: z
      .string()
      .regex(/^rediss?:\/\//, { error: 'not a Redis URL: write redis://host:6379' })
      .refine(isUrl, { error: 'not a Redis URL (it does not parse): write redis://[:password@]host:6379[/db]' })
      .optional(),
    /** tollgate's own: prepended to every Redis key, so several deployments can share one Redis. */
    redis_key_prefix: z
      .string()
      .regex(/^[A-Za-z0-9:_.-]{1,64}$/, { error: 'not a key prefix: use letters, digits and : _ . - (at most 64)' })
      .default('tollgate:'),
    failure_mode: z.enum(['closed', 'open']).default('closed'),
    allowed_api_bases: z.array(z.string().min(1)).default([]),
    default_max_tokens: positiveInt.default(4096),
    // Envoy's max_request_bytes is 32-bit; a body of a GiB is no LLM request.
    max_request_size_mb: z.number().positive().max(1024).default(4),
    /**
     * tollgate's own: the secret that signs x-tollgate-context, shared by every replica (≥ 32 bytes).
     * Absent: derived from master_key.
     */
    context_signing_key: z.string().min(32, { error: 'too short: use at least 32 random characters' }).optional(),
    /** LiteLLM's: every model request must carry a `user` field (400 invalid_body without it). */
    enforce_user_param: z.boolean().default(false),
    /** LiteLLM's: body fields every model request must carry (`metadata.generation_name`: a nested field). */
    enforced_params: z
      .array(z.string().regex(/^[^.\s]+(\.[^.\s]+)*$/, { error: 'not a field name: write e.g. user or metadata.generation_name' }))
      .default([]),
    /** tollgate's own: the log level (the LOG_LEVEL environment variable wins). */
    log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).optional(),
  })
  .strict();

export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

const jwtSettings = z
  .object({
    header: z
      .string()
      .regex(/^[a-z0-9-]+$/, { error: 'not a header name: write it in lower case, e.g. x-cake-authorization' })
      .default('x-cake-authorization'),
    issuer: httpUrl,
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    jwks_uri: httpUrl.optional(),
    algorithms: z
      .array(z.enum(JWT_ALGORITHMS, { error: `not an allowed algorithm: use asymmetric ones only (${JWT_ALGORITHMS.join(', ')})` }))
      .min(1)
      .default(['RS256']),
    clock_tolerance_s: z.number().nonnegative().max(300).default(30),
    allow_insecure_http: z.boolean().default(false),
    claims: z
      .object({
        user: z.string().min(1).default('sub'),
        email: z.string().min(1).default('email'),
        groups: z.string().min(1).default('groups'),
      })
      .strict()
      .default({ user: 'sub', email: 'email', groups: 'groups' }),
    required: z.boolean().default(true),
  })
  .strict();

const authSettings = z
  .object({
    jwt: jwtSettings.optional(),
    admin_groups: z.array(z.string().min(1)).default([]),
    keys: z
      .object({ required: z.boolean().default(true) })
      .strict()
      .default({ required: true }),
  })
  .strict();

const policyRule = z
  .object({
    name: z.string().min(1),
    when: z.string().min(1),
    deny: z.string().min(1).max(300),
  })
  .strict();

/** Budget and rate limits of a key, team or user (also the admin API's fields). */
/** Limits are stored as PostgreSQL `integer` (keys and teams made through the admin API). */
const limitInt = positiveInt.max(2_147_483_647);

export const limitFields = {
  max_budget: price.optional(),
  budget_duration: duration.optional(),
  rpm_limit: limitInt.optional(),
  tpm_limit: limitInt.optional(),
  max_parallel_requests: limitInt.optional(),
};

/** Absent, null, `{}` or `[]`: a LiteLLM restriction that restricts nothing (its own default, often). */
export function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || (typeof v === 'object' && Object.keys(v).length === 0);
}
/** Why a LiteLLM restriction is refused rather than dropped. */
export const NOT_ENFORCED =
  "LiteLLM's, not enforced by tollgate: without it this would be allowed more than you asked. Remove it, and restrict with models, the limits or policy rules";
/** What to do instead of LiteLLM's throughput types and temporary budgets, which tollgate has no counterpart for. */
export const LIMIT_TYPE_INSTEAD = 'its rpm_limit and tpm_limit are always hard limits (no guaranteed or best-effort throughput). Remove it';
export const TEMP_BUDGET_INSTEAD = 'raise max_budget instead, and lower it again when the increase should end';

/**
 * What LiteLLM keeps in a key's or team's metadata and enforces from there (its
 * LiteLLM_ManagementEndpoint_MetadataFields and _Premium, litellm/proxy/_types.py; /key/generate moves the
 * top-level fields in), with why each is refused: kept as a label, a row moved over from LiteLLM would lose
 * the limit without a word. `tags` stays a label, as at the top level; `logging` and
 * `secret_manager_settings` configure callbacks tollgate does not run.
 */
const LITELLM_METADATA_FIELDS: Readonly<Record<string, string>> = {
  model_rpm_limit: NOT_ENFORCED,
  model_tpm_limit: NOT_ENFORCED,
  enforced_params: NOT_ENFORCED,
  guardrails: NOT_ENFORCED,
  policies: NOT_ENFORCED,
  prompts: NOT_ENFORCED,
  allowed_passthrough_routes: NOT_ENFORCED,
  allowed_vector_store_indexes: NOT_ENFORCED,
  enforced_batch_output_expires_after: NOT_ENFORCED,
  enforced_file_expires_after: NOT_ENFORCED,
  team_member_key_duration: NOT_ENFORCED,
  rpm_limit_type: `LiteLLM's, not supported by tollgate: ${LIMIT_TYPE_INSTEAD}`,
  tpm_limit_type: `LiteLLM's, not supported by tollgate: ${LIMIT_TYPE_INSTEAD}`,
  temp_budget_increase: `LiteLLM's, not supported by tollgate: ${TEMP_BUDGET_INSTEAD}`,
  temp_budget_expiry: `LiteLLM's, not supported by tollgate: ${TEMP_BUDGET_INSTEAD}`,
};

/** A key's or team's metadata: free-form, but for LiteLLM's restrictions kept in it (empty, they are no-ops). */
export const recordMetadata = z.record(z.string(), z.unknown()).check((ctx) => {
  for (const [field, message] of Object.entries(LITELLM_METADATA_FIELDS))
    if (Object.hasOwn(ctx.value, field) && !isEmpty(ctx.value[field]))
      ctx.issues.push({ code: 'custom', path: [field], message, input: ctx.value[field] });
});

/** `sha256:<64 hex>` after loading: the loader hashes keys that came from the environment. */
export const KEY_HASH_PATTERN = /^sha256:[0-9a-f]{64}$/;

const declaredKey = z
  .object({
    key: z.string().regex(KEY_HASH_PATTERN, {
      error: 'not a key hash: write sha256:<hex> (tollgate keys hash sk-...) or os.environ/NAME holding the sk- key',
    }),
    key_alias: z.string().min(1).optional(),
    models: z.array(z.string().min(1)).default([]),
    ...limitFields,
    user_id: z.string().min(1).optional(),
    team_id: z.string().min(1).optional(),
    expires: z.iso.datetime({ offset: true, error: 'not a date-time: write e.g. 2027-01-01T00:00:00Z' }).optional(),
    blocked: z.boolean().default(false),
    metadata: recordMetadata.default({}),
  })
  .strict();

const team = z
  .object({
    team_id: z.string().min(1),
    team_alias: z.string().min(1).optional(),
    models: z.array(z.string().min(1)).default([]),
    ...limitFields,
    blocked: z.boolean().default(false),
    metadata: recordMetadata.default({}),
  })
  .strict();

/** Limits and budgets of a user (the JWT's user claim, or a key's user_id), as LiteLLM's /user/new sets them. */
const user = z
  .object({
    user_id: z.string().min(1),
    ...limitFields,
    metadata: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();

/** The whole file, after os.environ/ references are resolved and LiteLLM-only keys set aside. */
export const configSchema = z
  .object({
    model_list: z.array(modelEntry).default([]),
    /** LiteLLM's centralized credentials, merged into the deployments naming them by the loader. */
    credential_list: z.array(credentialEntry).optional(),
    router_settings: routerSettings.default(() => routerSettings.parse({})),
    general_settings: generalSettings.default(() => generalSettings.parse({})),
    auth: authSettings.default(() => authSettings.parse({})),
    policy: z
      .object({ rules: z.array(policyRule).default([]) })
      .strict()
      .default({ rules: [] }),
    keys: z.array(declaredKey).default([]),
    teams: z.array(team).default([]),
    users: z.array(user).default([]),
    /**
     * LiteLLM's module settings: the loader moves num_retries, fallbacks and request_timeout to the router and
     * sets aside what tollgate does not use; these two stay here, under LiteLLM's names.
     */
    litellm_settings: z
      .object({
        /** When budget periods reset: midnight (or budget_reset_time) in this IANA zone; UTC by default. */
        timezone: z
          .string()
          .refine(isTimeZone, {
            error: 'not a time zone: write an IANA zone name such as UTC, US/Eastern, Europe/London or Asia/Kolkata',
          })
          .nullable()
          .optional(),
        /** The time of day day, week and month budget periods start at; 00:00 by default. */
        budget_reset_time: z
          .string()
          .refine((v) => parseTimeOfDay(v) !== undefined, {
            error: 'not a time of day: write 24-hour "HH:MM" or "HH:MM:SS", quoted (e.g. "09:00")',
          })
          .nullable()
          .optional(),
      })
      .strict()
      .optional(),
    /** LiteLLM's environment_variables: values for os.environ/ references that the environment does not set. */
    environment_variables: z.record(z.string(), z.string()).optional(),
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type ModelEntry = Config['model_list'][number];
export type DeclaredKey = Config['keys'][number];
export type TeamConfig = Config['teams'][number];
export type UserConfig = Config['users'][number];
export type JwtSettings = NonNullable<Config['auth']['jwt']>;
export type PolicyRule = Config['policy']['rules'][number];

/** The JSON Schema of the config file, for editors and the Helm chart's values.schema.json. */
export function configJsonSchema(): unknown {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' });
  // A deployment's api_base may come from the credential_list entry it names: the loader merges it in before
  // this schema validates (litellm-compat.ts), so the file needs one or the other.
  type Node = { properties?: Record<string, Node>; items?: Node; required?: string[]; anyOf?: Node[] };
  const params = (schema as Node).properties?.['model_list']?.items?.properties?.['litellm_params'];
  if (params?.required !== undefined) {
    params.required = params.required.filter((k) => k !== 'api_base');
    params.anyOf = [{ required: ['api_base'] }, { required: ['litellm_credential_name'] }];
  }
  return schema;
}
