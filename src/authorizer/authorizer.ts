/**
 * The authorization pipeline both doors run: size limits → JWT → virtual key → decide (pure core) →
 * signed context. Returns synchronously when nothing needs I/O (a token verified before), so the Check
 * hot path allocates no promise; throws only for infrastructure faults (the IdP unreachable), which
 * the doors turn into errors, never into an allow.
 */
import { randomUUID } from 'node:crypto';
import { parseModelBody } from '../core/body.js';
import { adminAccessMessage, tooLargeMessage } from '../core/messages.js';
import { decide, type Decision, type DecisionRules, type TeamRecord } from '../core/decide.js';
import { classifyRoute, modelEndpoint, normalizePath, type RouteKind } from '../core/route.js';
import type { ContextClaims, ContextSigner } from '../identity/context-token.js';
import { bodyDigest, CONTEXT_TTL_MS } from '../identity/context-token.js';
import type { JwtResult, JwtVerifier } from '../identity/jwt.js';
import { bearerKey, sha256Hex, type KeyDirectory, type KeyRecord } from '../identity/keys.js';
import type { Admitted, Lease, Limiter } from '../store/limiter.js';
import type { DeniedCaller } from '../store/spend.js';
import { timingSafeEqual } from 'node:crypto';
import { aliasBitmap } from '../routing/deployments.js';
import { retryAfterHeaders } from '../errors/codes.js';

/** The request as a door received it. Header names are lower-case. */
export interface RequestFacts {
  readonly method: string;
  /** As sent, query included. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | Uint8Array | undefined;
  /** The body as the door already parsed it, if it did. */
  readonly json?: unknown;
  /** Sign an x-tollgate-context for the allowed request (Check: yes; the gateway authorizing itself: no). */
  readonly signContext?: boolean;
  /** Envoy said the body was cut to its max_request_bytes (`x-envoy-auth-partial-body: true`). */
  readonly partialBody: boolean;
  readonly contextExtensions: Readonly<Record<string, string>>;
  /** The peer's IP address: Envoy's downstream peer on Check, the socket's on the gateway. */
  readonly source?: string | undefined;
}

export interface Authorization {
  readonly decision: Decision;
  readonly route: RouteKind;
  readonly requestId: string;
  /** The signed x-tollgate-context of an allowed request. */
  readonly context: string | undefined;
  /** The admission's lease (limits apply), settled by the gateway when the reply ends. */
  readonly lease?: Lease | undefined;
  /** For the client's response: `x-ratelimit-*` when allowed; `retry-after` and the rest with a limit denial. */
  readonly headers?: readonly (readonly [string, string])[];
  /**
   * A denial of a known key (or of the master key): who it was, for its spend-log row. Requests without a
   * valid key leave none (a flood of them must not become database writes).
   */
  readonly denied?: DeniedCaller | undefined;
}

export interface AuthorizerDeps {
  readonly rules: DecisionRules;
  readonly keys: KeyDirectory;
  readonly teams: ReadonlyMap<string, TeamRecord>;
  readonly jwt: JwtVerifier | undefined;
  readonly jwtHeader: string;
  /** sha256 of the master key, when one is configured. */
  readonly masterKeyHash: Buffer | undefined;
  readonly maxBodyBytes: number;
  readonly signer: ContextSigner;
  readonly random: () => number;
  /** Rate limits and budgets; absent: none are enforced (tests of the other stages). */
  readonly limiter?: Limiter | undefined;
}

const EMPTY_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/** Shown for a path with encoded slashes or dots, or dot segments. */
export const UNCLEAR_PATH = 'The path contains a backslash or a "." / ".." segment (plain or encoded): send the plain endpoint path.';

export class Authorizer {
  readonly #d: AuthorizerDeps;
  #rules: DecisionRules;
  constructor(deps: AuthorizerDeps) {
    this.#d = deps;
    this.#rules = deps.rules;
  }

  get rules(): DecisionRules {
    return this.#rules;
  }

