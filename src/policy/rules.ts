/**
 * The security team's policy: CEL rules compiled and type-checked at boot, evaluated in order over
 * `jwt`, `key`, `team`, `model` and `request`; the first rule whose `when` is true denies with its
 * `deny` message. `key`, `team` and `request` are typed objects, so a misspelt field fails the boot;
 * `jwt` is a map of whatever the token carries. A rule that fails at run time (a missing claim)
 * also denies: fail closed, with the rule named in the log. Guard optional claims with `has(jwt.claim)`.
 */
import { Environment, type ASTNode } from '@marcbachmann/cel-js';
import type { PolicyRule } from '../config/schema.js';
import type { PathIssue } from '../config/issues.js';

/** What a rule sees of the virtual key; absent values are `''`, `[]`, `{}`. */
export interface KeyView {
  readonly id: string;
  readonly alias: string;
  readonly user_id: string;
  readonly team_id: string;
  readonly models: readonly string[];
  readonly metadata: Readonly<Record<string, unknown>>;
}

/** What a rule sees of the key's team. */
export interface TeamView {
  readonly team_id: string;
  readonly alias: string;
  readonly models: readonly string[];
  readonly metadata: Readonly<Record<string, unknown>>;
}

export interface RequestView {
  readonly method: string;
  readonly path: string;
  /** The peer's IP address as the door saw it (Envoy's downstream peer, or the gateway's socket); '' if unknown. */
  readonly source: string;
  /** Lower-case names; credentials, pseudo-headers and `x-tollgate-*` removed (the same on both doors). */
  readonly headers: Readonly<Record<string, string>>;
  readonly context_extensions: Readonly<Record<string, string>>;
}

/** The variables a rule sees; a caller without a key, a team or a JWT gets their empty views, never undefined. */
export interface PolicyInput {
  /** Raw claims, plus the mapped `user`, `email` and `groups` (NO_JWT without a token). */
  readonly jwt: Readonly<Record<string, unknown>>;
  readonly key: KeyView;
  readonly team: TeamView;
  /** The model alias; empty string on routes without a model. */
  readonly model: string;
  readonly request: RequestView;
}

const NOTHING: readonly string[] = Object.freeze([]);
const NO_METADATA: Readonly<Record<string, unknown>> = Object.freeze({});

/**
 * A caller without a key (a JWT alone, the master key), without a team or without a token sees every
 * documented field, empty: a rule such as `team.team_id == 'interns'` is then false for it, as it is for a
 * token without `groups` (mapped to []), rather than an error that denies everyone it does not name.
 */
export const NO_KEY: KeyView = Object.freeze({ id: '', alias: '', user_id: '', team_id: '', models: NOTHING, metadata: NO_METADATA });
export const NO_TEAM: TeamView = Object.freeze({ team_id: '', alias: '', models: NOTHING, metadata: NO_METADATA });
export const NO_JWT: Readonly<Record<string, unknown>> = Object.freeze({ user: '', email: '', groups: NOTHING });

export type PolicyVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly rule: string; readonly message: string; readonly error: string | undefined };

interface CompiledRule {
  readonly name: string;
  readonly deny: string;
  readonly evaluate: (ctx: PolicyInput) => unknown;
}

const ALLOWED: PolicyVerdict = { allowed: true };

// Fixed fields are typed, so `request.hedaers` or `key.alais` fail the check at boot; metadata and claims are
// whatever their owners wrote, so they stay dyn (checked when evaluated).
function environment(): Environment {
  return new Environment()
    .registerType('Key', {
      fields: { id: 'string', alias: 'string', user_id: 'string', team_id: 'string', models: 'list<string>', metadata: 'map<string, dyn>' },
    })
    .registerType('Team', { fields: { team_id: 'string', alias: 'string', models: 'list<string>', metadata: 'map<string, dyn>' } })
    .registerType('Request', {
      fields: {
        method: 'string',
        path: 'string',
        source: 'string',
        headers: 'map<string, string>',
        context_extensions: 'map<string, string>',
      },
    })
    .registerVariable('jwt', 'map')
    .registerVariable('key', 'Key')
    .registerVariable('team', 'Team')
    .registerVariable('model', 'string')
    .registerVariable('request', 'Request');
}

export class Policy {
  readonly #rules: readonly CompiledRule[];
  private constructor(rules: readonly CompiledRule[]) {
    this.#rules = rules;
  }

