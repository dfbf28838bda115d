/**
 * The `tollgate` command (../shared/CONTRACT.md, "Command line"). A bad config or a port in use: one
 * clear line per problem on stderr, exit code 1, nothing half-started. SIGTERM drains and exits 0.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, formatIssue } from '../config/issues.js';
import { configJsonSchema, generalSettings } from '../config/schema.js';
import { contextSecret } from '../identity/context-token.js';
import { limitsOf, sha256Hex, StaticKeyDirectory } from '../identity/keys.js';
import { Policy } from '../policy/rules.js';
import type { ModelCatalog } from '../routing/deployments.js';
import { createLogger, type Logger } from '../telemetry/logger.js';
import { createMetrics } from '../telemetry/metrics.js';
import { pruneDeploymentSeries } from '../telemetry/request-observer.js';
import { buildAuthorizer, loadIdentityKeys, startAuthz, teamsFromConfig, type AuthzApp } from './authz-app.js';
import { composeCatalog } from './catalog.js';
import { budgetPeriodOf } from '../store/counters.js';
import type { DataDirInUseError } from '../store/db.js';
import { seedChangedBudget } from '../store/accounting.js';
import { bounded } from '../store/change-bus.js';
import { startReloader, type Reloader } from './reload.js';
import { AdminApi } from '../gateway/admin.js';
import { SecretBox } from '../identity/secret-box.js';
import type { StoredModel } from '../store/records.js';
import type { Config } from '../config/schema.js';
import { startGateway, type GatewayApp } from './gateway-app.js';
import { gatewayStoreOptions, openStore, storeUrls, type StoreApp } from './store-app.js';
import { EMBEDDED, prepareConfigFile, type ConfigOrigin, type PreparedConfig } from './config-source.js';
import {
  DEFAULT_DATA_DIR,
  DEFAULT_VLLM_BASE,
  discoverModels,
  discoveryReporter,
  embeddedConfig,
  embeddedModels,
  ensureMasterKey,
} from './embedded-default.js';

const USAGE = `tollgate: a gateway for open-model LLM servers (Envoy ext_authz + OpenAI-compatible gateway)

Usage:
  tollgate serve   [--config F] [--host H] [--http-port 4000] [--grpc-port 9001] [--watch-config]
  tollgate authz   [--config F] [--host H] [--grpc-port 9001] [--watch-config]
  tollgate gateway [--config F] [--host H] [--http-port 4000] [--watch-config]
  tollgate config check F       validate a config (F or --config F); every error with its YAML path; exit 1 on error
  tollgate config schema        print the config's JSON Schema
  tollgate keys hash sk-...     print sha256:<hex> for a key declared in config ("-" reads stdin)

--config falls back to TOLLGATE_CONFIG; with neither, serve starts on the embedded default.
SIGHUP reloads the config file (--watch-config: also when it changes); a bad one is rejected and the
running config kept. SIGTERM drains for up to TOLLGATE_DRAIN_SECONDS (10). LOG_LEVEL sets the log level (info).`;

/** How long SIGTERM waits for in-flight requests and streams (TOLLGATE_DRAIN_SECONDS, default 10). */
const DEFAULT_DRAIN_S = 10;
/**
 * After the drain, settling and flushing the spend log and closing the stores get at most this long, so a
 * SIGTERM ends within TOLLGATE_DRAIN_SECONDS + 5 s however the stores behave (the Helm chart counts on it).
 */
const FLUSH_MS = 5_000;
/**
 * How long a regenerate waits for this replica's spend rows of requests that ended to be written, so they
 * move with the key: a store slower than this leaves them to land under the old id (still counted for it).
 */
