/**
 * Request bodies and query strings of the admin API, with LiteLLM's field names (its proxy's /key, /team,
 * /spend and /model endpoints), validated by the same zod machinery as the config: every object is strict,
 * so an unknown or misspelt field is a 400 that names it. As in LiteLLM, an update changes the fields it
 * sets: a field left out keeps its value, an explicit `null` clears it (/user/update: only max_budget, as
 * LiteLLM's). Text the records database cannot store (U+0000, a lone surrogate) is refused up front.
 */
import { z } from 'zod';
import {
  duration,
  isEmpty,
  LIMIT_TYPE_INSTEAD,
  limitFields,
  litellmParams,
  modelInfo,
  modelName,
  NOT_ENFORCED,
  recordMetadata,
  TEMP_BUDGET_INSTEAD,
} from '../config/schema.js';
import { formatPath } from '../config/issues.js';
import { afterDuration } from '../store/counters.js';

/** Ids are the identity provider's and the operator's (`auth0|abc`, `a+b@x.com`): any printable text. */
const id = z
  .string()
  .min(1)
  .max(200)
  .refine((v) => ![...v].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f), { error: 'control characters are not allowed' });
const alias = z.string().min(1).max(200);
/** A user's: LiteLLM keeps no restrictions in it. */
const userMetadata = z.record(z.string(), z.unknown());
const models = z.array(z.string().min(1)).max(1000);
/** The key to act on: the `sk-…` key itself, or its `token` (sha256 hex) as /key/generate and /key/list return it. */
export const keyRef = z.string().regex(/^(sk-\S{1,510}|[0-9a-f]{64})$/, {
  error: 'not a key: send the sk-... key or its token (64 hex characters, as /key/list returns it)',
});
/** A spend-log filter may also name the key by its key id (16 hex, as x-tollgate-key carries it). */
const spendKeyRef = z.string().regex(/^(sk-\S{1,510}|[0-9a-f]{64}|[0-9a-f]{16})$/, {
  error: 'not a key: send the sk-... key, its token (64 hex characters) or its key id (16)',
});
const HUNDRED_YEARS_MS = 100 * 366 * 86_400_000;
/** A key's lifetime: at most a hundred years (past that, write no duration: the key never expires). */
const keyDuration = duration.refine((d) => afterDuration(d, 0) <= HUNDRED_YEARS_MS, {
  error: 'too long: at most 100 years (omit duration for a key that never expires)',
});

const NUMERIC = /^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$/;
/**
 * LiteLLM's API (pydantic) takes a number written as a string, `"10"` for 10, and scripts written against
 * it send them. Any other string is left to the field's own error.
 */
function numeric<T extends z.ZodType>(t: T): z.ZodPreprocess<T> {
  return z.preprocess((v) => (typeof v === 'string' && NUMERIC.test(v) ? Number(v) : v), t);
}
/** Budgets and limits, as the config writes them; null clears one on /key/update and /team/update. */
const limits = {
  // LiteLLM reads an empty max_budget as none (None); its UI sends one for a cleared budget field.
  max_budget: z.preprocess((v) => (v === '' ? null : v), numeric(limitFields.max_budget).nullable()),
  budget_duration: limitFields.budget_duration.nullable(),
  rpm_limit: numeric(limitFields.rpm_limit).nullable(),
  tpm_limit: numeric(limitFields.tpm_limit).nullable(),
  max_parallel_requests: numeric(limitFields.max_parallel_requests).nullable(),
};

/** LiteLLM's key fields that /key/generate and /key/update share; null clears a field on update (duration: keeps it). */
const keyFields = {
  models: models.nullish(),
  key_alias: alias.nullish(),
  ...limits,
  /** Lifetime from now (`30d`, `1h`); absent on generate: never expires. */
  duration: keyDuration.nullish(),
  user_id: id.nullish(),
  team_id: id.nullish(),
  metadata: recordMetadata.nullish(),
  blocked: z.boolean().nullish(),
};

/**
 * A key value the caller chooses (LiteLLM's `key` on generate, `new_key` on regenerate: an operator moving
 * keys over keeps their values). At least 16 characters after `sk-`, none of them blank or control.
 */
const chosenKey = z.string().regex(/^sk-[\x21-\x7e]{16,500}$/, {
  error: 'not a usable key: sk- and at least 16 more printable characters (or leave it out and tollgate makes one)',
});

/**
 * LiteLLM's fields that tollgate does not implement. Those that only label or notify are accepted and
 * named in the reply's `x-tollgate-ignored-fields` header. Those that would restrict what a key or team may
 * do (per-model limits, route allow-lists, guardrails, organisations…) are refused: ignored, they would
 * leave it allowed more than asked. Empty (`{}`, `[]`: LiteLLM's own defaults, GenerateRequestBase, which
 * its exported rows carry) they restrict nothing, and are accepted and named in the header as well.
 */
