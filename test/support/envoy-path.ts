/**
 * A model of the path Envoy's HTTP connection manager hands to ext_authz and the router
 * (ConnectionManagerUtility::maybeNormalizePath, source/common/http/conn_manager_utility.cc): first
 * `path_with_escaped_slashes_action` (PathUtil::unescapeSlashes: %2F → `/`, %5C → `\`), then `normalize_path`
 * (PathUtil::canonicalPath, Chromium's URL path canonicalizer: `\` is a slash, `.`/`..` segments resolved, also
 * as %2e and with `;params`, escapes of unreserved characters but `.` decoded), then `merge_slashes`.
 * Checked against the vectors of Envoy's test/common/http/path_utility_test.cc (test/unit/core/route.test.ts).
 */
export type EscapedSlashesAction = 'KEEP_UNCHANGED' | 'REJECT_REQUEST' | 'UNESCAPE_AND_FORWARD';

const UNRESERVED = /^[A-Za-z0-9\-_~]$/;

function split(p: string): [string, string] {
  const q = p.indexOf('?');
  return q < 0 ? [p, ''] : [p.slice(0, q), p.slice(q)];
}

export function unescapeSlashes(p: string): { path: string; found: boolean } {
  const [path, query] = split(p);
  const out = path.replace(/%2f/gi, '/').replace(/%5c/gi, '\\');
  return { path: out + query, found: out !== path };
}

/** A segment without its `;params`, its `%2e` decoded: what Chromium compares with `.` and `..`. */
function bare(segment: string): string {
  return segment.replace(/;.*$/, '').replace(/%2e/gi, '.');
}

export function canonicalPath(p: string): string {
  const [raw, query] = split(p);
  const path = raw
    .replaceAll('\\', '/')
    .replace(/%([0-9A-Fa-f]{2})/g, (m, h: string) =>
      UNRESERVED.test(String.fromCharCode(parseInt(h, 16))) ? String.fromCharCode(parseInt(h, 16)) : m,
    );
  const segments = path.split('/').slice(1);
  const out: string[] = [];
  let trailing = false;
  segments.forEach((s, i) => {
    const last = i === segments.length - 1;
    if (bare(s) === '.') trailing = last;
    else if (bare(s) === '..') {
      out.pop();
      trailing = last;
    } else {
      out.push(s);
      trailing = false;
    }
  });
  return `/${out.join('/')}${trailing && out.length > 0 ? '/' : ''}${query}`;
}

export function mergeSlashes(p: string): string {
  const [path, query] = split(p);
  if (!path.includes('//')) return p;
  return `/${path.split('/').filter(Boolean).join('/')}${path.endsWith('/') ? '/' : ''}${query}`;
}

/** The `:path` Check and the upstream get for a request sent with `raw`; null when Envoy answers 400 itself. */
export function envoyPath(raw: string, action: EscapedSlashesAction): string | null {
  let p = raw.split('#')[0] ?? '';
  if (action !== 'KEEP_UNCHANGED') {
    const r = unescapeSlashes(p);
    if (r.found && action === 'REJECT_REQUEST') return null;
    p = r.path;
  }
  return mergeSlashes(canonicalPath(p));
}