const REGENERATE_FLUSH_MS = 1_000;
/** How often the embedded default asks vLLM for its models again. */
const DISCOVERY_POLL_S = 10;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Io = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${l}\n`),
};

/** Runs a command; resolves with the exit code for one-shot commands, or never settles for servers. */
export async function main(argv: readonly string[], io: Io = stdio, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'serve':
    case 'authz':
    case 'gateway':
      return serve(command, rest, io, env);
    case 'config':
      return configCommand(rest, io, env);
    case 'keys':
      return keysCommand(rest, io);
    case '--help':
    case '-h':
    case 'help':
      io.out(USAGE);
      return 0;
    case '--version':
      io.out(version());
      return 0;
    case undefined:
      io.err(USAGE);
      return 1;
    default:
      io.err(command === undefined ? USAGE : `tollgate: unknown command "${command}"\n\n${USAGE}`);
      return 1;
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function configCommand(args: readonly string[], io: Io, env: NodeJS.ProcessEnv): number {
  const [sub, ...rest] = args;
  if (sub === 'schema' && rest.length === 0) {
    io.out(JSON.stringify(configJsonSchema(), null, 2));
    return 0;
  }
  const file = sub === 'check' ? checkedFile(rest) : undefined;
  if (file === undefined) {
    io.err('usage: tollgate config check FILE (or --config FILE) | tollgate config schema');
    return 1;
  }
  try {
    const prepared = prepareConfigFile(file, env, 'check');
    for (const w of prepared.warnings) io.err(`warning: ${formatIssue(file, w)}`);
    const c = prepared.config;
    io.out(
      `${file}: ok (${c.model_list.length} deployments, ${c.keys.length} keys, ${c.teams.length} teams, ${c.policy.rules.length} policy rules)`,
    );
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) io.err(formatIssue(err.source, issue));
    io.err(`${file}: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'}`);
    return 1;
  }
}

/** The file `config check` is given: `config check F`, or `--config F` as every other command takes it. */
function checkedFile(args: readonly string[]): string | undefined {
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options: { config: { type: 'string' } },
      strict: true,
      allowPositionals: true,
    });
    const files = [...positionals, ...(values.config === undefined ? [] : [values.config])];
    return files.length === 1 ? files[0] : undefined;
  } catch {
    return undefined; // an unknown flag, or --config without a file
  }
}

function keysCommand(args: readonly string[], io: Io): number {
  const [sub, key, ...extra] = args;
  if (sub !== 'hash' || key === undefined || extra.length > 0) {
    io.err('usage: tollgate keys hash sk-...   (or "-" to read the key from stdin, keeping it out of shell history)');
    return 1;
  }
  const value = key === '-' ? readFileSync(0, 'utf8').trim() : key;
  const wrong = notAKey(value, key === '-');
  if (wrong !== undefined) {
    io.err(`tollgate keys hash: ${wrong}`);
    return 1;
  }
  io.out(`sha256:${sha256Hex(value)}`);
  return 0;
}

/**
 * What is wrong with a key given to `keys hash`, or undefined; never echoes it. The bounds are the ones
 * `Authorization: Bearer sk-…` is read with (identity/keys.ts), so a hash printed here can match.
 */
function notAKey(value: string, fromStdin: boolean): string | undefined {
  if (value === '') return fromStdin ? 'nothing on stdin: pipe the sk- key in' : 'an empty key: give the sk- key';
  if (!value.startsWith('sk-')) return 'not a virtual key: it must start with "sk-"';
  if (value.length < 8)
    return `too short for a virtual key: ${value.length} characters, and a key is "sk-" and at least 5 more (/key/generate makes "sk-" and 32)`;
  if (value.length > 512) return `too long for a virtual key: ${value.length} characters, and a key is at most 512`;
  if (/\s/.test(value)) return 'a virtual key holds no spaces or line breaks: give the key alone';
  if (/[^\x21-\x7e]/.test(value)) return 'a virtual key is printable ASCII only (a header carries other characters as other bytes)';
  return undefined;
}

interface ServeOptions {
  readonly config: string | undefined;
  /** Where `config` came from: the flag or the environment. */
  readonly configOrigin: ConfigOrigin;
  readonly host: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly watchConfig: boolean;
}

