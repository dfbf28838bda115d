/**
 * OAuth 2.0 access-token (JWT) validation for the `X-Cake-Authorization` header.
 *
 * - Issuer discovery with openid-client (OpenID Connect Discovery 1.0 §4, issuer must match), or a
 *   configured `jwks_uri`; the JWKS is fetched at boot and refreshed in the background every
 *   `JWKS_REFRESH_MS` (a failed refresh keeps the set it has). A token with an unknown `kid` waits for a
 *   fetch that is running, and otherwise starts one at most once per `KID_REFETCH_COOLDOWN_MS`.
 * - jose verifies signature, `iss`, `aud`, `exp` (required: RFC 9068 §2.2), `nbf` with the configured
 *   clock tolerance and an allow-list of asymmetric algorithms (never `none`; an HS* token against an RSA
 *   key is refused by the allow-list and by jose's key-type check); a `typ` header naming another kind
 *   of JWT (logout, security event, ID token…) is refused (RFC 8725 §3.11, RFC 9068 §2.1).
 * - Verified tokens are cached by their exact text until they expire, so the hot path does one map probe
 *   and a clock comparison. The cache is dropped whenever the key set changes, and a verification that
 *   overlapped a change is kept only if its key is still in the new set: a key removed from the JWKS
 *   stops validating at the refresh that sees it gone.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTPayload, type JWTHeaderParameters } from 'jose';
import * as oidc from 'openid-client';
import { request } from 'undici';
import type { JwtSettings } from '../config/schema.js';

/** The caller's identity from a valid token, with claims mapped as configured. */
export interface JwtIdentity {
  readonly claims: Readonly<Record<string, unknown>>;
  readonly user: string;
  readonly email: string;
  readonly groups: readonly string[];
  /** Epoch seconds, from `exp` (required). */
  readonly exp: number;
  readonly nbf: number;
  /** What policy rules see as `jwt`: the claims plus the mapped user, email and groups (built once per token). */
  readonly policyView: Readonly<Record<string, unknown>>;
}

/** Why a token was refused; selects the message shown to the caller (never the token itself). */
export type JwtFailure =
  | 'missing'
  | 'malformed'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'bad_signature'
  | 'unknown_key'
  | 'algorithm_not_allowed'
  | 'claims_invalid'
  | 'no_expiry'
  | 'not_access_token';

export type JwtResult = { readonly ok: true; readonly identity: JwtIdentity } | { readonly ok: false; readonly failure: JwtFailure };

/** The identity provider could not be reached: an outage, not a denial. */
export class IdentityProviderUnavailable extends Error {
  readonly code = 'IDP_UNAVAILABLE';
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = 'IdentityProviderUnavailable';
  }
}

export const KID_REFETCH_COOLDOWN_MS = 5_000;
/**
 * The background refresh period, and so how long a key removed from the IdP's JWKS may keep validating
 * tokens (plus the time the fetch takes) while the JWKS can be fetched; README states this bound.
 */
export const JWKS_REFRESH_MS = 60_000;
const FETCH_TIMEOUT_MS = 5_000;
const VERIFIED_CACHE_MAX = 10_000;
const MAX_TOKEN_LENGTH = 16_384;

interface CachedToken {
  readonly identity: JwtIdentity;
}

export class JwtVerifier {
  readonly #settings: JwtSettings;
  readonly #audience: string | string[];
  #jwksUri: string | undefined;
  #keys: ReadonlyMap<string, KeyObject> = new Map();
  /** Bumped whenever `#keys` is replaced; a verification that saw another generation re-checks its key. */
  #generation = 0;
  /**
   * When the last refetch for an unknown kid started. Background refreshes do not count: right after one,
   * a token signed with a key published since must not wait out a cooldown it did not cause.
   */
  #lastKidFetch = -Infinity;
  /** The last fetch failed: an unknown kid then means "cannot tell", an outage, not a bad token. */
  #lastFetchFailed: IdentityProviderUnavailable | undefined;
  #inflight: Promise<void> | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  readonly #verified = new Map<string, CachedToken>();

  constructor(settings: JwtSettings) {
    this.#settings = settings;
    this.#audience = typeof settings.audience === 'string' ? settings.audience : [...settings.audience];
    this.#jwksUri = settings.jwks_uri;
  }

