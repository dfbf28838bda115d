/**
 * The HTTP door: the OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
 * `/v1/models`, `/v1/models/{model}`) and the health probes. Behind Envoy, identity comes only from a valid `x-tollgate-context`
 * bound to this request (signature, expiry, method and path, model); any other request — no Envoy, or a
 * forged, expired or mismatched context — is authorized here by the same decision pipeline, so the gateway
 * is never an open door. Client-sent `x-tollgate-*` headers are never read otherwise.
 */
import { randomUUID } from 'node:crypto';
import { UNCLEAR_PATH, validRequestId, type Authorizer, type RequestFacts } from '../authorizer/authorizer.js';
import type { TeamRecord } from '../core/decide.js';
import { allows, isOwnKeyInfo, keyAllows } from '../core/decide.js';
import { modelEndpoint, normalizePath } from '../core/route.js';
import { NO_MODELS_MESSAGE, tooLargeMessage } from '../core/messages.js';
import { ERRORS } from '../errors/codes.js';
import { bodyDigest, type ContextClaims, type ContextSigner } from '../identity/context-token.js';
import type { KeyDirectory, KeyRecord } from '../identity/keys.js';
import { aliasesOfBitmap, type ModelCatalog } from '../routing/deployments.js';
import type { ClaimResult, Lease } from '../store/limiter.js';
import type { DeniedCaller, DenialRecorder } from '../store/spend.js';
import type { Logger } from '../telemetry/logger.js';
import type { RequestLog } from '../telemetry/request-log.js';
import { statusLabel, type Metrics } from '../telemetry/metrics.js';
import { adminMethods, isAdminRoute, type AdminApi } from './admin.js';
import { ClientLink } from './exchange.js';
import { sendError, type Caller, type Forwarder, type ForwardRequest } from './forward.js';
import type { HttpResponse } from './http-response.js';
import { HttpServer, type HttpRequest } from './http-server.js';
import { parseObject } from './sse.js';

export interface GatewayDeps {
  readonly authorizer: Authorizer;
  readonly signer: ContextSigner;
  readonly forwarder: Forwarder;
  readonly catalog: () => ModelCatalog;
  readonly keys: KeyDirectory;
  readonly teams: ReadonlyMap<string, TeamRecord>;
  readonly maxBodyBytes: number;
  readonly logger: Logger;
  /** One line per request. */
  readonly requestLog: RequestLog;
  /** Why the gateway is not ready, or undefined when it is. */
  readonly notReady: () => string | undefined;
  /** Told of each admitted request that starts here, so its lease is renewed until it is recorded. */
  readonly leases?:
    | {
        begin(lease: Lease): void;
        end(lease: Lease): void;
        /** Takes a signed context's one use: a context sent again is refused (Limiter.claim). */
        claim(id: string, untilMs: number, strict: boolean): ClaimResult | Promise<ClaimResult>;
        /** Gives back a lease taken at Check whose request is not served (its context could not be claimed). */
        release(lease: Lease): void;
      }
    | undefined;
  /** The admin API (absent without a records database). */
  readonly admin?: AdminApi | undefined;
  /** Denials of known keys decided here, each a spend-log row. */
  readonly denials?: DenialRecorder | undefined;
  /** Prometheus metrics (`GET /metrics`, and the HTTP request counters). */
  readonly metrics?: Metrics | undefined;
}

interface Identity {
  readonly caller: Caller;
  readonly model: string | undefined;
  readonly deployment: string | undefined;
  readonly fallbacks: readonly string[];
  /** Model listing routes: aliases the policy denies this caller. */
  readonly hidden: readonly string[];
  /** Model listing routes, when Check signed these instead: the only aliases the policy leaves this caller. */
  readonly visible?: readonly string[] | undefined;
  /** The caller's key; 'gone' when the context names a key the directory no longer has. */
  readonly key: KeyRecord | undefined | 'gone';
  readonly teamId: string | undefined;
  readonly lease: Lease | undefined;
  /** `x-ratelimit-*` for the response (standalone: behind Envoy, Check's response_headers_to_add carry them). */
  readonly headers: readonly (readonly [string, string])[] | undefined;
  /** Authorized for the admin API (master key or an admin group). */
  readonly admin: boolean;
}