function parseServeArgs(command: string, args: readonly string[], env: NodeJS.ProcessEnv): ServeOptions {
  const { values } = parseArgs({
    args: [...args],
    options: {
      config: { type: 'string' },
      host: { type: 'string' },
      'grpc-port': { type: 'string' },
      'http-port': { type: 'string' },
      'watch-config': { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (command === 'authz' && values['http-port'] !== undefined) throw new UsageError('tollgate authz takes --grpc-port, not --http-port');
  if (command === 'gateway' && values['grpc-port'] !== undefined)
    throw new UsageError('tollgate gateway takes --http-port, not --grpc-port');
  return {
    config: values.config ?? (env['TOLLGATE_CONFIG'] || undefined),
    configOrigin: values.config !== undefined ? '--config' : 'TOLLGATE_CONFIG',
    host: values.host ?? '0.0.0.0',
    grpcPort: port(values['grpc-port'], 9001, '--grpc-port'),
    httpPort: port(values['http-port'], 4000, '--http-port'),
    watchConfig: values['watch-config'] ?? false,
  };
}

class UsageError extends Error {}

function port(v: string | undefined, fallback: number, flag: string): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`${flag}: not a port number (0-65535)`);
  return n;
}

async function serve(command: 'serve' | 'authz' | 'gateway', args: readonly string[], io: Io, env: NodeJS.ProcessEnv): Promise<number> {
  let opts: ServeOptions;
  try {
    opts = parseServeArgs(command, args, env);
  } catch (err) {
    io.err(`tollgate ${command}: ${(err as Error).message}`);
    return 1;
  }
  const drainRaw = env['TOLLGATE_DRAIN_SECONDS'] ?? '';
  const drainS = drainRaw === '' ? DEFAULT_DRAIN_S : Number(drainRaw);
  if (!Number.isFinite(drainS) || drainS < 0 || drainS > 3600) {
    io.err(`tollgate ${command}: TOLLGATE_DRAIN_SECONDS=${drainRaw.slice(0, 20)} is not a number of seconds (0-3600)`);
    return 1;
  }
  const level = env['LOG_LEVEL'] === '' ? undefined : env['LOG_LEVEL'];
  if (level !== undefined && !LOG_LEVELS.includes(level)) {
    io.err(`tollgate ${command}: LOG_LEVEL=${level.slice(0, 20)} is not a log level: use one of ${LOG_LEVELS.join(', ')}`);
    return 1;
  }
  const logger = createLogger(level);
  let prepared: PreparedConfig;
  let reportDiscovery: ReturnType<typeof discoveryReporter> | undefined;
  try {
    if (opts.config !== undefined) {
      prepared = prepareConfigFile(opts.config, env, opts.configOrigin);
    } else {
      if (command !== 'serve') {
        io.err(`tollgate ${command}: no config: pass --config F or set TOLLGATE_CONFIG (only "serve" has an embedded default)`);
        return 1;
      }
      // LITELLM_MASTER_KEY is the master key when set, as LiteLLM reads it without a config too.
      const fromEnv = env['LITELLM_MASTER_KEY'] ?? '';
      let masterKey: string;
      if (fromEnv !== '') {
        const checked = generalSettings.shape.master_key.safeParse(fromEnv);
        if (!checked.success) {
          io.err(`tollgate ${command}: LITELLM_MASTER_KEY: ${checked.error.issues[0]?.message ?? 'not a master key'}`);
          return 1;
        }
        masterKey = fromEnv;
      } else {
        const master = ensureMasterKey(DEFAULT_DATA_DIR);
        if (master.generated) io.out(`tollgate: generated the master key ${master.key} (kept in ${master.file}; shown only now)`);
        masterKey = master.key;
      }
      const found = await discoverModels(DEFAULT_VLLM_BASE);
      const ids = 'ids' in found ? found.ids : [];
      const config = embeddedConfig(masterKey, ids, DEFAULT_VLLM_BASE);
      const compiled = Policy.compile([]);
      if (compiled.policy === undefined) throw new Error('the empty policy did not compile');
      prepared = { config, policy: compiled.policy, warnings: [], source: EMBEDDED, files: [] };
      logger.info({ models: ids, vllm: DEFAULT_VLLM_BASE }, 'embedded default config');
      reportDiscovery = discoveryReporter(logger, DEFAULT_VLLM_BASE, DISCOVERY_POLL_S);
      reportDiscovery(found, 0);
    }
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) io.err(formatIssue(err.source, issue));
    return 1;
  }
  const gs = prepared.config.general_settings;
  if (level === undefined && gs.log_level !== undefined) logger.level = gs.log_level;
  for (const w of prepared.warnings) logger.warn({ path: w.path, line: w.line }, `config: ${w.message}`);
  let secret = contextSecret(gs.context_signing_key, gs.master_key);
  if (secret === undefined) {
    if (command !== 'serve') {
      io.err(
        `tollgate ${command}: set general_settings.context_signing_key (or master_key) so authz and the gateway share the x-tollgate-context secret`,
      );
      return 1;
    }
    secret = randomBytes(32); // one process: authz and gateway share it in memory
  }
  const metrics = createMetrics({ defaultMetrics: true });
  // Backend keys given to /model/new are sealed under the shared secret; a per-process one could not open them after a restart.
  const box = contextSecret(gs.context_signing_key, gs.master_key) === undefined ? undefined : new SecretBox(secret);
  /** The running config (a reload replaces it) and the models added through the admin API. */
  let current = prepared;
  let dbModels: readonly StoredModel[] = [];
  let configModels = prepared.config.model_list;
  const catalogNow = (): ModelCatalog =>
    composeCatalog(configModels, dbModels, {
      box,
      env,
      logger,
      allowedApiBases: current.config.general_settings.allowed_api_bases,
      defaultTimeoutS: current.config.router_settings.timeout,
      defaultStreamTimeoutS: current.config.router_settings.stream_timeout,
      defaultMaxParallelRequests: current.config.router_settings.default_max_parallel_requests,
    });
  let onModels = (models: readonly StoredModel[]): void => {
    dbModels = models;
  };
  // Signals are handled from here on — before the store opens (a database, migrations, up to 3 s for Redis) —
  // so a SIGTERM during start-up still ends in a clean exit 0, and a second one does not cut the drain short.
  let signalled: ((signal: string) => void) | undefined;
  let pendingSignal: string | undefined;
  let startupBound: NodeJS.Timeout | undefined;
  const onSignal = (signal: string): void => {
    if (signalled) return signalled(signal);
    if (pendingSignal !== undefined) return;
    pendingSignal = signal;
    // Start-up that hangs (a database that never answers a lock) would hold the signal for ever: nothing is
    // served yet, so past the drain bound the process just ends. Cleared once start-up ends (the drain has
    // its own bound).
    startupBound = setTimeout(() => {
      logger.warn({ signal }, 'start-up did not end within the drain bound after the signal: stopping without it');
      logger.flush();
      process.exit(0);
    }, drainS * 1000).unref();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  let reloader: Reloader | undefined;
  // SIGHUP reloads the config file; without one (embedded default), or before start-up ends, it is only
  // logged — never Node's default, which would end the process.
  process.on('SIGHUP', () => {
    if (reloader !== undefined) void reloader.reload('SIGHUP');
    else
      logger.warn(prepared.source === EMBEDDED ? 'SIGHUP: no config file to reload (embedded default)' : 'SIGHUP during start-up: ignored');
  });
  let store: StoreApp;
  try {
    store = await openStore(prepared.config, {
      logger,
      withDb: command !== 'authz' || storeUrls(prepared.config, process.env).database_url !== undefined,
      env: process.env,
      split: command !== 'serve',
      catalog: () => parts.authorizer.rules.catalog,
      onModels: (models) => onModels(models),
      onStoreError: (s, op) => metrics.storeErrors.inc({ store: s, op }),
    });
  } catch (err) {
    const held = prepared.source === EMBEDDED ? dataDirInUse(err) : undefined;
    // The embedded default has no data_dir to change: say what this user can do instead.
    const why =
      held === undefined
        ? ((err as Error).message.split('\n')[0] ?? '')
        : `${DEFAULT_DATA_DIR} in this directory is in use by process ${held.pid} on ${held.host}, another tollgate on the ` +
          'embedded default (its data takes one process at a time): stop that one, or start this one from another directory, ' +
          'or write a config with general_settings.data_dir (or database_url) and pass it with --config';
    io.err(`tollgate ${command}: ${why}`);
    return 1;
  }
  if (command === 'authz' && store.db === undefined)
    logger.warn(
      'this authz has no records database (database_url): the requests it denies leave no spend-log row; give it the database the gateway writes to',
    );
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret, {
    keys: store.keys,
    teams: store.teams,
    limiter: store.limiter,
    catalog: catalogNow(),
  });
  /** Swaps in a new catalog; the metric series of deployments that left it are dropped. */
  const applyCatalog = (patch: Omit<Parameters<typeof parts.authorizer.updateRules>[0], 'catalog'> = {}): void => {
    const catalog = catalogNow();
    parts.authorizer.updateRules({ ...patch, catalog });
    const live = new Set([...catalog.aliases()].flatMap((a) => catalog.group(a)?.deployments.map((d) => d.id) ?? []));
    pruneDeploymentSeries(metrics, live);
  };
  onModels = (models) => {
    dbModels = models;
    applyCatalog();
    logger.info({ models: models.length }, 'models from the records database applied');
  };
  const setConfigModels = (entries: Config['model_list']): void => {
    configModels = entries;
    applyCatalog();
  };
  const admin =
    command === 'authz' || store.db === undefined || store.records === undefined
      ? undefined
      : new AdminApi({
          db: store.db,
          records: store.records,
          cache: store.cache,
          catalog: () => parts.authorizer.rules.catalog,
          allowedApiBases: () => current.config.general_settings.allowed_api_bases,
          box,
          env,
          logger,
          calendar: store.calendar,
          ownSecret: (value) =>
            ownSecrets(current.config.general_settings, env).includes(value) || store.keys.get(sha256Hex(value)) !== undefined,
          budgetChanged: async (subject, before, after) => {
            if (store.db === undefined) return;
            try {
              await seedChangedBudget(store.db, store.counters, subject, before, after, Date.now(), store.calendar);
            } catch (err) {
              metrics.storeErrors.inc({ store: 'redis', op: 'seed_budget' });
              logger.warn({ err: (err as Error).message, subject }, "could not count the period's spend so far into the changed budget");
            }
          },
          flushSpend: () => store.accounting.flush(REGENERATE_FLUSH_MS),
          carrySpend: async (from, to, limits) => {
            if (limits.maxBudget === undefined) return;
            const period = budgetPeriodOf(limits, Date.now(), store.calendar);
            try {
              const spent = await store.counters.spend(`key:${from}`, period);
              if (spent > 0) await store.counters.addSpend([{ subject: `key:${to}`, period, cost: spent }]);
            } catch (err) {
              metrics.storeErrors.inc({ store: 'redis', op: 'carry_spend' });
              logger.warn(
                { err: (err as Error).message, key_id: to },
                "could not carry the regenerated key's budget spend over; the next seed counts it",
              );
            }
          },
        });
  // Start what the command runs; if a later part fails, the earlier ones are closed: nothing half-started.
  const running: Array<{ close(graceMs: number): Promise<void> }> = [];
  // The store closes last: in-flight requests settle and their spend rows are flushed after the servers drain.
  // One deadline for all of it; resolves false when something was still open at the deadline.
  const closeAll = async (drainMs: number): Promise<boolean> => {
    reloader?.stop();
    const until = Date.now() + drainMs + FLUSH_MS;
    await bounded(Promise.all(running.map((r) => r.close(drainMs))), drainMs + FLUSH_MS);
    return store.close(Math.max(0, until - Date.now()));
  };
  const listening: Record<string, string> = {};
  if (command !== 'gateway') {
    await routeGrpcLogs(logger);
    let app: AuthzApp;
    try {
      app = await startAuthz(parts, {
        host: opts.host,
        port: opts.grpcPort,
        logger,
        metrics,
        ready: () => store.notReady() === undefined,
        denials: store.accounting,
      });
    } catch (err) {
      await store.close(FLUSH_MS);
      io.err(`tollgate ${command}: cannot listen on ${opts.host}:${opts.grpcPort} (gRPC): ${bindReason(err)}`);
      return 1;
    }
    running.push(app);
    listening['grpc'] = `${opts.host}:${app.port}`;
  } else {
    running.push(await loadIdentityKeys(parts, logger, () => undefined).then((k) => ({ close: () => Promise.resolve(k.stop()) })));
  }
  if (command !== 'authz') {
    let gw: GatewayApp;
    try {
      gw = await startGateway(prepared.config, parts, secret, {
        host: opts.host,
        port: opts.httpPort,
        logger,
        ...gatewayStoreOptions(store),
        metrics,
        admin,
      });
    } catch (err) {
      await closeAll(0);
      io.err(`tollgate ${command}: cannot listen on ${opts.host}:${opts.httpPort} (HTTP): ${bindReason(err)}`);
      return 1;
    }
    running.push(gw);
    listening['http'] = `${opts.host}:${gw.port}`;
  }
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    signalled = (signal) => {
      if (stopping) {
        logger.info({ signal }, 'already draining: in-flight requests finish within the drain bound');
        return;
      }
      stopping = true;
      logger.info({ signal }, 'draining');
      void closeAll(drainS * 1000).then((closed) => {
        logger.info('stopped');
        logger.flush();
        resolve(0);
        // A connection to a store that did not answer its close would keep the process alive.
        if (!closed) process.exit(0);
      });
    };
  });
  logger.info({ ...listening, config: prepared.source, deployments: prepared.config.model_list.length }, `${command} listening`);
  if (reportDiscovery !== undefined)
    startModelDiscovery(
      prepared.config.model_list.map((m) => m.model_name),
      setConfigModels,
      logger,
      reportDiscovery,
    );
  else if (opts.config !== undefined) {
    reloader = startReloader({
      file: opts.config,
      files: prepared.files,
      env,
      logger,
      watchFile: opts.watchConfig,
      current: () => current.config,
      apply: async (next) => {
        current = next;
        const c = next.config;
        configModels = c.model_list;
        applyCatalog({
          policy: next.policy,
          fallbacks: new Map(c.router_settings.fallbacks.flatMap((f) => Object.entries(f))),
          adminGroups: c.auth.admin_groups,
          keysRequired: c.auth.keys.required,
        });
        // Swapped at once; the database records it shadowed are read again in the background.
        await store.cache
          .setConfig(new StaticKeyDirectory(c.keys), teamsFromConfig(c), new Map(c.users.map((u) => [u.user_id, limitsOf(u)])))
          .catch((err: unknown) =>
            logger.warn({ err: (err as Error).message }, 'config reloaded; the database records will be read again shortly'),
          );
      },
    });
  }
  // A signal that came during start-up is acted on now, with everything started — the reloader's file
  // watch included, which the drain stops (started after it, the watch would keep the process alive).
  clearTimeout(startupBound);
  if (pendingSignal !== undefined) signalled?.(pendingSignal);
  return stopped;
}

