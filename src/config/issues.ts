/** A problem found in a config file: where (YAML path, line) and what to fix. Never carries a secret. */
export interface ConfigIssue {
  /** `model_list[2].litellm_params.api_base`; empty for the whole file. */
  readonly path: string;
  readonly message: string;
  /** The file the issue is in when it is not the config file itself: one it includes (`include:`). */
  readonly file?: string;
  readonly line?: number;
  readonly column?: number;
}

export type PathSegment = string | number;

/** An issue that still knows its path as segments, so the loader can find its line. */
export interface PathIssue extends ConfigIssue {
  readonly segments: readonly PathSegment[];
}

/** `['model_list', 2, 'litellm_params']` → `model_list[2].litellm_params`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out;
}

/** One line per issue: `config.yaml:12:7 model_list[2].litellm_params.api_base: not a URL`. */
export function formatIssue(source: string, issue: ConfigIssue): string {
  const file = issue.file ?? source;
  const where = issue.line === undefined ? file : `${file}:${issue.line}:${issue.column ?? 1}`;
  return issue.path === '' ? `${where} ${issue.message}` : `${where} ${issue.path}: ${issue.message}`;
}

/** Thrown by a boot step when the config cannot be used; the CLI prints each issue on its own line. */
export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];
  readonly source: string;
  constructor(source: string, issues: readonly ConfigIssue[]) {
    super(issues.map((i) => formatIssue(source, i)).join('\n'));
    this.name = 'ConfigError';
    this.source = source;
    this.issues = issues;
  }
}
