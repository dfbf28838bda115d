/**
 * Reads an Envoy YAML bootstrap the way Envoy does, against Envoy's own protos (as vendored by
 * @grpc/grpc-js-xds), and refuses what Envoy would refuse or silently misread. protobufjs's `fromObject`
 * drops unknown keys, so every key is walked here first:
 *
 * - a key must be a field of its message, by proto name (`stat_prefix`) or JSON name (`statPrefix`), as
 *   Envoy's YAML → JSON → proto path accepts both; a misspelt key is an issue naming its path;
 * - `typed_config` and every other `google.protobuf.Any` is resolved by its `@type` (loading that package's
 *   protos) and walked as that message;
 * - proto3 JSON for the well-known types: Duration `"1s"`, Timestamp, Struct/Value/ListValue (any JSON),
 *   wrappers as plain values (`UInt32Value` → a number), Empty, FieldMask;
 * - enums by name (or number), at most one member of a oneof, fields and enum values marked deprecated
 *   or disallowed by default refused, and the protoc-gen-validate rules Envoy enforces at load (required
 *   messages and oneofs, string lengths, number bounds, list sizes, defined enum values).
 *
 * The walked tree is then encoded as an envoy.config.bootstrap.v3.Bootstrap with protobufjs and decoded
 * back, so the file is a real Bootstrap message, not merely YAML of the right shape.
 */
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';
import { parseDocument } from 'yaml';
import { ENVOY_INCLUDE_DIRS } from './envoy.js';

const require = createRequire(import.meta.url);
const PROTOBUFJS_DIR = path.dirname(require.resolve('protobufjs/package.json'));

export const BOOTSTRAP_TYPE = 'envoy.config.bootstrap.v3.Bootstrap';
const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** JSON as the walk normalises it: proto field names, Any as `{ '@type', ...fields }`. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface BootstrapCheck {
  /** Every problem, each as `<path>: <what is wrong>`; empty for a valid bootstrap. */
  readonly issues: readonly string[];
  /** The bootstrap with proto (snake_case) field names; undefined when there are issues. */
  readonly json: JsonObject | undefined;
  /** The Bootstrap message protobufjs decoded from its own encoding of `json`. */
  readonly message: protobuf.Message | undefined;
}

/** Envoy's protos, loaded on demand: a package's files are read the first time one of its types is needed. */
export class EnvoyProtos {
  readonly root = new protobuf.Root();
  readonly #loadedDirs = new Set<string>();

  constructor() {
    this.root.resolvePath = (_origin, target) => {
      for (const dir of ENVOY_INCLUDE_DIRS) {
        const candidate = path.join(dir, target);
        if (existsSync(candidate)) return candidate;
      }
      // any, duration, struct, wrappers, ... are built into protobufjs; descriptor.proto ships beside them.
      const bundled = path.join(PROTOBUFJS_DIR, target);
      if (target.startsWith('google/protobuf/') && existsSync(bundled)) return bundled;
      return target;
    };
    this.root.loadSync('envoy/config/bootstrap/v3/bootstrap.proto', { keepCase: true });
    this.root.resolveAll();
  }

  /** The message type `fullName` (no leading dot), loading its package's protos if needed. */
  type(fullName: string): protobuf.Type | undefined {
    const found = this.#lookup(fullName);
    if (found !== undefined) return found;
    // envoy.extensions.filters.http.ext_authz.v3.ExtAuthz → envoy/extensions/filters/http/ext_authz/v3/*.proto
    const parts = fullName.split('.');
    for (let n = parts.length - 1; n > 0; n--) {
      const rel = parts.slice(0, n).join('/');
      for (const base of ENVOY_INCLUDE_DIRS) {
        const dir = path.join(base, rel);
        if (!existsSync(dir) || this.#loadedDirs.has(dir)) continue;
        const files = readdirSync(dir).filter((f) => f.endsWith('.proto'));
        if (files.length === 0) continue;
        this.#loadedDirs.add(dir);
        this.root.loadSync(
          files.map((f) => path.join(rel, f)),
          { keepCase: true },
        );
        this.root.resolveAll();
        return this.#lookup(fullName);
      }
    }
    return undefined;
  }

  #lookup(fullName: string): protobuf.Type | undefined {
    const found = this.root.lookup(fullName);
    return found instanceof protobuf.Type ? found : undefined;
  }
}

