/**
 * `x-tollgate-context`: a short-lived token, HMAC-SHA256 signed with a secret every replica shares, that
 * binds the identity authz established to one request (method, path, the body's digest, model, deployment,
 * request id). The gateway trusts `x-tollgate-*` identity only through it, and takes a token that carries a
 * limits lease once (Limiter.claim): a token sent again — another body, or the same one — counts nothing.
 *
 * Format: `tgc1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "tgc1." + claims))>`.
 */
import { createHmac, createSecretKey, hash, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';

export interface ContextClaims {
  /** Key id (16 hex), absent without a key. */
  readonly k?: string | undefined;
  /** Key alias. */
  readonly a?: string | undefined;
  /** User. */
  readonly u?: string | undefined;
  /** Team. */
  readonly t?: string | undefined;
  /** Email from the JWT. */
  readonly e?: string | undefined;
  /** Model alias. */
  readonly m?: string | undefined;
  /** Deployment id picked by the router. */
  readonly d?: string | undefined;
  /** Fallback aliases this caller may use. */
  readonly f?: readonly string[] | undefined;
  /** Model listing routes: aliases the policy denies this caller. */
  readonly h?: readonly string[] | undefined;
  /** Model listing routes, instead of `h` when shorter: the only aliases the policy leaves this caller. */
  readonly v?: readonly string[] | undefined;
  /**
   * Model listing routes, instead of both when even the shorter is long: the hidden aliases as a bitmap over
   * the catalog's sorted aliases (`hb`), and that list's digest (`hc`).
   */
  readonly hb?: string | undefined;
  readonly hc?: string | undefined;
  /** Lease id of the limits admission, and the tokens it reserved (settled by the gateway). */
  readonly l?: string | undefined;
  /** Without a lease: a nonce, so the gateway can take this context's one use all the same (Limiter.claim). */
  readonly n?: string | undefined;
  readonly rt?: number | undefined;
  /** Request id. */
  readonly r: string;
  /** Method and path (without query) the token was issued for. */
  readonly p: string;
  /** The body's digest (bodyDigest; '' for none). Absent only from a signer before it: the body is then unbound. */
  readonly b?: string | undefined;
  /** Admin route authorized (master key or admin group). */
  readonly adm?: 1 | undefined;
  /** Expiry, epoch milliseconds. */
  readonly x: number;
}

const PREFIX = 'tgc1.';
export const CONTEXT_TTL_MS = 30_000;

export type ContextCheck =
  | { readonly ok: true; readonly claims: ContextClaims }
  | { readonly ok: false; readonly reason: 'malformed' | 'bad_signature' }
  /** Signed by authz, past its time: its claims, for giving back what Check took for it (never to serve it). */
  | { readonly ok: false; readonly reason: 'expired'; readonly claims: ContextClaims };

/** The signing secret: `context_signing_key` when set, else derived from the master key (HKDF-SHA256). */
export function contextSecret(contextSigningKey: string | undefined, masterKey: string | undefined): Buffer | undefined {
  if (contextSigningKey !== undefined) return Buffer.from(contextSigningKey, 'utf8');
  if (masterKey === undefined) return undefined;
  return Buffer.from(hkdfSync('sha256', masterKey, 'tollgate', 'x-tollgate-context v1', 32));
}

/**
 * SHA-256 of a request body as Envoy sent it to Check (raw_body) and the gateway received it, 128 bits in
 * base64url; '' for none. A string is its UTF-8 bytes, as Envoy's `body` field carries them.
 */
export function bodyDigest(body: string | Uint8Array | undefined): string {
  if (body === undefined || body.length === 0) return '';
  return hash('sha256', body, 'base64url').slice(0, 22);
}

export class ContextSigner {
  /** A KeyObject: createHmac with it skips copying the key on every call. */
  readonly #secret: KeyObject;
  constructor(secret: Buffer) {
    if (secret.length < 32) throw new Error('the x-tollgate-context secret must be at least 32 bytes');
    this.#secret = createSecretKey(secret);
  }

  sign(claims: ContextClaims): string {
    const payload = PREFIX + Buffer.from(JSON.stringify(claims), 'utf8').toString('base64url');
    return `${payload}.${createHmac('sha256', this.#secret).update(payload).digest('base64url')}`;
  }

  verify(token: string, nowMs: number): ContextCheck {
    const dot = token.lastIndexOf('.');
    if (!token.startsWith(PREFIX) || dot <= PREFIX.length || token.length > 8192) return { ok: false, reason: 'malformed' };
    const payload = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1), 'base64url');
    const expected = createHmac('sha256', this.#secret).update(payload).digest();
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'bad_signature' };
    let claims: ContextClaims;
    try {
      claims = JSON.parse(Buffer.from(payload.slice(PREFIX.length), 'base64url').toString('utf8')) as ContextClaims;
    } catch {
      return { ok: false, reason: 'malformed' };
    }
    if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) return { ok: false, reason: 'malformed' };
    if (typeof claims.x !== 'number') return { ok: false, reason: 'malformed' };
    if (nowMs > claims.x) return { ok: false, reason: 'expired', claims };
    return { ok: true, claims };
  }
}