export const IGNORED_KEY_FIELDS = ['tags', 'soft_budget', 'send_invite_email', 'allowed_cache_controls'] as const;
export const IGNORED_TEAM_FIELDS = ['tags', 'members_with_roles', 'members', 'admins', 'send_invite_email'] as const;
export const REFUSED_KEY_FIELDS = [
  'allowed_routes',
  'allowed_passthrough_routes',
  'model_max_budget',
  'model_rpm_limit',
  'model_tpm_limit',
  'guardrails',
  'enforced_params',
  'permissions',
  'object_permission',
  'prompts',
  'budget_id',
  'aliases',
  'config',
  'organization_id',
  'auto_rotate',
  'rotation_interval',
] as const;
export const REFUSED_TEAM_FIELDS = [
  'organization_id',
  'model_aliases',
  'guardrails',
  'model_rpm_limit',
  'model_tpm_limit',
  'team_member_budget',
  'team_member_rpm_limit',
  'team_member_tpm_limit',
  'team_member_key_duration',
  'object_permission',
  'prompts',
  'allowed_routes',
] as const;

const notEnforced = z.unknown().refine(isEmpty, { error: NOT_ENFORCED }).optional();
const ignored = z.unknown().optional();
function litellmOnly(ignore: readonly string[], refuse: readonly string[]): Record<string, z.ZodType> {
  return Object.fromEntries([...ignore.map((f) => [f, ignored] as const), ...refuse.map((f) => [f, notEnforced] as const)]);
}
/** LiteLLM's running total (0 on a new row): tollgate counts spend from the requests themselves. */
const spend = numeric(
  z.literal(0, { error: 'counted by tollgate from the requests made: it cannot be set. Leave it out (or send 0)' }),
).nullish();
/** LiteLLM's fields tollgate has no counterpart for, with what to do instead; null is "not given". */
function unsupported(instead: string) {
  return z
    .unknown()
    .refine((v) => v === undefined || v === null, { error: `LiteLLM's, not supported by tollgate: ${instead}` })
    .optional();
}
const LIMIT_TYPE = unsupported(LIMIT_TYPE_INSTEAD);
const TEMP_BUDGET = unsupported(TEMP_BUDGET_INSTEAD);
const unsupportedKeyFields = {
  rpm_limit_type: LIMIT_TYPE,
  tpm_limit_type: LIMIT_TYPE,
  temp_budget_increase: TEMP_BUDGET,
  temp_budget_expiry: TEMP_BUDGET,
  grace_period: unsupported(
    "a regenerated key's old value stops working at once. To switch without downtime, generate a second key, move the clients to it, then delete the first",
  ),
};
const litellmKeyFields = {
  ...litellmOnly(IGNORED_KEY_FIELDS, REFUSED_KEY_FIELDS),
  ...unsupportedKeyFields,
  spend,
  // LiteLLM's key types: an LLM key is the only kind tollgate makes (a read-only or management key would be narrower).
  key_type: z.enum(['llm_api', 'default'], { error: 'tollgate makes LLM API keys only: send "llm_api" or leave it out' }).nullish(),
};

export const keyGenerate = z.object({ key: chosenKey.nullish(), ...keyFields, ...litellmKeyFields }).strict();
export const keyUpdate = z.object({ key: keyRef, ...keyFields, ...litellmKeyFields }).strict();
export const keyAction = z.object({ key: keyRef }).strict();
export const keyRegenerate = z.object({ key: keyRef, new_key: chosenKey.nullish(), ...keyFields, ...litellmKeyFields }).strict();
export const keyDelete = z
  .object({
    keys: z.array(keyRef).max(100).nullish(),
    key_aliases: z.array(alias).max(100).nullish(),
  })
  .strict()
  .refine((b) => (b.keys?.length ?? 0) + (b.key_aliases?.length ?? 0) > 0, {
    error: 'send "keys" (or "key_aliases") to delete',
    path: ['keys'],
  });

const teamFields = {
  team_alias: alias.nullish(),
  models: models.nullish(),
  ...limits,
  blocked: z.boolean().nullish(),
  metadata: recordMetadata.nullish(),
};
const litellmTeamFields = {
  ...litellmOnly(IGNORED_TEAM_FIELDS, REFUSED_TEAM_FIELDS),
  rpm_limit_type: LIMIT_TYPE,
  tpm_limit_type: LIMIT_TYPE,
};
export const teamNew = z.object({ team_id: id.optional(), ...teamFields, ...litellmTeamFields }).strict();
export const teamUpdate = z.object({ team_id: id, ...teamFields, ...litellmTeamFields }).strict();