let shared: EnvoyProtos | undefined;

/** One EnvoyProtos per process: loading Envoy's protos takes a moment. */
export function envoyProtos(): EnvoyProtos {
  shared ??= new EnvoyProtos();
  return shared;
}

/** Parses YAML text and checks it as a Bootstrap. */
export function checkEnvoyBootstrap(text: string, protos: EnvoyProtos = envoyProtos()): BootstrapCheck {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  if (doc.errors.length > 0) return { issues: doc.errors.map((e) => `(yaml): ${e.message}`), json: undefined, message: undefined };
  return checkEnvoyMessage(BOOTSTRAP_TYPE, doc.toJS() as unknown, protos);
}

/** Checks a plain value (YAML already parsed) as the message `typeName`. */
export function checkEnvoyMessage(typeName: string, value: unknown, protos: EnvoyProtos = envoyProtos()): BootstrapCheck {
  const type = protos.type(typeName);
  if (type === undefined) throw new Error(`no such message type: ${typeName}`);
  const walker = new Walker(protos);
  const out = walker.message(type, value, '');
  if (walker.issues.length > 0 || out === undefined) return { issues: walker.issues, json: undefined, message: undefined };
  const bytes = type.encode(type.fromObject(out.wire as Record<string, unknown>)).finish();
  return { issues: [], json: out.json as JsonObject, message: type.decode(bytes) };
}

/** Decodes a google.protobuf.Any from a decoded message by its type_url. */
export function unpackAny(any: unknown, protos: EnvoyProtos = envoyProtos()): { typeName: string; message: protobuf.Message } {
  const { type_url: url, value } = any as { type_url: string; value: Uint8Array };
  const typeName = url.slice(url.lastIndexOf('/') + 1);
  const type = protos.type(typeName);
  if (type === undefined) throw new Error(`unknown Any type ${url}`);
  return { typeName, message: type.decode(value) };
}

interface Walked {
  /** Normalised JSON (proto names), for assertions. */
  readonly json: Json;
  /** What protobufjs's fromObject takes for the same value. */
  readonly wire: unknown;
}

type Options = Readonly<Record<string, unknown>> | undefined;

const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };
const UINT32 = { min: 0, max: 2 ** 32 - 1 };
const DURATION = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;
/** protoc-gen-validate's non-strict header regexes (`strict: false`): no NUL, CR or LF. */
const LOOSE_HEADER_NAME = /^[^\0\n\r]+$/;
const LOOSE_HEADER_VALUE = /^[^\0\n\r]*$/;

const WRAPPERS: Readonly<Record<string, string>> = {
  '.google.protobuf.DoubleValue': 'double',
  '.google.protobuf.FloatValue': 'float',
  '.google.protobuf.Int64Value': 'int64',
  '.google.protobuf.UInt64Value': 'uint64',
  '.google.protobuf.Int32Value': 'int32',
  '.google.protobuf.UInt32Value': 'uint32',
  '.google.protobuf.BoolValue': 'bool',
  '.google.protobuf.StringValue': 'string',
  '.google.protobuf.BytesValue': 'bytes',
};

class Walker {
  readonly issues: string[] = [];
  readonly #protos: EnvoyProtos;

  constructor(protos: EnvoyProtos) {
    this.#protos = protos;
  }

