/** What kind of route a request targets, which decides what Check demands of it. */

export type RouteKind =
  /** POST with a JSON body naming `model`: chat, completions, embeddings. */
  | 'model'
  /** The admin API: master key or an admin JWT group. */
  | 'admin'
  /** Liveness and readiness probes: no credentials. */
  | 'probe'
  /** Everything else (`GET /v1/models`, …): JWT and key, no model. */
  | 'plain';

/** The OpenAI endpoints that name a model in their body, as forwarded to a backend under its api_base. */
export type ModelEndpoint = 'chat/completions' | 'completions' | 'embeddings';

/**
 * Paths as the OpenAI SDKs send them, with or without the `/v1` prefix (LiteLLM serves both). One table
 * for both doors: Check demands a model on exactly the POST paths the gateway forwards.
 */
const MODEL_ENDPOINTS: ReadonlyMap<string, ModelEndpoint> = new Map<string, ModelEndpoint>([
  ['/v1/chat/completions', 'chat/completions'],
  ['/chat/completions', 'chat/completions'],
  ['/v1/completions', 'completions'],
  ['/completions', 'completions'],
  ['/v1/embeddings', 'embeddings'],
  ['/embeddings', 'embeddings'],
]);

/** The endpoint a normalised path forwards to, for a POST; undefined for any other route. */
export function modelEndpoint(method: string, path: string): ModelEndpoint | undefined {
  return method === 'POST' ? MODEL_ENDPOINTS.get(path) : undefined;
}
const PROBE_PATHS = new Set(['/health/liveliness', '/health/readiness', '/health/liveness']);
const ADMIN_PREFIXES = ['/key/', '/team/', '/spend/', '/model/', '/global/', '/user/'];
/** `/metrics` is admin through Envoy; Prometheus scrapes the gateway's port directly. */
const ADMIN_EXACT = new Set(['/health', '/metrics']);

/** `path` as returned by normalizePath. */
/** `GET /v1/models` and `GET /v1/models/{model}` (with or without `/v1`; a model id may hold `/`), normalised. */
const MODEL_LIST = /^\/(v1\/)?models(\/.+)?$/;

/** The model listing routes: what a caller may use, each alias judged as a model route would be. */
export function isModelListRoute(method: string, path: string): boolean {
  return method === 'GET' && MODEL_LIST.test(path);
}

export function classifyRoute(method: string, path: string): RouteKind {
  if (modelEndpoint(method, path) !== undefined) return 'model';
  if (PROBE_PATHS.has(path)) return 'probe';
  if (ADMIN_EXACT.has(path) || ADMIN_PREFIXES.some((p) => path.startsWith(p))) return 'admin';
  return 'plain';
}

/**
 * The path tollgate routes on, so a spelling variant cannot turn a model route into a "plain" one (which
 * skips the model allow-lists): query and fragment dropped, percent-escapes decoded (an encoded `/` only in a
 * model id, where it is a `/`: the SDKs' `models.retrieve('org/model')` sends `org%2Fmodel`; anywhere else it
 * is refused), lower-cased, repeated slashes merged, trailing slash dropped. A path that hides its shape — a backslash (or `%5C`), or a `.`/`..` segment, plain or
 * encoded — is refused (null) rather than resolved, since a proxy in front may resolve it otherwise. Decoding
 * `/` only splits a segment, and no dot segment is resolved, so a route prefix a proxy matched on the path as
 * sent still starts the normalised path. (Envoy must keep encoded slashes as sent, KEEP_UNCHANGED: its
 * UNESCAPE_AND_FORWARD decodes them before it resolves dot segments, and `x%2F..%2F..` would climb.)
 * The gateway dispatches on the same normalised path.
 */
export function normalizePath(rawPath: string): string | null {
  let end = rawPath.length;
  const q = rawPath.indexOf('?');
  if (q >= 0) end = q;
  const h = rawPath.indexOf('#');
  if (h >= 0 && h < end) end = h;
  const p = end === rawPath.length ? rawPath : rawPath.slice(0, end);
  if (FAST_PATH.test(p)) return p;
  if (p.includes('\\') || /%5c/i.test(p)) return null;
  // An encoded slash only in a model id (GET /v1/models/{id}: the SDKs encode an alias's `/`). Anywhere else
  // a proxy in front routes on the path as sent (`/key%2Fgenerate` is no admin route to it) while tollgate
  // would decide on the decoded one: refused, so a rule in front cannot be walked around.
  if (/%2f/i.test(p) && !MODEL_ID_PREFIX.test(p)) return null;
  let decoded = p;
  if (p.includes('%')) {
    try {
      decoded = decodeURIComponent(p);
    } catch {
      return null;
    }
  }
  const out: string[] = [];
  for (const seg of decoded.toLowerCase().split('/')) {
    if (seg === '') continue;
    if (seg === '.' || seg === '..') return null;
    out.push(seg);
  }
  return `/${out.join('/')}`;
}

/** `/v1/models/` or `/models/` as sent (any case, repeated slashes): what follows is a model id. */
const MODEL_ID_PREFIX = /^\/+(v1\/+)?models\/+/i;

/** Already normal: lower-case segments, single slashes, no dots or escapes, no trailing slash. */
const FAST_PATH = /^(\/[a-z0-9_-][a-z0-9_.-]*)+$/;
