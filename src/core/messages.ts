/** Specific messages for a refused identity token: what is wrong and what to do, never the token. */
import type { ErrorCode } from '../errors/codes.js';
import type { JwtFailure } from '../identity/jwt.js';
import type { Cooldown } from '../routing/deployments.js';

const JWT_MESSAGES: Readonly<Record<JwtFailure, string>> = {
  missing: 'No identity token: send an OAuth 2.0 access token in the X-Cake-Authorization header.',
  malformed: 'The identity token in X-Cake-Authorization is not a JWT: send the access token as issued, raw or as "Bearer <token>".',
  expired: 'The identity token in X-Cake-Authorization has expired: get a new token from your identity provider.',
  not_yet_valid: 'The identity token in X-Cake-Authorization is not valid yet: check the clock of the machine that issued it.',
  wrong_issuer:
    'The identity token in X-Cake-Authorization was issued by another identity provider: get a token from the configured issuer.',
  wrong_audience: 'The identity token in X-Cake-Authorization is for another audience: request a token for this gateway.',
  bad_signature: 'The identity token in X-Cake-Authorization has an invalid signature: get a new token from your identity provider.',
  unknown_key: 'The identity token in X-Cake-Authorization is signed with an unknown key: get a new token from your identity provider.',
  algorithm_not_allowed: 'The identity token in X-Cake-Authorization uses a signing algorithm that is not allowed.',
  claims_invalid: 'The identity token in X-Cake-Authorization has invalid claims: get a new token from your identity provider.',
  no_expiry: 'The identity token in X-Cake-Authorization has no expiry (exp claim): send an OAuth 2.0 access token, which must have one.',
  not_access_token:
    'The identity token in X-Cake-Authorization is not an access token (its typ header names another kind of JWT): send an OAuth 2.0 access token.',
};

/** `header`: the configured `auth.jwt.header` (lower case), named in the message as the client must send it. */
export function jwtFailureMessage(failure: JwtFailure, header = DEFAULT_JWT_HEADER): string {
  return inHeader(JWT_MESSAGES[failure], header);
}

const DEFAULT_JWT_HEADER = 'x-cake-authorization';

/** A message naming X-Cake-Authorization, naming the configured header instead (`x-my-token` → X-My-Token). */
function inHeader(message: string, header: string): string {
  if (header === DEFAULT_JWT_HEADER) return message;
  const name = header.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
  return message.replaceAll('X-Cake-Authorization', name);
}

const BY_MASTER_KEY = 'the master key, sent as "Authorization: Bearer <master key>"';
const OR_TOKEN = ', or an OAuth 2.0 access token of a member of an admin group (auth.admin_groups) in the X-Cake-Authorization header';

/**
 * What opens the admin API, for a caller it refused: the master key as a Bearer key (what LiteLLM's admin calls
 * send), and a token of an admin group where `auth.admin_groups` (and a token) is configured. Whether a master
 * key is configured is not said: the README documents that it opens these routes, and that an admin API with
 * neither a master key nor an admin group says it is disabled (ADMIN_DISABLED), nothing more.
 * `sentNothing`: the request carried no credentials at all; `header`: the configured `auth.jwt.header`.
 */
export function adminAccessMessage(tokenOpens: boolean, sentNothing = false, header = DEFAULT_JWT_HEADER): string {
  const needs = `${BY_MASTER_KEY}${tokenOpens ? inHeader(OR_TOKEN, header) : ''}.`;
  return sentNothing ? `No credentials: the admin API needs ${needs}` : `The admin API needs ${needs}`;
}

/** The admin API with neither a master key nor an admin group configured. */
export const ADMIN_DISABLED = 'The admin API is disabled: configure general_settings.master_key or auth.admin_groups.';

/**
 * `model_not_found` when the proxy has no model at all (none configured, or the embedded default's model
 * server has not answered discovery): the models list it points at is empty, so say so. No address: the
 * client is not told where the backend is; the server's log names it.
 */
export const NO_MODELS_MESSAGE =
  'This proxy serves no models at the moment (none are configured, or its model server has not answered yet): ' +
  'ask its operator; the server log says why.';

/**
 * The answer when every deployment a request could go to is cooling down (`back`: the cooldown that ends
 * first): when to come back, and why they are out — 429 rate_limit_exceeded when a 429 of its backend put it
 * there (the backends are rate limiting: the SDKs wait that long and retry, as for a backend's own 429), else
 * 503 no_healthy_deployment. Both doors (Check, the gateway's own authorization) and the forwarder answer so.
 */
export function coolingAnswer(
  back: Cooldown,
  nowMs: number,
): { readonly code: ErrorCode; readonly message: string; readonly retryAfterMs: number } {
  return back.rateLimited
    ? { code: 'rate_limit_exceeded', message: EVERY_RATE_LIMITED, retryAfterMs: back.untilMs - nowMs }
    : { code: 'no_healthy_deployment', message: EVERY_COOLING, retryAfterMs: back.untilMs - nowMs };
}

const EVERY_RATE_LIMITED =
  'Every deployment of this model is being rate limited by its model server: retry after the time given in the retry-after header.';
const EVERY_COOLING = 'No deployment of the requested model is available right now: retry after the time given in the retry-after header.';

/** A body past `maxBodyBytes` (general_settings.max_request_size_mb): how large a body may be. */
export function tooLargeMessage(maxBodyBytes: number): string {
  const mib = maxBodyBytes / (1024 * 1024);
  const size = mib >= 1 ? `${Number(mib.toFixed(2))} MiB` : `${Math.floor(maxBodyBytes / 1024)} KiB`;
  return `The request body is larger than this gateway takes (${size}): send a smaller request (an image as a URL rather than inline data, fewer or shorter messages).`;
}
