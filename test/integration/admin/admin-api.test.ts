/**
 * The admin API on two `tollgate serve` replicas sharing one Redis and one PostgreSQL schema: what one
 * replica writes, the other enforces within a second (generate, block, unblock, delete, team budgets,
 * models). Every endpoint refuses a missing or wrong master key; bad input is a 400 naming the field;
 * `/metrics` is Prometheus text that counts requests; and no secret reaches any log line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bodyDigest, ContextSigner, contextSecret, type ContextClaims } from '../../../src/identity/context-token.js';
import { openDb } from '../../../src/store/db.js';
import { startFakeVllm, type FakeVllm } from '../../support/fake-vllm.js';
import { children, startTollgate, type Running } from '../../support/process.js';
import { parsePrometheus } from '../../support/prometheus.js';

const PG = process.env['TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const MASTER = `sk-master-${randomUUID()}`;
const CONFIG_KEY = `sk-config-${randomUUID()}`;
const BACKEND_KEY = `backend-secret-${randomUUID()}`;
const BACKEND = 'meta-llama/Llama-3.1-8B-Instruct';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

type Json = Record<string, unknown>;

interface Reply {
  status: number;
  body: Json;
  text: string;
  headers: Headers;
}

/** Every secret the run handles: none may appear in any log line. */
const secrets = new Set<string>([MASTER, CONFIG_KEY, BACKEND_KEY]);

/** `key: null` sends no Authorization header. */
async function call(port: number, method: string, urlPath: string, body?: unknown, key: string | null = MASTER): Promise<Reply> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== null) headers['authorization'] = `Bearer ${key}`;
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Json = {};
  try {
    parsed = JSON.parse(text) as Json;
  } catch {
    // metrics, or an empty body
  }
  return { status: res.status, body: parsed, text, headers: res.headers };
}

