/**
 * Readiness: the gateway while its identity provider cannot be reached (not ready, and 503 rather than a 500
 * or an allow), and while PostgreSQL does not answer (ready: the spend log buffers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import pg from 'pg';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { buildAuthorizer, loadIdentityKeys } from '../../../src/main/authz-app.js';
import { startGateway } from '../../../src/main/gateway-app.js';
import { gatewayStoreOptions, openStore } from '../../../src/main/store-app.js';
import { contextSecret } from '../../../src/identity/context-token.js';
import { InMemorySpendLog } from '../../../src/store/spend.js';
import { createLogger } from '../../../src/telemetry/logger.js';

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('with the IdP unreachable: readiness is 503, and a request with a token gets 503 authz_unavailable, never an allow', async () => {
  const idp = `http://127.0.0.1:${await closedPort()}`;
  const yaml = `
model_list:
  - model_name: m
    litellm_params: { model: openai/x, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  context_signing_key: readiness-test-context-key-0123456789abcdef
auth:
  jwt: { issuer: "${idp}", jwks_uri: "${idp}/jwks", audience: a, allow_insecure_http: true }
  keys: { required: false }
`;
  const prepared = prepareConfigText(yaml, 'r.yaml', {});
  const secret = contextSecret('readiness-test-context-key-0123456789abcdef', undefined) as Buffer;
  const parts = buildAuthorizer(prepared.config, prepared.policy, secret);
  const logger = createLogger('silent');
  const keys = await loadIdentityKeys(parts, logger, () => undefined);
  const gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, spend: new InMemorySpendLog() });
  try {
    const base = `http://127.0.0.1:${gw.port}`;
    assert.equal((await fetch(`${base}/health/liveliness`)).status, 200);
    assert.equal((await fetch(`${base}/health/readiness`)).status, 503);
    // A token whose key must be fetched: the IdP is down, so this is an outage (503), not a 401 and not an allow.
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const token = `${b64({ alg: 'RS256', kid: 'k1' })}.${b64({ iss: idp, aud: 'a', exp: Math.floor(Date.now() / 1000) + 60 })}.c2ln`;
    await new Promise((r) => setTimeout(r, 5_100)); // past the refetch cooldown the boot-time attempt started
    const res = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'x-cake-authorization': token, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm', messages: [] }),
    });
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { message: string; type: string; code: string } };
    assert.match(body.error.message, /identity provider/);
    // As Envoy answers when Check cannot decide: the same outage, the same reply, and one to correlate.
    assert.deepEqual([body.error.type, body.error.code], ['service_unavailable', 'authz_unavailable']);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.match(res.headers.get('x-tollgate-request-id') ?? '', /^[0-9a-f-]{36}$/);
  } finally {
    keys.stop();
    await gw.close(500);
  }
});

/** A TCP relay to `port` on 127.0.0.1 that can be cut (every connection dropped, nothing listening) and restored on its port. */
async function cuttableRelay(port: number): Promise<{ port: number; cut(): Promise<void>; restore(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
  });
  const listen = (at: number): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(at, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const own = (server.address() as { port: number }).port;
  return {
    port: own,
    async cut() {
      if (!server.listening) return;
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    async restore() {
      if (!server.listening) await listen(own);
    },
  };
}

test(
  'PostgreSQL down alone keeps the replica ready (requests are served, rows wait in memory): every replica shares it',
  { timeout: 60_000 },
  async () => {
    const relay = await cuttableRelay(5432);
    const schema = `tg_ready_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const yaml = `
model_list:
  - model_name: m
    litellm_params: { model: openai/x, api_base: "http://127.0.0.1:9/v1" }
general_settings:
  context_signing_key: readiness-test-context-key-0123456789abcdef
  database_url: postgres://postgres@127.0.0.1:${relay.port}/test?schema=${schema}
`;
    const prepared = prepareConfigText(yaml, 'r.yaml', {});
    const secret = contextSecret('readiness-test-context-key-0123456789abcdef', undefined) as Buffer;
    const logger = createLogger('silent');
    const store = await openStore(prepared.config, { logger, withDb: true, catalog: () => parts.authorizer.rules.catalog });
    const parts = buildAuthorizer(prepared.config, prepared.policy, secret, {
      keys: store.keys,
      teams: store.teams,
      limiter: store.limiter,
    });
    const gw = await startGateway(prepared.config, parts, secret, { host: '127.0.0.1', port: 0, logger, ...gatewayStoreOptions(store) });
    const ready = async (): Promise<number> => (await fetch(`http://127.0.0.1:${gw.port}/health/readiness`)).status;
    try {
      assert.equal(await ready(), 200);
      await relay.cut();
      // Taking a replica out for a database every replica shares would take them all out: nothing served.
      for (const t0 = Date.now(); Date.now() - t0 < 8_000; await new Promise((r) => setTimeout(r, 500))) {
        assert.equal(await ready(), 200, 'ready while PostgreSQL is down');
      }
    } finally {
      await gw.close(500);
      await relay.restore();
      await store.close(500);
      await relay.cut();
      const admin = new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
      await admin.connect();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    }
  },
);
