/**
 * The decision core shared by both doors (Envoy's Check and the standalone gateway): pure, given the
 * request facts, the authenticated credentials, the configured rules and `now`. No I/O, no clock.
 */
import type { ErrorCode } from '../errors/codes.js';
import type { JwtIdentity, JwtResult } from '../identity/jwt.js';
import type { KeyRecord, Limits } from '../identity/keys.js';
import { NO_JWT, NO_KEY, NO_TEAM, type KeyView, type Policy, type PolicyInput, type TeamView } from '../policy/rules.js';
import { firstBack, weightedPick, type Deployment, type DeploymentHealth, type ModelCatalog } from '../routing/deployments.js';
import { modelBodyOf, parseModelBody, type ModelBody } from './body.js';
import { isModelListRoute, type RouteKind } from './route.js';
import { ADMIN_DISABLED, adminAccessMessage, coolingAnswer, jwtFailureMessage, NO_MODELS_MESSAGE } from './messages.js';

export interface TeamRecord {
  readonly teamId: string;
  readonly alias: string | undefined;
  readonly models: readonly string[];
  readonly blocked: boolean;
  readonly limits: Limits;
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** The request as a door saw it, credentials already looked up. */
export interface DecisionInput {
  readonly route: RouteKind;
  readonly method: string;
  readonly path: string;
  /** Lower-case names; credentials are removed before the policy sees them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly contextExtensions: Readonly<Record<string, string>>;
  /** The peer's IP address ('' when the door does not know it). */
  readonly source: string;
  readonly body: string | Uint8Array | undefined;
  /** The body already parsed as JSON by the door (undefined: parse `body` here). */
  readonly json?: unknown;
  /** JWT validation outcome; undefined when no JWT is configured. */
  readonly jwt: JwtResult | undefined;
  /** The key presented: a record, 'missing', 'malformed' (not `Bearer sk-…`), 'unknown', or 'master'. */
  readonly key: KeyRecord | 'missing' | 'malformed' | 'unknown' | 'master';
  readonly team: TeamRecord | undefined;
}

export interface DecisionRules {
  readonly jwtRequired: boolean;
  readonly keysRequired: boolean;
  readonly adminGroups: readonly string[];
  /** The master key is configured (so admin routes can be opened with it). */
  readonly masterKeySet: boolean;
  /** `auth.jwt.header` (lower case), named in the messages about the token; absent: x-cake-authorization. */
  readonly jwtHeader?: string;
  readonly policy: Policy;
  readonly catalog: ModelCatalog;
  readonly health: DeploymentHealth;
  /** router_settings.fallbacks: alias → aliases tried when its group is exhausted. */
  readonly fallbacks: ReadonlyMap<string, readonly string[]>;
  /** Body fields every model request must carry (general_settings.enforce_user_param, enforced_params). */
  readonly requiredParams: readonly string[];
}

/** Who the caller is, as the allowed request will carry it. */
export interface Principal {
  readonly keyId: string | undefined;
  readonly keyAlias: string | undefined;
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
  readonly email: string | undefined;
  readonly groups: readonly string[];
  readonly admin: boolean;
  readonly key: KeyRecord | undefined;
}

export type Decision =
  | {
      readonly allow: true;
      readonly principal: Principal;
      /** Present on model routes. */
      readonly body: ModelBody | undefined;
      readonly deployment: Deployment | undefined;
      /** The configured fallbacks of the model that this caller may use too (allow-lists and policy). */
      readonly fallbacks: readonly string[];
      /** On the model listing routes: the aliases the policy denies this caller (listed as if absent). */
      readonly hidden: readonly string[];
      /** On the model listing routes: the rules that failed while judging an alias (each hid it, failing closed). */
      readonly failedRules?: readonly string[];
    }
  | {
      readonly allow: false;
      readonly code: ErrorCode;
      /** A more specific message than the table's; never echoes a secret. */
      readonly message: string | undefined;
      /** For logs only: the policy rule, or why a token failed. */
      readonly detail: string | undefined;
      /** The policy rule that failed while evaluating (and so denied, failing closed). */
      readonly failedRule?: string;
      /** When the client may send again (every deployment cooling down): its `retry-after`. */
      readonly retryAfterMs?: number;
    };

function deny(code: ErrorCode, message?: string, detail?: string): Decision {
  return { allow: false, code, message, detail };
}

/** `GET /key/info`, which a virtual key may send about itself (normalised path). */
export function isOwnKeyInfo(method: string, path: string): boolean {
  return method === 'GET' && path === '/key/info';
}

/** Why the admin API is closed to this caller, saying what would open it. */
function denyAdmin(rules: DecisionRules, input: DecisionInput): Decision {
  if (!rules.masterKeySet && rules.adminGroups.length === 0) return deny('policy_denied', ADMIN_DISABLED);
  const message = adminAccessMessage(tokenOpensAdmin(rules, input), false, rules.jwtHeader);
  return input.key === 'missing' ? deny('missing_api_key', message) : deny('policy_denied', message);
}

/**
 * An admin route without the token a JWT-required config asks for, and without the master key (which opens it
 * alone): still 401 missing_jwt, but saying what opens these routes, which is not (only) a token: a LiteLLM
 * operator sends the master key. A virtual key reading its own record (GET /key/info) needs the token, as on
 * any route of that key.
 */
function denyAdminWithoutToken(rules: DecisionRules, input: DecisionInput): Decision {
  if (typeof input.key === 'object' && isOwnKeyInfo(input.method, input.path)) return denyMissingJwt(rules);
  if (!rules.masterKeySet && rules.adminGroups.length === 0) return deny('missing_jwt', ADMIN_DISABLED);
  return deny('missing_jwt', adminAccessMessage(tokenOpensAdmin(rules, input), input.key === 'missing', rules.jwtHeader));
}

/** missing_jwt with the contract's message, naming the configured header when it is another. */
function denyMissingJwt(rules: DecisionRules): Decision {
  const header = rules.jwtHeader;
  return header === undefined || header === 'x-cake-authorization'
    ? deny('missing_jwt')
    : deny('missing_jwt', jwtFailureMessage('missing', header));
}

/** A token opens the admin API: admin groups are configured, and tokens are (the door validated one or found none). */
function tokenOpensAdmin(rules: DecisionRules, input: DecisionInput): boolean {
  return rules.adminGroups.length > 0 && input.jwt !== undefined;
}

export function decide(input: DecisionInput, rules: DecisionRules, nowMs: number, random: number): Decision {
  // Probes need no credentials, and credentials sent to them are not judged.
  if (input.route === 'probe') return allow(principalOf(undefined, undefined, undefined, false), undefined, undefined);

  // 1. The identity token.
  let identity: JwtIdentity | undefined;
  if (input.jwt !== undefined) {
    if (input.jwt.ok) identity = input.jwt.identity;
    else if (input.jwt.failure !== 'missing')
      return deny('invalid_jwt', jwtFailureMessage(input.jwt.failure, rules.jwtHeader), input.jwt.failure);
    // The master key alone opens the admin API, as in LiteLLM (the contract: master key or an admin group).
    else if (rules.jwtRequired && !(input.key === 'master' && input.route === 'admin'))
      return input.route === 'admin' ? denyAdminWithoutToken(rules, input) : denyMissingJwt(rules);
  }

  // 2. The virtual key (or the master key, which LiteLLM also accepts on every route).
  const key = input.key;
  let record: KeyRecord | undefined;
  const master = key === 'master';
  // Without keys required, an Authorization that holds no virtual key is not one (`Bearer EMPTY`, which the
  // OpenAI SDKs send for vLLM, or the token itself when auth.jwt.header is authorization); a wrong sk- key
  // still fails below.
  if (key === 'malformed' && rules.keysRequired)
    return deny('invalid_api_key', 'The Authorization header must be "Bearer sk-..." with a virtual key.');
  if (key === 'unknown') return deny('invalid_api_key');
  if (typeof key === 'object') {
    if (key.blocked) return deny('key_blocked');
    if (key.expiresAt !== undefined && nowMs >= key.expiresAt) return deny('expired_api_key');
    record = key;
  }

  // 3. Admin routes: the master key, or a JWT in an admin group. Nothing else, but for one read: a virtual
  // key may read its own record (LiteLLM's GET /key/info; the gateway answers it for that key only), as any
  // other route of that key, policy included.
  if (input.route === 'admin') {
    const inAdminGroup = identity !== undefined && identity.groups.some((g) => rules.adminGroups.includes(g));
    if (master || inAdminGroup) return allow(principalOf(identity, undefined, undefined, true), undefined, undefined);
    if (record === undefined || !isOwnKeyInfo(input.method, input.path)) return denyAdmin(rules, input);
  }

  if (key === 'missing' && rules.keysRequired) return deny('missing_api_key');
  const team = input.team;
  if (team?.blocked === true) return deny('key_blocked', "This key's team is blocked: ask your platform team.");
  // A team removed (from the config file, say) takes its models and limits with it: its keys must not run on
  // without them. Refused as a blocked team is, until the team is back or the key is moved.
  if (team === undefined && record?.teamId !== undefined)
    return deny('key_blocked', "This key's team no longer exists: ask your platform team to restore it or to move the key.");

  // 4. The model, from the body.
  let body: ModelBody | undefined;
  let model = '';
  if (input.route === 'model') {
    if (input.body === undefined || (typeof input.body === 'string' ? input.body.length : input.body.byteLength) === 0)
      return deny('invalid_body');
    const parsed = input.json !== undefined ? modelBodyOf(input.json) : parseModelBody(input.body);
    if (!parsed.ok) return deny(parsed.code, parsed.message);
    body = parsed;
    model = parsed.model;
    for (const field of rules.requiredParams) {
      if (!present(parsed.json, field))
        return deny('invalid_body', `This proxy requires ${field} in every request body: send it (general_settings of its config).`);
    }
    if (record !== undefined && !keyAllows(record.models, model, team)) return deny('model_not_allowed');
    if (team !== undefined && !allows(team.models, model))
      return deny('model_not_allowed', "This key's team may not use the requested model.");
    if (rules.catalog.group(model) === undefined) return deny('model_not_found', rules.catalog.size === 0 ? NO_MODELS_MESSAGE : undefined);
  }

  // 5. The security team's rules. The model listing is judged alias by alias, as a request for each model
  // would be: a rule about models ("guests only the 8B") hides the others there rather than deny the listing.
  const principal = principalOf(identity, record, team, false);
  if (input.route === 'plain' && isModelListRoute(input.method, input.path)) {
    if (rules.policy.size === 0) return allow(principal, undefined, undefined);
    const hidden: string[] = [];
    const failed = new Set<string>();
    for (const alias of rules.catalog.aliases()) {
      const verdict = rules.policy.evaluate(policyInput(input, identity, record, team, alias));
      if (verdict.allowed) continue;
      hidden.push(alias);
      if (verdict.error !== undefined) failed.add(verdict.rule);
    }
    const listed = {
      allow: true,
      principal,
      body: undefined,
      deployment: undefined,
      fallbacks: NONE,
      hidden: hidden.length > 0 ? hidden : NONE,
    } as const;
    return failed.size > 0 ? { ...listed, failedRules: [...failed] } : listed;
  }
  if (rules.policy.size > 0) {
    const verdict = rules.policy.evaluate(policyInput(input, identity, record, team, model));
    if (!verdict.allowed) {
      if (verdict.error === undefined) return deny('policy_denied', verdict.message, `rule ${verdict.rule}`);
      // Not the CEL error: its text can quote the value it choked on (a claim, a header), and this goes to logs.
      return {
        allow: false,
        code: 'policy_denied',
        message: verdict.message,
        detail: `rule ${verdict.rule} failed while evaluating`,
        failedRule: verdict.rule,
      };
    }
  }

  // 6. A routing hint: the deployment for the first attempt.
  let deployment: Deployment | undefined;
  if (body !== undefined) {
    const group = rules.catalog.group(model);
    deployment = group === undefined ? undefined : weightedPick(group, rules.health, nowMs, random);
    // A fallback is another model: the same allow-lists and rules apply to it, or it would be a way around them.
    const configured = rules.fallbacks.get(model);
    const fallbacks =
      configured === undefined
        ? NONE
        : configured.filter(
            (alias) =>
              rules.catalog.group(alias) !== undefined &&
              (record === undefined || keyAllows(record.models, alias, team)) &&
              (team === undefined || allows(team.models, alias)) &&
              (rules.policy.size === 0 || rules.policy.evaluate(policyInput(input, identity, record, team, alias)).allowed),
          );
    // Every deployment of the model cooling down: its first fallback with one available serves (LiteLLM falls
    // back when a group has no deployment left, not only after failures of its own).
    for (let i = 0; deployment === undefined && i < fallbacks.length; i++) {
      const g = rules.catalog.group(fallbacks[i] as string);
      if (g !== undefined) deployment = weightedPick(g, rules.health, nowMs, random);
    }
    if (deployment === undefined) return everyCooling(rules, [model, ...fallbacks], nowMs);
    if (fallbacks.length > 0) return { allow: true, principal, body, deployment, fallbacks, hidden: NONE };
  }
  return allow(principal, body, deployment);
}

const NONE: readonly string[] = Object.freeze([]);

/**
 * Every deployment of the model and of the fallbacks this caller may use is cooling down: when to come back,
 * and why (coolingAnswer). Without cooldowns to go by (a health view that does not know them): the 503 alone.
 */
function everyCooling(rules: DecisionRules, aliases: readonly string[], nowMs: number): Decision {
  const back = firstBack(rules.catalog.groups(aliases), rules.health, nowMs);
  return back === undefined ? deny('no_healthy_deployment') : { allow: false, ...coolingAnswer(back, nowMs), detail: undefined };
}

/** Whether `field` (dotted for a nested one: metadata.generation_name) is in `body`, not null and not "". */
function present(body: Readonly<Record<string, unknown>>, field: string): boolean {
  let v: unknown = body;
  for (const part of field.split('.')) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, part)) return false;
    v = (v as Record<string, unknown>)[part];
  }
  return v !== undefined && v !== null && v !== '';
}