/** LiteLLM's user fields tollgate only labels with, and those it would have to enforce (refused, as for keys). */
export const IGNORED_USER_FIELDS = ['user_email', 'user_alias', 'send_invite_email', 'tags'] as const;
export const REFUSED_USER_FIELDS = [
  'teams',
  'organization_id',
  'model_max_budget',
  'model_rpm_limit',
  'model_tpm_limit',
  'allowed_routes',
  'guardrails',
  'object_permission',
  'prompts',
  'budget_id',
] as const;
const userFields = {
  ...limits,
  metadata: userMetadata.nullish(),
  // LiteLLM's roles grant or narrow its own UI and routes; tollgate's admins are the master key and auth.admin_groups.
  user_role: z
    .enum(['internal_user'], {
      error: "tollgate's users are LiteLLM's internal_user: the admin API is the master key's and auth.admin_groups'",
    })
    .nullish(),
  ...litellmOnly(IGNORED_USER_FIELDS, REFUSED_USER_FIELDS),
  spend,
};
/** LiteLLM's /user/new: the user, and (auto_create_key, true by default as in LiteLLM) a key for it with these key fields. */
export const userNew = z
  .object({
    user_id: id.nullish(),
    ...userFields,
    auto_create_key: z.boolean().default(true),
    models: models.nullish(),
    key_alias: alias.nullish(),
    duration: keyDuration.nullish(),
    team_id: id.nullish(),
  })
  .strict();
export const userUpdate = z.object({ user_id: id, ...userFields }).strict();
export const userDelete = z.object({ user_ids: z.array(id).min(1).max(100) }).strict();
/** LiteLLM's /team/delete: the teams, and the keys made for them. */
export const teamDelete = z.object({ team_ids: z.array(id).min(1).max(100) }).strict();

export const modelNew = z
  .object({
    model_name: modelName.max(200),
    litellm_params: litellmParams,
    model_info: modelInfo.nullish().transform((v) => v ?? {}),
  })
  .strict();
export const modelDelete = z.object({ id: z.string().min(1).max(200) }).strict();

// Query strings: every value arrives as a string.
const page = z.coerce.number().int().positive().max(1_000_000);
const dateText = z.string().refine((v) => !Number.isNaN(Date.parse(v)), { error: 'not a date: write YYYY-MM-DD or an ISO 8601 date-time' });
const dateParam = dateText.transform((v) => new Date(v));
/** A range's end, exclusive; a date alone (YYYY-MM-DD) includes its day, as a reader of end_date=today expects. */
const endDateParam = dateText.transform((v) => new Date(Date.parse(v) + (/^\d{4}-\d{2}-\d{2}$/.test(v) ? 86_400_000 : 0)));
const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

/** Without `key`: the caller's own key. */
export const keyInfoQuery = z.object({ key: keyRef.optional() }).strict();
export const keyListQuery = z
  .object({
    page: page.default(1),
    size: z.coerce.number().int().positive().max(100).default(10),
    user_id: id.optional(),
    team_id: id.optional(),
    key_alias: alias.optional(),
    /** LiteLLM's: one key by its token. */
    key_hash: z
      .string()
      .regex(/^[0-9a-f]{64}$/, { error: 'not a token: 64 hex characters, as /key/list returns it' })
      .optional(),
    return_full_object: bool.default(false),
    // LiteLLM's UI sends these; tollgate lists newest first and has no team-member keys apart.
    include_team_keys: bool.optional(),
    sort_by: z.string().max(100).optional(),
    sort_order: z.enum(['asc', 'desc']).optional(),
  })
  .strict();
export const teamInfoQuery = z.object({ team_id: id }).strict();
export const userInfoQuery = z.object({ user_id: id }).strict();
/** A LiteLLM filter tollgate has nothing to match with: refused, saying why, rather than ignored (it would list more). */
const unmatched = (why: string): z.ZodOptional<z.ZodString> =>
  z
    .string()
    .refine(() => false, { error: why })
    .optional();
/** LiteLLM's /team/list. Its `organization_id=default_organization` means teams without one: every team here. */
export const teamListQuery = z
  .object({
    user_id: unmatched("tollgate keeps no team members: a user's keys and their teams are in /key/list?user_id="),
    organization_id: z.literal('default_organization', { error: 'tollgate has no organizations: leave organization_id out' }).optional(),
  })
  .strict();
/** LiteLLM's /user/list. */
export const userListQuery = z
  .object({
    page: page.default(1),
    page_size: z.coerce.number().int().positive().max(100).default(25),
    /** Comma-separated; one id matches the users whose id contains it (case aside), as in LiteLLM. */
    user_ids: z.string().min(1).max(10_000).optional(),
    /** Every user here is LiteLLM's `internal_user`: another role matches none. */
    role: z.string().min(1).max(100).optional(),
    team: unmatched("tollgate keeps no team members: a user's keys and their teams are in /key/list?user_id="),
    user_email: unmatched('tollgate keeps no user emails: filter by user_ids'),
    sso_user_ids: unmatched('tollgate keeps no SSO user ids: filter by user_ids'),
    organization_ids: unmatched('tollgate has no organizations: leave organization_ids out'),
  })
  .strict();