/**
 * grpc-js logs to stderr by itself; its lines go to the JSON log instead, so stderr holds only our one-line
 * errors. Loaded here, as the gRPC server is: `tollgate gateway` never holds grpc-js or the protos.
 */
async function routeGrpcLogs(logger: Logger): Promise<void> {
  const grpc = await import('@grpc/grpc-js');
  grpc.setLogger({
    error: (...args: unknown[]) => logger.warn({ source: 'grpc-js' }, args.map(String).join(' ')),
    info: (...args: unknown[]) => logger.debug({ source: 'grpc-js' }, args.map(String).join(' ')),
    debug: (...args: unknown[]) => logger.debug({ source: 'grpc-js' }, args.map(String).join(' ')),
  });
}

/** The embedded default keeps asking vLLM's default port, so a server started later is picked up. */
function startModelDiscovery(
  first: readonly string[],
  setModels: (entries: Config['model_list']) => void,
  logger: Logger,
  report: ReturnType<typeof discoveryReporter>,
): void {
  let known = [...first].sort().join('\n');
  let routed = first.length;
  const tick = async (): Promise<void> => {
    const found = await discoverModels(DEFAULT_VLLM_BASE);
    // A server that stopped answering keeps its models routed: its requests fail over as any backend's do.
    report(found, routed);
    if (!('ids' in found)) return;
    const ids = [...found.ids].sort();
    if (ids.join('\n') === known) return;
    known = ids.join('\n');
    routed = ids.length;
    setModels(embeddedModels(ids, DEFAULT_VLLM_BASE));
    logger.info({ models: ids }, 'deployments discovered');
  };
  const timer = setInterval(() => void tick(), DISCOVERY_POLL_S * 1000);
  timer.unref();
}

