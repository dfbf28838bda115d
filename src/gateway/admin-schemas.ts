/**
 * Request bodies and query strings of the admin API, with LiteLLM's field names (its proxy's /key, /team,
 * /spend and /model endpoints), validated by the same zod machinery as the config: every object is strict,
 * so an unknown or misspelt field is a 400 that names it. As in LiteLLM, `null` in an optional field means
 * "not given": an update leaves that field as it is.
 */
import { z } from 'zod';
import { duration, limitFields, litellmParams, modelInfo } from '../config/schema.js';
import { formatPath } from '../config/issues.js';
import { afterDuration } from '../store/counters.js';

/** Ids are the identity provider's and the operator's (`auth0|abc`, `a+b@x.com`): any printable text. */
const id = z
  .string()
  .min(1)
  .max(200)
  .refine((v) => ![...v].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f), { error: 'control characters are not allowed' });
const alias = z.string().min(1).max(200);
const metadata = z.record(z.string(), z.unknown());
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

/** LiteLLM's key fields that /key/generate and /key/update share; null clears a field on update. */
const keyFields = {
  models: models.nullish(),
  key_alias: alias.nullish(),
  max_budget: limitFields.max_budget.nullable(),
  budget_duration: limitFields.budget_duration.nullable(),
  rpm_limit: limitFields.rpm_limit.nullable(),
  tpm_limit: limitFields.tpm_limit.nullable(),
  max_parallel_requests: limitFields.max_parallel_requests.nullable(),
  /** Lifetime from now (`30d`, `1h`); absent on generate: never expires. */
  duration: keyDuration.nullish(),
  user_id: id.nullish(),
  team_id: id.nullish(),
  metadata: metadata.nullish(),
  blocked: z.boolean().nullish(),
};

export const keyGenerate = z.object(keyFields).strict();
export const keyUpdate = z.object({ key: keyRef, ...keyFields }).strict();
export const keyAction = z.object({ key: keyRef }).strict();
export const keyRegenerate = z.object({ key: keyRef, ...keyFields }).strict();
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
  max_budget: limitFields.max_budget.nullable(),
  budget_duration: limitFields.budget_duration.nullable(),
  rpm_limit: limitFields.rpm_limit.nullable(),
  tpm_limit: limitFields.tpm_limit.nullable(),
  max_parallel_requests: limitFields.max_parallel_requests.nullable(),
  blocked: z.boolean().nullish(),
  metadata: metadata.nullish(),
};
export const teamNew = z.object({ team_id: id.optional(), ...teamFields }).strict();
export const teamUpdate = z.object({ team_id: id, ...teamFields }).strict();

export const modelNew = z
  .object({
    model_name: z.string().min(1).max(200),
    litellm_params: litellmParams,
    model_info: modelInfo.nullish().transform((v) => v ?? {}),
  })
  .strict();
export const modelDelete = z.object({ id: z.string().min(1).max(200) }).strict();

// Query strings: every value arrives as a string.
const page = z.coerce.number().int().positive().max(1_000_000);
const dateParam = z
  .string()
  .refine((v) => !Number.isNaN(Date.parse(v)), { error: 'not a date: write YYYY-MM-DD or an ISO 8601 date-time' })
  .transform((v) => new Date(v));
const bool = z.enum(['true', 'false']).transform((v) => v === 'true');

export const keyInfoQuery = z.object({ key: keyRef }).strict();
export const keyListQuery = z
  .object({
    page: page.default(1),
    size: z.coerce.number().int().positive().max(100).default(10),
    user_id: id.optional(),
    team_id: id.optional(),
    key_alias: alias.optional(),
    return_full_object: bool.default(false),
  })
  .strict();
export const teamInfoQuery = z.object({ team_id: id }).strict();
export const spendLogsQuery = z
  .object({
    api_key: spendKeyRef.optional(),
    request_id: z.string().min(1).max(200).optional(),
    user_id: id.optional(),
    team_id: id.optional(),
    start_date: dateParam.optional(),
    end_date: dateParam.optional(),
    limit: z.coerce.number().int().positive().max(1000).default(100),
  })
  .strict();
export const spendKeysQuery = z.object({ limit: z.coerce.number().int().positive().max(1000).default(100) }).strict();
export const globalSpendQuery = z.object({ start_date: dateParam.optional(), end_date: dateParam.optional() }).strict();
export const emptyQuery = z.object({}).strict();

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
