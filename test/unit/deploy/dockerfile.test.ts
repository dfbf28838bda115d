/**
 * The Dockerfile and .dockerignore: a multi-stage build whose runtime stage holds production dependencies
 * only, runs node as the unprivileged `node` user with signals delivered to it, and serves health to Docker.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { isIgnored, parseDockerfile, parseDockerignore, type Dockerfile, type Instruction } from '../../support/dockerfile.js';

const ROOT = new URL('../../../../', import.meta.url);
const DOCKERFILE = readFileSync(new URL('Dockerfile', ROOT), 'utf8');
const DOCKERIGNORE = readFileSync(new URL('.dockerignore', ROOT), 'utf8');

function all(instructions: readonly Instruction[], keyword: string): Instruction[] {
  return instructions.filter((i) => i.keyword === keyword);
}

/** Everything wrong with an image definition, as short sentences; empty when it is right. */
function imageProblems(df: Dockerfile, ignore = parseDockerignore(DOCKERIGNORE)): string[] {
  const problems: string[] = [];
  if (df.stages.length < 2) return ['not a multi-stage build'];
  const final = df.stages[df.stages.length - 1];
  if (final === undefined) return ['no stage'];
  const builders = df.stages.slice(0, -1);
  const builderRuns = builders.flatMap((s) => all(s.instructions, 'RUN').map((r) => r.args));
  if (!builderRuns.some((r) => /\bnpm ci\b/.test(r))) problems.push('the build stage does not npm ci');
  if (!builderRuns.some((r) => /\bnpm run build\b/.test(r))) problems.push('the build stage does not npm run build');
  // Node 22 LTS: Node 20 reached end of life on 2026-04-30.
  for (const stage of df.stages)
    if (!/^node:22([.\d]*)-bookworm-slim$/.test(stage.image))
      problems.push(
        `${stage === final ? 'runtime' : `${stage.name ?? 'a build'} stage`} image ${stage.image} is not node:22-bookworm-slim`,
      );

  const ins = final.instructions;
  const user = all(ins, 'USER').at(-1)?.args;
  if (user === undefined || /^(root|0)(:|$)/.test(user)) problems.push(`runs as ${user ?? 'root (no USER)'}`);
  else if (user !== 'node') problems.push(`USER ${user}, not node`);

  const runs = all(ins, 'RUN').map((r) => r.args);
  if (!runs.some((r) => /\bnpm ci\b.*--omit=dev/.test(r))) problems.push('no npm ci --omit=dev in the runtime stage');
  if (runs.some((r) => /\bnpm (install|i|ci)\b/.test(r) && !/--omit=dev/.test(r)))
    problems.push('an npm install with devDependencies in the runtime stage');
  // What tollgate reads relative to its compiled code (dist/src/...): its package.json (version), protos/
  // (ext_authz and gRPC health), migrations/ (the store), and bin/, the entry point.
  const copied = all(ins, 'COPY')
    .filter((c) => c.flags['from'] === undefined)
    .flatMap((c) => c.args.split(/\s+/).slice(0, -1))
    .map((s) => s.replace(/^\.\//, '').replace(/\/$/, ''));
  for (const needed of ['package.json', 'bin', 'migrations', 'protos'])
    if (!copied.includes(needed)) problems.push(`${needed} is not copied into the runtime stage (tollgate reads it beside its code)`);
  for (const copy of all(ins, 'COPY')) {
    const sources = copy.args.split(/\s+/).slice(0, -1);
    if (copy.flags['from'] !== undefined) {
      if (sources.some((s) => s.includes('node_modules'))) problems.push(`node_modules copied from stage ${copy.flags['from']}`);
      if (sources.some((s) => /^(\.|\/src\/?|\/src\/dist\/?)$/.test(s))) problems.push(`a whole build tree copied: ${copy.args}`);
    } else {
      for (const s of sources) {
        if (!existsSync(new URL(s, ROOT))) problems.push(`COPY ${s}: not in the repository`);
        else if (isIgnored(ignore, s.replace(/^\.\//, ''))) problems.push(`COPY ${s}: excluded by .dockerignore`);
      }
    }
  }

  const entrypoint = all(ins, 'ENTRYPOINT').at(-1);
  const cmd = all(ins, 'CMD').at(-1);
  if (entrypoint?.json === undefined) problems.push('ENTRYPOINT not in exec form: signals would go to /bin/sh, not node');
  if (cmd !== undefined && cmd.json === undefined) problems.push('CMD not in exec form');
  const argv = [...(entrypoint?.json ?? []), ...(cmd?.json ?? [])];
  if (argv[0] !== 'node' || argv[1] !== 'bin/tollgate.js' || argv[2] !== 'serve')
    problems.push(`starts ${argv.join(' ')}, not node bin/tollgate.js serve`);

  const health = all(ins, 'HEALTHCHECK').at(-1);
  if (health === undefined) problems.push('no HEALTHCHECK');
  else {
    const probe = health.args.replace(/^CMD\s+/, '');
    if (/\b(curl|wget)\b/.test(probe)) problems.push('HEALTHCHECK needs curl or wget, which the slim image lacks');
    // The probe that reads the command the container runs (serve, authz or gateway), compiled from src/.
    let argv: unknown;
    try {
      argv = JSON.parse(probe);
    } catch {
      argv = undefined;
    }
    if (!Array.isArray(argv) || argv[0] !== 'node' || argv[1] !== 'dist/src/main/healthcheck.js' || argv.length !== 2)
      problems.push('HEALTHCHECK does not run node dist/src/main/healthcheck.js');
    else if (!existsSync(new URL('src/main/healthcheck.ts', ROOT))) problems.push('HEALTHCHECK runs a probe the build does not make');
  }
  const exposed = all(ins, 'EXPOSE').flatMap((e) => e.args.split(/\s+/));
  for (const port of ['4000', '9001']) if (!exposed.includes(port)) problems.push(`port ${port} not exposed`);
  const workdir = all(ins, 'WORKDIR').at(-1)?.args;
  if (workdir === undefined) problems.push('no WORKDIR');
  else if (!runs.some((r) => r.includes(`${workdir}/.tollgate`) && /chown node/.test(r)))
    problems.push(`${workdir}/.tollgate (embedded PGlite's default data_dir) is not writable by node`);
  return problems;
}

describe('Dockerfile', () => {
  const df = parseDockerfile(DOCKERFILE);

  it('builds in one stage and runs from a slim one: node user, production dependencies only, exec-form node, a health check', () => {
    assert.deepEqual(imageProblems(df), []);
    assert.deepEqual(
      df.stages.map((s) => [s.name, s.image]),
      [
        ['build', 'node:22-bookworm-slim'],
        ['runtime', 'node:22-bookworm-slim'],
      ],
    );
  });

  it('copies only compiled sources from the build stage', () => {
    const final = df.stages.at(-1);
    const fromBuild = all(final?.instructions ?? [], 'COPY').filter((c) => c.flags['from'] === 'build');
    assert.deepEqual(
      fromBuild.map((c) => c.args),
      ['/src/dist/src ./dist/src'],
    );
  });

  it('finds what is wrong with a broken image definition', () => {
    const broken = (edit: (t: string) => string): string[] => imageProblems(parseDockerfile(edit(DOCKERFILE)));
    assert.deepEqual(
      broken((t) => t.replace('USER node', 'USER root')),
      ['runs as root'],
    );
    assert.deepEqual(
      broken((t) => t.replace(/RUN npm ci --omit=dev[^\n]*\\\n[^\n]*\n/, 'COPY --from=build /src/node_modules ./node_modules\n')),
      ['no npm ci --omit=dev in the runtime stage', 'node_modules copied from stage build'],
    );
    assert.deepEqual(
      broken((t) => t.replace('ENTRYPOINT ["node", "bin/tollgate.js"]', 'ENTRYPOINT node bin/tollgate.js')),
      ['ENTRYPOINT not in exec form: signals would go to /bin/sh, not node', 'starts serve, not node bin/tollgate.js serve'],
    );
    assert.deepEqual(
      broken((t) => t.replace(/HEALTHCHECK[^\n]*\\\n[^\n]*\n/, '')),
      ['no HEALTHCHECK'],
    );
    assert.deepEqual(
      broken((t) => t.replace(/HEALTHCHECK[^\n]*\\\n[^\n]*\n/, 'HEALTHCHECK CMD curl -f http://127.0.0.1:4000/health/liveliness\n')),
      ['HEALTHCHECK needs curl or wget, which the slim image lacks', 'HEALTHCHECK does not run node dist/src/main/healthcheck.js'],
    );
    // The probe it used to run: port 4000 only, so a container running `tollgate authz` was never healthy.
    assert.deepEqual(
      broken((t) =>
        t.replace(
          '["node", "dist/src/main/healthcheck.js"]',
          `["node", "-e", "fetch('http://127.0.0.1:4000/health/liveliness').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]`,
        ),
      ),
      ['HEALTHCHECK does not run node dist/src/main/healthcheck.js'],
    );
    assert.deepEqual(
      broken((t) => t.replace('COPY migrations ./migrations', 'COPY test ./test')),
      ['migrations is not copied into the runtime stage (tollgate reads it beside its code)', 'COPY test: excluded by .dockerignore'],
    );
    for (const [line, needed] of [
      ['COPY protos ./protos\n', 'protos'],
      ['COPY bin ./bin\n', 'bin'],
      ['COPY migrations ./migrations\n', 'migrations'],
    ] as const)
      assert.deepEqual(
        broken((t) => t.replace(line, '')),
        [`${needed} is not copied into the runtime stage (tollgate reads it beside its code)`],
      );
    // package.json only in the build stage: npm ci in the runtime stage would fail too, but the check names the file.
    assert.deepEqual(
      broken((t) => t.replace(/(AS runtime[\s\S]*?)COPY package\.json package-lock\.json \.\//, '$1COPY package-lock.json ./')),
      ['package.json is not copied into the runtime stage (tollgate reads it beside its code)'],
    );
    assert.deepEqual(
      broken((t) => t.replace('ARG NODE_VERSION=22', 'ARG NODE_VERSION=20')),
      [
        'build stage image node:20-bookworm-slim is not node:22-bookworm-slim',
        'runtime image node:20-bookworm-slim is not node:22-bookworm-slim',
      ],
    );
    assert.deepEqual(imageProblems(parseDockerfile('FROM node:20-bookworm-slim\nUSER node\n')), ['not a multi-stage build']);
  });
});

describe('Dockerfile reader', () => {
  it('joins continuations (skipping comment lines inside them), reads flags and exec form, substitutes global ARGs', () => {
    const df = parseDockerfile(
      [
        '# syntax=docker/dockerfile:1',
        'ARG BASE=node:20-bookworm-slim',
        '',
        'FROM ${BASE} AS b',
        'RUN a \\',
        '  # a comment inside',
        '  && b',
        'COPY --from=b --chown=node:node /x ./y',
        'CMD ["node", "x.js"]',
      ].join('\n'),
    );
    assert.deepEqual(df.directives, { syntax: 'docker/dockerfile:1' });
    const [stage] = df.stages;
    assert.equal(stage?.image, 'node:20-bookworm-slim');
    assert.equal(stage.name, 'b');
    const [run, copy, cmd] = stage.instructions;
    assert.equal(run?.args, 'a && b');
    assert.deepEqual(copy?.flags, { from: 'b', chown: 'node:node' });
    assert.equal(copy.args, '/x ./y');
    assert.deepEqual(cmd?.json, ['node', 'x.js']);
  });

  it('honours the escape directive', () => {
    const df = parseDockerfile('# escape=`\nFROM scratch\nRUN a `\n  b\n');
    assert.equal(df.stages[0]?.instructions[0]?.args, 'a b');
  });
});

describe('.dockerignore', () => {
  const rules = parseDockerignore(DOCKERIGNORE);

  it('keeps node_modules, dist, .git, .tollgate and the tests out of the build context', () => {
    for (const f of [
      'node_modules/yaml/package.json',
      'dist/src/main/cli.js',
      '.git/HEAD',
      '.tollgate/master_key',
      'test/unit/deploy/dockerfile.test.ts',
      'bench/check.ts',
    ])
      assert.ok(isIgnored(rules, f), `${f} ignored`);
    for (const f of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'src/main/cli.ts',
      'bin/tollgate.js',
      'migrations/001_init.sql',
      'protos/envoy/service/auth/v3/external_auth.proto',
    ])
      assert.ok(!isIgnored(rules, f), `${f} kept`);
  });

  it('matches as BuildKit does: ** across directories, ! re-including, the last rule winning', () => {
    const r = parseDockerignore('**/*.log\nsrc/**/*.test.ts\n!src/keep.test.ts\n/tmp\n');
    assert.ok(isIgnored(r, 'a/b/c.log'));
    assert.ok(isIgnored(r, 'x.log'));
    assert.ok(isIgnored(r, 'src/a/b.test.ts'));
    assert.ok(!isIgnored(r, 'src/keep.test.ts'));
    assert.ok(isIgnored(r, 'tmp/file'));
    assert.ok(!isIgnored(r, 'src/tmp/file'));
  });
});
