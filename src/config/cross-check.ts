/** Checks that span several places of a schema-valid config (references, duplicates, insecure URLs). */
import type { PathIssue, PathSegment } from './issues.js';
import { formatPath } from './issues.js';
import type { Config } from './schema.js';

export function crossCheck(config: Config): PathIssue[] {
  const issues: PathIssue[] = [];
  const add = (segments: PathSegment[], message: string): void => {
    issues.push({ path: formatPath(segments), message, segments });
  };

  const aliases = new Set(config.model_list.map((m) => m.model_name));
  const ids = new Map<string, number>();
  config.model_list.forEach((m, i) => {
    const id = m.model_info.id;
    if (id === undefined) return;
    const first = ids.get(id);
    if (first !== undefined) add(['model_list', i, 'model_info', 'id'], `duplicate deployment id (also model_list[${first}])`);
    else ids.set(id, i);
  });

  config.router_settings.fallbacks.forEach((entry, i) => {
    for (const [from, to] of Object.entries(entry)) {
      if (!aliases.has(from))
        add(['router_settings', 'fallbacks', i, from], `fallback from an unknown model: no model_list entry has model_name ${from}`);
      to.forEach((alias, j) => {
        if (!aliases.has(alias))
          add(['router_settings', 'fallbacks', i, from, j], `fallback to an unknown model: no model_list entry has model_name ${alias}`);
        if (alias === from) add(['router_settings', 'fallbacks', i, from, j], 'a model cannot fall back to itself');
      });
    }
  });

  const jwt = config.auth.jwt;
  if (jwt !== undefined && jwt.header.toLowerCase() === 'authorization' && config.auth.keys.required)
    add(
      ['auth', 'jwt', 'header'],
      'authorization carries the virtual key (auth.keys.required is true): name another header for the token ' +
        '(x-cake-authorization), or set auth.keys.required: false',
    );
  if (jwt && !jwt.allow_insecure_http) {
    if (isHttp(jwt.issuer))
      add(['auth', 'jwt', 'issuer'], 'an http:// issuer: use https://, or set auth.jwt.allow_insecure_http: true (tests, loopback)');
    if (jwt.jwks_uri !== undefined && isHttp(jwt.jwks_uri))
      add(['auth', 'jwt', 'jwks_uri'], 'an http:// JWKS URL: use https://, or set auth.jwt.allow_insecure_http: true (tests, loopback)');
  }

  const hashes = new Map<string, number>();
  config.keys.forEach((k, i) => {
    const first = hashes.get(k.key);
    if (first !== undefined) add(['keys', i, 'key'], `the same key is declared twice (also keys[${first}])`);
    else hashes.set(k.key, i);
  });

  const teams = new Map<string, number>();
  config.teams.forEach((t, i) => {
    const first = teams.get(t.team_id);
    if (first !== undefined) add(['teams', i, 'team_id'], `duplicate team_id (also teams[${first}])`);
    else teams.set(t.team_id, i);
  });

  const rules = new Map<string, number>();
  config.policy.rules.forEach((r, i) => {
    const first = rules.get(r.name);
    if (first !== undefined) add(['policy', 'rules', i, 'name'], `duplicate rule name (also policy.rules[${first}])`);
    else rules.set(r.name, i);
  });
  return issues;
}

/**
 * Settings that load but cannot do what they say: reported as warnings (`config check` prints them on
 * stderr and still exits 0; boot and reload log them), so a first config is not refused for them.
 */
export function crossWarnings(config: Config): PathIssue[] {
  const warnings: PathIssue[] = [];
  const add = (segments: PathSegment[], message: string): void => {
    warnings.push({ path: formatPath(segments), message, segments });
  };

  // A budget counts spend, and spend is tokens × the deployment's prices: with no price anywhere every
  // request costs 0, and the budget never runs out. (A budget of 0 still refuses everything: not reported.)
  const priced = config.model_list.some((m) =>
    [
      m.model_info.input_cost_per_token,
      m.model_info.output_cost_per_token,
      m.litellm_params.input_cost_per_token,
      m.litellm_params.output_cost_per_token,
    ].some((p) => p !== undefined && p > 0),
  );
  const budgets: PathSegment[][] = [];
  for (const kind of ['keys', 'teams', 'users'] as const)
    config[kind].forEach((entry, i) => {
      if (entry.max_budget !== undefined && entry.max_budget > 0) budgets.push([kind, i, 'max_budget']);
    });
  const [first] = budgets;
  if (!priced && first !== undefined) {
    add(
      first,
      `a budget${andMore(budgets)}, but no deployment in model_list has a price: every request costs 0, so spend stays 0 and the budget ` +
        'never runs out. Set model_info.input_cost_per_token and output_cost_per_token (USD per token) on the deployments ' +
        '(models added with POST /model/new and prices are charged too)',
    );
  }

  // A request sent without max_tokens reserves the cap tollgate adds against every tpm it counts toward, until
  // it ends: under a tpm that small, such requests run one at a time (each holds the whole limit).
  const cap = config.general_settings.default_max_tokens;
  const small: PathSegment[][] = [];
  for (const kind of ['keys', 'teams', 'users'] as const)
    config[kind].forEach((entry, i) => {
      if (entry.tpm_limit !== undefined && entry.tpm_limit < 2 * cap) small.push([kind, i, 'tpm_limit']);
    });
  config.model_list.forEach((m, i) => {
    const tpm = m.litellm_params.tpm;
    if (tpm !== undefined && tpm < 2 * Math.min(m.model_info.max_output_tokens ?? m.model_info.max_tokens ?? Infinity, cap))
      small.push(['model_list', i, 'litellm_params', 'tpm']);
  });
  const [firstSmall] = small;
  if (firstSmall !== undefined) {
    add(
      firstSmall,
      `a tokens-per-minute limit${andMore(small)} under twice general_settings.default_max_tokens (${cap}): a request sent without ` +
        `max_tokens holds up to ${cap} tokens of it (all the room left, when less) until it ends, so few such requests run at ` +
        'once (the others get 429 and retry shortly). Lower default_max_tokens, have clients send max_tokens, or raise the limit',
    );
  }

  // Nothing opens anything: every model request needs a key, none is declared, and with no master key or
  // admin group no key can be made either.
  const auth = config.auth;
  const adminByJwt = auth.jwt !== undefined && auth.admin_groups.length > 0;
  if (auth.keys.required && config.keys.length === 0 && config.general_settings.master_key === undefined && !adminByJwt) {
    add(
      [],
      'nothing can be authorized: no general_settings.master_key, no keys, and no auth.admin_groups with auth.jwt, so every ' +
        'model request is refused (401) and the admin API is disabled (only keys already in the records database work). ' +
        'Set general_settings.master_key (os.environ/NAME), declare keys, or set auth.jwt with auth.admin_groups',
    );
  }
  return warnings;
}

/** One warning for many places, at the first: the others it also covers (up to three named), or nothing. */
function andMore(paths: readonly PathSegment[][]): string {
  if (paths.length < 2) return '';
  const named = paths.slice(1, 4).map(formatPath).join(', ');
  return ` (and ${paths.length - 1} more: ${named}${paths.length > 4 ? ', …' : ''})`;
}

/** By the parsed scheme: `HTTP://` is as insecure as `http://`. */
function isHttp(url: string): boolean {
  try {
    return new URL(url).protocol === 'http:';
  } catch {
    return false;
  }
}
