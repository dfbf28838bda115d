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

/** Paths as the OpenAI SDKs send them, with or without the `/v1` prefix (LiteLLM serves both). */
const MODEL_PATHS = new Set([
  '/v1/chat/completions',
  '/chat/completions',
  '/v1/completions',
  '/completions',
  '/v1/embeddings',
  '/embeddings',
]);
const PROBE_PATHS = new Set(['/health/liveliness', '/health/readiness', '/health/liveness']);
const ADMIN_PREFIXES = ['/key/', '/team/', '/spend/', '/model/', '/global/'];
const ADMIN_EXACT = new Set(['/health', '/metrics']);

/** `path` without query string or fragment. */
export function classifyRoute(method: string, path: string): RouteKind {
  if (method === 'POST' && MODEL_PATHS.has(path)) return 'model';
  if (PROBE_PATHS.has(path)) return 'probe';
  if (ADMIN_EXACT.has(path) || ADMIN_PREFIXES.some((p) => path.startsWith(p))) return 'admin';
  return 'plain';
}

/** Envoy's `:path` includes the query; policy and routing look at the path alone. */
export function pathOnly(rawPath: string): string {
  let end = rawPath.length;
  const q = rawPath.indexOf('?');
  if (q >= 0) end = q;
  const h = rawPath.indexOf('#');
  if (h >= 0 && h < end) end = h;
  return end === rawPath.length ? rawPath : rawPath.slice(0, end);
}
