/**
 * The part of Go's text/template and Helm's function set (sprig plus include/required/toYaml/fail) that
 * charts/tollgate uses, with Go's semantics where they bite: `{{-`/`-}}` trimming, float64 values printed
 * as Go prints them (a values-file 4194304 prints as 4.194304e+06 unless piped through `int`), `$` as the
 * data of the current template, nil field access as an error, typed function parameters (an `indent` of a
 * float64 is an error, as in Helm), comparisons of mixed kinds refused, and `and`/`or` short-circuiting.
 * Anything outside the subset throws rather than render differently from Helm.
 *
 * Go ints are bigint here (template literals, `int`, `len`); YAML numbers are float64 (JS number), as
 * Helm reads values through JSON.
 */
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';

export type GoValue = null | undefined | boolean | number | bigint | string | GoValue[] | GoMap;
export interface GoMap {
  [key: string]: GoValue;
}

export class TemplateError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${message}`);
    this.name = 'TemplateError';
  }
}

// ---------------------------------------------------------------- parsing

type Token =
  | { t: 'str'; v: string }
  | { t: 'int'; v: bigint }
  | { t: 'float'; v: number }
  | { t: 'ident'; v: string }
  | { t: 'field'; v: string[]; chained: boolean }
  | { t: 'var'; v: string; path: string[] }
  | { t: '(' | ')' | '|' | ':=' | '=' | ',' };

type Operand =
  | { kind: 'field'; base: string; path: string[] } // base: '.' (dot), '$' or '$name'
  | { kind: 'lit'; value: GoValue }
  | { kind: 'func'; name: string }
  | { kind: 'sub'; pipe: Pipeline };

interface Pipeline {
  readonly decl: { readonly vars: string[]; readonly assign: boolean } | undefined;
  readonly cmds: Operand[][];
}

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'action'; pipe: Pipeline; where: string }
  | { kind: 'if'; branches: Array<{ pipe: Pipeline; body: Node[] }>; otherwise: Node[]; where: string }
  | { kind: 'with' | 'range'; pipe: Pipeline; body: Node[]; otherwise: Node[]; where: string }
  | { kind: 'template'; name: string; pipe: Pipeline | undefined; where: string };

interface RawAction {
  readonly tokens: Token[];
  readonly where: string;
}

const WS = /[ \t\r\n]/;

/** Splits template text into text and lexed actions, applying the trim markers. */
function lex(source: string, file: string): Array<string | RawAction> {
  const out: Array<string | RawAction> = [];
  let i = 0;
  let trimNext = false;
  while (i < source.length) {
    const open = source.indexOf('{{', i);
    let text = source.slice(i, open < 0 ? source.length : open);
    if (trimNext) text = text.replace(/^[ \t\r\n]+/, '');
    trimNext = false;
    if (open < 0) {
      out.push(text);
      break;
    }
    const where = `${file}:${source.slice(0, open).split('\n').length}`;
    let p = open + 2;
    if (source[p] === '-' && WS.test(source[p + 1] ?? '')) {
      text = text.replace(/[ \t\r\n]+$/, '');
      p += 2;
    }
    out.push(text);
    while (WS.test(source[p] ?? '')) p++;
    if (source.startsWith('/*', p)) {
      const close = source.indexOf('*/', p + 2);
      if (close < 0) throw new TemplateError(where, 'unclosed comment');
      p = close + 2;
      const end = /^(?:[ \t\r\n]+-)?[ \t\r\n]*\}\}/.exec(source.slice(p));
      if (end === null) throw new TemplateError(where, 'comment must end the action');
      trimNext = end[0].includes('-');
      i = p + end[0].length;
      continue;
    }
    const tokens: Token[] = [];
    for (;;) {
      while (WS.test(source[p] ?? '')) p++;
      if (p >= source.length) throw new TemplateError(where, 'unclosed action');
      if (source.startsWith('-}}', p) && WS.test(source[p - 1] ?? '')) {
        trimNext = true;
        p += 3;
        break;
      }
      if (source.startsWith('}}', p)) {
        p += 2;
        break;
      }
      const [token, next] = lexToken(source, p, where);
      tokens.push(token);
      p = next;
    }
    out.push({ tokens, where });
    i = p;
  }
  return out;
}

function lexToken(s: string, p: number, where: string): [Token, number] {
  const c = s[p] ?? '';
  const rest = s.slice(p);
  if (c === '"') {
    const m = /^"(?:[^"\\\n]|\\.)*"/.exec(rest);
    if (m === null) throw new TemplateError(where, 'unterminated string');
    return [{ t: 'str', v: JSON.parse(m[0].replace(/\\x([0-9a-fA-F]{2})/g, '\\u00$1')) as string }, p + m[0].length];
  }
  if (c === '`') {
    const end = s.indexOf('`', p + 1);
    if (end < 0) throw new TemplateError(where, 'unterminated raw string');
    return [{ t: 'str', v: s.slice(p + 1, end) }, end + 1];
  }
  const num = /^-?\d+(\.\d+)?([eE][-+]?\d+)?/.exec(rest);
  if (num !== null) {
    const isFloat = num[1] !== undefined || num[2] !== undefined;
    return [isFloat ? { t: 'float', v: Number(num[0]) } : { t: 'int', v: BigInt(num[0]) }, p + num[0].length];
  }
  if (c === '.') {
    const m = /^(?:\.[A-Za-z_][A-Za-z0-9_]*)+/.exec(rest);
    // `(pipeline).Field` when the dot follows a ")" directly.
    const chained = s[p - 1] === ')';
    if (m === null) return [{ t: 'field', v: [], chained }, p + 1];
    return [{ t: 'field', v: m[0].slice(1).split('.'), chained }, p + m[0].length];
  }
  if (c === '$') {
    const m = /^\$[A-Za-z0-9_]*((?:\.[A-Za-z_][A-Za-z0-9_]*)*)/.exec(rest);
    if (m === null) throw new TemplateError(where, 'bad variable');
    const name = m[0].slice(0, m[0].length - (m[1] ?? '').length);
    return [{ t: 'var', v: name, path: m[1] ? m[1].slice(1).split('.') : [] }, p + m[0].length];
  }
  if (rest.startsWith(':=')) return [{ t: ':=' }, p + 2];
  if (c === '(' || c === ')' || c === '|' || c === '=' || c === ',') return [{ t: c }, p + 1];
  const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest);
  if (id !== null) return [{ t: 'ident', v: id[0] }, p + id[0].length];
  throw new TemplateError(where, `unexpected character ${JSON.stringify(c)} in action`);
}

