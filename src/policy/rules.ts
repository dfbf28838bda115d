/**
 * The security team's policy: CEL rules compiled and type-checked at boot, evaluated in order over
 * `jwt`, `key`, `team`, `model` and `request`; the first rule whose `when` is true denies with its
 * `deny` message. A rule that fails at run time (a missing claim, a non-bool result) also denies:
 * fail closed, with the rule named in the log. Guard optional claims with `has(jwt.claim)`.
 */
import { Environment } from '@marcbachmann/cel-js';
import type { PolicyRule } from '../config/schema.js';
import type { PathIssue } from '../config/issues.js';

/** The variables a rule sees. Maps are plain objects; absent parts are empty maps, never undefined. */
export interface PolicyInput {
  /** Raw claims, plus the mapped `user`, `email` and `groups`. Empty map when no JWT is configured. */
  readonly jwt: Readonly<Record<string, unknown>>;
  /** `id`, `alias`, `user_id`, `team_id`, `models`, `metadata`; empty map without a key. */
  readonly key: Readonly<Record<string, unknown>>;
  /** `team_id`, `models`, `metadata`; empty map without a team. */
  readonly team: Readonly<Record<string, unknown>>;
  /** The model alias; empty string on routes without a model. */
  readonly model: string;
  /** `method`, `path`, `headers` (lower-case names, credentials removed), `context_extensions`. */
  readonly request: Readonly<Record<string, unknown>>;
}

export type PolicyVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly rule: string; readonly message: string; readonly error: string | undefined };

interface CompiledRule {
  readonly name: string;
  readonly deny: string;
  readonly evaluate: (ctx: PolicyInput) => unknown;
}

const ALLOWED: PolicyVerdict = { allowed: true };

function environment(): Environment {
  return new Environment()
    .registerVariable('jwt', 'map')
    .registerVariable('key', 'map')
    .registerVariable('team', 'map')
    .registerVariable('model', 'string')
    .registerVariable('request', 'map');
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
      if (checked.type !== 'bool' && checked.type !== 'dyn') {
        issues.push({ path, segments, message: `rule "${rule.name}" must be true or false, but its type is ${checked.type ?? 'unknown'}` });
        return;
      }
      const parsed = env.parse(rule.when);
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

/** The first line of a CEL error, without the source excerpt. */
function celMessage(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? msg;
}
