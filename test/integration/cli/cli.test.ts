/**
 * The `tollgate` binary as users run it (CONTRACT.md, "Command line"): real child processes of
 * `node bin/tollgate.js`, real ports on 127.0.0.1, every wait bounded so a hang fails instead of stalling.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { children, PGLITE_START_MS, startTollgate, withTimeout, type Finished, type Running } from '../../support/process.js';

/** dist/test/integration/cli/cli.test.js → the repository root. */
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const BIN = path.join(ROOT, 'bin', 'tollgate.js');
const HEALTH_PROTO = path.join(ROOT, 'protos', 'grpc', 'health', 'v1', 'health.proto');
const TEST_OPTS = { timeout: 2 * PGLITE_START_MS };

const MASTER_KEY = 'sk-cli-test-master-0123456789abcdef';

const GOOD = `model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://127.0.0.1:9/v1
  - model_name: qwen
    litellm_params:
      model: openai/qwen
      api_base: http://127.0.0.1:9/v1
general_settings:
  master_key: ${MASTER_KEY}
keys:
  - key: sha256:${createHash('sha256').update('sk-cli-test-key-1').digest('hex')}
    key_alias: one
teams:
  - team_id: platform
policy:
  rules:
    - name: no-guests
      when: "'guests' in jwt.groups"
      deny: no guests
`;

/** Errors on lines 4, 5, 6 and 9. */
const BAD = `model_list:
  - model_name: llama
    litellm_params:
      model: bedrock/llama
      api_base: not-a-url
      weigth: 2
general_settings:
  master_key: ${MASTER_KEY}
  failure_mode: sometimes
`;

const NO_SECRET = `model_list:
  - model_name: llama
    litellm_params:
      model: openai/llama
      api_base: http://127.0.0.1:9/v1
`;

/** Budgets on a key and a team, but no deployment has a price: they can never run out. */
const UNPRICED = `${GOOD.replace('  - team_id: platform\n', '  - team_id: platform\n    max_budget: 500\n').replace('    key_alias: one\n', '    key_alias: one\n    max_budget: 10\n')}`;

const LITELLM = `${GOOD.replace('  master_key:', '  alerting: [slack]\n  master_key:')}litellm_settings:
  drop_params: true
`;

let dir: string;
const file = (name: string): string => path.join(dir, name);

function start(args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Running {
  return startTollgate(args, { cwd: ROOT, ...opts });
}

async function run(args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<Finished> {
  return start(args, opts).waitExit();
}

/** Non-empty lines. */
const lines = (s: string): string[] => s.split('\n').filter((l) => l.trim() !== '');

/** `config check`'s closing count line, `F: 3 errors`. */
const isSummary = (l: string): boolean => /^\S+: \d+ errors?$/.test(l);

/** The log line `tollgate authz` writes once it listens. */
const LISTENING = 'authz listening';

function portOf(listening: Record<string, unknown>): number {
  const where = listening['grpc'];
  assert.equal(typeof where, 'string', `no grpc field in ${JSON.stringify(listening)}`);
  const port = Number(/:(\d+)$/.exec(where as string)?.[1]);
  assert.ok(Number.isInteger(port) && port > 0, `no port in ${String(where)}`);
  return port;
}

type HealthCheck = (
  req: { service: string },
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: { status: string }) => void,
) => void;

const healthPkg = grpc.loadPackageDefinition(
  protoLoader.loadSync(HEALTH_PROTO, { keepCase: true, enums: String, defaults: true }),
) as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } };

/** grpc.health.v1.Health/Check against 127.0.0.1:port; resolves with the status name. */
async function health(port: number, service = ''): Promise<string> {
  const client = new healthPkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const check = (client['Check'] as HealthCheck).bind(client);
    return await new Promise<string>((resolve, reject) => {
      check({ service }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err, res) =>
        err ? reject(err) : resolve(res?.status ?? ''),
      );
    });
  } finally {
    client.close();
  }
}