class PipeParser {
  #i = 0;
  readonly tokens: Token[];
  readonly where: string;

  constructor(tokens: Token[], where: string) {
    this.tokens = tokens;
    this.where = where;
  }

  get done(): boolean {
    return this.#i >= this.tokens.length;
  }

  peek(): Token | undefined {
    return this.tokens[this.#i];
  }

  next(): Token | undefined {
    return this.tokens[this.#i++];
  }

  pipeline(allowDecl: boolean): Pipeline {
    let decl: Pipeline['decl'];
    if (allowDecl) decl = this.#declaration();
    const cmds: Operand[][] = [];
    let cmd: Operand[] = [];
    for (;;) {
      const tok = this.peek();
      if (tok === undefined || tok.t === ')') break;
      this.next();
      if (tok.t === '|') {
        if (cmd.length === 0) throw new TemplateError(this.where, 'missing command before |');
        cmds.push(cmd);
        cmd = [];
        continue;
      }
      cmd.push(this.#operand(tok));
    }
    if (cmd.length === 0) throw new TemplateError(this.where, 'missing value');
    cmds.push(cmd);
    return { decl, cmds };
  }

  #declaration(): Pipeline['decl'] {
    const [a, b, c, d] = [this.tokens[this.#i], this.tokens[this.#i + 1], this.tokens[this.#i + 2], this.tokens[this.#i + 3]];
    if (a?.t === 'var' && a.path.length === 0 && b?.t === ',' && c?.t === 'var' && d?.t === ':=') {
      this.#i += 4;
      return { vars: [a.v, c.v], assign: false };
    }
    if (a?.t === 'var' && a.path.length === 0 && (b?.t === ':=' || b?.t === '=')) {
      this.#i += 2;
      return { vars: [a.v], assign: b.t === '=' };
    }
    return undefined;
  }

  #operand(tok: Token): Operand {
    switch (tok.t) {
      case 'str':
      case 'int':
      case 'float':
        return { kind: 'lit', value: tok.v };
      case 'field':
        return { kind: 'field', base: '.', path: tok.v };
      case 'var':
        return { kind: 'field', base: tok.v, path: tok.path };
      case 'ident':
        if (tok.v === 'true' || tok.v === 'false') return { kind: 'lit', value: tok.v === 'true' };
        if (tok.v === 'nil') throw new TemplateError(this.where, 'nil is not a command');
        return { kind: 'func', name: tok.v };
      case '(': {
        const pipe = this.pipeline(true);
        if (this.next()?.t !== ')') throw new TemplateError(this.where, 'unclosed (');
        const after = this.peek();
        if (after?.t === 'field' && after.chained) throw new TemplateError(this.where, '(pipeline).Field is outside this renderer');
        return { kind: 'sub', pipe };
      }
      case ')':
      case '|':
      case ':=':
      case '=':
      case ',':
        throw new TemplateError(this.where, `unexpected ${tok.t}`);
    }
  }
}

interface Parsed {
  readonly body: Node[];
  readonly defines: Map<string, Node[]>;
}

/** Parses one template file: its body and the `define`d templates in it. */
export function parseTemplate(source: string, file: string): Parsed {
  const items = lex(source, file);
  const defines = new Map<string, Node[]>();
  let pos = 0;

  const block = (closers: readonly string[]): { nodes: Node[]; closer: string; action: RawAction | undefined } => {
    const nodes: Node[] = [];
    while (pos < items.length) {
      const item = items[pos++];
      if (item === undefined) break;
      if (typeof item === 'string') {
        if (item !== '') nodes.push({ kind: 'text', text: item });
        continue;
      }
      const first = item.tokens[0];
      const keyword = first?.t === 'ident' ? first.v : undefined;
      const parser = new PipeParser(item.tokens.slice(1), item.where);
      switch (keyword) {
        case 'end':
        case 'else':
          if (!closers.includes(keyword)) throw new TemplateError(item.where, `unexpected {{${keyword}}}`);
          return { nodes, closer: keyword, action: item };
        case 'if': {
          const branches = [{ pipe: parser.pipeline(true), body: [] as Node[] }];
          let otherwise: Node[] = [];
          for (;;) {
            const inner = block(['end', 'else']);
            const last = branches[branches.length - 1];
            if (last === undefined) throw new TemplateError(item.where, 'internal: no branch');
            last.body = inner.nodes;
            if (inner.closer === 'end') break;
            const elseTokens = inner.action?.tokens.slice(1) ?? [];
            if (elseTokens[0]?.t === 'ident' && elseTokens[0].v === 'if') {
              branches.push({ pipe: new PipeParser(elseTokens.slice(1), item.where).pipeline(true), body: [] });
              continue;
            }
            if (elseTokens.length > 0) throw new TemplateError(item.where, 'only {{else}} and {{else if}} are supported');
            otherwise = block(['end']).nodes;
            break;
          }
          nodes.push({ kind: 'if', branches, otherwise, where: item.where });
          break;
        }
        case 'with':
        case 'range': {
          const pipe = parser.pipeline(true);
          const inner = block(['end', 'else']);
          if (inner.closer === 'else' && (inner.action?.tokens.length ?? 0) > 1)
            throw new TemplateError(item.where, `only a plain {{else}} in ${keyword}`);
          const otherwise = inner.closer === 'else' ? block(['end']).nodes : [];
          nodes.push({ kind: keyword, pipe, body: inner.nodes, otherwise, where: item.where });
          break;
        }
        case 'define': {
          const nameTok = parser.next();
          if (nameTok?.t !== 'str' || !parser.done) throw new TemplateError(item.where, 'define needs one quoted name');
          if (closers.length > 0) throw new TemplateError(item.where, 'define inside a block');
          if (defines.has(nameTok.v)) throw new TemplateError(item.where, `template ${nameTok.v} defined twice`);
          defines.set(nameTok.v, block(['end']).nodes);
          break;
        }
        case 'template': {
          const nameTok = parser.next();
          if (nameTok?.t !== 'str') throw new TemplateError(item.where, 'template needs a quoted name');
          nodes.push({ kind: 'template', name: nameTok.v, pipe: parser.done ? undefined : parser.pipeline(false), where: item.where });
          break;
        }
        case 'block':
        case 'break':
        case 'continue':
          throw new TemplateError(item.where, `{{${keyword}}} is outside this renderer`);
        case undefined:
        default: {
          const whole = new PipeParser(item.tokens, item.where);
          const pipe = whole.pipeline(true);
          if (!whole.done) throw new TemplateError(item.where, 'unexpected )');
          nodes.push({ kind: 'action', pipe, where: item.where });
        }
      }
    }
    if (closers.length > 0) throw new TemplateError(file, `missing {{end}} (${closers.join('/')})`);
    return { nodes, closer: '', action: undefined };
  };

  const { nodes } = block([]);
  return { body: nodes, defines };
}

// ---------------------------------------------------------------- values as Go sees them

function isMap(v: GoValue): v is GoMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function typeName(v: GoValue): string {
  if (v === null || v === undefined) return '<nil>';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return 'float64';
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'string';
  return Array.isArray(v) ? '[]interface {}' : 'map[string]interface {}';
}

/** reflect.Kind's name of a value, as sprig's kindOf prints it. */
function kindName(v: GoValue): string {
  if (v === null || v === undefined) return 'invalid';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return 'float64';
  // Go ints here are bigint, whatever their width (`int` and literals give int, `add` int64).
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'string') return 'string';
  return Array.isArray(v) ? 'slice' : 'map';
}

/** text/template's truth: false, 0, nil, and empty strings, lists and maps are false. */
export function isTrue(v: GoValue): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (typeof v === 'bigint') return v !== 0n;
  if (typeof v === 'string') return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  return Object.keys(v).length > 0;
}

/**
 * fmt's %v of a float64: strconv's 'g' with the shortest digits, which switches to %e when the exponent
 * is < -4 or >= 6 ("if precision was the shortest possible, use precision 6 for this decision",
 * strconv/ftoa.go). So 100000 prints as 100000 and 1000000 as 1e+06.
 */
export function goFloat(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return '+Inf';
  if (n === -Infinity) return '-Inf';
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  const [mantissa = '', expText = '0'] = n.toExponential().split('e');
  const exp = Number(expText);
  if (exp < -4 || exp >= 6) return `${mantissa}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return String(n);
}

/** How text/template prints a value (fmt's %v). */
export function printValue(v: GoValue): string {
  if (v === null || v === undefined) return '<no value>';
  if (typeof v === 'number') return goFloat(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  const inner = (x: GoValue): string => (x === null || x === undefined ? '<nil>' : printValue(x));
  if (Array.isArray(v)) return `[${v.map(inner).join(' ')}]`;
  return `map[${Object.keys(v)
    .sort()
    .map((k) => `${k}:${inner(v[k])}`)
    .join(' ')}]`;
}

/** Go's %q (strconv.Quote) for the characters a chart meets. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

/** sprig's strval: strings as they are, everything else as fmt's %v. */
function strval(v: GoValue): string {
  return typeof v === 'string' ? v : printValue(v);
}

/** sprig's empty. */
function isEmpty(v: GoValue): boolean {
  return !isTrue(v);
}

/** Helm's toYaml: sigs.k8s.io/yaml (map keys sorted, YAML 1.1 quoting), trailing newline removed. */
export function toYaml(v: GoValue): string {
  return stringify(v ?? null, { version: '1.1', sortMapEntries: true, indentSeq: false, lineWidth: 0 }).replace(/\n$/, '');
}

function toInt(v: GoValue): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
  if (typeof v === 'boolean') return v ? 1n : 0n;
  if (typeof v === 'string' && /^[-+]?\d+$/.test(v.trim())) return BigInt(v.trim());
  return 0n;
}

function toFloat(v: GoValue): number {
  if (typeof v === 'bigint') return Number(v);
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v))) return Number(v);
  return 0;
}

type Kind = 'int' | 'float' | 'string' | 'bool';

function kindOf(v: GoValue): Kind | undefined {
  if (typeof v === 'bigint') return 'int';
  if (typeof v === 'number') return 'float';
  if (typeof v === 'string') return 'string';
  if (typeof v === 'boolean') return 'bool';
  return undefined;
}

/** text/template's eq/lt: basic kinds only, and the same kind on both sides. */
function compare(a: GoValue, b: GoValue, op: 'eq' | 'lt'): boolean {
  const ka = kindOf(a);
  const kb = kindOf(b);
  if (ka === undefined || kb === undefined) throw new Error(`invalid type for comparison (${typeName(a)}, ${typeName(b)})`);
  if (ka !== kb) throw new Error(`incompatible types for comparison (${typeName(a)} and ${typeName(b)})`);
  if (op === 'eq') return a === b;
  if (ka === 'bool') throw new Error('invalid type for comparison (bool)');
  return (a as string | number | bigint) < (b as string | number | bigint);
}

// ---------------------------------------------------------------- functions

type Param = 'any' | 'string' | 'int';

interface Fn {
  readonly params: readonly Param[];
  /** The type of any further arguments; absent: exactly `params`. */
  readonly rest?: Param;
  readonly call: (args: GoValue[], ctx: Renderer) => GoValue;
}

function checkArgs(name: string, fn: Fn, args: GoValue[]): void {
  if (args.length < fn.params.length || (fn.rest === undefined && args.length > fn.params.length))
    throw new Error(`wrong number of args for ${name}: want ${fn.params.length} got ${args.length}`);
  args.forEach((a, i) => {
    const want = fn.params[i] ?? fn.rest ?? 'any';
    if (want === 'string' && typeof a !== 'string')
      throw new Error(`wrong type for value; expected string; got ${typeName(a)} (${name} arg ${i + 1})`);
    if (want === 'int' && typeof a !== 'bigint')
      throw new Error(`wrong type for value; expected int; got ${typeName(a)} (${name} arg ${i + 1})`);
  });
}

function str(v: GoValue): string {
  return v as string;
}

function int(v: GoValue): number {
  return Number(v);
}

const FUNCS = new Map<string, Fn>(
  Object.entries({
    // text/template builtins
    eq: { params: ['any', 'any'], rest: 'any', call: ([a, ...bs]) => bs.some((b) => compare(a, b, 'eq')) },
    ne: { params: ['any', 'any'], call: ([a, b]) => !compare(a, b, 'eq') },
    lt: { params: ['any', 'any'], call: ([a, b]) => compare(a, b, 'lt') },
    le: { params: ['any', 'any'], call: ([a, b]) => compare(a, b, 'lt') || compare(a, b, 'eq') },
    gt: { params: ['any', 'any'], call: ([a, b]) => compare(b, a, 'lt') },
    ge: { params: ['any', 'any'], call: ([a, b]) => compare(b, a, 'lt') || compare(a, b, 'eq') },
    not: { params: ['any'], call: ([a]) => !isTrue(a) },
    len: {
      params: ['any'],
      call: ([a]) => {
        if (typeof a === 'string') return BigInt(Buffer.byteLength(a));
        if (Array.isArray(a)) return BigInt(a.length);
        if (isMap(a)) return BigInt(Object.keys(a).length);
        throw new Error(`len of type ${typeName(a)}`);
      },
    },
    index: {
      params: ['any'],
      rest: 'any',
      call: ([item, ...keys]) => {
        let cur = item;
        for (const k of keys) {
          if (isMap(cur) && typeof k === 'string') cur = Object.hasOwn(cur, k) ? cur[k] : undefined;
          else if (Array.isArray(cur) && typeof k === 'bigint') {
            if (k < 0n || k >= BigInt(cur.length)) throw new Error(`index out of range: ${k}`);
            cur = cur[Number(k)];
          } else throw new Error(`can't index item of type ${typeName(cur)} with ${typeName(k)}`);
        }
        return cur;
      },
    },
    printf: { params: ['string'], rest: 'any', call: ([format, ...args]) => sprintf(str(format), args) },
    // Helm
    toYaml: { params: ['any'], call: ([v]) => toYaml(v) },
    required: {
      params: ['string', 'any'],
      call: ([message, v]) => {
        if (v === null || v === undefined || v === '') throw new Error(str(message));
        return v;
      },
    },
    fail: {
      params: ['string'],
      call: ([message]) => {
        throw new Error(str(message));
      },
    },
    // sprig
    default: { params: ['any'], rest: 'any', call: ([d, ...given]) => (given.length === 0 || isEmpty(given[0]) ? d : given[0]) },
    empty: { params: ['any'], call: ([v]) => isEmpty(v) },
    quote: {
      params: [],
      rest: 'any',
      call: (args) =>
        args
          .filter((a) => a !== null && a !== undefined)
          .map((a) => goQuote(strval(a)))
          .join(' '),
    },
    int: { params: ['any'], call: ([v]) => toInt(v) },
    float64: { params: ['any'], call: ([v]) => toFloat(v) },
    add: { params: [], rest: 'any', call: (args) => args.reduce<bigint>((acc, v) => acc + toInt(v), 0n) },
    mulf: { params: ['any'], rest: 'any', call: ([a, ...bs]) => bs.reduce<number>((acc, b) => acc * toFloat(b), toFloat(a)) },
    divf: { params: ['any'], rest: 'any', call: ([a, ...bs]) => bs.reduce<number>((acc, b) => acc / toFloat(b), toFloat(a)) },
    indent: { params: ['int', 'string'], call: ([n, s]) => indent(int(n), str(s)) },
    nindent: { params: ['int', 'string'], call: ([n, s]) => `\n${indent(int(n), str(s))}` },
    trim: { params: ['string'], call: ([s]) => str(s).trim() },
    trimPrefix: {
      params: ['string', 'string'],
      call: ([prefix, s]) => (str(s).startsWith(str(prefix)) ? str(s).slice(str(prefix).length) : str(s)),
    },
    trimSuffix: {
      params: ['string', 'string'],
      call: ([suffix, s]) => (str(s).endsWith(str(suffix)) ? str(s).slice(0, -str(suffix).length || undefined) : str(s)),
    },
    trunc: {
      params: ['int', 'string'],
      call: ([n, s]) => {
        const c = int(n);
        const text = str(s);
        if (c < 0 && text.length + c > 0) return text.slice(text.length + c);
        return c >= 0 && text.length > c ? text.slice(0, c) : text;
      },
    },
    contains: { params: ['string', 'string'], call: ([sub, s]) => str(s).includes(str(sub)) },
    lower: { params: ['string'], call: ([s]) => str(s).toLowerCase() },
    // sprig's kindIs: reflect's kind names for what values hold.
    kindIs: { params: ['string', 'any'], call: ([kind, v]) => str(kind) === kindName(v) },
    hasSuffix: { params: ['string', 'string'], call: ([suffix, s]) => str(s).endsWith(str(suffix)) },
    // RE2 and JavaScript agree on the plain patterns a chart uses (no lookaround, no backreferences).
    regexMatch: { params: ['string', 'string'], call: ([re, s]) => new RegExp(str(re), 'u').test(str(s)) },
    b64enc: { params: ['string'], call: ([s]) => Buffer.from(str(s), 'utf8').toString('base64') },
    sha256sum: { params: ['string'], call: ([s]) => createHash('sha256').update(str(s)).digest('hex') },
    dict: {
      params: [],
      rest: 'any',
      call: (args) => {
        const out: GoMap = {};
        for (let i = 0; i < args.length; i += 2) out[strval(args[i])] = i + 1 < args.length ? args[i + 1] : '';
        return out;
      },
    },
    list: { params: [], rest: 'any', call: (args) => [...args] },
    concat: {
      params: [],
      rest: 'any',
      call: (args) =>
        args.flatMap((l) => {
          if (!Array.isArray(l)) throw new Error(`Cannot concat type ${typeName(l)} as list`);
          return l;
        }),
    },
    hasKey: {
      params: ['any', 'string'],
      call: ([m, k]) => {
        if (!isMap(m)) throw new Error(`wrong type for value; expected map[string]interface {}; got ${typeName(m)}`);
        return Object.hasOwn(m, str(k));
      },
    },
    include: { params: ['string', 'any'], call: ([name, data], ctx) => ctx.execute(str(name), data) },
  } satisfies Record<string, Fn>),
);
// Set apart: as an object-literal key, `toString` is typed as Object.prototype's method.
FUNCS.set('toString', { params: ['any'], call: ([v]) => strval(v) });