function allow(principal: Principal, body: ModelBody | undefined, deployment: Deployment | undefined): Decision {
  return { allow: true, principal, body, deployment, fallbacks: NONE, hidden: NONE };
}

/** An empty allow-list allows every model; `*` and LiteLLM's `all-proxy-models` too. */
export function allows(list: readonly string[], model: string): boolean {
  return list.length === 0 || list.includes(model) || list.includes('*') || list.includes('all-proxy-models');
}

/**
 * A key's allow-list, where LiteLLM's `all-team-models` stands for the models of the key's team (every
 * model when the team lists none). Without its team (none, or gone) it allows nothing more.
 */
export function keyAllows(list: readonly string[], model: string, team: TeamRecord | undefined): boolean {
  return allows(list, model) || (team !== undefined && list.includes('all-team-models') && allows(team.models, model));
}

function principalOf(
  identity: JwtIdentity | undefined,
  key: KeyRecord | undefined,
  team: TeamRecord | undefined,
  admin: boolean,
): Principal {
  return {
    keyId: key?.id,
    keyAlias: key?.alias,
    // The authenticated caller when a token names one; else the key's owner.
    userId: identity !== undefined && identity.user !== '' ? identity.user : key?.userId,
    teamId: team?.teamId ?? key?.teamId,
    email: identity?.email === '' ? undefined : identity?.email,
    groups: identity?.groups ?? [],
    admin,
    key,
  };
}

