/**
 * Where the config comes from: `--config`, `TOLLGATE_CONFIG`, or the embedded default (no file at all).
 * Validation covers the schema and the policy (CEL compiles), so `config check` and boot agree.
 */
import { readFileSync } from 'node:fs';
import { loadConfigText } from '../config/load.js';
import { ConfigError, type ConfigIssue } from '../config/issues.js';
import type { Config } from '../config/schema.js';
import type { Policy } from '../policy/rules.js';

export interface PreparedConfig {
  readonly config: Config;
  readonly policy: Policy;
  readonly warnings: readonly ConfigIssue[];
  /** The file it came from, or `(embedded default)`. */
  readonly source: string;
  /** The files it was read from: `source` and those its `include:` named (a reload watches them all). */
  readonly files: readonly string[];
}

export const EMBEDDED = '(embedded default)';

/** How the file was named, for the message when it cannot be read: `config check F`, `--config F`, or `TOLLGATE_CONFIG`. */
export type ConfigOrigin = 'check' | '--config' | 'TOLLGATE_CONFIG';

const FIX_UNREADABLE: Record<ConfigOrigin, string> = {
  check: 'config check cannot read the file it was given; check its path and permissions',
  '--config': 'the file --config names cannot be read; pass a readable YAML file',
  TOLLGATE_CONFIG: 'the file TOLLGATE_CONFIG names cannot be read; set it to a readable YAML file',
};

/** Reads and validates a config file; throws ConfigError listing every issue. */
export function prepareConfigFile(file: string, env: NodeJS.ProcessEnv, origin: ConfigOrigin = '--config'): PreparedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'a directory, not a file'
            : 'cannot be read';
    throw new ConfigError(file, [{ path: '', message: `${why}: ${FIX_UNREADABLE[origin]}` }]);
  }
  return prepareConfigText(text, file, env, (path) => readFileSync(path, 'utf8'));
}

/**
 * Validates config text that came from `source`; `readFile` reads the files its `include:` names (relative
 * to `source`'s directory). Without it, a config with `include:` is refused.
 */
export function prepareConfigText(
  text: string,
  source: string,
  env: NodeJS.ProcessEnv,
  readFile?: (path: string) => string,
): PreparedConfig {
  const loaded = loadConfigText(text, env, { file: source, readFile });
  if (loaded.config === undefined || loaded.policy === undefined) throw new ConfigError(source, loaded.issues);
  return { config: loaded.config, policy: loaded.policy, warnings: loaded.warnings, source, files: [source, ...loaded.included] };
}