  /**
   * Discovery and the first JWKS fetch; throws IdentityProviderUnavailable when the IdP cannot be reached.
   * `onRefreshFailed` hears of each background refresh that failed (the keys loaded stay in use meanwhile).
   */
  async start(onRefreshFailed?: (err: Error) => void): Promise<void> {
    await this.refresh();
    this.#refreshTimer = setInterval(() => {
      // Kept keys stay valid; the next unknown kid or interval tries again.
      this.refresh().catch((err: unknown) => onRefreshFailed?.(err as Error));
    }, JWKS_REFRESH_MS);
    this.#refreshTimer.unref();
  }

  stop(): void {
    if (this.#refreshTimer) clearInterval(this.#refreshTimer);
  }

  /** Number of keys currently known (for readiness and tests). */
  get keyCount(): number {
    return this.#keys.size;
  }

  /**
   * Validates the header value (`<JWT>` or `Bearer <JWT>`). Returns synchronously when the token was
   * verified before; a Promise when it must be verified (or the JWKS refetched).
   */
  verify(header: string | undefined, nowMs: number): JwtResult | Promise<JwtResult> {
    const candidate = stripBearer(header);
    if (candidate === undefined) return MISSING;
    // A token verified before needs no syntax check: probe the cache first.
    const cached = this.#verified.get(candidate);
    if (cached !== undefined) return this.#timeCheck(cached.identity, nowMs);
    if (!isCompactJws(candidate)) return fail('malformed');
    return this.#verifyFresh(candidate, nowMs);
  }

  #timeCheck(identity: JwtIdentity, nowMs: number): JwtResult {
    const now = nowMs / 1000;
    const tol = this.#settings.clock_tolerance_s;
    if (now - tol >= identity.exp) return fail('expired');
    if (now + tol < identity.nbf) return fail('not_yet_valid');
    return { ok: true, identity };
  }

  async #verifyFresh(token: string, nowMs: number): Promise<JwtResult> {
    const generation = this.#generation;
    let key: KeyObject | undefined;
    let payload: JWTPayload;
    let header: JWTHeaderParameters;
    try {
      ({ payload, protectedHeader: header } = await jwtVerify(token, async (h) => (key = await this.#keyFor(h)), {
        issuer: this.#settings.issuer,
        audience: this.#audience,
        algorithms: this.#settings.algorithms,
        clockTolerance: this.#settings.clock_tolerance_s,
        currentDate: new Date(nowMs),
        // RFC 9068 §2.2: `exp` is REQUIRED in a JWT access token; without it a token would never expire.
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      if (err instanceof IdentityProviderUnavailable) throw err;
      return fail(joseFailure(err));
    }
    // The header's typ, and Keycloak's `typ` claim ("Bearer" on access tokens; "ID", "Refresh", "Logout"…).
    if (!isAccessTokenType(header.typ) || !isAccessTokenClaim(payload['typ'])) return fail('not_access_token');
    const identity = this.#identity(payload);
    if (identity === undefined) return fail('claims_invalid');
    // The key set was replaced (and the cache dropped) while this token was being verified: its result
    // stands only if the new set still holds its key; caching it otherwise would outlive the key's removal.
    if (generation !== this.#generation && (key === undefined || this.#pick(header)?.equals(key) !== true)) return fail('unknown_key');
    if (this.#verified.size >= VERIFIED_CACHE_MAX) {
      const oldest = this.#verified.keys().next();
      if (!oldest.done) this.#verified.delete(oldest.value);
    }
    this.#verified.set(token, { identity });
    return { ok: true, identity };
  }

  #pick(header: JWTHeaderParameters): KeyObject | undefined {
    if (header.kid !== undefined) return this.#keys.get(header.kid);
    // No kid: acceptable only when the set holds exactly one key (RFC 7517 §4.5 leaves kid optional).
    return this.#keys.size === 1 ? this.#keys.values().next().value : undefined;
  }

  async #keyFor(header: JWTHeaderParameters): Promise<KeyObject> {
    let key = this.#pick(header);
    // A fetch is running (the background refresh, or another token's unknown kid): its answer may hold
    // the key, so wait for it rather than refuse a token signed with a key published a moment ago.
    if (key === undefined && this.#inflight !== undefined) {
      await this.#inflight;
      key = this.#pick(header);
    }
    if (key === undefined && performance.now() - this.#lastKidFetch >= KID_REFETCH_COOLDOWN_MS) {
      this.#lastKidFetch = performance.now();
      await this.refresh();
      key = this.#pick(header);
    }
    if (key === undefined && this.#lastFetchFailed !== undefined) throw this.#lastFetchFailed;
    if (key === undefined) throw new joseErrors.JWKSNoMatchingKey();
    return key;
  }

  /**
   * Fetches the key set now, as the background refresh does; one fetch at a time, concurrent callers
   * share it. Rejects with IdentityProviderUnavailable when the JWKS cannot be fetched (the set is kept).
   */
  refresh(): Promise<void> {
    this.#inflight ??= this.#fetchKeys().then(
      () => {
        this.#inflight = undefined;
        this.#lastFetchFailed = undefined;
      },
      (err: unknown) => {
        this.#inflight = undefined;
        if (err instanceof IdentityProviderUnavailable) this.#lastFetchFailed = err;
        throw err;
      },
    );
    return this.#inflight;
  }

  async #fetchKeys(): Promise<void> {
    const jwksUri = this.#jwksUri ?? (await this.#discover());
    let body: unknown;
    try {
      const res = await request(jwksUri, {
        headers: { accept: 'application/jwk-set+json, application/json' },
        headersTimeout: FETCH_TIMEOUT_MS,
        bodyTimeout: FETCH_TIMEOUT_MS,
        maxRedirections: 0,
      } as Parameters<typeof request>[1]);
      if (res.statusCode !== 200) {
        await res.body.dump();
        throw new Error(`JWKS answered HTTP ${res.statusCode}`);
      }
      body = await res.body.json();
    } catch (err) {
      throw new IdentityProviderUnavailable(`cannot fetch the JWKS at ${jwksUri}: ${errorText(err)}`, { cause: err });
    }
    const keys = parseJwks(body);
    if (keys === undefined) throw new IdentityProviderUnavailable(`the JWKS at ${jwksUri} is not a JSON Web Key Set`);
    if (!sameKeys(keys, this.#keys)) {
      this.#keys = keys;
      this.#generation += 1;
      this.#verified.clear();
    }
  }

  async #discover(): Promise<string> {
    const s = this.#settings;
    try {
      const config = await oidc.discovery(new URL(s.issuer), 'tollgate', undefined, undefined, {
        execute: s.allow_insecure_http ? [oidc.allowInsecureRequests] : [],
        timeout: FETCH_TIMEOUT_MS / 1000,
      });
      const uri = config.serverMetadata().jwks_uri;
      if (uri === undefined) throw new Error('the discovery document has no jwks_uri');
      if (!s.allow_insecure_http && new URL(uri).protocol !== 'https:')
        throw new Error('the discovery document names a jwks_uri that is not https://');
      this.#jwksUri = uri;
      return uri;
    } catch (err) {
      throw new IdentityProviderUnavailable(`OIDC discovery for ${s.issuer} failed: ${errorText(err)}`, { cause: err });
    }
  }

  #identity(payload: JWTPayload): JwtIdentity | undefined {
    const c = this.#settings.claims;
    const user = claimAt(payload, c.user);
    const email = claimAt(payload, c.email);
    const groups = claimAt(payload, c.groups);
    if (user !== undefined && typeof user !== 'string') return undefined;
    const mapped = { user: user ?? '', email: typeof email === 'string' ? email : '', groups: toGroups(groups) };
    return {
      claims: payload,
      ...mapped,
      exp: payload.exp as number, // required and checked to be a number by jwtVerify (requiredClaims)
      nbf: typeof payload.nbf === 'number' ? payload.nbf : -Infinity,
      policyView: Object.freeze({ ...payload, ...mapped }),
    };
  }
}