  #issue(at: string, message: string): undefined {
    this.issues.push(`${at === '' ? '(root)' : at}: ${message}`);
    return undefined;
  }

  message(type: protobuf.Type, value: unknown, at: string): Walked | undefined {
    const special = this.#wellKnown(type, value, at);
    if (special !== null) return special;
    if (!isObject(value)) return this.#issue(at, `expected a mapping for ${name(type)}, got ${describe(value)}`);
    const json: JsonObject = {};
    const wire: Record<string, unknown> = {};
    const byJsonName = new Map(type.fieldsArray.map((f) => [jsonName(f.name), f]));
    const oneofMember = new Map<protobuf.OneOf, string>();
    for (const [key, raw] of Object.entries(value)) {
      const here = join(at, key);
      const field = type.fields[key] ?? byJsonName.get(key);
      if (field === undefined) {
        const hint = closest(
          key,
          type.fieldsArray.map((f) => f.name),
        );
        this.#issue(here, `unknown field of ${name(type)}${hint === undefined ? '' : ` (did you mean ${hint}?)`}`);
        continue;
      }
      if (field.name in json) {
        this.#issue(here, `${field.name} given twice (as ${field.name} and ${jsonName(field.name)})`);
        continue;
      }
      if (flag(field.options, 'deprecated')) this.#issue(here, `deprecated field of ${name(type)}: Envoy warns or refuses it`);
      if (flag(field.options, '(envoy.annotations.disallowed_by_default)')) this.#issue(here, 'disallowed by default in Envoy');
      if (field.partOf !== null) {
        const other = oneofMember.get(field.partOf);
        if (other !== undefined) this.#issue(here, `only one of oneof ${field.partOf.name} may be set (${other} is set too)`);
        else oneofMember.set(field.partOf, field.name);
      }
      if (raw === null || raw === undefined) {
        this.#issue(here, 'no value: give one or remove the key');
        continue;
      }
      const out = this.#field(field, raw, here);
      if (out === undefined) continue;
      json[field.name] = out.json;
      wire[field.name] = out.wire;
    }
    for (const oneof of type.oneofsArray) {
      if (flag(oneof.options, '(validate.required)') && !oneofMember.has(oneof))
        this.#issue(at, `${name(type)} needs one of ${oneof.oneof.join(', ')}`);
    }
    for (const field of type.fieldsArray) {
      if (!(field.name in json)) this.#absent(field, join(at, field.name));
    }
    return { json, wire };
  }

  #field(field: protobuf.Field, raw: unknown, at: string): Walked | undefined {
    const rules = validateRules(field.options);
    if (field.map) {
      if (!isObject(raw))
        return this.#issue(at, `expected a mapping (map<${(field as unknown as { keyType: string }).keyType}, ${field.type}>)`);
      const json: JsonObject = {};
      const wire: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(raw)) {
        const out = this.#single(field, v, join(at, k), subRules(rules, 'map.values.'));
        if (out === undefined) continue;
        json[k] = out.json;
        wire[k] = out.wire;
      }
      const minPairs = rules.get('map.min_pairs');
      if (typeof minPairs === 'number' && Object.keys(raw).length < minPairs) this.#issue(at, `needs at least ${minPairs} entries`);
      return { json, wire };
    }
    if (field.repeated) {
      if (!Array.isArray(raw)) return this.#issue(at, `expected a list of ${field.type}`);
      const json: Json[] = [];
      const wire: unknown[] = [];
      raw.forEach((v: unknown, i) => {
        const out = this.#single(field, v, `${at}[${i}]`, subRules(rules, 'repeated.items.'));
        if (out === undefined) return;
        json.push(out.json);
        wire.push(out.wire);
      });
      this.#listRules(rules, raw.length, at);
      return { json, wire };
    }
    return this.#single(field, raw, at, rules);
  }

  #single(field: protobuf.Field, raw: unknown, at: string, rules: Rules): Walked | undefined {
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Type) {
      const out = this.message(resolved, raw, at);
      if (out !== undefined && WRAPPERS[resolved.fullName] !== undefined) this.#scalarRules(rules, out.json, at);
      if (out !== undefined && resolved.fullName === '.google.protobuf.Duration') this.#durationRules(rules, out.wire, at);
      return out;
    }
    if (resolved instanceof protobuf.Enum) return this.#enum(resolved, raw, at);
    const out = this.#scalar(field.type, raw, at);
    if (out !== undefined) this.#scalarRules(rules, out.json, at);
    return out;
  }

  #enum(type: protobuf.Enum, raw: unknown, at: string): Walked | undefined {
    let valueName: string | undefined;
    if (typeof raw === 'string') valueName = raw in type.values ? raw : undefined;
    else if (typeof raw === 'number' && Number.isInteger(raw)) valueName = type.valuesById[raw];
    if (valueName === undefined) {
      return this.#issue(at, `not a value of enum ${name(type)} (${Object.keys(type.values).join(', ')}), got ${describe(raw)}`);
    }
    const valueOptions = type.valuesOptions?.[valueName];
    if (flag(valueOptions, 'deprecated')) this.#issue(at, `deprecated enum value ${valueName}`);
    if (flag(valueOptions, '(envoy.annotations.disallowed_by_default_enum)'))
      this.#issue(at, `enum value ${valueName} is disallowed by default`);
    return { json: valueName, wire: valueName };
  }

  #scalar(kind: string, raw: unknown, at: string): Walked | undefined {
    switch (kind) {
      case 'string':
        return typeof raw === 'string' ? { json: raw, wire: raw } : this.#issue(at, `expected a string, got ${describe(raw)}`);
      case 'bool':
        return typeof raw === 'boolean' ? { json: raw, wire: raw } : this.#issue(at, `expected true or false, got ${describe(raw)}`);
      case 'bytes':
        return typeof raw === 'string' && BASE64.test(raw)
          ? { json: raw, wire: raw }
          : this.#issue(at, `expected base64 bytes, got ${describe(raw)}`);
      case 'double':
      case 'float':
        if (typeof raw === 'number') return { json: raw, wire: raw };
        if (raw === 'NaN' || raw === 'Infinity' || raw === '-Infinity') return { json: raw, wire: Number(raw) };
        return this.#issue(at, `expected a number, got ${describe(raw)}`);
      case 'int32':
      case 'sint32':
      case 'sfixed32':
        return this.#integer(raw, at, INT32);
      case 'uint32':
      case 'fixed32':
        return this.#integer(raw, at, UINT32);
      case 'int64':
      case 'sint64':
      case 'sfixed64':
      case 'uint64':
      case 'fixed64': {
        // proto3 JSON takes 64-bit integers as numbers or decimal strings.
        const text = typeof raw === 'number' && Number.isSafeInteger(raw) ? String(raw) : typeof raw === 'string' ? raw : undefined;
        const unsigned = kind === 'uint64' || kind === 'fixed64';
        if (text === undefined || !(unsigned ? /^\d+$/ : /^-?\d+$/).test(text))
          return this.#issue(at, `expected a ${kind} integer, got ${describe(raw)}`);
        const n = Number(text);
        return { json: Number.isSafeInteger(n) ? n : text, wire: text };
      }
      default:
        return this.#issue(at, `unsupported field type ${kind}`);
    }
  }

  #integer(raw: unknown, at: string, range: { min: number; max: number }): Walked | undefined {
    const n = typeof raw === 'string' && /^-?\d+$/.test(raw) ? Number(raw) : raw;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max) {
      return this.#issue(at, `expected an integer in [${range.min}, ${range.max}], got ${describe(raw)}`);
    }
    return { json: n, wire: n };
  }

  /** The proto3 JSON forms of the well-known types; null when `type` is an ordinary message. */
  #wellKnown(type: protobuf.Type, value: unknown, at: string): Walked | undefined | null {
    const wrapped = WRAPPERS[type.fullName];
    if (wrapped !== undefined) {
      const out = this.#scalar(wrapped, value, at);
      return out === undefined ? undefined : { json: out.json, wire: { value: out.wire } };
    }
    switch (type.fullName) {
      case '.google.protobuf.Any':
        return this.#any(value, at);
      case '.google.protobuf.Duration': {
        const m = typeof value === 'string' ? DURATION.exec(value) : null;
        if (m === null) return this.#issue(at, `expected a duration such as "1s" or "0.25s", got ${describe(value)}`);
        const sign = m[1] === '-' ? -1 : 1;
        const nanos = Number((m[3] ?? '').padEnd(9, '0'));
        return { json: value as string, wire: { seconds: sign * Number(m[2]), nanos: sign * nanos } };
      }
      case '.google.protobuf.Timestamp': {
        const ms = typeof value === 'string' && /^\d{4}-\d\d-\d\dT/.test(value) ? Date.parse(value) : NaN;
        if (Number.isNaN(ms)) return this.#issue(at, `expected an RFC 3339 timestamp, got ${describe(value)}`);
        return { json: value as string, wire: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 } };
      }
      case '.google.protobuf.Struct':
        return isObject(value) ? { json: toJson(value), wire: structWire(value) } : this.#issue(at, 'expected a mapping (Struct)');
      case '.google.protobuf.Value':
        return { json: toJson(value), wire: valueWire(value) };
      case '.google.protobuf.ListValue':
        return Array.isArray(value) ? { json: toJson(value), wire: { values: value.map(valueWire) } } : this.#issue(at, 'expected a list');
      case '.google.protobuf.Empty':
        return isObject(value) && Object.keys(value).length === 0 ? { json: {}, wire: {} } : this.#issue(at, 'expected {} (Empty)');
      case '.google.protobuf.FieldMask':
        return typeof value === 'string'
          ? { json: value, wire: { paths: value.split(',') } }
          : this.#issue(at, 'expected a field mask string');
      default:
        return null;
    }
  }

  #any(value: unknown, at: string): Walked | undefined {
    if (!isObject(value)) return this.#issue(at, 'expected a mapping with "@type" (Any)');
    const url = value['@type'];
    if (typeof url !== 'string' || !url.includes('/'))
      return this.#issue(join(at, '@type'), 'an Any needs "@type": type.googleapis.com/<message>');
    if (!url.startsWith(TYPE_URL_PREFIX)) this.#issue(join(at, '@type'), `type URLs start with ${TYPE_URL_PREFIX}`);
    const typeName = url.slice(url.lastIndexOf('/') + 1);
    const inner = this.#protos.type(typeName);
    if (inner === undefined) return this.#issue(join(at, '@type'), `no message ${typeName} in Envoy's protos`);
    const { '@type': _type, ...rest } = value;
    // An Any holding a well-known type carries it under "value" (proto3 JSON).
    const special = inner.fullName.startsWith('.google.protobuf.');
    if (special && Object.keys(rest).some((k) => k !== 'value')) return this.#issue(at, `an Any of ${typeName} holds only "value"`);
    const out = this.message(inner, special ? rest['value'] : rest, at);
    if (out === undefined) return undefined;
    const json: JsonObject = special ? { '@type': url, value: out.json } : { '@type': url, ...(out.json as JsonObject) };
    return { json, wire: { type_url: url, value: inner.encode(inner.fromObject(out.wire as Record<string, unknown>)).finish() } };
  }

  /** Rules that hold for a field left out: required messages, and the proto3 default ("" / 0 / []) checked. */
  #absent(field: protobuf.Field, at: string): void {
    // A oneof member's rules apply only when it is the member set (its oneof's own rule is checked above).
    if (field.partOf !== null) return;
    const rules = validateRules(field.options);
    if (rules.get('message.required') === true || rules.get('duration.required') === true || rules.get('any.required') === true) {
      this.#issue(at, 'required');
      return;
    }
    if (field.map) {
      const minPairs = rules.get('map.min_pairs');
      if (typeof minPairs === 'number' && minPairs > 0) this.#issue(at, `required (at least ${minPairs} entries)`);
      return;
    }
    if (field.repeated) {
      this.#listRules(rules, 0, at);
      return;
    }
    if (field.resolvedType !== null || field.options?.['proto3_optional'] === true) return;
    const zero: Json = field.type === 'string' || field.type === 'bytes' ? '' : field.type === 'bool' ? false : 0;
    this.#scalarRules(rules, zero, at, true);
  }

  #listRules(rules: Rules, count: number, at: string): void {
    const min = rules.get('repeated.min_items');
    const max = rules.get('repeated.max_items');
    if (typeof min === 'number' && count < min) this.#issue(at, count === 0 ? `required (at least ${min})` : `needs at least ${min} items`);
    if (typeof max === 'number' && count > max) this.#issue(at, `at most ${max} items`);
  }

  /** protoc-gen-validate rules on a scalar (or wrapper) value: `<kind>.<rule>`. */
  #scalarRules(rules: Rules, value: Json, at: string, absent = false): void {
    for (const [key, bound] of rules) {
      const dot = key.indexOf('.');
      const kind = key.slice(0, dot);
      const rule = key.slice(dot + 1);
      if (rules.get(`${kind}.ignore_empty`) === true && (value === '' || value === 0)) continue;
      if (kind === 'string' && typeof value === 'string') {
        const bytes = Buffer.byteLength(value);
        const ok =
          rule === 'min_len'
            ? [...value].length >= Number(bound)
            : rule === 'max_len'
              ? [...value].length <= Number(bound)
              : rule === 'min_bytes'
                ? bytes >= Number(bound)
                : rule === 'max_bytes'
                  ? bytes <= Number(bound)
                  : rule === 'prefix'
                    ? value.startsWith(String(bound))
                    : rule === 'suffix'
                      ? value.endsWith(String(bound))
                      : rule === 'contains'
                        ? value.includes(String(bound))
                        : rule === 'const'
                          ? value === bound
                          : rule === 'well_known_regex' && rules.get('string.strict') === false
                            ? (bound === 'HTTP_HEADER_NAME' ? LOOSE_HEADER_NAME : LOOSE_HEADER_VALUE).test(value)
                            : true;
        if (!ok) this.#issue(at, absent ? `required (string.${rule} ${String(bound)})` : `breaks string.${rule} ${String(bound)}`);
      } else if (kind !== 'string' && typeof value === 'number' && typeof bound === 'number') {
        const ok =
          rule === 'gt'
            ? value > bound
            : rule === 'gte'
              ? value >= bound
              : rule === 'lt'
                ? value < bound
                : rule === 'lte'
                  ? value <= bound
                  : rule === 'const'
                    ? value === bound
                    : true;
        if (!ok) this.#issue(at, absent ? `required (${kind}.${rule} ${bound})` : `breaks ${kind}.${rule} ${bound} (value ${value})`);
      }
    }
  }

  #durationRules(rules: Rules, wire: unknown, at: string): void {
    const { seconds, nanos } = wire as { seconds: number; nanos: number };
    const value = seconds + nanos / 1e9;
    for (const [key, bound] of rules) {
      if (!key.startsWith('duration.') || !isObject(bound)) continue;
      const limit = Number(bound['seconds'] ?? 0) + Number(bound['nanos'] ?? 0) / 1e9;
      const rule = key.slice('duration.'.length);
      const ok =
        rule === 'gt'
          ? value > limit
          : rule === 'gte'
            ? value >= limit
            : rule === 'lt'
              ? value < limit
              : rule === 'lte'
                ? value <= limit
                : true;
      if (!ok) this.#issue(at, `breaks duration.${rule} ${limit}s`);
    }
  }
}

