/**
 * A JSON Schema (draft-07) validator for the keywords charts/tollgate/values.schema.json uses, so a test can
 * do what Helm does before rendering: refuse values the schema refuses. A keyword outside that set throws
 * instead of passing unchecked; `format` is an annotation, as in Helm's validators.
 */

type Schema = boolean | { readonly [keyword: string]: unknown };

const ANNOTATIONS = new Set(['$schema', 'title', 'description', 'default', 'examples', '$comment', 'format']);
const ASSERTIONS = new Set([
  'type',
  'enum',
  'const',
  'properties',
  'additionalProperties',
  'required',
  'propertyNames',
  'items',
  'minItems',
  'maxItems',
  'minLength',
  'maxLength',
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'anyOf',
]);

/** Every problem with `value`, each as `<path>: <message>` (`(root)` for the top). */
export function validateJsonSchema(schema: unknown, value: unknown): string[] {
  const issues: string[] = [];
  check(schema as Schema, value, '', issues);
  return issues;
}

function check(schema: Schema, value: unknown, at: string, issues: string[]): void {
  if (schema === true) return;
  if (schema === false) {
    issues.push(`${where(at)}: not allowed here`);
    return;
  }
  for (const keyword of Object.keys(schema)) {
    if (!ANNOTATIONS.has(keyword) && !ASSERTIONS.has(keyword))
      throw new Error(`${where(at)}: JSON Schema keyword ${keyword} is not supported by this validator`);
  }
  const s = schema;
  const fail = (message: string): void => {
    issues.push(`${where(at)}: ${message}`);
  };
  if (s['type'] !== undefined) {
    const types = Array.isArray(s['type']) ? (s['type'] as string[]) : [s['type'] as string];
    if (!types.some((t) => hasType(value, t))) {
      fail(`expected ${types.join(' or ')}, got ${typeOf(value)}`);
      return;
    }
  }
  if (Array.isArray(s['enum']) && !s['enum'].some((e) => deepEqual(e, value))) fail(`must be one of ${JSON.stringify(s['enum'])}`);
  if ('const' in s && !deepEqual(s['const'], value)) fail(`must be ${JSON.stringify(s['const'])}`);
  if (Array.isArray(s['anyOf'])) {
    const branches = s['anyOf'] as Schema[];
    const failures = branches.map((b) => {
      const inner: string[] = [];
      check(b, value, at, inner);
      return inner;
    });
    if (failures.every((f) => f.length > 0)) fail(`matches none of anyOf: ${failures.map((f) => f.join('; ')).join(' | ')}`);
  }
  if (typeof value === 'string') {
    const length = [...value].length;
    if (typeof s['minLength'] === 'number' && length < s['minLength']) fail(`shorter than ${s['minLength']}`);
    if (typeof s['maxLength'] === 'number' && length > s['maxLength']) fail(`longer than ${s['maxLength']}`);
    if (typeof s['pattern'] === 'string' && !new RegExp(s['pattern'], 'u').test(value)) fail(`does not match ${s['pattern']}`);
  }
  if (typeof value === 'number') {
    if (typeof s['minimum'] === 'number' && value < s['minimum']) fail(`below ${s['minimum']}`);
    if (typeof s['maximum'] === 'number' && value > s['maximum']) fail(`above ${s['maximum']}`);
    if (typeof s['exclusiveMinimum'] === 'number' && value <= s['exclusiveMinimum']) fail(`not above ${s['exclusiveMinimum']}`);
    if (typeof s['exclusiveMaximum'] === 'number' && value >= s['exclusiveMaximum']) fail(`not below ${s['exclusiveMaximum']}`);
  }
  if (Array.isArray(value)) {
    if (typeof s['minItems'] === 'number' && value.length < s['minItems']) fail(`fewer than ${s['minItems']} items`);
    if (typeof s['maxItems'] === 'number' && value.length > s['maxItems']) fail(`more than ${s['maxItems']} items`);
    if (s['items'] !== undefined) value.forEach((v: unknown, i) => check(s['items'] as Schema, v, `${at}[${i}]`, issues));
  }
  if (isObject(value)) {
    const properties = (s['properties'] ?? {}) as Record<string, Schema>;
    for (const name of (s['required'] ?? []) as string[]) if (!(name in value)) fail(`${name} is required`);
    for (const [k, v] of Object.entries(value)) {
      const path = at === '' ? k : `${at}.${k}`;
      if (s['propertyNames'] !== undefined) check(s['propertyNames'] as Schema, k, path, issues);
      const own = properties[k];
      if (own !== undefined) check(own, v, path, issues);
      else if (s['additionalProperties'] === false) issues.push(`${path}: unknown key`);
      else if (s['additionalProperties'] !== undefined) check(s['additionalProperties'] as Schema, v, path, issues);
    }
  }
}

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'number':
      return typeof v === 'number' && Number.isFinite(v);
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    default:
      throw new Error(`unknown JSON Schema type ${t}`);
  }
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && Number.isInteger(v)) return `integer ${v}`;
  if (typeof v === 'object') return 'object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function where(at: string): string {
  return at === '' ? '(root)' : at;
}