export const spendLogsQuery = z
  .object({
    api_key: spendKeyRef.optional(),
    request_id: z.string().min(1).max(200).optional(),
    user_id: id.optional(),
    team_id: id.optional(),
    start_date: dateParam.optional(),
    end_date: endDateParam.optional(),
    limit: z.coerce.number().int().positive().max(1000).default(100),
    /** LiteLLM's: with start_date and end_date, spend per day (the default) rather than rows. */
    summarize: bool.default(true),
  })
  .strict();
export const spendKeysQuery = z.object({ limit: z.coerce.number().int().positive().max(1000).default(100) }).strict();
export const globalSpendQuery = z.object({ start_date: dateParam.optional(), end_date: endDateParam.optional() }).strict();
export const emptyQuery = z.object({}).strict();
/** LiteLLM's /model/info?litellm_model_id=: one deployment. */
export const modelInfoQuery = z.object({ litellm_model_id: z.string().min(1).max(200).optional() }).strict();

// With the u flag a surrogate pair is one code point: \p{Cs} matches only a surrogate standing alone.
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * How deep a request may nest arrays and objects. Far past any LiteLLM body (LiteLLM's own JSON parser stops
 * near 1000), and short of where serializing it again (JSON.stringify, the records database's jsonb) would
 * run out of stack.
 */
export const MAX_NESTING = 100;

/**
 * The first string (or object key) in a request that PostgreSQL cannot store: U+0000, which neither text nor
 * jsonb holds, or a lone surrogate (not Unicode: jsonb refuses its escape); or a value nested deeper than
 * MAX_NESTING. Its field and what is wrong, or undefined. Checked before any schema, so every admin write and
 * read names the field instead of failing in the database. Walked with a stack of its own: a client's
 * nesting must not decide how deep this call stack goes.
 */
export function unstorableText(value: unknown): { field: string; message: string } | undefined {
  const problem = (s: string): string | undefined =>
    s.includes('\u0000')
      ? 'contains the character U+0000 (NUL), which the records database cannot store: remove it'
      : !LONE_SURROGATE.test(s)
        ? undefined
        : 'contains a lone UTF-16 surrogate (not valid Unicode): send well-formed text';
  const at = (p: readonly (string | number)[], what: string): { field: string; message: string } => {
    const field = formatPath(p);
    return { field, message: field === '' ? `The request body ${what}` : `${field}: ${what}` };
  };
  // Depth first, in the order of the text, so the first problem in it is the one named. A field name is
  // checked where it stands, before its value (`name` set: the entry is that name, at `path`).
  type Entry = { readonly v: unknown; readonly path: readonly (string | number)[]; readonly name?: string };
  const pending: Entry[] = [{ v: value, path: [] }];
  for (let e = pending.pop(); e !== undefined; e = pending.pop()) {
    const { v, path, name } = e;
    if (name !== undefined) {
      const what = problem(name);
      if (what !== undefined) return at([...path.slice(0, -1), name.replaceAll('\u0000', '\\u0000')], `a field name ${what}`);
    } else if (typeof v === 'string') {
      const what = problem(v);
      if (what !== undefined) return at(path, what);
    } else if (typeof v === 'object' && v !== null) {
      if (path.length >= MAX_NESTING) return at(path.slice(0, 1), `nested more than ${MAX_NESTING} levels deep: flatten it`);
      const children: Entry[] = Array.isArray(v)
        ? (v as unknown[]).map((x, i) => ({ v: x, path: [...path, i] }))
        : Object.entries(v as Record<string, unknown>).flatMap(([k, x]) => [
            { v: undefined, path: [...path, k], name: k },
            { v: x, path: [...path, k] },
          ]);
      for (let i = children.length - 1; i >= 0; i--) pending.push(children[i] as Entry);
    }
  }
  return undefined;
}

/** The first problem of a failed parse, as the field it concerns and what to fix. */
export function firstProblem(error: z.ZodError): { field: string; message: string } {
  const issue = error.issues[0];
  if (issue === undefined) return { field: '', message: 'invalid' };
  const path = issue.path.filter((p): p is string | number => typeof p === 'string' || typeof p === 'number');
  if (issue.code === 'unrecognized_keys') {
    const field = formatPath([...path, issue.keys[0] ?? '']);
    return { field, message: `${field}: unknown field: remove it or check its spelling` };
  }
  const field = formatPath(path);
  const what =
    issue.code === 'invalid_type' && issue.message.includes('received undefined')
      ? `required (${issue.expected})`
      : issue.message.replace(/^Invalid (option|input): /, '');
  return { field, message: field === '' ? what : `${field}: ${what}` };
}