const MISSING: JwtResult = { ok: false, failure: 'missing' };
const FAILURES = new Map<JwtFailure, JwtResult>();
function fail(failure: JwtFailure): JwtResult {
  let r = FAILURES.get(failure);
  if (r === undefined) FAILURES.set(failure, (r = { ok: false, failure }));
  return r;
}

/** Raw JWT or `Bearer <JWT>`; `undefined` when absent or empty, `null` when not JWS compact form. */
export function extractToken(header: string | undefined): string | undefined | null {
  const v = stripBearer(header);
  if (v === undefined) return undefined;
  return isCompactJws(v) ? v : null;
}

function stripBearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  let v = header.trim();
  if (v.length >= 6 && v.slice(0, 6).toLowerCase() === 'bearer' && (v.length === 6 || v[6] === ' ' || v[6] === '\t')) v = v.slice(6).trim();
  return v === '' ? undefined : v;
}

/** Keycloak's payload `typ`: absent (other IdPs), or `Bearer` on an access token. */
function isAccessTokenClaim(typ: unknown): boolean {
  return typ === undefined || (typeof typ === 'string' && typ.toLowerCase() === 'bearer');
}

/**
 * `typ` values an access token may carry: none, `JWT` (Keycloak, Auth0 and most IdPs) or `at+jwt`
 * (RFC 9068 §2.1), case-insensitive and with or without the `application/` prefix (RFC 7515 §4.1.9).
 * Any other (`logout+jwt`, `secevent+jwt`, `id_token+jwt`…) is another kind of JWT (RFC 8725 §3.11).
 */