async function listenNet(): Promise<{ server: Server; port: number; connections: () => number }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return { server, port: (server.address() as AddressInfo).port, connections: () => n };
}

async function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 2_000);
    s.once('connect', () => {
      clearTimeout(t);
      s.end();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

async function stop(r: Running): Promise<Finished> {
  r.proc.kill('SIGTERM');
  return r.waitExit(5_000);
}

before(() => {
  assert.ok(existsSync(BIN), `${BIN} is missing`);
  dir = mkdtempSync(path.join(tmpdir(), 'tollgate-cli-'));
  writeFileSync(file('good.yaml'), GOOD);
  writeFileSync(file('bad.yaml'), BAD);
  writeFileSync(file('no-secret.yaml'), NO_SECRET);
  writeFileSync(file('litellm.yaml'), LITELLM);
  writeFileSync(file('unpriced.yaml'), UNPRICED);
});

after(() => {
  for (const c of children) c.kill('SIGKILL');
  children.clear();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('tollgate config check', () => {
  test('a good file: exit 0 and one "ok" line', TEST_OPTS, async () => {
    const r = await run(['config', 'check', file('good.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lines(r.stdout), [`${file('good.yaml')}: ok (2 deployments, 1 keys, 1 teams, 1 policy rules)`]);
    assert.equal(r.stderr, '');
  });

  test('LiteLLM-only keys: exit 0, a warning line each on stderr', TEST_OPTS, async () => {
    const r = await run(['config', 'check', file('litellm.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /: ok \(/);
    const warnings = lines(r.stderr);
    assert.equal(warnings.length, 2, r.stderr);
    for (const w of warnings)
      assert.match(w, /^warning: .*litellm\.yaml:\d+:\d+ (general_settings\.alerting|litellm_settings\.drop_params): /);
  });

  test('a bad file: exit 1, every error on its own line as file:line:col path: message', TEST_OPTS, async () => {
    const f = file('bad.yaml');
    const r = await run(['config', 'check', f]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    const errors = lines(r.stderr).filter((l) => !isSummary(l));
    const expected: ReadonlyArray<readonly [number, string]> = [
      [4, 'model_list[0].litellm_params.model'],
      [5, 'model_list[0].litellm_params.api_base'],
      [6, 'model_list[0].litellm_params.weigth'],
      [9, 'general_settings.failure_mode'],
    ];
    assert.equal(errors.length, expected.length, r.stderr);
    for (const l of errors) assert.match(l, /^.+:\d+:\d+ [\w.[\]]+: .+$/, `not file:line:col path: message: ${l}`);
    for (const [line, p] of expected) {
      const hit = errors.find((l) => l.startsWith(`${f}:${line}:`) && l.includes(` ${p}: `));
      assert.ok(hit, `no line for ${p} at ${f}:${line}\n${r.stderr}`);
    }
    assert.ok(!r.stderr.includes(MASTER_KEY), 'the master key is echoed');
  });

  test('a missing file: exit 1 and one clear line', TEST_OPTS, async () => {
    const f = file('does-not-exist.yaml');
    const r = await run(['config', 'check', f]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    const errors = lines(r.stderr).filter((l) => !isSummary(l));
    assert.equal(errors.length, 1, r.stderr);
    assert.ok(errors[0]?.includes(f), r.stderr);
    assert.match(errors[0] ?? '', /no such file/);
    // The file was named to config check, not with --config or TOLLGATE_CONFIG.
    assert.match(errors[0] ?? '', /config check cannot read the file it was given/);
    assert.doesNotMatch(r.stderr, /--config|TOLLGATE_CONFIG/);
  });

  test('budgets but no prices: exit 0, ok, and a warning at the budget saying it can never run out', TEST_OPTS, async () => {
    const f = file('unpriced.yaml');
    const r = await run(['config', 'check', f]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lines(r.stdout), [`${f}: ok (2 deployments, 1 keys, 1 teams, 1 policy rules)`]);
    const warnings = lines(r.stderr);
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(
      warnings[0] ?? '',
      /^warning: .*unpriced\.yaml:\d+:\d+ keys\[0\]\.max_budget: a budget \(and 1 more: teams\[0\]\.max_budget\), /,
    );
    assert.match(warnings[0] ?? '', /spend stays 0 and the budget never runs out/);
  });

  test('nothing can be authorized (no master key, no keys): exit 0 with a warning saying so', TEST_OPTS, async () => {
    const r = await run(['config', 'check', file('no-secret.yaml')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /: ok \(/);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /^warning: .*no-secret\.yaml.* nothing can be authorized: .*every model request is refused \(401\)/);
  });

  test('no file given: exit 1 with usage', TEST_OPTS, async () => {
    const r = await run(['config', 'check']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /usage/i);
  });
});

describe('tollgate keys hash', () => {
  const key = 'sk-abc123def456ghi789';
  const hashed = `sha256:${createHash('sha256').update(key).digest('hex')}`;

  test('prints sha256:<hex> of the key', TEST_OPTS, async () => {
    const r = await run(['keys', 'hash', key]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${hashed}\n`);
    assert.equal(r.stderr, '');
  });

  test('"-" reads the key from stdin', TEST_OPTS, async () => {
    const r = await run(['keys', 'hash', '-'], { input: `${key}\n` });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${hashed}\n`);
  });

  test('the hash is what config accepts for that key', TEST_OPTS, async () => {
    const r = await run(['keys', 'hash', key]);
    const f = file('hashed.yaml');
    writeFileSync(f, `keys:\n  - key: ${r.stdout.trim()}\n`);
    const check = await run(['config', 'check', f]);
    assert.equal(check.code, 0, check.stderr);
  });

  test('something that is not an sk- key: exit 1', TEST_OPTS, async () => {
    const r = await run(['keys', 'hash', 'notakey']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /not a virtual key: it must start with "sk-"/);
    assert.ok(!r.stderr.includes('sha256:'));
  });

  test('an sk- key too short: exit 1, saying it is the length (not the prefix) and never echoing it', TEST_OPTS, async () => {
    const r = await run(['keys', 'hash', 'sk-1']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /too short for a virtual key: 4 characters/);
    assert.doesNotMatch(r.stderr, /starts? with/);
    assert.ok(!r.stderr.includes('sk-1 ') && !r.stderr.includes('"sk-1"'), r.stderr);
    const empty = await run(['keys', 'hash', '-'], { input: '' });
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /nothing on stdin/);
  });

  test('a key no Authorization header can carry (past 512 characters, or with a space): exit 1, no hash', TEST_OPTS, async () => {
    const long = await run(['keys', 'hash', `sk-${'a'.repeat(600)}`]);
    assert.equal(long.code, 1);
    assert.equal(long.stdout, '');
    assert.match(long.stderr, /too long for a virtual key: 603 characters/);
    const spaced = await run(['keys', 'hash', '-'], { input: 'sk-abcdef ghijkl\n' });
    assert.equal(spaced.code, 1);
    assert.match(spaced.stderr, /no spaces/);
    assert.ok(!spaced.stderr.includes('ghijkl'));
    const accented = await run(['keys', 'hash', 'sk-clé-secrète']);
    assert.equal(accented.code, 1);
    assert.match(accented.stderr, /printable ASCII/);
  });
});

describe('other commands', () => {
  test('config schema prints a JSON Schema with model_list', TEST_OPTS, async () => {
    const r = await run(['config', 'schema']);
    assert.equal(r.code, 0, r.stderr);
    const schema = JSON.parse(r.stdout) as { $schema?: string; type?: string; properties?: Record<string, unknown> };
    assert.match(schema.$schema ?? '', /json-schema\.org/);
    assert.equal(schema.type, 'object');
    assert.ok(schema.properties?.['model_list'], 'no model_list property');
    assert.ok(schema.properties['general_settings']);
  });

  test('an unknown command: exit 1', TEST_OPTS, async () => {
    const r = await run(['frobnicate']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });

  test('no command: exit 1 with usage', TEST_OPTS, async () => {
    const r = await run([]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Usage/);
  });

  test('gateway: starts on --http-port, answers its liveness probe, exits 0 on SIGTERM', TEST_OPTS, async () => {
    const g = start(['gateway', '--config', file('good.yaml'), '--host', '127.0.0.1', '--http-port', '0']);
    try {
      const listening = await g.waitForLog('gateway listening', PGLITE_START_MS); // no database_url: embedded PGlite
      const port = Number(/:(\d+)$/.exec(String(listening['http']))?.[1]);
      assert.ok(port > 0, JSON.stringify(listening));
      const res = await fetch(`http://127.0.0.1:${port}/health/liveliness`);
      assert.equal(res.status, 200);
      assert.equal(await res.json(), "I'm alive!");
      g.proc.kill('SIGTERM');
      assert.equal((await g.waitExit()).code, 0);
    } finally {
      g.proc.kill('SIGKILL');
    }
  });
});

describe('tollgate authz', () => {
  const args = (...extra: string[]): string[] => ['authz', '--config', file('good.yaml'), '--host', '127.0.0.1', ...extra];

  test('starts, answers grpc health, exits 0 on SIGTERM', TEST_OPTS, async () => {
    const a = start(args('--grpc-port', '0'));
    try {
      const port = portOf(await a.waitForLog(LISTENING));
      assert.equal(await health(port), 'SERVING');
      assert.equal(await health(port, 'envoy.service.auth.v3.Authorization'), 'SERVING');
      await assert.rejects(health(port, 'no.such.Service'), (e: grpc.ServiceError) => e.code === grpc.status.NOT_FOUND);
      const t0 = Date.now();
      const done = await stop(a);
      assert.equal(done.code, 0, done.stderr);
      assert.ok(Date.now() - t0 < 5_000, 'took too long to stop');
      assert.equal(await canConnect(port), false, 'still listening after exit');
      assert.ok(!done.stdout.includes(MASTER_KEY) && !done.stderr.includes(MASTER_KEY), 'the master key is logged');
    } finally {
      a.proc.kill('SIGKILL');
    }
  });

  test('gRPC health mirrors readiness: NOT_SERVING while Redis does not answer', TEST_OPTS, async () => {
    const unreachable = await listenNet();
    unreachable.server.close(); // a port nothing listens on
    writeFileSync(
      file('no-redis.yaml'),
      `${GOOD.replace('general_settings:', `general_settings:\n  redis_url: redis://127.0.0.1:${unreachable.port}`)}`,
    );
    const a = start(['authz', '--config', file('no-redis.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']);
    try {
      const port = portOf(await a.waitForLog(LISTENING));
      assert.equal(await health(port), 'NOT_SERVING');
      assert.equal(await health(port, 'envoy.service.auth.v3.Authorization'), 'NOT_SERVING');
    } finally {
      a.proc.kill('SIGKILL');
    }
  });

  test('SIGTERM while start-up waits for Redis, then a second one: it starts, drains and exits 0', TEST_OPTS, async () => {
    // A "Redis" that takes the connection and never answers: start-up waits up to 3 s for it. The process
    // connects to it only once it opens its stores — after its signal handlers are in place.
    const sockets: Socket[] = [];
    let connected: () => void = () => undefined;
    const reached = new Promise<void>((resolve) => (connected = resolve));
    const hole = createServer((socket) => {
      sockets.push(socket);
      socket.on('error', () => undefined);
      connected();
    });
    await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
    writeFileSync(
      file('slow-redis.yaml'),
      `${GOOD.replace('general_settings:', `general_settings:\n  redis_url: redis://127.0.0.1:${(hole.address() as AddressInfo).port}`)}`,
    );
    // --watch-config: the file watch started after the signal came must not keep the process alive.
    const a = start(['authz', '--config', file('slow-redis.yaml'), '--host', '127.0.0.1', '--grpc-port', '0', '--watch-config']);
    try {
      await withTimeout(reached, 20_000, () => `the process never reached Redis:\n${a.stdout()}${a.stderr()}`);
      a.proc.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      a.proc.kill('SIGTERM');
      const done = await a.waitExit();
      assert.deepEqual({ code: done.code, signal: done.signal }, { code: 0, signal: null }, done.stdout + done.stderr);
      assert.match(done.stdout, /"msg":"stopped"/);
    } finally {
      a.proc.kill('SIGKILL');
      for (const s of sockets) s.destroy();
      hole.close();
    }
  });

  test('TOLLGATE_CONFIG stands in for --config', TEST_OPTS, async () => {
    const a = start(['authz', '--host', '127.0.0.1', '--grpc-port', '0'], { env: { TOLLGATE_CONFIG: file('good.yaml') } });
    try {
      const listening = await a.waitForLog(LISTENING);
      assert.equal(listening['config'], file('good.yaml'));
      assert.equal(await health(portOf(listening)), 'SERVING');
      assert.equal((await stop(a)).code, 0);
    } finally {
      a.proc.kill('SIGKILL');
    }
  });

  test('SIGTERM right after the listening line still drains and exits 0', TEST_OPTS, async () => {
    // A supervisor may stop the process as soon as it announces itself: the SIGTERM handler must be
    // installed before "authz listening" is written, or the default action kills it (exit by signal).
    for (let i = 0; i < 5; i++) {
      const a = start(args('--grpc-port', '0'));
      try {
        await a.waitForLog(LISTENING);
        const done = await stop(a);
        assert.deepEqual({ code: done.code, signal: done.signal }, { code: 0, signal: null }, `attempt ${i + 1}\n${done.stdout}`);
        assert.match(done.stdout, /"msg":"stopped"/);
      } finally {
        a.proc.kill('SIGKILL');
      }
    }
  });

  test('a second authz on the same port: exit 1, one line saying the port is in use', TEST_OPTS, async () => {
    const first = start(args('--grpc-port', '0'));
    try {
      const port = portOf(await first.waitForLog(LISTENING));
      const second = await start(args('--grpc-port', String(port))).waitExit();
      assert.equal(second.code, 1);
      assert.ok(!second.stdout.includes('authz listening'), second.stdout);
      const errs = lines(second.stderr);
      assert.equal(errs.length, 1, `expected one line on stderr, got:\n${second.stderr}`);
      assert.match(errs[0] ?? '', new RegExp(`${port}.*in use|in use.*${port}`));
      // the first is untouched
      assert.equal(await health(port), 'SERVING');
      assert.equal((await stop(first)).code, 0);
    } finally {
      first.proc.kill('SIGKILL');
    }
  });

  test('a port held by another server: exit 1, one line, nothing left listening', TEST_OPTS, async () => {
    const held = await listenNet();
    try {
      const r = await start(args('--grpc-port', String(held.port))).waitExit();
      assert.equal(r.code, 1);
      assert.ok(!r.stdout.includes('authz listening'), r.stdout);
      const errs = lines(r.stderr);
      assert.equal(errs.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
      assert.match(errs[0] ?? '', new RegExp(`${held.port}`));
      assert.match(errs[0] ?? '', /in use/);
      // the port still belongs to the server that held it
      const seen = held.connections();
      assert.equal(await canConnect(held.port), true);
      await withTimeout(
        (async () => {
          while (held.connections() === seen) await new Promise((r2) => setTimeout(r2, 20));
        })(),
        2_000,
        () => 'the connection did not reach the holding server',
      );
    } finally {
      await new Promise<void>((resolve) => held.server.close(() => resolve()));
    }
  });

  test('a bad config: exit 1, errors on stderr, never listens', TEST_OPTS, async () => {
    const r = await start(['authz', '--config', file('bad.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']).waitExit();
    assert.equal(r.code, 1);
    assert.ok(!r.stdout.includes('authz listening'), r.stdout);
    const errs = lines(r.stderr);
    assert.ok(errs.length >= 4, r.stderr);
    for (const l of errs) assert.match(l, /bad\.yaml:\d+:\d+ [\w.[\]]+: .+$/);
    assert.ok(errs.some((l) => l.includes('model_list[0].litellm_params.weigth')));
  });

  test('a missing config file: exit 1, one line, never listens', TEST_OPTS, async () => {
    const r = await start(['authz', '--config', file('nope.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']).waitExit();
    assert.equal(r.code, 1);
    assert.ok(!r.stdout.includes('authz listening'));
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /nope\.yaml.*no such file: the file --config names cannot be read/);
    const fromEnv = await start(['authz', '--host', '127.0.0.1', '--grpc-port', '0'], {
      env: { TOLLGATE_CONFIG: file('nope.yaml') },
    }).waitExit();
    assert.equal(fromEnv.code, 1);
    assert.match(fromEnv.stderr, /nope\.yaml.*no such file: the file TOLLGATE_CONFIG names cannot be read/);
  });

  test('a config with budgets but no prices starts, and its log warns that the budgets never run out', TEST_OPTS, async () => {
    const a = start(['authz', '--config', file('unpriced.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']);
    try {
      await a.waitForLog(LISTENING);
      const warned = lines(a.stdout())
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((rec) => rec['path'] === 'keys[0].max_budget');
      assert.ok(warned, a.stdout());
      assert.equal(warned['level'], 40);
      assert.match(String(warned['msg']), /^config: a budget .*never runs out/);
      assert.equal((await stop(a)).code, 0);
    } finally {
      a.proc.kill('SIGKILL');
    }
  });

  test('no master_key nor context_signing_key: exit 1 with a clear line', TEST_OPTS, async () => {
    const r = await start(['authz', '--config', file('no-secret.yaml'), '--host', '127.0.0.1', '--grpc-port', '0']).waitExit();
    assert.equal(r.code, 1);
    assert.ok(!r.stdout.includes('authz listening'));
    const errs = lines(r.stderr);
    assert.equal(errs.length, 1, r.stderr);
    assert.match(errs[0] ?? '', /context_signing_key/);
    assert.match(errs[0] ?? '', /master_key/);
  });

  test('no config at all: exit 1 (only serve has an embedded default)', TEST_OPTS, async () => {
    const r = await start(['authz', '--host', '127.0.0.1', '--grpc-port', '0']).waitExit();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--config|TOLLGATE_CONFIG/);
  });

  test('a bad TOLLGATE_DRAIN_SECONDS: exit 1 naming it', TEST_OPTS, async () => {
    const r = await run(args('--grpc-port', '0'), { env: { TOLLGATE_DRAIN_SECONDS: 'soon' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /TOLLGATE_DRAIN_SECONDS=soon is not a number of seconds/);
  });

  test('a bad --grpc-port: exit 1', TEST_OPTS, async () => {
    const r = await run(args('--grpc-port', '70000'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--grpc-port/);
  });
});

describe('tollgate serve with no config', () => {
  test('generates a master key once, keeps it mode 0600, reuses it without printing it', { timeout: 3 * PGLITE_START_MS }, async () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tollgate-serve-'));
    try {
      const serveArgs = ['serve', '--host', '127.0.0.1', '--grpc-port', '0', '--http-port', '0'];
      const first = start(serveArgs, { cwd });
      let key: string;
      try {
        assert.equal(await health(portOf(await first.waitForLog('serve listening', PGLITE_START_MS))), 'SERVING');
        const stores = await first.waitForLog('records: embedded PGlite in .tollgate/pglite; counters: this process (no redis_url)');
        assert.equal(stores['level'], 30);
        // A second process on the same data_dir would overwrite the first's records: refused, one line.
        const twice = await start(serveArgs, { cwd }).waitExit();
        assert.equal(twice.code, 1);
        assert.equal(lines(twice.stderr).length, 1, twice.stderr);
        assert.match(twice.stderr, new RegExp(`in use by process ${first.proc.pid}`));
        // The embedded default has no data_dir to give: what this user can do instead.
        assert.match(
          twice.stderr,
          /stop that one, or start this one from another directory, or write a config with general_settings\.data_dir/,
        );
        assert.doesNotMatch(twice.stderr, /give this one another data_dir/);
        assert.equal(await health(portOf(await first.waitForLog('serve listening'))), 'SERVING', 'the first is untouched');
        const printed = [...first.stdout().matchAll(/sk-[A-Za-z0-9_-]{16,}/g)].map((m) => m[0]);
        assert.equal(printed.length, 1, `expected the key printed once:\n${first.stdout()}`);
        key = printed[0] ?? '';
        assert.ok(!first.stderr().includes(key));
        const done = await stop(first);
        assert.equal(done.code, 0, done.stderr);
        assert.equal(done.stdout.split(key).length - 1, 1, 'the key is printed more than once');
      } finally {
        first.proc.kill('SIGKILL');
      }

      const keyFile = path.join(cwd, '.tollgate', 'master_key');
      assert.ok(existsSync(keyFile), 'no .tollgate/master_key');
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      assert.equal(readFileSync(keyFile, 'utf8').trim(), key);

      const second = start(serveArgs, { cwd });
      try {
        const port = portOf(await second.waitForLog('serve listening', PGLITE_START_MS));
        assert.equal(await health(port), 'SERVING');
        const done = await stop(second);
        assert.equal(done.code, 0, done.stderr);
        assert.ok(!done.stdout.includes(key) && !done.stderr.includes(key), 'the kept key is printed again');
        assert.ok(!/generated/i.test(done.stdout), done.stdout);
      } finally {
        second.proc.kill('SIGKILL');
      }
      assert.equal(readFileSync(keyFile, 'utf8').trim(), key, 'the key changed');
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  test('DATABASE_URL and REDIS_URL in the environment are used, and the start-up log says so without the password', TEST_OPTS, async () => {
    const cwd = mkdtempSync(path.join(tmpdir(), 'tollgate-serve-env-'));
    const schema = `tg_embedded_env_${process.pid}`;
    const password = 'not-the-password-3c9f'; // this PostgreSQL trusts loopback: a password is sent only if asked
    const s = start(['serve', '--host', '127.0.0.1', '--grpc-port', '0', '--http-port', '0'], {
      cwd,
      env: {
        DATABASE_URL: `postgres://postgres:${password}@127.0.0.1:5432/test?schema=${schema}&application_name=x`,
        REDIS_URL: 'redis://127.0.0.1:6379/15',
      },
    });
    try {
      await s.waitForLog('serve listening');
      const rec = await s.waitForLog(
        `records: PostgreSQL postgres://postgres@127.0.0.1:5432/test?schema=${schema} (from DATABASE_URL); ` +
          'counters: Redis redis://127.0.0.1:6379/15 (from REDIS_URL)',
      );
      assert.equal(rec['records'], `PostgreSQL postgres://postgres@127.0.0.1:5432/test?schema=${schema} (from DATABASE_URL)`);
      const done = await stop(s);
      assert.equal(done.code, 0, done.stderr);
      assert.ok(!done.stdout.includes(password) && !done.stderr.includes(password), 'the password is logged');
      assert.ok(!existsSync(path.join(cwd, '.tollgate', 'pglite')), 'PGlite was opened too');
    } finally {
      s.proc.kill('SIGKILL');
      rmSync(cwd, { recursive: true, force: true });
      const { openDb } = await import('../../../src/store/db.js');
      const admin = await openDb({ url: 'postgres://postgres@127.0.0.1:5432/test' });
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.close();
      const { Redis } = await import('ioredis');
      const redis = new Redis('redis://127.0.0.1:6379/15');
      await redis.del('tollgate:seeded'); // the one key a start with nothing to count writes
      redis.disconnect();
    }
  });
});