  /** Compiles every rule; returns all compile errors with their YAML path instead of a policy. */
  static compile(rules: readonly PolicyRule[]): { policy: Policy; issues: [] } | { policy: undefined; issues: PathIssue[] } {
    const env = environment();
    const issues: PathIssue[] = [];
    const compiled: CompiledRule[] = [];
    rules.forEach((rule, i) => {
      const segments = ['policy', 'rules', i, 'when'];
      const path = `policy.rules[${i}].when`;
      const checked = env.check(rule.when);
      if (!checked.valid) {
        issues.push({ path, segments, message: `rule "${rule.name}" does not compile: ${celMessage(checked.error)}` });
        return;
      }
      // A dyn result (a claim or a metadata value used as the condition) is refused too: the checker cannot
      // prove it is a bool, and one that is not would deny every request.
      if (checked.type !== 'bool') {
        const hint = checked.type === 'dyn' ? ' (a claim or metadata value: compare it, as jwt.admin == true)' : '';
        issues.push({
          path,
          segments,
          message: `rule "${rule.name}" must be true or false, but its type is ${checked.type ?? 'unknown'}${hint}`,
        });
        return;
      }
      const parsed = env.parse(rule.when);
      const broken = failingConstant(env, parsed.ast, rule.when);
      if (broken !== undefined) {
        issues.push({
          path,
          segments,
          message: `rule "${rule.name}" can never be evaluated: \`${broken.text}\` fails on every request (${broken.error})`,
        });
        return;
      }
      compiled.push({ name: rule.name, deny: rule.deny, evaluate: (ctx): unknown => parsed(ctx) });
    });
    return issues.length > 0 ? { policy: undefined, issues } : { policy: new Policy(compiled), issues: [] };
  }

  get size(): number {
    return this.#rules.length;
  }

  evaluate(input: PolicyInput): PolicyVerdict {
    for (const rule of this.#rules) {
      let result: unknown;
      try {
        result = rule.evaluate(input);
      } catch (err) {
        return { allowed: false, rule: rule.name, message: rule.deny, error: celMessage(err) };
      }
      if (result === true) return { allowed: false, rule: rule.name, message: rule.deny, error: undefined };
      if (result !== false)
        return { allowed: false, rule: rule.name, message: rule.deny, error: 'the rule did not evaluate to true or false' };
    }
    return ALLOWED;
  }
}

/**
 * The first part of a rule without variables that fails to evaluate (`1 / 0`, `int('x')`, an overflow): it
 * fails the same way on every request, so the rule would deny them all. Each largest part without a
 * variable is evaluated once, at compile time (`true || 1 / 0` is such a part, and true, as CEL's `||` absorbs
 * the error); a part under a macro's bound variable holds an `id` and is left alone.
 */
function failingConstant(env: Environment, root: ASTNode, source: string): { text: string; error: string } | undefined {
  const constant = new Map<ASTNode, boolean>();
  const isConstant = (node: ASTNode): boolean => {
    let c = constant.get(node);
    if (c === undefined) {
      c = node.op !== 'id' && children(node).every(isConstant);
      constant.set(node, c);
    }
    return c;
  };
  const visit = (node: ASTNode): { text: string; error: string } | undefined => {
    if (isConstant(node)) {
      if (node.op === 'value') return undefined;
      // The part's own text, parsed again (cel-js's serialize loses exponents and surrogate pairs); text that
      // does not parse alone (a range that is not a whole expression) says nothing either way.
      // A node's range leaves out the parentheses around it and can split a pair (`1 / 0) > 2` of
      // `((1 / 0) > 2)`): closed again, the text is the part; where it still does not parse, its operands are
      // looked at — unless CEL's `||`, `&&` or `?:` could absorb their error.
      const text = balanced(source.slice(node.start, node.end));
      let evaluate: ((ctx?: Record<string, unknown>) => unknown) | undefined;
      try {
        evaluate = env.parse(text);
      } catch {
        if (node.op === '||' || node.op === '&&' || node.op === '?:') return undefined;
      }
      if (evaluate === undefined) {
        for (const child of children(node)) {
          const found = visit(child);
          if (found !== undefined) return found;
        }
        return undefined;
      }
      try {
        evaluate();
        return undefined;
      } catch (err) {
        return { text, error: celMessage(err) };
      }
    }
    for (const child of children(node)) {
      const found = visit(child);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return visit(root);
}

/** `text` with the parentheses it closes without opening, or opens without closing, added (outside string literals). */
function balanced(text: string): string {
  let open = 0;
  let unopened = 0;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote !== undefined) {
      if (c === '\\') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '(') open++;
    else if (c === ')') {
      if (open > 0) open--;
      else unopened++;
    }
  }
  return `${'('.repeat(unopened)}${text}${')'.repeat(open)}`;
}

/** A node's operands, whatever its operator's argument shape (see ASTNodeArgsMap). */
function children(node: ASTNode): ASTNode[] {
  const out: ASTNode[] = [];
  const collect = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) collect(x);
    else if (typeof v === 'object' && v !== null && 'op' in v) out.push(v as ASTNode);
  };
  if (node.op !== 'value') collect(node.args);
  return out;
}

/** The first line of a CEL error, without the source excerpt. */
function celMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? msg;
}