function isAccessTokenType(typ: unknown): boolean {
  if (typ === undefined) return true;
  if (typeof typ !== 'string') return false;
  const t = typ.toLowerCase();
  const bare = t.startsWith('application/') ? t.slice('application/'.length) : t;
  return bare === 'jwt' || bare === 'at+jwt';
}

function isCompactJws(v: string): boolean {
  return v.length <= MAX_TOKEN_LENGTH && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(v);
}

/** jose errors by their stable `code` (never instanceof across packages). */
function joseFailure(err: unknown): JwtFailure {
  const e = err as { code?: unknown; claim?: unknown; reason?: unknown };
  switch (e.code) {
    case 'ERR_JWT_EXPIRED':
      return 'expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (e.claim === 'iss') return 'wrong_issuer';
      if (e.claim === 'aud') return 'wrong_audience';
      if (e.claim === 'nbf') return 'not_yet_valid';
      if (e.claim === 'exp') return e.reason === 'missing' ? 'no_expiry' : 'claims_invalid';
      return 'claims_invalid';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad_signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'unknown_key';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return 'algorithm_not_allowed';
    default:
      // ERR_JWS_INVALID, ERR_JWT_INVALID, key-type mismatches (an HS token against an RSA key) and the rest.
      return err instanceof TypeError && /key/i.test(err.message) ? 'algorithm_not_allowed' : 'malformed';
  }
}

/** Keys usable for signatures: RSA, EC and OKP public keys; symmetric (`oct`) keys are never imported. */
function parseJwks(body: unknown): Map<string, KeyObject> | undefined {
  const list = (body as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list)) return undefined;
  const keys = new Map<string, KeyObject>();
  list.forEach((jwk: unknown, i) => {
    if (typeof jwk !== 'object' || jwk === null) return;
    const k = jwk as Record<string, unknown>;
    if (k['use'] !== undefined && k['use'] !== 'sig') return;
    if (k['kty'] !== 'RSA' && k['kty'] !== 'EC' && k['kty'] !== 'OKP') return;
    try {
      const { d: _private, ...pub } = k;
      const key = createPublicKey({ key: pub as JsonWebKey, format: 'jwk' });
      keys.set(typeof k['kid'] === 'string' ? k['kid'] : `#${i}`, key);
    } catch {
      /* a key this runtime cannot import is skipped, as jose's JWKS handling does */
    }
  });
  return keys;
}

function sameKeys(a: ReadonlyMap<string, KeyObject>, b: ReadonlyMap<string, KeyObject>): boolean {
  if (a.size !== b.size) return false;
  for (const [kid, key] of a) {
    const other = b.get(kid);
    if (other === undefined || !other.equals(key)) return false;
  }
  return true;
}

/** `realm_access.roles` style dotted paths, for IdPs that nest group claims (Keycloak). */
function claimAt(payload: JWTPayload, path: string): unknown {
  if (path in payload) return payload[path];
  let v: unknown = payload;
  for (const part of path.split('.')) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function toGroups(v: unknown): readonly string[] {
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string');
  if (typeof v === 'string') return v.split(/[\s,]+/).filter((g) => g !== '');
  return [];
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
  }
  return String(err);
}