export function createGateway(deps: GatewayDeps): HttpServer {
  const options = {
    keepAliveTimeoutMs: 65_000,
    headersTimeoutMs: 30_000,
    requestTimeoutMs: 120_000,
    maxHeaderBytes: 16 * 1024,
    maxBodyBytes: deps.maxBodyBytes,
  };
  return new HttpServer(options, (req, res) => {
    handle(deps, req, res).catch((err: unknown) => {
      // Failed before a request id was given out: one here, in the reply and the log line alike.
      const requestId = randomUUID();
      const idpDown = (err as { code?: unknown }).code === 'IDP_UNAVAILABLE';
      deps.logger.error({ err: idpDown ? (err as Error).message : err, request_id: requestId }, 'gateway request failed');
      if (res.headersSent) res.destroy();
      // As Envoy answers when Check cannot decide (authz_unavailable): the same outage, the same reply.
      else if (idpDown)
        sendError(res, 'authz_unavailable', 'tollgate cannot reach the identity provider right now: retry shortly.', requestId, undefined, [
          ['retry-after', '1'],
        ]);
      else sendError(res, 'upstream_error', 'tollgate failed to handle the request.', requestId, 500);
    });
  });
}

async function handle(deps: GatewayDeps, req: HttpRequest, res: HttpResponse): Promise<void> {
  const method = req.method;
  const path = normalizePath(req.url);
  const endpoint = path === null ? undefined : modelEndpoint(method, path);
  const m = deps.metrics;
  const route = path === null ? 'other' : routeLabel(endpoint, method, path);
  const started = performance.now();
  const inFlight = m?.httpInFlight.at(route);
  inFlight?.inc();
  const client = new ClientLink();
  res.onclose = () => {
    // Closed before the reply was finished: the client left (the exchange in flight is aborted).
    if (!res.writableFinished) client.leave();
    inFlight?.dec();
    m?.httpRequests.at(route, statusLabel(res.statusCode)).inc();
    // A forwarded request is logged with its model, tokens and cost when it is recorded (RequestObserver).
    if (client.forwarded) return;
    const id = res.getHeader('x-tollgate-request-id');
    deps.requestLog.answered(
      {
        requestId: typeof id === 'string' ? id : undefined,
        method,
        route,
        status: res.statusCode,
        latencyMs: performance.now() - started,
        code: res.errorCode,
        detail: res.errorDetail,
      },
      route === 'probe' || route === 'metrics',
    );
  };
  // Counted and logged like any other request (the close hook above is set).
  if (path === null) return sendError(res, 'not_found', UNCLEAR_PATH, '-');
  if (path === '/health/liveliness' || path === '/health/liveness') return json(res, 200, "I'm alive!");
  if (path === '/health/readiness') {
    const why = deps.notReady();
    return why === undefined ? json(res, 200, { status: 'healthy' }) : json(res, 503, { status: 'unhealthy', reason: why });
  }
  // Scraped on the gateway's own port (Envoy demands admin credentials for it): counts by bounded labels only.
  if (path === '/metrics' && method === 'GET' && m !== undefined) {
    const text = await m.registry.metrics();
    res.writeHead(200, { 'content-type': m.registry.contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }

  // The server read the body whole (null: over max_request_size_mb, dropped as it came).
  const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? req.body : undefined;
  if (body === null) return sendError(res, 'request_too_large', tooLargeMessage(deps.maxBodyBytes), '-');
  // Parsed once: the context binding and the forwarder both use it (and the forwarder edits the text). A
  // leading byte order mark is dropped, as Check's decoder drops it (TextDecoder), so both read one body.
  const text = endpoint === undefined || body === undefined ? undefined : withoutBom(body.toString('utf8'));
  const parsed = text === undefined ? undefined : parseObject(text);
  const id = identify(deps, req, method, path, body, parsed);
  const request = { method, path, url: req.url, endpoint, body, text, parsed, client, started };
  if (id instanceof Promise) return serve(deps, res, request, await id);
  return serve(deps, res, request, id);
}

interface Incoming {
  readonly method: string;
  readonly path: string;
  /** As received (the admin API reads its query string). */
  readonly url: string;
  readonly endpoint: ForwardRequest['endpoint'] | undefined;
  readonly body: Buffer | undefined;
  /** The body as text, on model routes. */
  readonly text: string | undefined;
  readonly parsed: Record<string, unknown> | undefined;
  readonly client: ClientLink;
  /** performance.now() when the request arrived. */
  readonly started: number;
}

/** `GET /v1/models/{model}`, normalised; a model id may hold `/` (`meta-llama/Llama-3.1-8B-Instruct`). */
const ONE_MODEL = /^\/(v1\/)?models\/.+$/;

/** The `route` label: a fixed set, whatever path a client sends. */
function routeLabel(endpoint: ForwardRequest['endpoint'] | undefined, method: string, path: string): string {
  if (endpoint !== undefined) return endpoint;
  if (path === '/v1/models' || path === '/models' || ONE_MODEL.test(path)) return 'models';
  if (path.startsWith('/health/')) return 'probe';
  if (path === '/metrics') return 'metrics';
  if (isAdminRoute(method, path)) return 'admin';
  return 'other';
}

function serve(deps: GatewayDeps, res: HttpResponse, r: Incoming, id: IdentifyResult): Promise<void> | void {
  const { method, path, endpoint, parsed, text } = r;
  if ('error' in id) {
    if (id.denied !== undefined) deps.denials?.denied(id.requestId, id.denied, ERRORS[id.error].status, performance.now() - r.started);
    res.errorDetail = id.detail;
    return sendError(res, id.error, id.message, id.requestId, undefined, id.headers);
  }
  if (endpoint !== undefined) {
    if (parsed === undefined || text === undefined) return sendError(res, 'invalid_body', undefined, id.caller.requestId);
    const alias = id.model ?? (typeof parsed['model'] === 'string' ? parsed['model'] : undefined);
    if (alias === undefined) return sendError(res, 'missing_model', undefined, id.caller.requestId);
    const lease = id.lease;
    if (lease !== undefined) deps.leases?.begin(lease);
    r.client.forwarded = true;
    const forwarded = deps.forwarder.forward(
      {
        endpoint,
        body: parsed,
        text,
        alias,
        hint: id.deployment,
        fallbacks: id.fallbacks,
        caller: id.caller,
        lease: id.lease,
        responseHeaders: id.headers,
        extraLeases: [],
        client: r.client,
        timing: { backendMs: 0, ttftMs: undefined },
        upstream: [],
      },
      res,
    );
    // However the request ends (a fault included), its lease is no longer renewed; it expires if unsettled.
    return lease === undefined ? forwarded : forwarded.finally(() => deps.leases?.end(lease));
  }
  if (method === 'GET' && (path === '/v1/models' || path === '/models')) return listModels(deps, res, id);
  const modelId = method === 'GET' ? modelIdOf(path, r.url) : undefined;
  if (modelId !== undefined) return retrieveModel(deps, res, id, modelId);
  if (isAdminRoute(method, path)) {
    // Check (or the authorizer here) already demanded the master key or an admin group for these paths, but
    // for a key reading its own record (GET /key/info), which the admin API answers for that key only.
    // A key blocked or expired since Check signed the context reads nothing.
    const key = id.key;
    const own =
      typeof key === 'object' && isOwnKeyInfo(method, path) && !key.blocked && (key.expiresAt === undefined || Date.now() < key.expiresAt)
        ? key
        : undefined;
    if (!id.admin && own === undefined) return sendError(res, 'policy_denied', deps.authorizer.adminAccess, id.caller.requestId);
    if (deps.admin === undefined) {
      return sendError(
        res,
        'store_unavailable',
        'The admin API needs the records database, which this process has not opened.',
        id.caller.requestId,
      );
    }
    const q = r.url.indexOf('?');
    return deps.admin.handle(res, method, path, q < 0 ? '' : r.url.slice(q + 1), r.body, { ...id.caller, admin: id.admin, key: own });
  }
  // An OpenAI endpoint asked with GET (a browser, a health check pointed at it): say which method it takes.
  if (modelEndpoint('POST', path) !== undefined)
    return sendError(res, 'method_not_allowed', `${path} takes POST.`, id.caller.requestId, undefined, [['allow', 'POST']]);
  // An admin route with the other method (`POST /key/list`): as for the OpenAI endpoints, say which it takes.
  const allowed = adminMethods(path);
  if (allowed !== undefined)
    return sendError(res, 'method_not_allowed', `${path} takes ${allowed}.`, id.caller.requestId, undefined, [['allow', allowed]]);
  return sendError(res, 'not_found', undefined, id.caller.requestId);
}

type IdentifyResult =
  | Identity
  | {
      error: Parameters<typeof sendError>[1];
      message: string | undefined;
      /** For the log line only: the policy rule, or why a token failed. */
      detail?: string | undefined;
      requestId: string;
      headers: readonly (readonly [string, string])[] | undefined;
      /** A known key's denial: its spend-log row. */
      denied?: DeniedCaller | undefined;
    };

/** A valid signed context, or the decision pipeline run here (standalone). */
function identify(
  deps: GatewayDeps,
  req: HttpRequest,
  method: string,
  path: string,
  body: Buffer | undefined,
  parsed: Record<string, unknown> | undefined,
): IdentifyResult | Promise<IdentifyResult> {
  const now = Date.now();
  const ctx = req.headers['x-tollgate-context'];
  if (ctx !== undefined) {
    const checked = deps.signer.verify(ctx, now);
    // Digested as received, whatever the method: Check saw the same bytes.
    if (checked.ok && bound(checked.claims, method, path, req.body ?? undefined, parsed)) {
      const claims = checked.claims;
      const id = fromClaims(deps, claims);
      // Its one use: by the lease id, or by a nonce when nothing was leased (an admin call, a key without
      // limits). A context with neither (signed by a version before this one) is taken as it is.
      const once = claims.l ?? claims.n;
      const claim = once === undefined ? undefined : deps.leases?.claim(once, claims.x, claims.adm === 1);
      if (claim === undefined || claim === 'claimed') return id;
      const claimed = (c: ClaimResult): IdentifyResult | Promise<IdentifyResult> => {
        if (c === 'claimed') return id;
        if (c === 'store') {
          // Not served: the lease Check took must not hold its slot until it expires.
          if (id.lease !== undefined) deps.leases?.release(id.lease);
          // A denial of the caller Check named: its spend-log row, as any other (the admin's carries no key).
          const denied = { keyId: claims.k, userId: claims.u, teamId: claims.t, model: claims.m };
          return { error: 'store_unavailable', message: undefined, requestId: id.caller.requestId, headers: undefined, denied };
        }
        refused(deps, 'sent before');
        return authorizeHere(deps, req, method, body, parsed, now);
      };
      return claim instanceof Promise ? claim.then(claimed) : claimed(claim);
    }
    // Signed by authz but past its time (it waited in front of the gateway, in Envoy's queue): Envoy took the
    // credentials off, so deciding here would answer 401 to a request that was allowed. It is sent again.
    if (!checked.ok && checked.reason === 'expired' && !carriesCredentials(deps, req.headers)) {
      deps.logger.warn(
        { reason: 'expired' },
        'x-tollgate-context expired before the request reached the gateway; answered 503 to be sent again',
      );
      giveBack(deps, checked.claims);
      return {
        error: 'gateway_unavailable',
        message: CONTEXT_EXPIRED,
        detail: 'x-tollgate-context expired, no credentials',
        requestId: validRequestId(req.headers['x-request-id']) ?? randomUUID(),
        headers: [['retry-after', '1']],
      };
    }
    refused(deps, checked.ok ? 'not bound to this request' : checked.reason);
  }
  return authorizeHere(deps, req, method, body, parsed, now);
}

/**
 * The lease Check took for a request that is not served here (its context expired on the way): given back at
 * once, or the request sent again would find its own slot and reservations still held. Taken as the context's
 * one use first, so a context sent again gives back nothing more (a lease already served keeps its usage).
 */
function giveBack(deps: GatewayDeps, claims: ContextClaims): void {
  const lease = fromClaims(deps, claims).lease;
  const leases = deps.leases;
  if (lease === undefined || leases === undefined) return;
  const release = (c: ClaimResult): void => {
    if (c === 'claimed') leases.release(lease);
  };
  const claim = leases.claim(lease.id, claims.x, false);
  if (claim instanceof Promise) claim.then(release, () => undefined);
  else release(claim);
}

/** A request whose authorization expired before it reached the gateway (CONTEXT_TTL_MS). */
const CONTEXT_EXPIRED = 'The request waited in front of tollgate longer than its authorization holds and was not served: send it again.';

/** The request has a virtual key or a token of its own (authorizing it here can succeed). */
function carriesCredentials(deps: GatewayDeps, headers: Readonly<Record<string, string>>): boolean {
  const jwtHeader = deps.authorizer.rules.jwtHeader;
  return headers['authorization'] !== undefined || (jwtHeader !== undefined && headers[jwtHeader.toLowerCase()] !== undefined);
}

function refused(deps: GatewayDeps, reason: string): void {
  deps.logger.warn({ reason }, 'x-tollgate-context refused; authorizing the request here');
}

/** The decision pipeline run here: standalone, or a request whose context could not be trusted. */
function authorizeHere(
  deps: GatewayDeps,
  req: HttpRequest,
  method: string,
  body: Buffer | undefined,
  parsed: Record<string, unknown> | undefined,
  now: number,
): IdentifyResult | Promise<IdentifyResult> {
  const facts: RequestFacts = {
    method,
    path: req.url,
    headers: flatHeaders(req),
    body,
    json: parsed,
    partialBody: false,
    contextExtensions: {},
    source: req.remoteAddress,
    signContext: false,
  };
  const result = deps.authorizer.authorize(facts, now);
  const finish = (auth: Awaited<typeof result>): IdentifyResult => {
    const d = auth.decision;
    const m = deps.metrics;
    m?.checkDecisions.at('gateway', d.allow ? 'allowed' : d.code).inc();
    if (!d.allow) {
      if (d.failedRule !== undefined) m?.policyErrors.inc({ rule: d.failedRule });
      return {
        error: d.code,
        message: d.message,
        detail: d.detail,
        requestId: auth.requestId,
        headers: auth.headers,
        denied: auth.denied,
      };
    }
    // A rule that failed while judging an alias of the model listing hid it: counted as a failed denial is.
    if (d.failedRules !== undefined) for (const rule of d.failedRules) m?.policyErrors.inc({ rule });
    const p = d.principal;
    return {
      caller: { requestId: auth.requestId, keyId: p.keyId, userId: p.userId, teamId: p.teamId },
      model: d.body?.model,
      deployment: d.deployment?.id,
      fallbacks: d.fallbacks,
      hidden: d.hidden,
      key: p.key,
      teamId: p.teamId,
      lease: auth.lease,
      headers: auth.headers,
      admin: p.admin,
    };
  };
  return result instanceof Promise ? result.then(finish) : finish(result);
}

function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/** The context must have been issued for this method, path and body, and, on model routes, this model. */
function bound(
  claims: ContextClaims,
  method: string,
  path: string,
  body: Buffer | undefined,
  parsed: Record<string, unknown> | undefined,
): boolean {
  if (claims.p !== `${method} ${path}`) return false;
  // A context without `b` comes from an authz of the version before (a rolling upgrade): taken as it was then.
  if (claims.b !== undefined && claims.b !== bodyDigest(body)) return false;
  if (claims.m === undefined) return modelEndpoint(method, path) === undefined;
  return parsed !== undefined && parsed['model'] === claims.m;
}

function fromClaims(deps: GatewayDeps, c: ContextClaims): Identity {
  const bitmapHidden =
    typeof c.hb === 'string' && typeof c.hc === 'string' ? aliasesOfBitmap(deps.catalog().listing, c.hc, c.hb) : undefined;
  return {
    caller: { requestId: c.r, keyId: c.k, userId: c.u, teamId: c.t },
    model: c.m,
    deployment: c.d,
    fallbacks: Array.isArray(c.f) ? c.f : [],
    hidden: bitmapHidden ?? (Array.isArray(c.h) ? c.h : []),
    // The bitmap first (its `v: []` is for gateways before it); made over a catalog that changed since Check,
    // which aliases it named is unknown, so none is listed.
    visible: typeof c.hb === 'string' ? (bitmapHidden === undefined ? [] : undefined) : Array.isArray(c.v) ? c.v : undefined,
    key: c.k === undefined ? undefined : (deps.keys.byId(c.k) ?? 'gone'),
    teamId: c.t,
    lease:
      c.l === undefined
        ? undefined
        : { id: c.l, reservedTokens: typeof c.rt === 'number' ? c.rt : 0, keyId: c.k, userId: c.u, teamId: c.t, deploymentId: c.d },
    headers: undefined,
    admin: c.adm === 1,
  };
}

/** Whether this caller may use `alias` (key and team allow-lists, and policy), as `GET /v1/models` lists them. */
function mayUse(deps: GatewayDeps, id: Identity, alias: string): boolean {
  if (id.hidden.length > 0 && id.hidden.includes(alias)) return false;
  if (id.visible !== undefined && !id.visible.includes(alias)) return false;
  // A key removed since authz signed the context may use nothing.
  const key = id.key;
  const team = id.teamId === undefined ? undefined : deps.teams.get(id.teamId);
  if (key === 'gone' || (key !== undefined && !keyAllows(key.models, alias, team))) return false;
  return team === undefined || allows(team.models, alias);
}

function modelObject(alias: string, created: number): { id: string; object: 'model'; created: number; owned_by: string } {
  return { id: alias, object: 'model', created, owned_by: 'tollgate' };
}

/** `GET /v1/models`: only the aliases this caller may use. */
function listModels(deps: GatewayDeps, res: HttpResponse, id: Identity): void {
  const created = Math.floor(Date.now() / 1000);
  const data = [...deps.catalog().aliases()]
    .filter((a) => mayUse(deps, id, a))
    .sort()
    .map((a) => modelObject(a, created));
  json(res, 200, { object: 'list', data }, id.caller.requestId);
}

/**
 * `GET /v1/models/{model}` (the SDKs' `models.retrieve`): the alias, if this caller may use it; otherwise
 * 404 whether or not it exists, so the answer reveals no alias the caller could not list.
 */
function retrieveModel(deps: GatewayDeps, res: HttpResponse, id: Identity, alias: string): void {
  const catalog = deps.catalog();
  if (catalog.group(alias) === undefined || !mayUse(deps, id, alias))
    return sendError(res, 'model_not_found', catalog.size === 0 ? NO_MODELS_MESSAGE : undefined, id.caller.requestId);
  json(res, 200, modelObject(alias, Math.floor(Date.now() / 1000)), id.caller.requestId);
}

/**
 * The model id of `GET /v1/models/{model}` (or `/models/{model}`): taken from the path as sent, since the
 * normalised one is lower-cased and aliases are not; decoded and split as normalizePath does, so the SDKs'
 * `models.retrieve('org/model')` (sent as `org%2Fmodel`) names the alias `org/model`, as its plain spelling does.
 */
function modelIdOf(path: string, url: string): string | undefined {
  if (!ONE_MODEL.test(path)) return undefined;
  const q = url.search(/[?#]/);
  let decoded: string;
  try {
    decoded = decodeURIComponent(q < 0 ? url : url.slice(0, q));
  } catch {
    return undefined;
  }
  const segments = decoded.split('/').filter((s) => s !== '');
  return segments.slice(path.startsWith('/v1/') ? 2 : 1).join('/');
}

function json(res: HttpResponse, status: number, value: unknown, requestId?: string): void {
  const body = JSON.stringify(value);
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (requestId !== undefined) headers['x-tollgate-request-id'] = headers['x-request-id'] = requestId;
  res.writeHead(status, headers);
  res.end(body);
}

/** The request's headers for the authorizer; a client reaching the gateway directly does not choose its request id. */
function flatHeaders(req: HttpRequest): Record<string, string> {
  if (req.headers['x-request-id'] === undefined) return req.headers;
  const out: Record<string, string> = { ...req.headers };
  delete out['x-request-id'];
  return out;
}