/** What rules see of a key or a team, built once per record (records are immutable; a change makes a new one). */
const keyViews = new WeakMap<KeyRecord, KeyView>();
const teamViews = new WeakMap<TeamRecord, TeamView>();

function keyView(key: KeyRecord): KeyView {
  let v = keyViews.get(key);
  if (v === undefined) {
    v = Object.freeze({
      id: key.id,
      alias: key.alias ?? '',
      user_id: key.userId ?? '',
      team_id: key.teamId ?? '',
      models: key.models,
      metadata: key.metadata,
    });
    keyViews.set(key, v);
  }
  return v;
}

function teamView(team: TeamRecord): TeamView {
  let v = teamViews.get(team);
  if (v === undefined) {
    v = Object.freeze({ team_id: team.teamId, alias: team.alias ?? '', models: team.models, metadata: team.metadata });
    teamViews.set(team, v);
  }
  return v;
}

function policyInput(
  input: DecisionInput,
  identity: JwtIdentity | undefined,
  key: KeyRecord | undefined,
  team: TeamRecord | undefined,
  model: string,
): PolicyInput {
  return {
    jwt: identity === undefined ? NO_JWT : identity.policyView,
    key: key === undefined ? NO_KEY : keyView(key),
    team: team === undefined ? NO_TEAM : teamView(team),
    model,
    request: {
      method: input.method,
      path: input.path,
      source: input.source,
      headers: input.headers,
      context_extensions: input.contextExtensions,
    },
  };
}
