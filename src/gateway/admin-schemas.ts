/**
 * Request bodies and query strings of the admin API, with LiteLLM's field names (its proxy's /key, /team,
 * /spend and /model endpoints), validated by the same zod machinery as the config: every object is strict,
 * so an unknown or misspelt field is a 400 that names it.
 */
import { z } from 'zod';
import { duration, limitFields, litellmParams, modelInfo } from '../config/schema.js';
import { formatPath } from '../config/issues.js';

const id = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[\w.:@-]+$/, { error: 'use letters, digits and . _ : @ -' });
const alias = z.string().min(1).max(200);
const metadata = z.record(z.string(), z.unknown());
const models = z.array(z.string().min(1)).max(1000);
/** The key to act on: the `sk-…` key itself, or its `token` (sha256 hex) as /key/generate and /key/list return it. */
export const keyRef = z.string().regex(/^(sk-\S{5,510}|[0-9a-f]{64})$/, {
  error: 'not a key: send the sk-... key or its token (64 hex characters, as /key/list returns it)',
});

/** LiteLLM's key fields that /key/generate and /key/update share; null clears a field on update. */
const keyFields = {
  models: models.optional(),
  key_alias: alias.nullable().optional(),
  max_budget: limitFields.max_budget.nullable(),
  budget_duration: limitFields.budget_duration.nullable(),
  rpm_limit: limitFields.rpm_limit.nullable(),
  tpm_limit: limitFields.tpm_limit.nullable(),
  max_parallel_requests: limitFields.max_parallel_requests.nullable(),
  /** Lifetime from now (`30d`, `1h`); null or absent: never expires. */
  duration: duration.nullable().optional(),
  user_id: id.nullable().optional(),
  team_id: id.nullable().optional(),
  metadata: metadata.optional(),
  blocked: z.boolean().optional(),
};

export const keyGenerate = z.object(keyFields).strict();
export const keyUpdate = z.object({ key: keyRef, ...keyFields }).strict();
export const keyAction = z.object({ key: keyRef }).strict();
export const keyRegenerate = z.object({ key: keyRef, ...keyFields }).strict();
export const keyDelete = z
  .object({
    keys: z.array(keyRef).max(100).optional(),
    key_aliases: z.array(alias).max(100).optional(),
  })
  .strict()
  .refine((b) => (b.keys?.length ?? 0) + (b.key_aliases?.length ?? 0) > 0, {
    error: 'send "keys" (or "key_aliases") to delete',
    path: ['keys'],
  });

const teamFields = {
  team_alias: alias.nullable().optional(),
  models: models.optional(),
  max_budget: limitFields.max_budget.nullable(),
  budget_duration: limitFields.budget_duration.nullable(),
  rpm_limit: limitFields.rpm_limit.nullable(),
  tpm_limit: limitFields.tpm_limit.nullable(),
  max_parallel_requests: limitFields.max_parallel_requests.nullable(),
  blocked: z.boolean().optional(),
  metadata: metadata.optional(),
};
export const teamNew = z.object({ team_id: id.optional(), ...teamFields }).strict();
export const teamUpdate = z.object({ team_id: id, ...teamFields }).strict();

export const modelNew = z
  .object({
    model_name: z.string().min(1).max(200),
    litellm_params: litellmParams,
    model_info: modelInfo.default({}),
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
    api_key: keyRef.optional(),
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
