/**
 * A Dockerfile reader for tests: parser directives, comments, line continuations (with the `# escape=`
 * directive honoured), instructions with their `--flags`, JSON (exec) form, and stages split at FROM with
 * global ARG defaults substituted into the image reference. And .dockerignore matching as BuildKit does it:
 * `*`, `?`, `**`, a pattern excluding everything under a matched directory, `!` re-including, last match wins.
 */

export interface Instruction {
  /** Upper-case: RUN, COPY, ... */
  readonly keyword: string;
  /** The arguments after the flags, continuations joined. */
  readonly args: string;
  /** `--name=value` flags (`--from=build` → from: build). */
  readonly flags: Readonly<Record<string, string>>;
  /** The exec form's array, when the arguments are a JSON array of strings. */
  readonly json: readonly string[] | undefined;
  readonly line: number;
}

export interface Stage {
  readonly image: string;
  readonly name: string | undefined;
  readonly instructions: readonly Instruction[];
}

export interface Dockerfile {
  readonly directives: Readonly<Record<string, string>>;
  /** ARGs before the first FROM, with their defaults. */
  readonly globalArgs: Readonly<Record<string, string>>;
  readonly stages: readonly Stage[];
}

export function parseDockerfile(text: string): Dockerfile {
  const lines = text.split(/\r?\n/);
  const directives: Record<string, string> = {};
  let i = 0;
  // Parser directives: `# key=value` lines at the very top, before any comment, blank line or instruction.
  for (; i < lines.length; i++) {
    const m = /^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(lines[i] ?? '');
    if (m === null) break;
    directives[(m[1] ?? '').toLowerCase()] = m[2] ?? '';
  }
  const escape = directives['escape'] ?? '\\';
  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const raw = lines[i] ?? '';
    const startLine = i + 1;
    i++;
    if (raw.trim() === '' || raw.trim().startsWith('#')) continue;
    let joined = raw;
    while (joined.trimEnd().endsWith(escape) && i <= lines.length) {
      joined = joined.trimEnd().slice(0, -escape.length).trimEnd();
      // Comment lines inside a continued instruction are dropped; blank lines too.
      while (i < lines.length && /^\s*(#.*)?$/.test(lines[i] ?? '')) i++;
      if (i >= lines.length) break;
      joined += ` ${(lines[i] ?? '').trim()}`;
      i++;
    }
    const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(joined);
    if (m === null) throw new Error(`Dockerfile line ${startLine}: not an instruction: ${raw}`);
    let rest = (m[2] ?? '').trim();
    if (rest.includes('<<')) throw new Error(`Dockerfile line ${startLine}: heredocs are not supported by this reader`);
    const flags: Record<string, string> = {};
    for (let f = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest); f !== null; f = /^--([a-z-]+)(?:=(\S*))?\s*/.exec(rest)) {
      flags[f[1] ?? ''] = f[2] ?? 'true';
      rest = rest.slice(f[0].length);
    }
    instructions.push({ keyword: (m[1] ?? '').toUpperCase(), args: rest, flags, json: execForm(rest), line: startLine });
  }

  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  let current: { image: string; name: string | undefined; instructions: Instruction[] } | undefined;
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const [image = '', as, name] = ins.args.split(/\s+/);
      if (as !== undefined && as.toUpperCase() !== 'AS') throw new Error(`Dockerfile line ${ins.line}: FROM image [AS name]`);
      current = { image: substitute(image, globalArgs), name, instructions: [] };
      stages.push(current);
    } else if (current === undefined) {
      if (ins.keyword !== 'ARG') throw new Error(`Dockerfile line ${ins.line}: ${ins.keyword} before FROM`);
      const [k = '', v = ''] = ins.args.split('=');
      globalArgs[k.trim()] = v.trim();
    } else {
      current.instructions.push(ins);
    }
  }
  return { directives, globalArgs, stages };
}

function execForm(args: string): string[] | undefined {
  if (!args.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(args);
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : undefined;
  } catch {
    return undefined;
  }
}

function substitute(s: string, args: Readonly<Record<string, string>>): string {
  return s.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_m, name: string) => args[name] ?? '');
}

/** A .dockerignore's rules, in order. */
export function parseDockerignore(text: string): Array<{ exclude: boolean; pattern: RegExp; source: string }> {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const exclude = !l.startsWith('!');
      const body = (exclude ? l : l.slice(1)).replace(/^\/+/, '').replace(/\/+$/, '');
      return { exclude, pattern: globToRegExp(body), source: l };
    });
}

/** True when `file` (a context-relative path) is left out of the build context. */
export function isIgnored(rules: ReturnType<typeof parseDockerignore>, file: string): boolean {
  const parts = file.split('/');
  let ignored = false;
  for (const rule of rules) {
    // A pattern matching a directory applies to everything under it.
    const hit = parts.some((_p, n) => rule.pattern.test(parts.slice(0, n + 1).join('/')));
    if (hit) ignored = rule.exclude;
  }
  return ignored;
}

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] ?? '';
    if (c === '*' && glob[i + 1] === '*') {
      re += glob[i + 2] === '/' ? '(?:.*/)?' : '.*';
      i += glob[i + 2] === '/' ? 2 : 1;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