/** sprig's indent: every line, empty ones too, prefixed. */
function indent(n: number, s: string): string {
  const pad = ' '.repeat(n);
  return pad + s.replaceAll('\n', `\n${pad}`);
}

function sprintf(format: string, args: GoValue[]): string {
  let i = 0;
  const out = format.replace(/%([%sdvq])/g, (_m, verb: string) => {
    if (verb === '%') return '%';
    const a = args[i++];
    if (i > args.length) return `%!${verb}(MISSING)`;
    switch (verb) {
      case 's':
        if (typeof a === 'string') return a;
        if (typeof a === 'bigint' || typeof a === 'number' || typeof a === 'boolean') return `%!s(${typeName(a)}=${printValue(a)})`;
        throw new Error(`printf %s of ${typeName(a)} is outside this renderer`);
      case 'd':
        if (typeof a === 'bigint') return String(a);
        return `%!d(${typeName(a)}=${printValue(a)})`;
      case 'q':
        if (typeof a === 'string') return goQuote(a);
        throw new Error(`printf %q of ${typeName(a)} is outside this renderer`);
      default:
        return printValue(a);
    }
  });
  if (i < args.length)
    return `${out}%!(EXTRA ${args
      .slice(i)
      .map((a) => `${typeName(a)}=${printValue(a)}`)
      .join(', ')})`;
  return out;
}