type Rules = ReadonlyMap<string, unknown>;

/** `(validate.rules).uint32.gt` → `uint32.gt`, from protobufjs's flattened field options. */
function validateRules(options: Options): Rules {
  const rules = new Map<string, unknown>();
  for (const [k, v] of Object.entries(options ?? {})) {
    if (k.startsWith('(validate.rules).')) rules.set(k.slice('(validate.rules).'.length), v);
  }
  return rules;
}

function subRules(rules: Rules, prefix: string): Rules {
  const out = new Map<string, unknown>();
  for (const [k, v] of rules) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), v);
  return out;
}

function flag(options: Options, key: string): boolean {
  return options?.[key] === true;
}

/** protoc's JSON name: lowerCamelCase of the proto field name. */
export function jsonName(protoName: string): string {
  return protoName.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

function name(t: protobuf.Type | protobuf.Enum): string {
  return t.fullName.replace(/^\./, '');
}

function join(at: string, key: string): string {
  return at === '' ? key : `${at}.${key}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function toJson(v: unknown): Json {
  if (v === null || v === undefined) return null;
  if (Array.isArray(v)) return v.map(toJson);
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  throw new Error(`not a JSON value: ${typeof v}`);
}

function structWire(v: Record<string, unknown>): unknown {
  return { fields: Object.fromEntries(Object.entries(v).map(([k, x]) => [k, valueWire(x)])) };
}

function valueWire(v: unknown): unknown {
  if (v === null || v === undefined) return { null_value: 'NULL_VALUE' };
  if (typeof v === 'number') return { number_value: v };
  if (typeof v === 'string') return { string_value: v };
  if (typeof v === 'boolean') return { bool_value: v };
  if (Array.isArray(v)) return { list_value: { values: v.map(valueWire) } };
  if (isObject(v)) return { struct_value: structWire(v) };
  throw new Error(`not a JSON value: ${typeof v}`);
}

/** The field name within edit distance 3 of a misspelt key, for the hint. */
function closest(key: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 4;
  for (const n of names) {
    const d = editDistance(key, n);
    if (d < bestDistance) {
      best = n;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_v, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}