  /** What opens the admin API here, for a refusal the gateway words itself: decide's words for it. */
  get adminAccess(): string {
    return adminAccessMessage(this.#rules.adminGroups.length > 0 && this.#d.jwt !== undefined, false, this.#rules.jwtHeader);
  }

  /** Swaps rules atomically (models discovered later, a reloaded config); in-flight calls keep the old ones. */
  updateRules(patch: Partial<DecisionRules>): void {
    this.#rules = { ...this.#rules, ...patch };
  }

  authorize(facts: RequestFacts, nowMs: number): Authorization | Promise<Authorization> {
    const requestId = validRequestId(facts.headers['x-request-id']) ?? randomUUID();
    const path = normalizePath(facts.path);
    if (path === null) {
      return {
        decision: { allow: false, code: 'not_found', message: UNCLEAR_PATH, detail: 'backslash or dot-segment path' },
        route: 'plain',
        requestId,
        context: undefined,
      };
    }
    const route = classifyRoute(facts.method, path);
    if (tooLarge(facts, this.#d.maxBodyBytes)) {
      return {
        decision: { allow: false, code: 'request_too_large', message: tooLargeMessage(this.#d.maxBodyBytes), detail: undefined },
        route,
        requestId,
        context: undefined,
      };
    }
    const jwt = this.#d.jwt?.verify(facts.headers[this.#d.jwtHeader], nowMs);
    if (jwt instanceof Promise) return jwt.then((r) => this.#finish(facts, path, route, requestId, r, nowMs));
    return this.#finish(facts, path, route, requestId, jwt, nowMs);
  }

  #finish(
    facts: RequestFacts,
    path: string,
    route: RouteKind,
    requestId: string,
    jwt: JwtResult | undefined,
    nowMs: number,
    settled = false,
  ): Authorization | Promise<Authorization> {
    const key = this.#lookupKey(facts.headers['authorization']);
    // A change to this key (or its team, its user) is being read in: decided on the new record, not the old.
    const settling = typeof key === 'object' && !settled ? this.#d.keys.settling?.(key) : undefined;
    if (settling !== undefined) return settling.then(() => this.#finish(facts, path, route, requestId, jwt, nowMs, true));
    // The records are asked only when the answer can matter: not for a probe, nor when the token already
    // decides the denial (unauthenticated traffic must not fill the database's read slots).
    const tokenDenies = jwt !== undefined && !jwt.ok && (jwt.failure !== 'missing' || this.#rules.jwtRequired);
    if (key === 'unknown' && route !== 'probe' && !tokenDenies) {
      // Perhaps made on another replica a moment ago, its broadcast still on the way: the records know it.
      const late = this.#d.keys.lookupMissing?.(sha256Hex(bearerKey(facts.headers['authorization']) as string));
      if (late !== undefined) return late.then((k) => this.#decide(facts, path, route, requestId, jwt, k ?? 'unknown', nowMs));
    }
    return this.#decide(facts, path, route, requestId, jwt, key, nowMs);
  }

  #decide(
    facts: RequestFacts,
    path: string,
    route: RouteKind,
    requestId: string,
    jwt: JwtResult | undefined,
    key: KeyRecord | 'missing' | 'malformed' | 'unknown' | 'master',
    nowMs: number,
  ): Authorization | Promise<Authorization> {
    const d = this.#d;
    const rules = this.#rules;
    const teamId = typeof key === 'object' ? key.teamId : undefined;
    const decision = decide(
      {
        route,
        method: facts.method,
        path,
        headers: rules.policy.size > 0 ? policyHeaders(facts.headers, d.jwtHeader) : EMPTY_HEADERS,
        contextExtensions: facts.contextExtensions,
        source: peerAddress(facts.source),
        body: facts.body,
        json: facts.json,
        jwt,
        key,
        team: teamId === undefined ? undefined : d.teams.get(teamId),
      },
      rules,
      nowMs,
      d.random(),
    );
    if (!decision.allow) {
      // Who, as a served request's row names them: the token's user when it holds one, else the key's owner.
      const user = jwt?.ok === true && jwt.identity.user !== '' ? jwt.identity.user : undefined;
      const denied: DeniedCaller | undefined =
        typeof key === 'object'
          ? { keyId: key.id, userId: user ?? key.userId, teamId: key.teamId, model: this.#modelOf(facts) }
          : key === 'master'
            ? { keyId: undefined, userId: user, teamId: undefined, model: this.#modelOf(facts) }
            : undefined;
      // Every deployment cooling down: when the first comes back, for either door to send.
      const headers = decision.retryAfterMs === undefined ? undefined : retryAfterHeaders(decision.retryAfterMs);
      return { decision, route, requestId, context: undefined, denied, headers };
    }
    const limiter = d.limiter;
    if (limiter === undefined || decision.body === undefined)
      return this.#allowed(facts, path, route, requestId, decision, undefined, nowMs);
    const p = decision.principal;
    const bytes = facts.body === undefined ? 0 : typeof facts.body === 'string' ? facts.body.length : facts.body.byteLength;
    // An embedding generates nothing: it reserves its input only, not the default completion cap.
    const maxTokens = modelEndpoint(facts.method, path) === 'embeddings' ? 0 : decision.body.maxTokens;
    const admitted = limiter.admit(p, decision.deployment, { maxTokens, choices: decision.body.choices, bytes }, nowMs);
    if (admitted instanceof Promise) return admitted.then((a) => this.#admitted(facts, path, route, requestId, decision, a, nowMs));
    return this.#admitted(facts, path, route, requestId, decision, admitted, nowMs);
  }

  #admitted(
    facts: RequestFacts,
    path: string,
    route: RouteKind,
    requestId: string,
    decision: Extract<Decision, { allow: true }>,
    a: Admitted,
    nowMs: number,
  ): Authorization {
    if (!a.ok) {
      const p = decision.principal;
      return {
        decision: { allow: false, code: a.code, message: a.message, detail: undefined },
        route,
        requestId,
        context: undefined,
        headers: a.headers,
        denied: { keyId: p.keyId, userId: p.userId, teamId: p.teamId, model: decision.body?.model },
      };
    }
    const admittedDecision = a.deployment === decision.deployment ? decision : { ...decision, deployment: a.deployment };
    return this.#allowed(facts, path, route, requestId, admittedDecision, a, nowMs);
  }

  #allowed(
    facts: RequestFacts,
    path: string,
    route: RouteKind,
    requestId: string,
    decision: Extract<Decision, { allow: true }>,
    a: Extract<Admitted, { ok: true }> | undefined,
    nowMs: number,
  ): Authorization {
    const lease = a?.lease;
    const headers = a?.headers;
    if (facts.signContext === false) return { decision, route, requestId, context: undefined, lease, headers };
    const p = decision.principal;
    // JSON.stringify drops the undefined members.
    const claims: ContextClaims = {
      k: p.keyId,
      a: p.keyAlias,
      u: p.userId,
      t: p.teamId,
      e: p.email,
      m: decision.body?.model,
      d: decision.deployment?.id,
      f: decision.fallbacks.length > 0 ? decision.fallbacks : undefined,
      // The shorter of the two lists, so a policy that hides most of a long catalog still fits a header.
      ...this.#listing(decision.hidden),
      adm: p.admin ? 1 : undefined,
      l: lease?.id,
      n: lease === undefined ? randomUUID() : undefined,
      rt: lease?.reservedTokens,
      r: requestId,
      p: `${facts.method} ${path}`,
      b: bodyDigest(facts.body),
      x: nowMs + CONTEXT_TTL_MS,
    };
    return { decision, route, requestId, context: this.#d.signer.sign(claims), lease, headers };
  }

  /** The alias a denied request asked for, for its spend-log row: one of the catalog's, or none (a name the
   * client made up would spread through the per-model views). */
  #modelOf(facts: RequestFacts): string | undefined {
    const model = modelOf(facts);
    return model !== undefined && this.#rules.catalog.group(model) !== undefined ? model : undefined;
  }

  #listing(hidden: readonly string[]): { h?: readonly string[]; v?: readonly string[]; hb?: string; hc?: string } {
    if (hidden.length === 0) return {};
    // The catalog's sorted aliases, made once per catalog (not a copy per listing).
    const index = this.#rules.catalog.listing;
    const gone = new Set(hidden);
    const list = 2 * hidden.length <= index.sorted.length ? { h: hidden } : { v: index.sorted.filter((a) => !gone.has(a)) };
    const names = list.h ?? list.v;
    // Long lists as a bitmap: a header holds 8 KiB of context (a catalog of thousands of aliases, in 1 KiB).
    if (names.reduce((n, a) => n + a.length + 3, 0) <= LISTING_INLINE_CHARS) return list;
    // `v: []` beside the bitmap: a gateway of a version before it reads that, and lists nothing, not all.
    return { hb: aliasBitmap(index, gone), hc: index.digest, v: [] };
  }

  #lookupKey(header: string | undefined): KeyRecord | 'missing' | 'malformed' | 'unknown' | 'master' {
    const key = bearerKey(header);
    if (key === undefined) return 'missing';
    if (key === null) return 'malformed';
    const hash = sha256Hex(key);
    // The master key first: a virtual key with its value (the admin API refuses to make one) never shadows it.
    const master = this.#d.masterKeyHash;
    if (master !== undefined && timingSafeEqual(Buffer.from(hash, 'hex'), master)) return 'master';
    return this.#d.keys.get(hash) ?? 'unknown';
  }
}

/** The `model` a denied request's body names (a body of 16 KiB at most: a denied request costs little). */
function modelOf(facts: RequestFacts): string | undefined {
  const json = facts.json;
  if (json !== undefined) {
    const model: unknown = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['model'] : undefined;
    return typeof model === 'string' ? model.slice(0, 256) : undefined;
  }
  const body = facts.body;
  if (body === undefined || body.length > 16 * 1024) return undefined;
  const r = parseModelBody(body);
  return r.ok ? r.model : undefined;
}

/** The longest alias list a context carries as names; past it, a bitmap. */
const LISTING_INLINE_CHARS = 2048;

/** Envoy's own `x-request-id` when it is sane, so logs line up; else a fresh one. */
export function validRequestId(v: string | undefined): string | undefined {
  return v !== undefined && v.length > 0 && v.length <= 128 && /^[A-Za-z0-9._:-]+$/.test(v) ? v : undefined;
}

function tooLarge(facts: RequestFacts, max: number): boolean {
  if (facts.partialBody) return true;
  const size = facts.body === undefined ? 0 : typeof facts.body === 'string' ? Buffer.byteLength(facts.body) : facts.body.byteLength;
  if (size > max) return true;
  const declared = facts.headers['content-length'];
  return declared !== undefined && Number(declared) > max;
}

/** An IPv4 peer on a dual-stack socket is written `::ffff:a.b.c.d`: rules see the `a.b.c.d` they were written for. */
function peerAddress(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * Headers the policy may read, the same through either door: not the credentials; not `x-tollgate-*` (Envoy
 * strips a client's before Check, the gateway has them only from a client), the pseudo-headers (only Check
 * has them) nor `x-request-id` (Envoy's own on Check, dropped standalone). The authority is `host` on both
 * (Envoy sends `:authority` and no `host`).
 */
function policyHeaders(headers: Readonly<Record<string, string>>, jwtHeader: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name in headers) {
    if (name === 'authorization' || name === jwtHeader || name === 'x-request-id') continue;
    if (name.startsWith(':') || name.startsWith('x-tollgate-')) continue;
    out[name] = headers[name] as string;
  }
  const authority = headers[':authority'];
  if (authority !== undefined) out['host'] = authority;
  return out;
}