function chat(port: number, key: string, model = 'llama'): Promise<Reply> {
  return call(port, 'POST', '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }, key);
}

function errorOf(r: Reply): { code?: string; type?: string; param?: string | null; message?: string } {
  const e: unknown = r.body['error'];
  return typeof e === 'object' && e !== null ? e : {};
}

/** Polls `probe` until it holds, at most `ms`; returns the time it took. */
async function within(ms: number, probe: () => Promise<boolean>, what: string): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - started;
    if (Date.now() - started > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const ROUTES: readonly (readonly [string, string])[] = [
  ['POST', '/key/generate'],
  ['GET', '/key/info?key=sk-whatever-123'],
  ['GET', '/key/list'],
  ['POST', '/key/update'],
  ['POST', '/key/delete'],
  ['POST', '/key/block'],
  ['POST', '/key/unblock'],
  ['POST', '/key/regenerate'],
  ['POST', `/key/${'0'.repeat(64)}/regenerate`],
  ['POST', '/team/new'],
  ['GET', '/team/info?team_id=x'],
  ['POST', '/team/update'],
  ['POST', '/team/delete'],
  ['GET', '/team/list'],
  ['POST', '/user/new'],
  ['GET', '/user/info?user_id=x'],
  ['GET', '/user/list'],
  ['POST', '/user/update'],
  ['POST', '/user/delete'],
  ['GET', '/spend/keys'],
  ['GET', '/spend/logs'],
  ['GET', '/global/spend'],
  ['GET', '/model/info'],
  ['POST', '/model/new'],
  ['POST', '/model/delete'],
  ['GET', '/health'],
];

describe('admin API on two replicas (one Redis, one PostgreSQL)', { timeout: 120_000 }, () => {
  const schema = `tg_admin_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  let vllm: FakeVllm;
  let extra: FakeVllm;
  const procs: Running[] = [];
  const ports: number[] = [];
  let a = 0;
  let b = 0;

  before(async () => {
    vllm = await startFakeVllm({ models: [BACKEND], name: 'main' });
    extra = await startFakeVllm({ models: ['added-backend'], name: 'extra', requireApiKey: BACKEND_KEY });
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-admin-'));
    const file = path.join(dir, 'config.yaml');
    writeFileSync(
      file,
      `
model_list:
  - model_name: llama
    litellm_params: { model: openai/${BACKEND}, api_base: "${vllm.apiBase}" }
    model_info: { id: llama-main, input_cost_per_token: 0.001, output_cost_per_token: 0.001 }
general_settings:
  master_key: ${MASTER}
  database_url: ${PG}?schema=${schema}
  redis_url: ${REDIS}
  redis_key_prefix: "tg-admin-${randomUUID()}:"
  allowed_api_bases: [127.0.0.1]
teams:
  - team_id: config-team
users:
  - user_id: config-user
    max_budget: 7
keys:
  - key: sha256:${sha(CONFIG_KEY)}
    key_alias: from-config
    team_id: config-team
`,
    );
    for (let i = 0; i < 2; i++) {
      const p = startTollgate(['serve', '--config', file, '--host', '127.0.0.1', '--http-port', '0', '--grpc-port', '0'], {
        env: { LOG_LEVEL: 'debug' },
      });
      procs.push(p);
      const rec = await p.waitForLog('serve listening', 30_000);
      ports.push(Number(/:(\d+)$/.exec(String(rec['http']))?.[1]));
    }
    [a, b] = ports as [number, number];
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await vllm.close();
    await extra.close();
    const db = await openDb({ url: PG });
    await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await db.close();
  });

  test('every admin endpoint refuses a missing, a wrong and a non-admin key, in the contract error shape', async () => {
    const plain = await call(a, 'POST', '/key/generate', {});
    assert.equal(plain.status, 200);
    const userKey = String(plain.body['key']);
    secrets.add(userKey);
    for (const [method, route] of ROUTES) {
      const missing = await call(a, method, route, method === 'POST' ? {} : undefined, null);
      assert.equal(missing.status, 401, `${method} ${route} without a key`);
      assert.equal(errorOf(missing).type, 'authentication_error');
      assert.equal(errorOf(missing).code, 'missing_api_key');
      const wrong = await call(a, method, route, method === 'POST' ? {} : undefined, `sk-wrong-${randomUUID()}`);
      assert.equal(wrong.status, 401, `${method} ${route} with a wrong key`);
      assert.equal(errorOf(wrong).code, 'invalid_api_key');
      const user = await call(b, method, route, method === 'POST' ? {} : undefined, userKey);
      assert.equal(user.status, 403, `${method} ${route} with a virtual key`);
      assert.equal(errorOf(user).type, 'permission_error');
      assert.ok(!wrong.text.includes('sk-wrong'), 'an error never echoes the key sent');
    }
  });

  test('an admin route asked with the other method is 405 naming the method it takes, as the OpenAI endpoints are', async () => {
    for (const [method, route] of ROUTES) {
      const other = method === 'GET' ? 'POST' : 'GET';
      const r = await call(a, other, route, other === 'POST' ? {} : undefined);
      assert.equal(r.status, 405, `${other} ${route}`);
      assert.equal(errorOf(r).code, 'method_not_allowed');
      assert.equal(r.headers.get('allow'), method, `${other} ${route}`);
      assert.equal((await call(a, other, route, other === 'POST' ? {} : undefined, null)).status, 401, 'and still needs a key');
    }
    assert.equal((await call(a, 'GET', '/key/nothing-here')).status, 404, 'a path that is no admin route stays a 404');
  });

  test('/key/delete naming one key twice (by key, token and alias) deletes it and lists its token once', async () => {
    const made = await call(a, 'POST', '/key/generate', { key_alias: 'named-twice' });
    const key = String(made.body['key']);
    secrets.add(key);
    const token = String(made.body['token']);
    const deleted = await call(b, 'POST', '/key/delete', { keys: [key, token], key_aliases: ['named-twice'] });
    assert.equal(deleted.status, 200, deleted.text);
    assert.deepEqual(deleted.body['deleted_keys'], [token]);
  });

  test('a generated key works on both replicas at once, is shown once and never listed', async () => {
    const gen = await call(a, 'POST', '/key/generate', { key_alias: 'both', models: ['llama'], metadata: { owner: 'test' } });
    assert.equal(gen.status, 200);
    const key = String(gen.body['key']);
    secrets.add(key);
    assert.match(key, /^sk-[A-Za-z0-9_-]{32}$/, '192 random bits, base64url');
    assert.equal(gen.body['token'], sha(key));
    assert.equal(gen.body['key_name'], `sk-...${key.slice(-4)}`);
    assert.equal(gen.body['key_alias'], 'both');
    assert.deepEqual(gen.body['models'], ['llama']);
    for (const port of [a, b]) assert.equal((await chat(port, key)).status, 200, `port ${port}`);

    const list = await call(b, 'GET', '/key/list?size=100');
    assert.equal(list.status, 200);
    assert.ok((list.body['keys'] as string[]).includes(sha(key)), 'listed by token');
    assert.ok(!list.text.includes(key), 'the key itself is never listed');
    const full = await call(b, 'GET', '/key/list?size=100&return_full_object=true&key_alias=both');
    assert.equal(full.body['total_count'], 1);
    assert.ok(!full.text.includes(key));
    const [row] = full.body['keys'] as Json[];
    assert.equal(row?.['key_alias'], 'both');

    const byKey = await call(b, 'GET', `/key/info?key=${encodeURIComponent(key)}`);
    const byToken = await call(b, 'GET', `/key/info?key=${sha(key)}`);
    assert.equal(byKey.status, 200);
    assert.equal(byKey.body['key'], sha(key));
    // The same record either way; its spend may grow between the two reads (the two chats' rows land in
    // each replica's batch within a second).
    const withoutSpend = (body: Json): Json => ({ ...body, info: { ...(body['info'] as Json), spend: undefined } });
    assert.deepEqual(withoutSpend(byToken.body), withoutSpend(byKey.body));
    assert.ok(!byKey.text.includes(key));
    assert.ok(Number((byKey.body['info'] as Json)['spend']) >= 0);
  });

  test("a virtual key reads its own info (LiteLLM's GET /key/info without key), and no other key's", async () => {
    const mine = String((await call(a, 'POST', '/key/generate', { key_alias: 'self-reader', max_budget: 5 })).body['key']);
    const other = String((await call(a, 'POST', '/key/generate', { key_alias: 'someone-else' })).body['key']);
    secrets.add(mine);
    secrets.add(other);
    assert.equal((await chat(b, mine)).status, 200);
    // The spend log is written in batches within a second.
    await within(
      3_000,
      async () => Number(((await call(b, 'GET', '/key/info', undefined, mine)).body['info'] as Json | undefined)?.['spend']) > 0,
      'its spend so far',
    );
    for (const route of ['/key/info', `/key/info?key=${sha(mine)}`, `/key/info?key=${encodeURIComponent(mine)}`]) {
      const own = await call(b, 'GET', route, undefined, mine);
      assert.equal(own.status, 200, route);
      assert.equal(own.body['key'], sha(mine));
      const info = own.body['info'] as Json;
      assert.equal(info['key_alias'], 'self-reader');
      assert.equal(info['max_budget'], 5);
      assert.ok(Number(info['spend']) > 0, 'its spend so far');
      assert.ok(!own.text.includes(mine), 'the key itself is never shown');
    }
    const theirs = await call(b, 'GET', `/key/info?key=${sha(other)}`, undefined, mine);
    assert.equal(theirs.status, 403);
    assert.equal(errorOf(theirs).type, 'permission_error');
    assert.equal(errorOf(theirs).param, 'key');
    assert.ok(!theirs.text.includes('someone-else'), 'nothing of the other key is shown');
    // The master key has no record of its own: 404, as LiteLLM answers for a calling key not in its database.
    const master = await call(b, 'GET', '/key/info');
    assert.equal(master.status, 404, master.text);
    assert.equal(errorOf(master).code, 'not_found');
    assert.equal(errorOf(master).param, 'key');
    assert.match(String(errorOf(master).message), /\?key=/, 'it says how to name a key');
    assert.ok(!master.text.includes(MASTER), 'the master key is never echoed');
    // Only the read: every other admin route stays closed to the key.
    assert.equal((await call(b, 'GET', '/key/list', undefined, mine)).status, 403);
    // A blocked key reads nothing.
    assert.equal((await call(a, 'POST', '/key/block', { key: mine })).status, 200);
    await within(2_000, async () => (await call(b, 'GET', '/key/info', undefined, mine)).status === 403, 'blocked key refused');
  });

  test('block, unblock and delete on one replica take effect on the other within a second', async () => {
    const key = String((await call(a, 'POST', '/key/generate', { key_alias: 'revoke-me' })).body['key']);
    secrets.add(key);
    assert.equal((await chat(b, key)).status, 200);

    assert.equal((await call(a, 'POST', '/key/block', { key })).body['blocked'], true);
    await within(1_000, async () => errorOf(await chat(b, key)).code === 'key_blocked', 'blocked on the other replica');
    assert.equal((await chat(a, key)).status, 403);

    assert.equal((await call(b, 'POST', '/key/unblock', { key: sha(key) })).body['blocked'], false);
    await within(1_000, async () => (await chat(a, key)).status === 200, 'unblocked on the other replica');

    const del = await call(b, 'POST', '/key/delete', { keys: [key] });
    assert.deepEqual(del.body['deleted_keys'], [sha(key)]);
    await within(1_000, async () => errorOf(await chat(a, key)).code === 'invalid_api_key', 'deleted on the other replica');
    assert.equal(errorOf(await chat(b, key)).code, 'invalid_api_key');
    assert.equal((await call(a, 'GET', `/key/info?key=${sha(key)}`)).status, 404);
  });

  test("/team/delete (LiteLLM's): the team and its keys go, refused on the other replica at once; config and unknown teams are refused whole", async () => {
    const teamId = `doomed-${randomUUID()}`;
    const other = `kept-${randomUUID()}`;
    assert.equal((await call(a, 'POST', '/team/new', { team_id: teamId, team_alias: 'doomed' })).status, 200);
    assert.equal((await call(a, 'POST', '/team/new', { team_id: other })).status, 200);
    const made = await Promise.all([teamId, teamId, other].map((t) => call(a, 'POST', '/key/generate', { team_id: t })));
    const [k1, k2, k3] = made.map((r) => String(r.body['key'])) as [string, string, string];
    for (const k of [k1, k2, k3]) secrets.add(k);
    for (const k of [k1, k2, k3]) assert.equal((await chat(b, k)).status, 200);

    // Unknown ids: 404 naming them, and nothing deleted (the known team named beside them stays).
    const unknown = await call(b, 'POST', '/team/delete', { team_ids: [teamId, 'no-such-team-1', 'no-such-team-2'] });
    assert.equal(unknown.status, 404, unknown.text);
    assert.equal(errorOf(unknown).param, 'team_ids[1]');
    assert.match(String(errorOf(unknown).message), /"no-such-team-1", "no-such-team-2"; nothing was deleted/);
    // A team of the config file: 409 saying to remove it there; nothing deleted.
    const declared = await call(b, 'POST', '/team/delete', { team_ids: [teamId, 'config-team'] });
    assert.equal(declared.status, 409, declared.text);
    assert.equal(errorOf(declared).param, 'team_ids[1]');
    assert.match(String(errorOf(declared).message), /declared in the config file: remove it from teams: there/);
    assert.equal((await call(a, 'GET', `/team/info?team_id=${teamId}`)).status, 200);
    assert.equal((await chat(b, k1)).status, 200);

    const del = await call(a, 'POST', '/team/delete', { team_ids: [teamId] });
    assert.equal(del.status, 200, del.text);
    assert.deepEqual(del.body['deleted_teams'], [teamId]);
    assert.deepEqual([...(del.body['deleted_keys'] as string[])].sort(), [sha(k1), sha(k2)].sort());
    // Refused on the replica that did not make the change, at once (the broadcast, as /key/delete's).
    await within(1_000, async () => errorOf(await chat(b, k1)).code === 'invalid_api_key', 'its keys refused on the other replica');
    assert.equal(errorOf(await chat(b, k2)).code, 'invalid_api_key');
    assert.equal(errorOf(await chat(a, k1)).code, 'invalid_api_key');
    assert.equal((await chat(b, k3)).status, 200, "another team's key is untouched");
    assert.equal((await call(b, 'GET', `/team/info?team_id=${teamId}`)).status, 404);
    assert.equal((await call(b, 'GET', `/key/list?team_id=${teamId}`)).body['total_count'], 0);
    assert.equal((await call(b, 'POST', '/key/generate', { team_id: teamId })).status, 400, 'no key can be made for it any more');
    // A second delete of it is an unknown id.
    assert.equal((await call(b, 'POST', '/team/delete', { team_ids: [teamId] })).status, 404);
  });

  test("/team/list (LiteLLM's): config and stored teams, saying which, sorted by alias, with spend and their first keys", async () => {
    const id1 = `list-b-${randomUUID()}`;
    const id2 = `list-a-${randomUUID()}`;
    await call(a, 'POST', '/team/new', { team_id: id1, team_alias: 'zz-list-b', max_budget: 3 });
    await call(a, 'POST', '/team/new', { team_id: id2, team_alias: 'zz-list-a' });
    const key = String((await call(a, 'POST', '/key/generate', { team_id: id1, key_alias: 'listed-team-key' })).body['key']);
    secrets.add(key);
    assert.equal((await chat(b, key)).status, 200);
    let teams: Json[] = [];
    await within(
      3_000,
      async () => {
        const r = await call(b, 'GET', '/team/list');
        assert.equal(r.status, 200, r.text);
        teams = r.body as unknown as Json[];
        return Number(teams.find((t) => t['team_id'] === id1)?.['spend']) > 0;
      },
      "the team's spend",
    );
    assert.ok(Array.isArray(teams));
    const ids = teams.map((t) => t['team_id']);
    assert.ok(ids.indexOf(id2) >= 0 && ids.indexOf(id2) === ids.indexOf(id1) - 1, 'sorted by team_alias');
    const aliases = teams.map((t) => (typeof t['team_alias'] === 'string' ? t['team_alias'] : ''));
    assert.deepEqual(aliases, [...aliases].sort(), 'sorted by team_alias, as LiteLLM');
    const mine = teams.find((t) => t['team_id'] === id1) ?? {};
    assert.equal(mine['source'], 'api');
    assert.equal(mine['max_budget'], 3);
    assert.equal(mine['keys_total'], 1);
    assert.deepEqual(
      (mine['keys'] as Json[]).map((k) => [k['token'], k['key_alias']]),
      [[sha(key), 'listed-team-key']],
    );
    assert.ok(typeof mine['created_at'] === 'string');
    const configured = teams.find((t) => t['team_id'] === 'config-team') ?? {};
    assert.equal(configured['source'], 'config');
    assert.equal((configured['keys'] as Json[])[0]?.['token'], sha(CONFIG_KEY), "the config file's key first");
    assert.ok(!JSON.stringify(teams).includes(key), 'never a key');
  });

  test("/user/list (LiteLLM's): a page of config and stored users, with spend and key_count, filtered by user_ids", async () => {
    const tag = randomUUID().slice(0, 8);
    const u1 = `lister-${tag}-1`;
    const u2 = `lister-${tag}-2`;
    const made = await call(a, 'POST', '/user/new', { user_id: u1, max_budget: 2 });
    assert.equal(made.status, 200, made.text);
    secrets.add(String(made.body['key']));
    assert.equal((await call(a, 'POST', '/user/new', { user_id: u2, auto_create_key: false })).status, 200);

    const all = await call(b, 'GET', '/user/list?page_size=100');
    assert.equal(all.status, 200, all.text);
    assert.deepEqual(Object.keys(all.body).sort(), ['page', 'page_size', 'total', 'total_pages', 'users']);
    const users = all.body['users'] as Json[];
    assert.equal(users[0]?.['user_id'], 'config-user', "the config file's users first");
    assert.equal(users[0]?.['source'], 'config');
    assert.equal(users[0]?.['max_budget'], 7);
    const one = users.find((u) => u['user_id'] === u1) ?? {};
    assert.equal(one['source'], 'api');
    assert.equal(one['key_count'], 1);
    assert.equal(one['max_budget'], 2);
    assert.equal(one['user_role'], 'internal_user');
    assert.equal(one['spend'], 0);

    // One id: the users whose id contains it (LiteLLM's); several: exactly those.
    const byPart = await call(b, 'GET', `/user/list?user_ids=LISTER-${tag}`);
    assert.deepEqual(
      (byPart.body['users'] as Json[]).map((u) => u['user_id']),
      [u2, u1],
      'newest first',
    );
    assert.equal(byPart.body['total'], 2);
    const byIds = await call(b, 'GET', `/user/list?user_ids=${u1},config-user`);
    assert.deepEqual(
      (byIds.body['users'] as Json[]).map((u) => u['user_id']),
      ['config-user', u1],
    );
    const paged = await call(b, 'GET', `/user/list?user_ids=lister-${tag}&page=2&page_size=1`);
    assert.deepEqual(
      (paged.body['users'] as Json[]).map((u) => u['user_id']),
      [u1],
    );
    assert.equal(paged.body['total_pages'], 2);
    assert.equal(((await call(b, 'GET', '/user/list?role=proxy_admin')).body['users'] as Json[]).length, 0);
  });

  test('regenerate: the old secret stops working everywhere, the new one works, the record and its spend are kept', async () => {
    const old = String((await call(a, 'POST', '/key/generate', { key_alias: 'rotate', rpm_limit: 100 })).body['key']);
    secrets.add(old);
    assert.equal((await chat(a, old)).status, 200);
    let spent = 0;
    await within(
      3_000,
      async () => {
        spent = Number(((await call(a, 'GET', `/key/info?key=${sha(old)}`)).body['info'] as Json)['spend']);
        return spent > 0;
      },
      'the spend of the old key is logged',
    );
    const regen = await call(a, 'POST', '/key/regenerate', { key: old, rpm_limit: 50 });
    assert.equal(regen.status, 200);
    const fresh = String(regen.body['key']);
    secrets.add(fresh);
    assert.notEqual(fresh, old);
    assert.equal(regen.body['key_alias'], 'rotate');
    assert.equal(regen.body['rpm_limit'], 50);
    assert.equal(regen.body['spend'], spent, 'the spend carries over to the new secret');
    await within(1_000, async () => errorOf(await chat(b, old)).code === 'invalid_api_key', 'old key refused on the other replica');
    await within(1_000, async () => (await chat(b, fresh)).status === 200, 'new key works on the other replica');
  });

  test('regenerate while requests are in flight on the other replica: their spend counts for the new secret', async () => {
    const old = String(
      (await call(a, 'POST', '/key/generate', { key_alias: 'rotate-busy', max_budget: 0.04, budget_duration: '1d' })).body['key'],
    );
    secrets.add(old);
    const arrived = vllm.received.length;
    vllm.setFault({ kind: 'delay-headers', ms: 1_500 });
    let inflight: Promise<Reply>[];
    try {
      inflight = [chat(b, old), chat(b, old)];
      await within(2_000, () => Promise.resolve(vllm.received.length >= arrived + 2), 'both requests at the backend');
    } finally {
      vllm.setFault(undefined);
    }
    const regen = await call(a, 'POST', '/key/regenerate', { key: old });
    assert.equal(regen.status, 200, regen.text);
    const fresh = String(regen.body['key']);
    secrets.add(fresh);
    // The other replica heard of it (its broadcast) before the two end there. (One that ended in between
    // would settle into the old id's budget counter after the carry-over: a window of the broadcast's delay.)
    await within(1_000, async () => (await call(b, 'GET', '/v1/models', undefined, old)).status === 401, 'the regenerate on b');
    assert.deepEqual(
      (await Promise.all(inflight)).map((r) => r.status),
      [200, 200],
    );
    // 16 tokens at 0.001 each: 0.032 spent by the two, all of it after the regenerate's carry-over.
    await within(
      8_000,
      async () => Math.abs(Number(((await call(a, 'GET', `/key/info?key=${sha(fresh)}`)).body['info'] as Json)['spend']) - 0.032) < 1e-9,
      "the in-flight requests' spend on the new secret's record",
    );
    // The budget counted them too: one more request (0.048, past 0.04) is served, the next refused.
    assert.equal((await chat(a, fresh)).status, 200);
    const refused = await chat(b, fresh);
    assert.equal(refused.status, 429, refused.text);
    // budget_exceeded once the last request settled; rate_limit_exceeded ("retry shortly") while its
    // reservation still holds the rest of the budget.
    assert.ok(['budget_exceeded', 'rate_limit_exceeded'].includes(String(errorOf(refused).code)), refused.text);
  });

  test("regression: right after a regenerate, /key/info, /key/list and /spend/keys show the key's spend (not 0 until the 5 s sweep)", async () => {
    // An all-time budget one request (0.016) spends: the new secret is refused at once, and its info must agree.
    const old = String((await call(a, 'POST', '/key/generate', { key_alias: 'rotate-spent', max_budget: 0.01 })).body['key']);
    secrets.add(old);
    assert.equal((await chat(a, old)).status, 200);
    // At once, as an operator would: the request's spend-log row is not written yet.
    const regen = await call(a, 'POST', '/key/regenerate', { key: old });
    assert.equal(regen.status, 200, regen.text);
    const fresh = String(regen.body['key']);
    secrets.add(fresh);
    const [newToken, newId, oldId] = [sha(fresh), sha(fresh).slice(0, 16), sha(old).slice(0, 16)];
    const near = (x: unknown, want: number): boolean => Math.abs(Number(x) - want) < 1e-9;
    const shown = async (replica: number): Promise<{ info: unknown; listed: unknown; top: unknown; topOld: boolean }> => {
      const info = ((await call(replica, 'GET', `/key/info?key=${newToken}`)).body['info'] as Json)['spend'];
      const list = (await call(replica, 'GET', `/key/list?key_hash=${newToken}&return_full_object=true`)).body['keys'] as Json[];
      const top = (await call(replica, 'GET', '/spend/keys?limit=1000')).body as unknown as Json[];
      return {
        info,
        listed: list[0]?.['spend'],
        top: top.find((k) => k['key_id'] === newId)?.['spend'],
        topOld: top.some((k) => k['key_id'] === oldId),
      };
    };
    const asked = Date.now();
    const got = await shown(a);
    assert.ok(near(regen.body['spend'], 0.016), `the regenerate's own answer: ${String(regen.body['spend'])}`);
    assert.ok(near(got.info, 0.016), `/key/info: ${String(got.info)}`);
    assert.ok(near(got.listed, 0.016), `/key/list: ${String(got.listed)}`);
    assert.ok(near(got.top, 0.016), `/spend/keys: ${String(got.top)}`);
    assert.equal(got.topOld, false, '/spend/keys lists no past id as a key of its own');
    assert.equal(errorOf(await chat(a, fresh)).code, 'budget_exceeded', 'what the budget counts');
    // The other replica reads the same database.
    assert.ok(near((await shown(b)).info, 0.016));

    // A row that lands under the old id after the regenerate (a replica that still held it in its spend log)
    // counts for the key as soon as it is written, not when the sweep moves it.
    const db = await openDb({ url: `${PG}?schema=${schema}` });
    const lateRow = randomUUID();
    try {
      await db.query(
        `INSERT INTO spend_logs (lease_id, request_id, key_id, model, prompt_tokens, completion_tokens, cost, status, latency_ms, created_at)
         VALUES ($1, $1, $2, 'llama', 1, 1, 0.5, 200, 1, now())`,
        [lateRow, oldId],
      );
    } finally {
      await db.close();
    }
    const late = await shown(b);
    // The key's spend rows, asked by its new secret, include those still under its past id, shown as its own.
    const logs = (await call(b, 'GET', `/spend/logs?api_key=${newToken}`)).body as unknown as Json[];
    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const days = (await call(b, 'GET', `/spend/logs?api_key=${newToken}&start_date=${today}&end_date=${tomorrow}`))
      .body as unknown as Json[];
    assert.ok(Date.now() - asked < 4_000, 'asked before the sweep (5 s after the regenerate) could have moved the row');
    assert.ok(near(late.info, 0.516), `/key/info: ${String(late.info)}`);
    assert.ok(near(late.listed, 0.516), `/key/list: ${String(late.listed)}`);
    assert.ok(near(late.top, 0.516), `/spend/keys: ${String(late.top)}`);
    assert.equal(late.topOld, false);
    const row = logs.find((r) => r['request_id'] === lateRow);
    assert.ok(row !== undefined, `/spend/logs?api_key=<new secret> lists the row under the past id: ${JSON.stringify(logs)}`);
    assert.equal(row['key_id'], newId);
    assert.equal(row['api_key'], newToken);
    assert.ok(
      near(
        logs.reduce((sum, r) => sum + Number(r['spend']), 0),
        0.516,
      ),
      JSON.stringify(logs),
    );
    const day = days.find((d) => d['startTime'] === today);
    assert.ok(day !== undefined && near(day[newToken], 0.516) && near(day['spend'], 0.516), `summarized: ${JSON.stringify(days)}`);
  });

  test('a key is not regenerated back to a secret it had before (its spend would be carried twice)', async () => {
    const first = `sk-back-and-forth-${randomUUID()}`;
    secrets.add(first);
    assert.equal((await call(a, 'POST', '/key/generate', { key: first, key_alias: 'back-and-forth' })).status, 200);
    const regen = await call(a, 'POST', '/key/regenerate', { key: first });
    assert.equal(regen.status, 200, regen.text);
    const second = String(regen.body['key']);
    secrets.add(second);
    const back = await call(a, 'POST', '/key/regenerate', { key: second, new_key: first });
    assert.equal(back.status, 409, back.text);
    assert.equal(errorOf(back).param, 'new_key');
    assert.ok(!back.text.includes(first), 'the refusal never echoes the key');
    assert.equal((await call(a, 'POST', '/key/generate', { key: first })).status, 409, 'nor made again as another key');
    assert.equal((await chat(a, second)).status, 200, 'the key is unchanged');
  });

  test("a budget set on a key that has spent already counts this period's spend at once, as LiteLLM's would", async () => {
    const key = String((await call(a, 'POST', '/key/generate', { key_alias: 'budget-later' })).body['key']);
    secrets.add(key);
    // 0.016 spent (16 tokens at 0.001), without a budget: nothing counts it yet but the spend log.
    assert.equal((await chat(b, key)).status, 200);
    await within(
      3_000,
      async () => Number(((await call(a, 'GET', `/key/info?key=${sha(key)}`)).body['info'] as Json | undefined)?.['spend']) > 0,
      'the spend-log row',
    );
    const updated = await call(a, 'POST', '/key/update', { key: sha(key), max_budget: 0.01, budget_duration: '1d' });
    assert.equal(updated.status, 200, updated.text);
    // Spent past the new budget already: refused at once by the replica that made the change (its cache has
    // it when the call returns), and on the other as soon as the broadcast reaches it.
    const r = await chat(a, key);
    assert.equal(r.status, 429);
    assert.equal(errorOf(r).code, 'budget_exceeded');
    await within(2_000, async () => errorOf(await chat(b, key)).code === 'budget_exceeded', 'on the other replica');
    // Removed and set again in the same period: what was counted stays, and is not counted twice (0.016 < 0.02).
    assert.equal((await call(a, 'POST', '/key/update', { key: sha(key), max_budget: null })).status, 200);
    assert.equal((await call(a, 'POST', '/key/update', { key: sha(key), max_budget: 0.02 })).status, 200);
    assert.equal((await chat(a, key)).status, 200, 'the spend so far is under the new budget');
  });

  test('a team budget set through the API is enforced on both replicas', async () => {
    const team = await call(a, 'POST', '/team/new', {
      team_id: 'budgeted',
      team_alias: 'Budgeted',
      max_budget: 0.001,
      budget_duration: '30d',
    });
    assert.equal(team.status, 200);
    assert.equal(team.body['max_budget'], 0.001);
    const key = String((await call(b, 'POST', '/key/generate', { team_id: 'budgeted' })).body['key']);
    secrets.add(key);
    // The first request is admitted (nothing spent yet) and costs (11 + 5) × 0.001: past the budget.
    await within(1_000, async () => (await chat(a, key)).status === 200, 'team known on replica a');
    await within(2_000, async () => errorOf(await chat(b, key)).code === 'budget_exceeded', 'budget enforced on the other replica');
    const again = await chat(a, key);
    assert.equal(again.status, 429);
    assert.equal(errorOf(again).type, 'insufficient_quota');

    let info: Reply | undefined;
    await within(
      3_000,
      async () => {
        info = await call(b, 'GET', '/team/info?team_id=budgeted');
        return Number((info.body['team_info'] as Json)['spend']) > 0.001;
      },
      "the team's spend reaches the log",
    );
    assert.equal((info?.body['keys'] as Json[]).length, 1);
    assert.equal(info?.body['keys_total'], 1);

    // Raising the budget through the API opens the team again, on both replicas.
    assert.equal((await call(b, 'POST', '/team/update', { team_id: 'budgeted', max_budget: 100 })).status, 200);
    await within(1_000, async () => (await chat(a, key)).status === 200, 'raised budget applied');
  });

  test("concurrent /team/update calls on both replicas keep each other's fields: a block is never undone", async () => {
    for (let round = 0; round < 10; round++) {
      const teamId = `concurrent-${round}`;
      assert.equal((await call(a, 'POST', '/team/new', { team_id: teamId, max_budget: 10 })).status, 200);
      const key = String((await call(a, 'POST', '/key/generate', { team_id: teamId })).body['key']);
      secrets.add(key);
      const updates = await Promise.all([
        call(a, 'POST', '/team/update', { team_id: teamId, blocked: true }),
        call(b, 'POST', '/team/update', { team_id: teamId, max_budget: 50 }),
        call(a, 'POST', '/team/update', { team_id: teamId, rpm_limit: 100 }),
        call(b, 'POST', '/team/update', { team_id: teamId, tpm_limit: 200 }),
      ]);
      for (const u of updates) assert.equal(u.status, 200, u.text);
      const team = (await call(b, 'GET', `/team/info?team_id=${teamId}`)).body['team_info'] as Json;
      assert.deepEqual(
        { blocked: team['blocked'], max_budget: team['max_budget'], rpm_limit: team['rpm_limit'], tpm_limit: team['tpm_limit'] },
        { blocked: true, max_budget: 50, rpm_limit: 100, tpm_limit: 200 },
        `round ${round}`,
      );
      for (const port of [a, b])
        await within(1_000, async () => errorOf(await chat(port, key)).code === 'key_blocked', `round ${round}: team blocked on ${port}`);
    }
  });

  test("LiteLLM's users: /user/new makes a user and its key; the user's budget holds on both replicas; /user/delete takes its keys along", async () => {
    const made = await call(a, 'POST', '/user/new', {
      user_id: 'ada@example.com',
      user_email: 'ada@example.com',
      max_budget: 0.001,
      budget_duration: '30d',
      key_alias: 'ada-laptop',
    });
    assert.equal(made.status, 200, made.text);
    assert.equal(made.headers.get('x-tollgate-ignored-fields'), 'user_email');
    const key = String(made.body['key']);
    secrets.add(key);
    assert.match(key, /^sk-/);
    assert.equal(made.body['user_id'], 'ada@example.com');
    assert.equal(made.body['max_budget'], 0.001);
    assert.equal(made.body['key_alias'], 'ada-laptop');
    assert.equal((await call(a, 'POST', '/user/new', { user_id: 'ada@example.com' })).status, 409);

    // The first request is admitted and costs (11 + 5) × 0.001: past the user's budget, on either replica.
    await within(1_000, async () => (await chat(b, key)).status === 200, 'user known on replica b');
    await within(2_000, async () => errorOf(await chat(a, key)).code === 'budget_exceeded', "the user's budget on the other replica");
    // A second key of the same user shares the budget.
    const second = String((await call(b, 'POST', '/key/generate', { user_id: 'ada@example.com' })).body['key']);
    secrets.add(second);
    await within(1_000, async () => errorOf(await chat(b, second)).code === 'budget_exceeded', "the user's other key too");

    let info: Reply | undefined;
    await within(
      3_000,
      async () => {
        info = await call(b, 'GET', `/user/info?user_id=${encodeURIComponent('ada@example.com')}`);
        return Number((info.body['user_info'] as Json | undefined)?.['spend']) > 0.001;
      },
      "the user's spend reaches the log",
    );
    assert.equal((info?.body['keys'] as Json[]).length, 2);
    assert.equal(info?.body['keys_total'], 2);
    assert.equal((info?.body['user_info'] as Json)['source'], 'api');
    assert.ok(!info?.text.includes(key));

    // Raising the budget opens the user again; null leaves a field as it is.
    const raised = await call(a, 'POST', '/user/update', { user_id: 'ada@example.com', max_budget: 100, rpm_limit: null });
    assert.equal(raised.status, 200);
    assert.equal(raised.body['budget_duration'], '30d');
    await within(1_000, async () => (await chat(b, key)).status === 200, 'raised budget applied');

    // Without a key; a key field then is refused; and bad input names its field.
    const bare = await call(a, 'POST', '/user/new', { auto_create_key: false, max_budget: '5' });
    assert.equal(bare.status, 200);
    assert.equal(bare.body['key'], undefined);
    assert.match(String(bare.body['user_id']), /^[0-9a-f-]{36}$/, 'a generated user id');
    assert.equal(errorOf(await call(a, 'POST', '/user/new', { auto_create_key: false, key_alias: 'x' })).param, 'key_alias');
    // LiteLLM's user-level models would restrict every key of the user: tollgate restricts per key or team.
    assert.equal(errorOf(await call(a, 'POST', '/user/new', { models: ['llama'] })).param, 'models');
    assert.equal(errorOf(await call(a, 'POST', '/user/new', { user_role: 'proxy_admin' })).param, 'user_role');
    assert.equal((await call(a, 'POST', '/user/update', { user_id: 'nobody-here' })).status, 404);
    // A taken key alias leaves no user behind, and a key made before for that user_id stays.
    const earlier = String((await call(a, 'POST', '/key/generate', { user_id: 'bob' })).body['key']);
    secrets.add(earlier);
    const clash = await call(a, 'POST', '/user/new', { user_id: 'bob', key_alias: 'ada-laptop' });
    assert.equal(clash.status, 400);
    assert.equal((await call(a, 'GET', '/user/info?user_id=bob')).status, 404);
    assert.equal((await chat(b, earlier)).status, 200, "bob's earlier key still works");

    // Deleting the user deletes its keys, on both replicas at once.
    const deleted = await call(b, 'POST', '/user/delete', { user_ids: ['ada@example.com'] });
    assert.equal(deleted.status, 200);
    assert.deepEqual((deleted.body['deleted_keys'] as string[]).sort(), [sha(key), sha(second)].sort());
    for (const k of [key, second])
      for (const port of [a, b]) await within(1_000, async () => (await chat(port, k)).status === 401, `key gone on ${port}`);
    assert.equal((await call(a, 'GET', '/user/info?user_id=ada%40example.com')).status, 404);
    assert.equal((await call(a, 'POST', '/user/delete', { user_ids: ['ada@example.com'] })).status, 404);
  });

  test('/user/info and /team/info list the newest 100 keys and count them all', async () => {
    assert.equal((await call(a, 'POST', '/user/new', { user_id: 'many-keys', auto_create_key: false })).status, 200);
    assert.equal((await call(a, 'POST', '/team/new', { team_id: 'many-keys-team' })).status, 200);
    let newest = '';
    for (let i = 0; i < 101; i++) {
      const made = await call(a, 'POST', '/key/generate', { user_id: 'many-keys', team_id: 'many-keys-team', key_alias: `many-${i}` });
      assert.equal(made.status, 200);
      secrets.add(String(made.body['key']));
      newest = String(made.body['token']);
    }
    for (const path of ['/user/info?user_id=many-keys', '/team/info?team_id=many-keys-team']) {
      const info = await call(b, 'GET', path);
      assert.equal(info.status, 200);
      const keys = info.body['keys'] as Json[];
      assert.equal(keys.length, 100, path);
      assert.equal(info.body['keys_total'], 101, path);
      assert.ok(
        keys.some((k) => k['token'] === newest),
        `${path}: the newest key is listed`,
      );
    }
  });

  test('a model added on one replica is served by the other; its api_key is never shown', async () => {
    const added = await call(a, 'POST', '/model/new', {
      model_name: 'added',
      litellm_params: { model: 'openai/added-backend', api_base: extra.apiBase, api_key: BACKEND_KEY },
      model_info: { id: 'added-1', input_cost_per_token: 0.000001 },
    });
    assert.equal(added.status, 200, added.text);
    assert.ok(!added.text.includes(BACKEND_KEY));
    const key = String((await call(a, 'POST', '/key/generate', {})).body['key']);
    secrets.add(key);
    await within(1_000, async () => (await chat(b, key, 'added')).status === 200, 'added model served by the other replica');
    assert.equal(extra.received.at(-1)?.headers['authorization'], `Bearer ${BACKEND_KEY}`);

    const info = await call(b, 'GET', '/model/info');
    assert.ok(!info.text.includes(BACKEND_KEY));
    const models = info.body['data'] as Json[];
    const addedView = models.find((m) => (m['model_info'] as Json)['id'] === 'added-1');
    assert.equal((addedView?.['model_info'] as Json)['db_model'], true);
    assert.equal((addedView?.['model_info'] as Json)['api_key_set'], true);
    assert.ok(models.some((m) => (m['model_info'] as Json)['id'] === 'llama-main'));

    // The stored form is sealed: the database does not hold the backend key either.
    const db = await openDb({ url: `${PG}?schema=${schema}` });
    try {
      const rows = await db.query<{ litellm_params: Json }>('SELECT litellm_params FROM models');
      assert.ok(!JSON.stringify(rows).includes(BACKEND_KEY));
    } finally {
      await db.close();
    }

    assert.equal((await call(b, 'POST', '/model/delete', { id: 'added-1' })).status, 200);
    await within(
      1_000,
      async () => errorOf(await chat(a, key, 'added')).code === 'model_not_found',
      'deleted model gone on the other replica',
    );
    const configModel = await call(a, 'POST', '/model/delete', { id: 'llama-main' });
    assert.equal(configModel.status, 409);
    assert.equal(errorOf(configModel).param, 'id');
  });

  test('LiteLLM clients: null on generate is "not given", the spend rows name keys by their token, aliases are unique', async () => {
    const gen = await call(a, 'POST', '/key/generate', {
      key_alias: 'twin',
      models: null,
      metadata: null,
      max_budget: null,
      duration: null,
    });
    assert.equal(gen.status, 200, gen.text);
    const twin = String(gen.body['key']);
    secrets.add(twin);
    const upd = await call(a, 'POST', '/key/update', { key: twin, rpm_limit: 7 });
    assert.equal(upd.body['rpm_limit'], 7);
    assert.equal(upd.body['key_alias'], 'twin', 'a field left out keeps its value');
    // Aliases are unique, as LiteLLM makes them: on generate, update and regenerate alike (exact, case and all).
    const again = await call(a, 'POST', '/key/generate', { key_alias: 'twin' });
    assert.equal(again.status, 400);
    assert.equal(errorOf(again).param, 'key_alias');
    const other = String((await call(a, 'POST', '/key/generate', { key_alias: 'Twin' })).body['key']);
    secrets.add(other);
    const renamed = await call(b, 'POST', '/key/update', { key: other, key_alias: 'twin' });
    assert.equal(renamed.status, 400);
    assert.equal(errorOf(renamed).param, 'key_alias');
    assert.equal((await call(b, 'POST', '/key/regenerate', { key: other, key_alias: 'twin' })).status, 400);
    assert.equal((await call(b, 'POST', '/key/update', { key: twin, key_alias: 'twin', rpm_limit: 8 })).status, 200, 'its own alias');
    assert.equal((await chat(b, other)).status, 200, 'a refused rename or regenerate changed nothing');
    // Two keys asking for one new alias at once: one gets it.
    const racers = await Promise.all([a, b, a, b].map((port) => call(port, 'POST', '/key/generate', { key_alias: 'raced' })));
    assert.deepEqual(racers.map((r) => r.status).sort(), [200, 400, 400, 400]);
    for (const r of racers) if (r.status === 200) secrets.add(String(r.body['key']));
    // Twins from before (a database LiteLLM filled): deleting by their alias is refused as ambiguous.
    const db = await openDb({ url: `${PG}?schema=${schema}` });
    try {
      await db.query("UPDATE keys SET key_alias = 'twin' WHERE key_hash = $1", [sha(other)]);
    } finally {
      await db.close();
    }
    const ambiguous = await call(a, 'POST', '/key/delete', { keys: null, key_aliases: ['twin'] });
    assert.equal(ambiguous.status, 400);
    assert.equal(errorOf(ambiguous).param, 'key_aliases[0]');
    assert.equal((await chat(b, twin)).status, 200);
    await within(
      3_000,
      async () => {
        const rows = (await call(a, 'GET', `/spend/logs?api_key=${sha(twin)}`)).body as unknown as Json[];
        return Array.isArray(rows) && rows.length === 1 && rows[0]?.['api_key'] === sha(twin);
      },
      'the spend row names the key by its token, as /key/list does',
    );
    const byId = (await call(a, 'GET', `/spend/logs?api_key=${sha(twin).slice(0, 16)}`)).body as unknown as Json[];
    assert.equal(byId.length, 1, 'the key id (x-tollgate-key) works as a filter too');
    // A list cut at its limit says so, in LiteLLM's header; a whole one does not.
    const whole = await call(a, 'GET', `/spend/logs?api_key=${sha(twin)}&limit=1`);
    assert.equal((whole.body as unknown as Json[]).length, 1);
    assert.equal(whole.headers.get('x-litellm-spend-logs-truncated'), null, 'one row at limit=1: all of them');
    assert.equal((await chat(b, twin)).status, 200);
    await within(
      3_000,
      async () => {
        const cut = await call(a, 'GET', `/spend/logs?api_key=${sha(twin)}&limit=1`);
        return (cut.body as unknown as Json[]).length === 1 && cut.headers.get('x-litellm-spend-logs-truncated') === 'true';
      },
      'two rows at limit=1: the newest, truncated',
    );
  });

  test('one chosen key value asked for at once, by generate or regenerate: one call makes it, the others are 409, never 503', async () => {
    for (let round = 0; round < 5; round++) {
      const value = `sk-raced-${randomUUID().replaceAll('-', '')}`;
      secrets.add(value);
      const made = await Promise.all([a, b, a, b, a, b, a, b].map((port) => call(port, 'POST', '/key/generate', { key: value })));
      assert.deepEqual(
        made.map((r) => r.status).sort(),
        [200, 409, 409, 409, 409, 409, 409, 409],
        `round ${round}: ${made.map((r) => errorOf(r).code ?? r.status).join(' ')}`,
      );
      for (const r of made.filter((m) => m.status === 409)) {
        assert.equal(errorOf(r).param, 'key');
        assert.ok(!r.text.includes(value), 'a refusal never echoes the key');
      }

      const renewed = `sk-raced-new-${randomUUID().replaceAll('-', '')}`;
      secrets.add(renewed);
      const olds = await Promise.all([a, b].map(async (port) => String((await call(port, 'POST', '/key/generate', {})).body['key'])));
      for (const k of olds) secrets.add(k);
      const regenerated = await Promise.all(
        olds.map((k, i) => call(i === 0 ? a : b, 'POST', '/key/regenerate', { key: k, new_key: renewed })),
      );
      assert.deepEqual(
        regenerated.map((r) => r.status).sort(),
        [200, 409],
        `round ${round}: ${regenerated.map((r) => errorOf(r).code ?? r.status).join(' ')}`,
      );
      const refused = regenerated.find((r) => r.status === 409);
      assert.equal(refused === undefined ? undefined : errorOf(refused).param, 'new_key');
      assert.ok(!(refused?.text ?? '').includes(renewed), 'a refusal never echoes the key');
    }
  });

  test('LiteLLM migration: keys keep their values, regenerate by token in the path, LiteLLM-only fields ignored or refused', async () => {
    // An operator moving a LiteLLM key over keeps its value.
    const kept = `sk-${randomUUID().replaceAll('-', '')}`;
    secrets.add(kept);
    const gen = await call(a, 'POST', '/key/generate', { key: kept, key_alias: 'moved', tags: ['prod'], soft_budget: 5 });
    assert.equal(gen.status, 200, gen.text);
    assert.equal(gen.body['key'], kept);
    assert.equal(gen.headers.get('x-tollgate-ignored-fields'), 'tags, soft_budget');
    await within(1_000, async () => (await chat(b, kept)).status === 200, 'the kept key works on the other replica');
    const again = await call(a, 'POST', '/key/generate', { key: kept });
    assert.equal(again.status, 409);
    assert.equal(errorOf(again).param, 'key');
    assert.equal((await call(a, 'POST', '/key/generate', { key: 'sk-short' })).status, 400);
    assert.equal((await call(a, 'POST', '/key/generate', { key: CONFIG_KEY })).status, 409, "a config key's value is taken too");
    // Restrictions tollgate does not enforce are refused, not dropped; so is a narrower key type.
    for (const [field, value] of [
      ['allowed_routes', ['/v1/embeddings']],
      ['model_max_budget', { llama: 1 }],
      ['guardrails', ['pii']],
      ['key_type', 'read_only'],
    ] as const) {
      const refused = await call(a, 'POST', '/key/generate', { [field]: value });
      assert.equal(refused.status, 400, `${field}: ${refused.text}`);
      assert.equal(errorOf(refused).param, field);
    }
    // LiteLLM's empty defaults (a row exported from it carries them) restrict nothing: accepted, and named.
    const exported = await call(a, 'POST', '/key/generate', {
      key_alias: 'exported',
      aliases: {},
      config: {},
      permissions: {},
      model_max_budget: {},
      allowed_routes: [],
      spend: 0,
      max_budget: '',
    });
    assert.equal(exported.status, 200, exported.text);
    assert.equal(exported.body['max_budget'], null);
    assert.equal(
      exported.headers.get('x-tollgate-ignored-fields'),
      'allowed_routes, model_max_budget, permissions, aliases, config, spend',
    );
    assert.equal((await call(a, 'POST', '/team/new', { team_alias: 'x', organization_id: 'org-1' })).status, 400);
    // The same restrictions inside metadata, where LiteLLM keeps and enforces them, are refused as well.
    for (const [route, body] of [
      ['/key/generate', { metadata: { model_rpm_limit: { llama: 1 } } }],
      ['/key/update', { key: kept, metadata: { model_rpm_limit: { llama: 1 } } }],
      ['/team/new', { metadata: { model_rpm_limit: { llama: 1 } } }],
    ] as const) {
      const refused = await call(a, 'POST', route, body);
      assert.equal(refused.status, 400, `${route}: ${refused.text}`);
      assert.equal(errorOf(refused).param, 'metadata.model_rpm_limit');
    }
    const team = await call(a, 'POST', '/team/new', { team_alias: 'movers', members_with_roles: [{ role: 'admin', user_id: 'u1' }] });
    assert.equal(team.status, 200, team.text);
    assert.equal(team.headers.get('x-tollgate-ignored-fields'), 'members_with_roles');
    // LiteLLM's POST /key/{key}/regenerate, with a chosen new value: by token, never by the key itself.
    const chosen = `sk-${randomUUID().replaceAll('-', '')}`;
    secrets.add(chosen);
    const byKey = await call(a, 'POST', `/key/${kept}/regenerate`, {});
    assert.equal(byKey.status, 400);
    assert.match(errorOf(byKey).message ?? '', /token/);
    const regen = await call(a, 'POST', `/key/${sha(kept)}/regenerate`, { new_key: chosen });
    assert.equal(regen.status, 200, regen.text);
    assert.equal(regen.body['key'], chosen);
    assert.equal(regen.body['token_id'], sha(chosen));
    assert.equal(regen.body['key_alias'], 'moved');
    // LiteLLM's list and model filters, and the UI's list parameters.
    const listed = await call(a, 'GET', `/key/list?key_hash=${sha(chosen)}&include_team_keys=true&sort_by=created_at&sort_order=desc`);
    assert.equal(listed.status, 200, listed.text);
    assert.deepEqual(listed.body['keys'], [sha(chosen)]);
    const one = await call(a, 'GET', '/model/info?litellm_model_id=llama-main');
    assert.deepEqual(
      (one.body['data'] as Json[]).map((m) => (m['model_info'] as Json)['id']),
      ['llama-main'],
    );
    await within(1_000, async () => errorOf(await chat(b, kept)).code === 'invalid_api_key', 'the old value is refused');
    assert.equal((await chat(a, chosen)).status, 200);
    // A new value that is another key's (in the database: the transaction rolls back; in the config), the
    // key's own, or the master key's, changes nothing.
    const otherKey = String((await call(a, 'POST', '/key/generate', { key_alias: 'bystander' })).body['key']);
    secrets.add(otherKey);
    for (const value of [otherKey, CONFIG_KEY, chosen, MASTER]) {
      const taken = await call(a, 'POST', '/key/regenerate', { key: chosen, new_key: value });
      assert.equal(taken.status, 409, taken.text);
      assert.equal(errorOf(taken).param, 'new_key');
    }
    assert.equal((await chat(a, chosen)).status, 200, 'the key is untouched');
    assert.equal((await chat(a, otherKey)).status, 200, 'so is the other');
    // The master key as a chosen value: refused, and it still opens the admin API.
    const master = await call(a, 'POST', '/key/generate', { key: MASTER });
    assert.equal(master.status, 409);
    assert.equal((await call(a, 'GET', '/key/list')).status, 200);
    // A budget period past what a date holds is refused, not stored to fail every read after.
    const huge = await call(a, 'POST', '/key/generate', { budget_duration: '20000000w' });
    assert.equal(huge.status, 400, huge.text);
    assert.equal(errorOf(huge).param, 'budget_duration');
  });

  test("spend as LiteLLM reports it: a key or team with a budget_duration shows its current period's, and when it resets", async () => {
    const periodic = String((await call(a, 'POST', '/key/generate', { max_budget: 10, budget_duration: '1d' })).body['key']);
    const lifetime = String((await call(a, 'POST', '/key/generate', { max_budget: 10 })).body['key']);
    secrets.add(periodic);
    secrets.add(lifetime);
    const team = String((await call(a, 'POST', '/team/new', { max_budget: 10, budget_duration: '1d' })).body['team_id']);
    const day = 86_400_000;
    const db = await openDb({ url: `${PG}?schema=${schema}` });
    try {
      // The keys' spend counts from their records' creation: made as if four days ago, for rows that old.
      await db.query("UPDATE keys SET spend_from = spend_from - interval '4 days' WHERE key_hash = ANY($1::text[])", [
        [sha(periodic), sha(lifetime)],
      ]);
      for (const k of [periodic, lifetime]) {
        for (const [cost, at] of [
          [5, Date.now() - 3 * day],
          [1, Date.now()],
        ] as const) {
          await db.query(
            `INSERT INTO spend_logs (lease_id, request_id, key_id, team_id, model, prompt_tokens, completion_tokens, cost, status, latency_ms, created_at)
             VALUES ($1, $1, $2, $3, 'llama', 1, 1, $4, 200, 1, $5)`,
            [randomUUID(), sha(k).slice(0, 16), team, cost, new Date(at).toISOString()],
          );
        }
      }
    } finally {
      await db.close();
    }
    const info = async (k: string): Promise<Json> => (await call(a, 'GET', `/key/info?key=${sha(k)}`)).body['info'] as Json;
    assert.equal((await info(periodic))['spend'], 1, "this day's spend only");
    const reset = Date.parse(String((await info(periodic))['budget_reset_at']));
    assert.ok(reset > Date.now() && reset <= Date.now() + day && reset % day === 0, `resets at the next day boundary: ${reset}`);
    assert.equal((await info(lifetime))['spend'], 6, 'no budget_duration: all of it');
    assert.equal((await info(lifetime))['budget_reset_at'], null);
    const teamInfo = (await call(a, 'GET', `/team/info?team_id=${team}`)).body;
    assert.equal((teamInfo['team_info'] as Json)['spend'], 2, "the team's spend this day: one row of each key");
  });

  test('a signed context without the admin claim never opens an admin endpoint', async () => {
    const signer = new ContextSigner(contextSecret(undefined, MASTER) as Buffer);
    const claims: ContextClaims = { r: 'forged-admin', p: 'POST /key/generate', b: bodyDigest('{}'), x: Date.now() + 20_000 };
    const ctx = signer.sign(claims);
    const res = await fetch(`http://127.0.0.1:${a}/key/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tollgate-context': ctx },
      body: '{}',
    });
    assert.equal(res.status, 403);
    assert.ok(!(await res.text()).includes('"key":"sk-'));

    // Behind Envoy, a key reads its own info with the context Check signed; not once it is blocked.
    const own = String((await call(a, 'POST', '/key/generate', { key_alias: 'context-reader' })).body['key']);
    secrets.add(own);
    const ownInfo = (): Promise<Response> =>
      fetch(`http://127.0.0.1:${b}/key/info`, {
        headers: {
          'x-tollgate-context': signer.sign({ r: 'own-info', p: 'GET /key/info', k: sha(own).slice(0, 16), x: Date.now() + 20_000 }),
        },
      });
    await within(2_000, async () => (await ownInfo()).status === 200, 'the context reads its own key');
    assert.equal((await call(a, 'POST', '/key/block', { key: own })).status, 200);
    await within(2_000, async () => (await ownInfo()).status === 403, 'a key blocked since Check signed reads nothing');
  });

  test('/model/new refuses a wildcard alias, as the config file does', async () => {
    const r = await call(a, 'POST', '/model/new', {
      model_name: '*',
      litellm_params: { model: `openai/${BACKEND}`, api_base: vllm.apiBase },
    });
    assert.equal(r.status, 400);
    assert.equal(errorOf(r).param, 'model_name');
    assert.match(String(errorOf(r).message), /wildcard/);
  });

  test('/model/new is refused for a host outside allowed_api_bases (SSRF guard)', async () => {
    for (const apiBase of ['http://169.254.169.254/v1', 'http://internal.example:8000/v1', 'http://user:pw@127.0.0.1:9/v1']) {
      const r = await call(a, 'POST', '/model/new', { model_name: 'evil', litellm_params: { model: 'openai/x', api_base: apiBase } });
      assert.equal(r.status, 400, apiBase);
      assert.equal(errorOf(r).param, 'litellm_params.api_base');
      assert.match(String(errorOf(r).message), /allowed_api_bases/);
    }
  });

  test('keys and teams declared in the config are read-only through the API (409)', async () => {
    for (const [route, body] of [
      ['/key/block', { key: CONFIG_KEY }],
      ['/key/update', { key: sha(CONFIG_KEY), rpm_limit: 1 }],
      ['/key/delete', { keys: [CONFIG_KEY] }],
      ['/key/regenerate', { key: CONFIG_KEY }],
      ['/team/update', { team_id: 'config-team', max_budget: 1 }],
    ] as const) {
      const r = await call(a, 'POST', route, body);
      assert.equal(r.status, 409, route);
      assert.equal(errorOf(r).code, 'conflict');
      assert.match(String(errorOf(r).message), /config file/);
    }
    const info = await call(a, 'GET', `/key/info?key=${encodeURIComponent(CONFIG_KEY)}`);
    assert.equal((info.body['info'] as Json)['source'], 'config');
  });

  test("config keys are listed beside the database's (/key/list, /team/info, /spend/keys), marked source: config", async () => {
    const token = sha(CONFIG_KEY);
    const byToken = await call(a, 'GET', `/key/list?key_hash=${token}&return_full_object=true`);
    assert.equal(byToken.status, 200, byToken.text);
    assert.equal(byToken.body['total_count'], 1);
    const [listed] = byToken.body['keys'] as Json[];
    assert.equal(listed?.['token'], token);
    assert.equal(listed?.['key_alias'], 'from-config');
    assert.equal(listed?.['team_id'], 'config-team');
    assert.equal(listed?.['source'], 'config');
    assert.deepEqual((await call(b, 'GET', '/key/list?key_alias=from-config')).body['keys'], [token]);

    // Pages hold the config keys first, then the database's newest first: every key once, in one order.
    const older = String((await call(a, 'POST', '/key/generate', { team_id: 'config-team' })).body['token']);
    const newer = String((await call(b, 'POST', '/key/generate', { team_id: 'config-team' })).body['token']);
    // A database row with the config key's value (made before the config declared it) is the config key.
    const db = await openDb({ url: `${PG}?schema=${schema}` });
    try {
      await db.query("INSERT INTO keys (key_hash, key_id, team_id) VALUES ($1, $2, 'config-team')", [token, token.slice(0, 16)]);
      const pages: unknown[] = [];
      for (const page of [1, 2, 3, 4]) {
        const r = await call(a, 'GET', `/key/list?team_id=config-team&size=1&page=${page}`);
        assert.equal(r.body['total_count'], 3);
        assert.equal(r.body['total_pages'], 3);
        pages.push(...(r.body['keys'] as unknown[]));
      }
      assert.deepEqual(pages, [token, newer, older]);
      const team = await call(b, 'GET', '/team/info?team_id=config-team');
      assert.equal(team.body['keys_total'], 3);
      const keys = team.body['keys'] as Json[];
      assert.deepEqual(
        keys.map((k) => [k['token'], k['source']]),
        [
          [token, 'config'],
          [newer, undefined],
          [older, undefined],
        ],
      );
    } finally {
      await db.query('DELETE FROM keys WHERE key_hash = $1', [token]);
      await db.close();
    }

    assert.equal((await chat(a, CONFIG_KEY)).status, 200);
    await within(
      3_000,
      async () => {
        const spent = (await call(b, 'GET', '/spend/keys?limit=1000')).body as unknown as Json[];
        const row = spent.find((k) => k['key_id'] === token.slice(0, 16));
        return row?.['token'] === token && row['key_alias'] === 'from-config' && row['source'] === 'config';
      },
      "the config key's spend row names it",
    );
    const deleted = await call(a, 'POST', '/key/delete', { key_aliases: ['from-config'] });
    assert.equal(deleted.status, 409, deleted.text);
    assert.equal(errorOf(deleted).param, 'key_aliases[0]');
  });

  test('/key/update with null clears the field on both replicas (LiteLLM applies the fields set, exclude_unset)', async () => {
    await call(a, 'POST', '/team/new', { team_id: 'null-clears' });
    const made = await call(a, 'POST', '/key/generate', {
      key_alias: 'to-clear',
      max_budget: 5,
      budget_duration: '1d',
      user_id: 'clear-me',
      team_id: 'null-clears',
      rpm_limit: 1,
      tpm_limit: 100000,
      max_parallel_requests: 3,
      models: ['llama'],
      metadata: { owner: 'x' },
    });
    assert.equal(made.status, 200, made.text);
    const key = String(made.body['key']);
    secrets.add(key);
    // rpm_limit 1: the second request within the minute is refused, on either replica.
    assert.equal((await chat(b, key)).status, 200);
    assert.equal(errorOf(await chat(a, key)).code, 'rate_limit_exceeded');

    const cleared = await call(a, 'POST', '/key/update', { key, max_budget: null, key_alias: null, user_id: null });
    assert.equal(cleared.status, 200, cleared.text);
    assert.equal(cleared.body['max_budget'], null);
    assert.equal(cleared.body['key_alias'], null);
    assert.equal(cleared.body['user_id'], null);
    assert.equal(cleared.body['rpm_limit'], 1, 'a field left out keeps its value');
    assert.equal(cleared.body['team_id'], 'null-clears');

    const rpm = await call(b, 'POST', '/key/update', {
      key: sha(key),
      rpm_limit: null,
      tpm_limit: null,
      max_parallel_requests: null,
      budget_duration: null,
      team_id: null,
      models: null,
      metadata: null,
    });
    assert.equal(rpm.status, 200, rpm.text);
    for (const f of ['rpm_limit', 'tpm_limit', 'max_parallel_requests', 'budget_duration', 'team_id']) assert.equal(rpm.body[f], null, f);
    assert.deepEqual(rpm.body['models'], [], 'models: null is the empty list, every model (as in LiteLLM)');
    assert.deepEqual(rpm.body['metadata'], {});
    // Stored, not only answered; and every replica's cache enforces it: no rpm limit any more.
    const info = (await call(a, 'GET', `/key/info?key=${sha(key)}`)).body['info'] as Json;
    for (const f of ['max_budget', 'key_alias', 'user_id', 'rpm_limit', 'team_id']) assert.equal(info[f], null, f);
    for (const port of [a, b]) await within(1_000, async () => (await chat(port, key)).status === 200, `rpm limit gone on ${port}`);
    for (const port of [a, b]) assert.equal((await chat(port, key)).status, 200);

    // /team/update: null clears as well.
    await call(a, 'POST', '/team/update', { team_id: 'null-clears', team_alias: 'T', max_budget: 9, rpm_limit: 10 });
    const team = await call(a, 'POST', '/team/update', { team_id: 'null-clears', team_alias: null, max_budget: null });
    assert.equal(team.status, 200, team.text);
    assert.equal(team.body['team_alias'], null);
    assert.equal(team.body['max_budget'], null);
    assert.equal(team.body['rpm_limit'], 10);
    // /user/update: as LiteLLM's, null clears max_budget and leaves the other fields.
    const user = await call(a, 'POST', '/user/new', { user_id: 'null-user', max_budget: 3, rpm_limit: 4, auto_create_key: false });
    assert.equal(user.status, 200, user.text);
    const u = await call(a, 'POST', '/user/update', { user_id: 'null-user', max_budget: null, rpm_limit: null });
    assert.equal(u.status, 200, u.text);
    assert.equal(u.body['max_budget'], null);
    assert.equal(u.body['rpm_limit'], 4);
  });

  test('a key deleted and generated again with the same value starts at zero spend; the old spend rows stay', async () => {
    const value = `sk-chosen-${randomUUID().replaceAll('-', '')}`;
    secrets.add(value);
    const first = await call(a, 'POST', '/key/generate', { key: value, max_budget: 0.001 });
    assert.equal(first.status, 200, first.text);
    // Admitted with nothing spent, and costs (11 + 5) × 0.001: past the budget after it.
    assert.equal((await chat(a, value)).status, 200);
    await within(2_000, async () => errorOf(await chat(b, value)).code === 'budget_exceeded', 'the first budget is spent');
    await within(
      3_000,
      async () => Number(((await call(a, 'GET', `/key/info?key=${sha(value)}`)).body['info'] as Json)['spend']) > 0.001,
      'the spend reaches the log',
    );
    assert.equal((await call(b, 'POST', '/key/delete', { keys: [value] })).status, 200);

    const again = await call(b, 'POST', '/key/generate', { key: value, max_budget: 0.05 });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body['spend'], 0);
    const info = (await call(a, 'GET', `/key/info?key=${sha(value)}`)).body['info'] as Json;
    assert.equal(info['spend'], 0, 'the new record has spent nothing');
    for (const port of [a, b]) await within(1_000, async () => (await chat(port, value)).status === 200, `admitted on ${port}`);
    // The old record's rows are still in the spend log (an audit record), under the same key id.
    await within(
      3_000,
      async () => ((await call(a, 'GET', `/spend/logs?api_key=${sha(value).slice(0, 16)}`)).body as unknown as Json[]).length >= 3,
      'every row, old and new, is in the log',
    );
    await within(
      3_000,
      async () => {
        const spend = Number(((await call(a, 'GET', `/key/info?key=${sha(value)}`)).body['info'] as Json)['spend']);
        return spend > 0 && spend < 0.05;
      },
      "the new record's spend is its own requests' only",
    );
  });

  test("all-team-models is the key's team models; all-proxy-models every model; without a team it is refused", async () => {
    await call(a, 'POST', '/team/new', { team_id: 'llama-team', models: ['llama'] });
    await call(a, 'POST', '/team/new', { team_id: 'other-team', models: ['not-llama'] });
    const teamKey = await call(a, 'POST', '/key/generate', { team_id: 'llama-team', models: ['all-team-models'] });
    assert.equal(teamKey.status, 200, teamKey.text);
    const tk = String(teamKey.body['key']);
    secrets.add(tk);
    for (const port of [a, b]) {
      await within(1_000, async () => (await chat(port, tk)).status === 200, `chat on ${port}`);
      const models = await call(port, 'GET', '/v1/models', undefined, tk);
      assert.deepEqual(
        (models.body['data'] as Json[]).map((m) => m['id']),
        ['llama'],
      );
    }
    const narrow = String((await call(a, 'POST', '/key/generate', { team_id: 'other-team', models: ['all-team-models'] })).body['key']);
    secrets.add(narrow);
    assert.equal(errorOf(await chat(a, narrow)).code, 'model_not_allowed', "a model outside the team's list");
    const proxy = String((await call(a, 'POST', '/key/generate', { models: ['all-proxy-models'] })).body['key']);
    secrets.add(proxy);
    await within(1_000, async () => (await chat(b, proxy)).status === 200, 'all-proxy-models on the other replica');
    assert.ok(((await call(b, 'GET', '/v1/models', undefined, proxy)).body['data'] as Json[]).some((m) => m['id'] === 'llama'));

    const teamless = await call(a, 'POST', '/key/generate', { models: ['all-team-models'] });
    assert.equal(teamless.status, 400, teamless.text);
    assert.equal(errorOf(teamless).param, 'models');
    assert.match(String(errorOf(teamless).message), /team_id/);
    const dropTeam = await call(a, 'POST', '/key/update', { key: tk, team_id: null });
    assert.equal(dropTeam.status, 400, dropTeam.text);
    assert.equal(errorOf(dropTeam).param, 'team_id');
    assert.equal((await chat(a, tk)).status, 200, 'the refused update changed nothing');
  });

  test('a field name no header may hold is named escaped, and the write that succeeded is answered 200', async () => {
    const added = await call(a, 'POST', '/model/new', {
      model_name: 'odd-fields',
      litellm_params: { model: `openai/${BACKEND}`, api_base: vllm.apiBase },
      model_info: { id: 'odd-1', 'base_model\r\nx-evil: 1': 1, 'prix_€': 2 },
    });
    assert.equal(added.status, 200, added.text);
    const named = added.headers.get('x-tollgate-ignored-fields') ?? '';
    assert.equal(named, 'model_info.base_model\\u000d\\u000ax-evil: 1, model_info.prix_\\u20ac');
    assert.equal(added.headers.get('x-evil'), null);
    assert.equal((await call(a, 'POST', '/model/delete', { id: 'odd-1' })).status, 200);
  });

  test("/model/new takes LiteLLM's litellm_params and model_info keys as the config file does", async () => {
    const added = await call(a, 'POST', '/model/new', {
      model_name: 'compat-model',
      litellm_params: { model: `openai/${BACKEND}`, api_base: vllm.apiBase, custom_llm_provider: 'openai' },
      model_info: { id: 'compat-1', supports_function_calling: true },
    });
    assert.equal(added.status, 200, added.text);
    // model_info is free-form in LiteLLM (supports_* describe the model): taken without a word, as in a config file.
    assert.equal(added.headers.get('x-tollgate-ignored-fields'), 'litellm_params.custom_llm_provider');
    await within(2_000, async () => (await chat(b, CONFIG_KEY, 'compat-model')).status === 200, 'served by the other replica');
    // A key neither tollgate nor LiteLLM knows is still an error naming it.
    const typo = await call(a, 'POST', '/model/new', {
      model_name: 'compat-typo',
      litellm_params: { model: `openai/${BACKEND}`, api_base: vllm.apiBase, custom_llm_providr: 'openai' },
    });
    assert.equal(typo.status, 400);
    assert.equal(errorOf(typo).param, 'litellm_params.custom_llm_providr');
    assert.equal((await call(a, 'POST', '/model/delete', { id: 'compat-1' })).status, 200);
  });

  test('text the database cannot store, and values out of its range, are a 400 naming the field, never a 503', async () => {
    const cases: [string, string, unknown, string][] = [
      ['POST', '/key/generate', { metadata: { note: 'a\u0000b' } }, 'metadata.note'],
      ['POST', '/key/generate', { metadata: { ['n\u0000']: 1 } }, 'metadata.n\\u0000'],
      ['POST', '/key/generate', { key_alias: 'x\u0000' }, 'key_alias'],
      ['POST', '/key/generate', { metadata: { list: ['ok', '\ud800'] } }, 'metadata.list[1]'],
      ['POST', '/team/new', { team_alias: 'a\u0000b' }, 'team_alias'],
      ['POST', '/user/new', { user_id: 'u', metadata: { x: '\u0000' } }, 'metadata.x'],
      ['GET', '/key/list?key_alias=a%00b', undefined, 'key_alias'],
      // Nested past the stack of a recursive walk (12 KB): named, not a 503 from a stack overflow.
      ['POST', '/key/generate', `{"metadata":{"a":${'['.repeat(3000)}${']'.repeat(3000)}}}`, 'metadata'],
      ['POST', '/team/new', `{"team_alias":"deep","metadata":${'{"a":'.repeat(150)}1${'}'.repeat(150)}}`, 'metadata'],
    ];
    for (const [method, route, body, field] of cases) {
      const r = await call(a, method, route, body);
      assert.equal(r.status, 400, `${method} ${route} ${JSON.stringify(body)}: ${r.text}`);
      assert.equal(errorOf(r).code, 'invalid_body');
      assert.equal(errorOf(r).param, field, r.text);
      assert.ok(String(errorOf(r).message).startsWith(field), String(errorOf(r).message));
    }
    // A date PostgreSQL cannot hold (timestamptz starts in 4713 BC) is the caller's to fix: 400, not 503.
    const old = await call(a, 'GET', '/spend/logs?start_date=-010000-01-01T00:00:00Z&summarize=false');
    assert.equal(old.status, 400, old.text);
    assert.equal(errorOf(old).code, 'invalid_body');
  });

  test('bad input of each kind is a 400 that names the field', async () => {
    const cases: [string, string, unknown, string][] = [
      ['POST', '/key/generate', { max_budjet: 5 }, 'max_budjet'],
      ['POST', '/key/generate', { rpm_limit: 'many' }, 'rpm_limit'],
      ['POST', '/key/generate', { rpm_limit: -1 }, 'rpm_limit'],
      ['POST', '/key/generate', { budget_duration: 'fortnight' }, 'budget_duration'],
      ['POST', '/key/generate', { duration: '3 weeks' }, 'duration'],
      ['POST', '/key/generate', { models: 'llama' }, 'models'],
      ['POST', '/key/generate', { team_id: 'no-such-team' }, 'team_id'],
      ['POST', '/key/block', {}, 'key'],
      ['POST', '/key/block', { key: 'not-a-key' }, 'key'],
      ['POST', '/key/delete', { keys: [] }, 'keys'],
      ['POST', '/team/new', { team_id: 'a\u0001b' }, 'team_id'],
      ['POST', '/key/generate', { duration: '99999999999d' }, 'duration'],
      ['POST', '/key/generate', { rpm_limit: 2 ** 31 }, 'rpm_limit'],
      ['POST', '/team/update', { team_alias: 'x' }, 'team_id'],
      [
        'POST',
        '/model/new',
        { model_name: 'x', litellm_params: { model: 'anthropic/claude', api_base: 'http://127.0.0.1:1/v1' } },
        'litellm_params.model',
      ],
      [
        'POST',
        '/model/new',
        { model_name: 'x', litellm_params: { model: 'openai/x', api_base: 'ftp://127.0.0.1/v1' } },
        'litellm_params.api_base',
      ],
      [
        'POST',
        '/model/new',
        { model_name: 'x', litellm_params: { model: 'openai/x', api_base: 'http://127.0.0.1:1/v1', wieght: 2 } },
        'litellm_params.wieght',
      ],
      ['GET', '/key/list?page=0', undefined, 'page'],
      ['GET', '/key/list?size=1000', undefined, 'size'],
      ['GET', '/key/list?pgae=2', undefined, 'pgae'],
      ['GET', '/spend/logs?start_date=yesterday', undefined, 'start_date'],
      ['POST', '/team/delete', { team_ids: [] }, 'team_ids'],
      ['GET', '/team/list?user_id=u', undefined, 'user_id'],
      ['GET', '/team/list?organization_id=org-1', undefined, 'organization_id'],
      ['GET', '/user/list?page_size=101', undefined, 'page_size'],
      ['GET', '/user/list?team=t', undefined, 'team'],
    ];
    for (const [method, route, body, field] of cases) {
      const r = await call(a, method, route, body);
      assert.equal(r.status, 400, `${method} ${route} ${JSON.stringify(body)}: ${r.text}`);
      assert.equal(errorOf(r).code, 'invalid_body');
      assert.equal(errorOf(r).param, field, `${route}: ${r.text}`);
      assert.ok(String(errorOf(r).message).startsWith(field), `the message names ${field}: ${errorOf(r).message}`);
    }
    const notJson = await call(a, 'POST', '/key/generate', '{"models": [');
    assert.equal(notJson.status, 400);
    assert.match(String(errorOf(notJson).message), /not valid JSON/);
    const array = await call(a, 'POST', '/key/generate', '[]');
    assert.equal(array.status, 400);
    const missing = await call(a, 'POST', '/key/update', { key: `sk-never-made-${randomUUID()}` });
    assert.equal(missing.status, 404);
    assert.equal(errorOf(missing).param, 'key');
  });

  test('spend: /spend/logs, /spend/keys and /global/spend see the requests made', async () => {
    // A user id that is also a name on every JavaScript object.
    const key = String((await call(a, 'POST', '/key/generate', { key_alias: 'spender', user_id: 'constructor' })).body['key']);
    secrets.add(key);
    const done = await chat(b, key);
    assert.equal(done.status, 200);
    let logs: Json[] = [];
    await within(
      3_000,
      async () => {
        logs = (await call(a, 'GET', `/spend/logs?api_key=${encodeURIComponent(key)}`)).body as unknown as Json[];
        return Array.isArray(logs) && logs.length === 1;
      },
      'the spend-log row is written within a second',
    );
    const [row] = logs;
    assert.equal(row?.['model'], 'llama');
    assert.equal(row?.['model_id'], 'llama-main');
    assert.equal(row?.['api_key'], sha(key));
    assert.equal(row?.['key_id'], sha(key).slice(0, 16));
    assert.equal(row?.['total_tokens'], 16);
    assert.ok(Math.abs(Number(row?.['spend']) - 0.016) < 1e-9);
    const keys = (await call(a, 'GET', '/spend/keys?limit=1000')).body as unknown as Json[];
    assert.ok(keys.some((k) => k['key_id'] === sha(key).slice(0, 16)));
    const global = await call(b, 'GET', '/global/spend');
    assert.ok(Number(global.body['spend']) >= 0.016);
    const range = await call(b, 'GET', '/global/spend?start_date=2000-01-01&end_date=2000-01-02');
    assert.equal(range.body['spend'], 0);

    // LiteLLM's date-range form: spend per day unless summarize=false, with zero days to the range's end.
    const today = new Date().toISOString().slice(0, 10);
    const inTwoDays = new Date(Date.now() + 2 * 86_400_000).toISOString().slice(0, 10);
    const dayAfter = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const summary = await call(a, 'GET', `/spend/logs?api_key=${sha(key)}&start_date=${today}&end_date=${inTwoDays}`);
    assert.equal(summary.status, 200);
    const days = summary.body as unknown as Json[];
    assert.deepEqual(
      days.map((d) => d['startTime']),
      [today, dayAfter, inTwoDays],
      "from the first day with spend through end_date's",
    );
    assert.ok(Math.abs(Number(days[0]?.['spend']) - 0.016) < 1e-9);
    assert.ok(Math.abs(Number(days[0]?.[sha(key)]) - 0.016) < 1e-9, "the key's spend under its token");
    assert.ok(Math.abs(Number((days[0]?.['models'] as Json)['llama']) - 0.016) < 1e-9);
    assert.deepEqual(days[0]?.['users'], { constructor: days[0]?.['spend'] });
    assert.deepEqual(days[1], { startTime: dayAfter, spend: 0, users: {}, models: {} });
    const unsummarized = await call(a, 'GET', `/spend/logs?api_key=${sha(key)}&start_date=${today}&end_date=${inTwoDays}&summarize=false`);
    assert.equal((unsummarized.body as unknown as Json[])[0]?.['request_id'], row?.['request_id']);
    const none = await call(a, 'GET', '/spend/logs?start_date=2000-01-01&end_date=2000-01-03');
    assert.deepEqual(none.body, [], 'no spend in the range: an empty list');
    // A date alone as end_date includes its day: today's spend, today's entry.
    const justToday = (await call(a, 'GET', `/spend/logs?api_key=${sha(key)}&start_date=${today}&end_date=${today}`))
      .body as unknown as Json[];
    assert.deepEqual(
      justToday.map((d) => [d['startTime'], d['spend']]),
      [[today, days[0]?.['spend']]],
    );
    const rowsToday = (await call(a, 'GET', `/spend/logs?api_key=${sha(key)}&start_date=${today}&end_date=${today}&summarize=false`))
      .body as unknown as Json[];
    assert.equal(rowsToday.length, 1);
    const globalToday = await call(b, 'GET', `/global/spend?start_date=${today}&end_date=${today}`);
    assert.ok(Number(globalToday.body['spend']) >= 0.016);
  });

  test('GET /health probes every deployment through its /models (admin only)', async () => {
    const r = await call(a, 'GET', '/health');
    assert.equal(r.status, 200);
    assert.equal(r.body['unhealthy_count'], 0);
    assert.ok((r.body['healthy_endpoints'] as Json[]).some((e) => e['model_id'] === 'llama-main'));
    assert.equal((await call(a, 'GET', '/health', undefined, null)).status, 401);
  });

  test('/metrics parses as Prometheus text and counts the requests made', async () => {
    // Decided here, as no Envoy is in front: counted as the gateway's own decision.
    const wrong = await fetch(`http://127.0.0.1:${b}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-not-a-key-of-this-deployment', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama', messages: [{ role: 'user', content: 'hi' }] }),
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const res = await fetch(`http://127.0.0.1:${b}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const samples = parsePrometheus(await res.text());
    const sum = (name: string, labels: Record<string, string>): number =>
      samples
        .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
        .reduce((n, s) => n + s.value, 0);
    assert.ok(sum('tollgate_model_requests_total', { model: 'llama', deployment: 'llama-main', status: '200' }) >= 1);
    assert.ok(sum('tollgate_http_requests_total', { route: 'admin', status: '200' }) >= 1);
    assert.ok(sum('tollgate_tokens_total', { model: 'llama', type: 'completion' }) >= 5);
    assert.ok(sum('tollgate_gateway_overhead_seconds_count', { endpoint: 'chat/completions' }) >= 1);
    assert.equal(sum('tollgate_deployment_available', { deployment: 'llama-main' }), 1);
    assert.ok(sum('tollgate_authz_decisions_total', { source: 'gateway', decision: 'allowed' }) >= 1);
    assert.ok(sum('tollgate_authz_decisions_total', { source: 'gateway', decision: 'invalid_api_key' }) >= 1);
    assert.equal(sum('tollgate_authz_decisions_total', { source: 'ext_authz' }), 0, 'no Check was called');
    // LiteLLM's names, as dashboards written for LiteLLM query them.
    assert.ok(sum('litellm_proxy_total_requests_metric_total', { requested_model: 'llama', status_code: '200' }) >= 1);
    assert.ok(sum('litellm_total_tokens_total', { model: 'llama' }) >= 16);
    assert.ok(sum('litellm_spend_metric_total', { model: 'llama' }) > 0);
    assert.ok(sum('litellm_request_total_latency_metric_count', { model: 'llama' }) >= 1);
    assert.equal(sum('litellm_deployment_state', { model_id: 'llama-main' }), 0, 'healthy');
    // Labels are bounded sets: no key, key id or user appears in any series.
    for (const s of samples) for (const v of Object.values(s.labels)) assert.ok(!/^sk-|^[0-9a-f]{16}$/.test(v), `label value ${v}`);
  });

  test('no secret appears in any log line of either replica', () => {
    const logs = procs.map((p) => p.stdout() + p.stderr()).join('\n');
    assert.ok(logs.includes('"msg":"request"'), 'request lines were logged');
    assert.ok(logs.includes('"admin_action":"key.generate"'), 'admin actions were logged');
    for (const s of secrets) assert.ok(!logs.includes(s), `a secret (${s.slice(0, 6)}…) appears in the logs`);
    for (const line of logs.split('\n').filter((l) => l.startsWith('{'))) JSON.parse(line);
  });
});
