/**
 * Config reload (SIGHUP, or a watch of the file and the files it includes when `--watch-config` is given): the file is validated
 * again exactly as at boot, and the new config replaces the old in one step — or, if it has any error, is
 * rejected with every error logged and the running config kept. What a reload can change: models, policy,
 * keys, teams, users, fallbacks, admin groups, `auth.keys.required`, `allowed_api_bases`. Settings a running
 * process cannot swap safely (ports and stores, secrets, the JWT issuer, router tuning) make the reload
 * fail with the setting named: restart to apply them (so do the budget calendar's `litellm_settings.timezone`
 * and `budget_reset_time`).
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { ConfigError, formatIssue } from '../config/issues.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../telemetry/logger.js';
import { prepareConfigFile, type PreparedConfig } from './config-source.js';

/** The parts of a config that a reload may not change, each by its YAML path. */
function fixedParts(c: Config): Record<string, unknown> {
  const { allowed_api_bases: _bases, ...general } = c.general_settings;
  const { fallbacks: _fallbacks, ...router } = c.router_settings;
  return {
    general_settings: general,
    router_settings: router,
    'auth.jwt': c.auth.jwt,
    // When budget periods reset: moved in a running process, every budget's period (its counter) would move.
    litellm_settings: c.litellm_settings ?? {},
  };
}

/** Why `next` cannot replace `current` in a running process, or an empty list. */
export function restartNeeded(current: Config, next: Config): string[] {
  const a = fixedParts(current);
  const b = fixedParts(next);
  const out: string[] = [];
  for (const [path, value] of Object.entries(a)) {
    const other = b[path];
    if (isDeepStrictEqual(value, other)) continue;
    if (typeof value === 'object' && value !== null && typeof other === 'object' && other !== null) {
      const keys = new Set([...Object.keys(value), ...Object.keys(other)]);
      for (const k of keys)
        if (!isDeepStrictEqual((value as Record<string, unknown>)[k], (other as Record<string, unknown>)[k])) out.push(`${path}.${k}`);
    } else out.push(path);
  }
  return out;
}

export interface Reloader {
  /** Validates the file again and applies it; resolves true when applied. */
  reload(reason: string): Promise<boolean>;
  stop(): void;
}

/**
 * Reloads `file` when asked (the CLI's SIGHUP handler) and on change, with `watchFile`. `apply` swaps the
 * new config in; reloads never overlap, and a change seen during one runs once more after it.
 */
export function startReloader(opts: {
  file: string;
  /** The files the running config was read from (`file` and its includes); watched with `watchFile`. */
  files?: readonly string[];
  env: NodeJS.ProcessEnv;
  logger: Logger;
  current: () => Config;
  apply: (next: PreparedConfig) => Promise<void>;
  watchFile: boolean;
}): Reloader {
  const { logger } = opts;
  let running: Promise<boolean> | undefined;
  let again = false;
  const once = async (reason: string): Promise<boolean> => {
    let next: PreparedConfig;
    try {
      next = prepareConfigFile(opts.file, opts.env);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      for (const issue of err.issues)
        logger.error({ path: issue.path, line: issue.line }, `config reload: ${formatIssue(err.source, issue)}`);
      logger.error({ reason, errors: err.issues.length }, 'config reload rejected: the running config is kept');
      return false;
    }
    const fixed = restartNeeded(opts.current(), next.config);
    if (fixed.length > 0) {
      logger.error(
        { reason, settings: fixed },
        `config reload rejected: ${fixed.join(', ')} cannot change in a running process (restart tollgate to apply); the running config is kept`,
      );
      return false;
    }
    for (const w of next.warnings) logger.warn({ path: w.path, line: w.line, file: w.file }, `config: ${w.message}`);
    await opts.apply(next);
    watchFiles(next.files);
    logger.info(
      { reason, deployments: next.config.model_list.length, keys: next.config.keys.length, rules: next.config.policy.rules.length },
      'config reloaded',
    );
    return true;
  };
  const reload = (reason: string): Promise<boolean> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    const run = async (): Promise<boolean> => {
      let ok: boolean;
      do {
        again = false;
        ok = await once(reason).catch((err: unknown) => {
          logger.error({ err: (err as Error).message }, 'config reload failed: the running config is kept');
          return false;
        });
      } while (again);
      return ok;
    };
    running = run().finally(() => {
      running = undefined;
    });
    return running;
  };
  // The directories are watched: editors and Kubernetes ConfigMap updates replace a file (rename, symlink
  // swap) as often as they write it, which a watch on the file itself would miss. One watch per directory
  // holding the config or a file it includes; the set follows the includes of the config last applied.
  const watchers = new Map<string, { watcher: FSWatcher; names: Set<string> }>();
  let debounce: NodeJS.Timeout | undefined;
  const watchFiles = (files: readonly string[]): void => {
    if (!opts.watchFile) return;
    const wanted = new Map<string, Set<string>>();
    for (const f of [opts.file, ...files]) {
      const dir = resolve(dirname(f));
      const names = wanted.get(dir) ?? new Set<string>();
      names.add(basename(f));
      wanted.set(dir, names);
    }
    for (const [dir, w] of watchers) {
      if (wanted.has(dir)) continue;
      w.watcher.close();
      watchers.delete(dir);
    }
    for (const [dir, names] of wanted) {
      const known = watchers.get(dir);
      if (known !== undefined) {
        known.names = names;
        continue;
      }
      const entry = { watcher: watch(dir), names };
      entry.watcher.on('change', (_event, changed) => {
        const name = typeof changed === 'string' ? changed : changed?.toString();
        if (name !== undefined && !entry.names.has(name) && !name.startsWith('..')) return;
        clearTimeout(debounce);
        debounce = setTimeout(() => void reload('file changed'), 200);
      });
      entry.watcher.on('error', (err) => logger.warn({ err: err.message, dir }, 'config watch stopped; SIGHUP still reloads'));
      watchers.set(dir, entry);
    }
  };
  watchFiles(opts.files ?? []);
  return {
    reload,
    stop() {
      clearTimeout(debounce);
      for (const w of watchers.values()) w.watcher.close();
      watchers.clear();
    },
  };
}