/** The data_dir lock's holder, when that is why the store did not open (the error or one it wraps). */
function dataDirInUse(err: unknown): DataDirInUseError | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++)
    if ((e as { code?: unknown }).code === 'TOLLGATE_DATA_DIR_IN_USE') return e as DataDirInUseError;
  return undefined;
}

function bindReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  if (/EADDRINUSE|address already in use/i.test(msg)) return 'the port is in use';
  if (/EACCES/i.test(msg)) return 'permission denied';
  return msg.split('\n')[0] ?? msg;
}

/**
 * The values tollgate holds as its own secrets, which the admin API never takes as a backend `api_key`
 * reference: the master and signing keys, the database and Redis URLs, and the passwords inside those (a
 * Redis password written as router_settings.redis_password is only inside the URL).
 */
export function ownSecrets(
  g: Pick<Config['general_settings'], 'master_key' | 'context_signing_key' | 'database_url' | 'redis_url'>,
  env: Readonly<Record<string, string | undefined>>,
): string[] {
  const urls = [g.database_url, g.redis_url, env['DATABASE_URL'], env['REDIS_URL']];
  return [g.master_key, g.context_signing_key, ...urls, ...urls.map(urlPassword)].filter((v): v is string => v !== undefined && v !== '');
}

/** The password in a database or Redis URL, decoded; undefined without one. */
function urlPassword(url: string | undefined): string | undefined {
  if (url === undefined) return undefined;
  try {
    const password = decodeURIComponent(new URL(url).password);
    return password === '' ? undefined : password;
  } catch {
    return undefined;
  }
}