// ---------------------------------------------------------------- execution

class Scope {
  readonly #vars = new Map<string, GoValue>();
  readonly parent: Scope | undefined;

  constructor(parent: Scope | undefined) {
    this.parent = parent;
  }

  declare(name: string, value: GoValue): void {
    this.#vars.set(name, value);
  }

  assign(name: string, value: GoValue, where: string): void {
    if (this.#vars.has(name)) this.#vars.set(name, value);
    else if (this.parent !== undefined) this.parent.assign(name, value, where);
    else throw new TemplateError(where, `undefined variable: ${name}`);
  }

  get(name: string, where: string): GoValue {
    if (this.#vars.has(name)) return this.#vars.get(name);
    if (this.parent !== undefined) return this.parent.get(name, where);
    throw new TemplateError(where, `undefined variable: ${name}`);
  }
}

/** A set of parsed templates sharing their `define`s, as Helm parses a chart's templates/ together. */
export class Renderer {
  readonly #files = new Map<string, Node[]>();
  readonly #defines = new Map<string, Node[]>();
  #depth = 0;

  /** Adds a template file; its defines become visible to every file. */
  add(file: string, source: string): void {
    const parsed = parseTemplate(source, file);
    this.#files.set(file, parsed.body);
    for (const [name, body] of parsed.defines) {
      if (this.#defines.has(name)) throw new TemplateError(file, `template ${name} defined twice`);
      this.#defines.set(name, body);
    }
  }

  /** Renders a file with `data` as `.` and `$`. */
  render(file: string, data: GoValue): string {
    const body = this.#files.get(file);
    if (body === undefined) throw new Error(`no template file ${file}`);
    return this.#run(body, data);
  }

  /** Renders a defined template (include). */
  execute(name: string, data: GoValue): string {
    const body = this.#defines.get(name);
    if (body === undefined) throw new Error(`no template "${name}"`);
    if (++this.#depth > 100) throw new Error(`include "${name}": recursion too deep`);
    try {
      return this.#run(body, data);
    } finally {
      this.#depth--;
    }
  }

  #run(body: Node[], data: GoValue): string {
    const scope = new Scope(undefined);
    scope.declare('$', data);
    const out: string[] = [];
    this.#nodes(body, data, scope, out);
    return out.join('');
  }

  #nodes(nodes: Node[], dot: GoValue, scope: Scope, out: string[]): void {
    for (const node of nodes) this.#node(node, dot, scope, out);
  }

  #node(node: Node, dot: GoValue, scope: Scope, out: string[]): void {
    switch (node.kind) {
      case 'text':
        out.push(node.text);
        return;
      case 'action': {
        const v = this.#pipeline(node.pipe, dot, scope, node.where);
        if (node.pipe.decl === undefined) out.push(printValue(v));
        return;
      }
      case 'if': {
        for (const branch of node.branches) {
          const inner = new Scope(scope);
          if (isTrue(this.#pipeline(branch.pipe, dot, inner, node.where))) {
            this.#nodes(branch.body, dot, inner, out);
            return;
          }
        }
        this.#nodes(node.otherwise, dot, new Scope(scope), out);
        return;
      }
      case 'with': {
        const inner = new Scope(scope);
        const v = this.#pipeline(node.pipe, dot, inner, node.where);
        if (isTrue(v)) this.#nodes(node.body, v, inner, out);
        else this.#nodes(node.otherwise, dot, new Scope(scope), out);
        return;
      }
      case 'range': {
        const decl = node.pipe.decl;
        const v = this.#pipeline({ decl: undefined, cmds: node.pipe.cmds }, dot, scope, node.where);
        const entries: Array<[GoValue, GoValue]> = Array.isArray(v)
          ? v.map((x, i) => [BigInt(i), x])
          : isMap(v)
            ? Object.keys(v)
                .sort()
                .map((k) => [k, v[k]])
            : v === null || v === undefined
              ? []
              : fail(node.where, `range can't iterate over ${printValue(v)}`);
        if (entries.length === 0) {
          this.#nodes(node.otherwise, dot, new Scope(scope), out);
          return;
        }
        for (const [key, value] of entries) {
          const inner = new Scope(scope);
          if (decl?.vars.length === 1) inner.declare(decl.vars[0] ?? '', value);
          if (decl?.vars.length === 2) {
            inner.declare(decl.vars[0] ?? '', key);
            inner.declare(decl.vars[1] ?? '', value);
          }
          this.#nodes(node.body, value, inner, out);
        }
        return;
      }
      case 'template': {
        const data = node.pipe === undefined ? null : this.#pipeline(node.pipe, dot, scope, node.where);
        out.push(this.#wrap(node.where, () => this.execute(node.name, data)));
        return;
      }
    }
  }

  #wrap<T>(where: string, f: () => T): T {
    try {
      return f();
    } catch (err) {
      if (err instanceof TemplateError) throw err;
      throw new TemplateError(where, (err as Error).message);
    }
  }

  #pipeline(pipe: Pipeline, dot: GoValue, scope: Scope, where: string): GoValue {
    let value: GoValue;
    let piped = false;
    for (const cmd of pipe.cmds) {
      value = this.#command(cmd, dot, scope, where, piped ? [value] : []);
      piped = true;
    }
    if (pipe.decl !== undefined) {
      const [name] = pipe.decl.vars;
      if (pipe.decl.vars.length !== 1 || name === undefined) throw new TemplateError(where, 'two variables only in range');
      if (pipe.decl.assign) scope.assign(name, value, where);
      else scope.declare(name, value);
    }
    return value;
  }

  #command(cmd: Operand[], dot: GoValue, scope: Scope, where: string, piped: GoValue[]): GoValue {
    const [head, ...rest] = cmd;
    if (head === undefined) throw new TemplateError(where, 'empty command');
    if (head.kind !== 'func') {
      if (rest.length > 0 || piped.length > 0) throw new TemplateError(where, "can't give argument to non-function");
      return this.#operand(head, dot, scope, where);
    }
    // and/or evaluate lazily (Go 1.18): stop at the first false / true argument.
    if (head.name === 'and' || head.name === 'or') {
      const args = [...rest.map((op) => () => this.#operand(op, dot, scope, where)), ...piped.map((v) => () => v)];
      if (args.length === 0) throw new TemplateError(where, `wrong number of args for ${head.name}`);
      let v: GoValue;
      for (const arg of args) {
        v = arg();
        if (isTrue(v) === (head.name === 'or')) return v;
      }
      return v;
    }
    const fn = FUNCS.get(head.name);
    if (fn === undefined) throw new TemplateError(where, `function "${head.name}" not defined`);
    const args = [...rest.map((op) => this.#operand(op, dot, scope, where)), ...piped];
    return this.#wrap(where, () => {
      checkArgs(head.name, fn, args);
      return fn.call(args, this);
    });
  }

  #operand(op: Operand, dot: GoValue, scope: Scope, where: string): GoValue {
    switch (op.kind) {
      case 'lit':
        return op.value;
      case 'sub':
        return this.#pipeline(op.pipe, dot, new Scope(scope), where);
      case 'func':
        return this.#command([op], dot, scope, where, []);
      case 'field': {
        let v = op.base === '.' ? dot : scope.get(op.base, where);
        const walked: string[] = [];
        for (const key of op.path) {
          if (v === null || v === undefined)
            throw new TemplateError(where, `nil pointer evaluating interface {}.${key} (${[op.base, ...walked].join('.')})`);
          if (!isMap(v)) throw new TemplateError(where, `can't evaluate field ${key} in type ${typeName(v)}`);
          v = Object.hasOwn(v, key) ? v[key] : undefined;
          walked.push(key);
        }
        return v;
      }
    }
  }
}

function fail(where: string, message: string): never {
  throw new TemplateError(where, message);
}
