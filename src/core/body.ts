/** The parts of an OpenAI request body that authorization needs. */

export interface ModelBody {
  readonly ok: true;
  readonly model: string;
  /** `max_tokens` / `max_completion_tokens` when present (token reservations use it). */
  readonly maxTokens: number | undefined;
  /** `n`: completions generated, each up to maxTokens (1 when absent). */
  readonly choices: number;
  readonly stream: boolean;
  /** The body itself, parsed (fields a config requires are looked up in it). */
  readonly json: Readonly<Record<string, unknown>>;
}

export type BodyResult =
  | ModelBody
  | {
      readonly ok: false;
      readonly code: 'invalid_body' | 'missing_model';
      readonly message?: string | undefined;
    };

const INVALID: BodyResult = { ok: false, code: 'invalid_body' };
const MISSING_MODEL: BodyResult = { ok: false, code: 'missing_model' };
const BAD_MODEL: BodyResult = {
  ok: false,
  code: 'invalid_body',
  message: 'model must be a string of at most 256 characters: the name of a model (GET /v1/models lists them).',
};
const badMaxTokens = (param: string): BodyResult => ({
  ok: false,
  code: 'invalid_body',
  message: `${param} must be a positive integer.`,
});
const BAD_N: BodyResult = { ok: false, code: 'invalid_body', message: 'n must be an integer from 1 to 128.' };
const BAD_STREAM: BodyResult = { ok: false, code: 'invalid_body', message: 'stream must be true or false.' };
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parses a JSON request body (string or bytes) and extracts `model`. Never throws. */
export function parseModelBody(body: string | Uint8Array): BodyResult {
  let text: string;
  try {
    text = typeof body === 'string' ? body : decoder.decode(body);
  } catch {
    return INVALID;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return INVALID;
  }
  return modelBodyOf(value);
}

/** The same, for a body a door already parsed (the gateway parses once and shares it). */
export function modelBodyOf(value: unknown): BodyResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return INVALID;
  const o = value as Record<string, unknown>;
  const model = o['model'];
  if (model === undefined || model === null || model === '') return MISSING_MODEL;
  if (typeof model !== 'string' || model.length > 256) return BAD_MODEL;
  // Token reservations trust these, and vLLM would coerce "32000" or 1e5: only positive integers pass.
  const mct = o['max_completion_tokens'];
  const mt = mct ?? o['max_tokens'];
  if (mt !== undefined && mt !== null && !(typeof mt === 'number' && Number.isInteger(mt) && mt > 0))
    return badMaxTokens(mct === undefined || mct === null ? 'max_tokens' : 'max_completion_tokens');
  const n = o['n'];
  if (n !== undefined && n !== null && !(typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 128)) return BAD_N;
  // vLLM (pydantic, lax) reads "true" or 1 as a stream: passed on, the reply would be SSE where JSON was awaited.
  const stream = o['stream'];
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') return BAD_STREAM;
  return {
    ok: true,
    model,
    maxTokens: typeof mt === 'number' ? mt : undefined,
    choices: typeof n === 'number' ? n : 1,
    stream: stream === true,
    json: o,
  };
}
