/**
 * The gateway's HTTP/1.1 client for its backends (src/gateway/upstream.ts) against raw TCP servers that
 * answer exactly the bytes each test scripts: framing (Content-Length, chunked, until close), replies split
 * at every byte, keep-alive reuse and when a connection must not be reused, strict refusals of replies that
 * cannot be framed, every timeout, backpressure, the queue beyond the pool's connections, and close().
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, Socket, type Server } from 'node:net';
import {
  UpstreamPool,
  type UpstreamController,
  type UpstreamHandler,
  type UpstreamPoolOptions,
  type UpstreamRequest,
} from '../../../src/gateway/upstream.js';

interface Received {
  readonly head: string;
  readonly body: string;
}

/**
 * A TCP server that parses each request (Content-Length bodies only) and answers with `script(request, n)`:
 * bytes to write (in pieces, each written on its own, for a reply split across reads), or a function that
 * takes the socket and does what it likes. Records what it received and how many connections it accepted.
 */
class ScriptedServer {
  readonly received: Received[] = [];
  readonly sockets = new Set<Socket>();
  accepted = 0;
  readonly #server: Server;
  port = 0;
  readonly script: (r: Received, n: number, socket: Socket) => readonly (string | Buffer)[] | void;

  constructor(script: (r: Received, n: number, socket: Socket) => readonly (string | Buffer)[] | void) {
    this.script = script;
    this.#server = createServer((socket) => {
      this.accepted++;
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.toString('latin1', 0, end);
          const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length < end + 4 + length) return;
          const r = { head, body: buf.toString('utf8', end + 4, end + 4 + length) };
          buf = buf.subarray(end + 4 + length);
          this.received.push(r);
          void this.#answer(socket, this.script(r, this.received.length, socket));
        }
      });
    });
  }

  async #answer(socket: Socket, pieces: readonly (string | Buffer)[] | void): Promise<void> {
    if (pieces === undefined) return;
    for (const piece of pieces) {
      socket.write(piece);
      if (pieces.length > 1) await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as { port: number }).port;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}

type Outcome =
  | {
      readonly kind: 'reply';
      readonly status: number;
      readonly headers: Readonly<Record<string, string>>;
      readonly body: string;
      readonly chunks: number;
    }
  | { readonly kind: 'error'; readonly code: string | undefined; readonly message: string; readonly started: boolean };

/** Collects one exchange's events; `onData` may steer the controller (pause, abort). */
function collect(onData?: (c: UpstreamController, chunk: Buffer, n: number) => void): { handler: UpstreamHandler; done: Promise<Outcome> } {
  let resolve!: (o: Outcome) => void;
  const done = new Promise<Outcome>((r) => (resolve = r));
  let status = 0;
  let headers: Readonly<Record<string, string>> = {};
  const chunks: Buffer[] = [];
  let started = false;
  let settled = false;
  const settle = (o: Outcome): void => {
    if (!settled) resolve(o);
    settled = true;
  };
  const handler: UpstreamHandler = {
    onRequestStart: () => {
      started = true;
    },
    onResponseStart: (_c, s, h) => {
      status = s;
      headers = h;
    },
    onResponseData: (c, chunk) => {
      chunks.push(chunk);
      onData?.(c, chunk, chunks.length);
    },
    onResponseEnd: () => settle({ kind: 'reply', status, headers, body: Buffer.concat(chunks).toString('utf8'), chunks: chunks.length }),
    onResponseError: (_c, err) => settle({ kind: 'error', code: (err as { code?: string }).code, message: err.message, started }),
  };
  return { handler, done };
}

const OPTIONS: UpstreamPoolOptions = { connections: 4, connectTimeout: 1_000, keepAliveTimeout: 4_000 };

function request(body = '{"model":"m"}', extra: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return {
    path: '/v1/chat/completions',
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': 'r-1' },
    body,
    headersTimeout: 2_000,
    bodyTimeout: 2_000,
    ...extra,
  };
}

function send(pool: UpstreamPool, req = request(), onData?: (c: UpstreamController, chunk: Buffer, n: number) => void): Promise<Outcome> {
  const { handler, done } = collect(onData);
  pool.dispatch(req, handler);
  return done;
}

const JSON_REPLY = '{"id":"x","usage":{"prompt_tokens":1}}';
const OK = `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${JSON_REPLY.length}\r\n\r\n${JSON_REPLY}`;

const servers: ScriptedServer[] = [];
const pools: UpstreamPool[] = [];
async function serve(
  script: ConstructorParameters<typeof ScriptedServer>[0],
  opts: Partial<UpstreamPoolOptions> = {},
): Promise<{ server: ScriptedServer; pool: UpstreamPool }> {
  const server = await new ScriptedServer(script).start();
  servers.push(server);
  const pool = new UpstreamPool(`http://127.0.0.1:${server.port}`, { ...OPTIONS, ...opts });
  pools.push(pool);
  return { server, pool };
}

after(async () => {
  await Promise.all(pools.map((p) => p.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

function reply(o: Outcome): Extract<Outcome, { kind: 'reply' }> {
  assert.equal(o.kind, 'reply', JSON.stringify(o));
  return o;
}

function failure(o: Outcome, code: string): Extract<Outcome, { kind: 'error' }> {
  assert.equal(o.kind, 'error', JSON.stringify(o));
  assert.equal((o as { code?: string }).code, code, JSON.stringify(o));
  return o;
}

describe('upstream: what is sent', () => {
  test('one request head with host, the headers given and the body length in bytes; the body as given', async () => {
    const { server, pool } = await serve(() => [OK]);
    const body = '{"model":"m","messages":[{"role":"user","content":"héllo ☃"}]}';
    reply(await send(pool, request(body)));
    const r = server.received[0] as Received;
    const lines = r.head.split('\r\n');
    assert.equal(lines[0], 'POST /v1/chat/completions HTTP/1.1');
    assert.ok(lines.includes(`host: 127.0.0.1:${server.port}`));
    assert.ok(lines.includes('x-request-id: r-1'));
    assert.ok(lines.includes(`content-length: ${Buffer.byteLength(body)}`));
    assert.equal(r.body, body);
  });

  test('a header value with a line break is refused before anything is sent, and the connection is kept', async () => {
    const { server, pool } = await serve(() => [OK]);
    const o = failure(await send(pool, request('{}', { headers: { authorization: 'Bearer a\r\nx-injected: 1' } })), 'BAD_REQUEST_HEADER');
    assert.doesNotMatch(o.message, /Bearer/, 'the value is not quoted');
    reply(await send(pool));
    assert.equal(server.received.length, 1, 'only the valid request reached the server');
    assert.doesNotMatch(server.received[0]?.head ?? '', /x-injected/);
  });

  test('a Buffer body is sent as it is', async () => {
    const { server, pool } = await serve(() => [OK]);
    reply(await send(pool, request(undefined, { body: Buffer.from('{"a":1}') })));
    assert.equal(server.received[0]?.body, '{"a":1}');
  });
});

describe('upstream: framing the reply', () => {
  test('Content-Length: the body, lower-cased header names, repeated headers joined', async () => {
    const { pool } = await serve(() => [
      `HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: ${JSON_REPLY.length}\r\n\r\n${JSON_REPLY}`,
    ]);
    const r = reply(await send(pool));
    assert.equal(r.status, 201);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-a'], '1, 2');
    assert.equal(r.body, JSON_REPLY);
  });

  test('a reply split at every byte is read whole', async () => {
    const { pool } = await serve(() => [...OK].map((c) => Buffer.from(c, 'latin1')));
    assert.equal(reply(await send(pool)).body, JSON_REPLY);
  });

  test('chunked, with chunk extensions and trailers, split across reads', async () => {
    const { pool } = await serve(() => [
      'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n',
      '6;ext=1\r\ndata: \r\n',
      '9',
      '\r\n{"a":1}\n\n\r\n',
      '0\r\nx-trailer: t\r\n\r\n',
    ]);
    const r = reply(await send(pool));
    assert.equal(r.body, 'data: {"a":1}\n\n');
    assert.ok(r.chunks >= 2, 'passed on as it came');
  });

  test('no length and no chunking: the body runs to the connection close, and the connection is not reused', async () => {
    const { server, pool } = await serve((_r, _n, socket) => {
      socket.end('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"until":"close"}');
    });
    assert.equal(reply(await send(pool)).body, '{"until":"close"}');
    reply(await send(pool));
    assert.equal(server.accepted, 2);
  });

  test('1xx heads are read past; 204 has no body', async () => {
    const { pool } = await serve((_r, n) =>
      n === 1 ? ['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n', OK] : ['HTTP/1.1 204 No Content\r\n\r\n'],
    );
    assert.equal(reply(await send(pool)).body, JSON_REPLY);
    const r = reply(await send(pool));
    assert.equal(r.status, 204);
    assert.equal(r.body, '');
  });

  const malformed: readonly [string, string][] = [
    ['not HTTP', 'SSH-2.0-OpenSSH_9.2\r\n\r\n'],
    ['HTTP/2 status line', 'HTTP/2 200\r\n\r\n'],
    ['space before the colon', 'HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\n{}'],
    ['obsolete line folding', 'HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 2\r\n\r\n{}'],
    ['a Content-Length that is not a number', 'HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\n{}'],
    ['two different Content-Lengths', 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}'],
    ['an empty Content-Length in a list', 'HTTP/1.1 200 OK\r\ncontent-length: 2,,2\r\n\r\n{}'],
    ['an empty Content-Length', 'HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n{}'],
    ['a chunk size that is not hex', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n'],
    ['a chunk without its CRLF', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n'],
    ['a bare LF inside a header line', 'HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 5\r\ncontent-length: 2\r\n\r\n{}'],
    ['a NUL in a header value', 'HTTP/1.1 200 OK\r\nx-a: 1\0\r\ncontent-length: 2\r\n\r\n{}'],
    ['a chunk size after a non-breaking space', 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\xa02\r\n{}\r\n0\r\n\r\n'],
    ['a head ended by bare LFs', 'HTTP/1.1 200 OK\ncontent-length: 2\n\n{}'],
    ['101 Switching Protocols', 'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n'],
  ];
  for (const [what, bytes] of malformed) {
    test(`refused as BAD_REPLY: ${what}; the connection is not reused`, async () => {
      const { server, pool } = await serve((_r, n) => [n === 1 ? bytes : OK]);
      failure(await send(pool), 'BAD_REPLY');
      reply(await send(pool));
      assert.equal(server.accepted, 2);
    });
  }

  test('a reply head over 64 KiB is refused', async () => {
    const { pool } = await serve(() => [`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`]);
    failure(await send(pool), 'BAD_REPLY');
  });

  test('a 204 has no body even with a Transfer-Encoding; an HTTP/1.0 chunked reply is read, its connection not reused', async () => {
    const { server, pool } = await serve((_r, n) => [
      n === 1
        ? 'HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n'
        : n === 2
          ? 'HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n'
          : OK,
    ]);
    const t0 = performance.now();
    assert.equal(reply(await send(pool)).status, 204);
    assert.ok(performance.now() - t0 < 1_000, 'not waiting for a body');
    assert.equal(reply(await send(pool)).body, '{}');
    reply(await send(pool));
    assert.equal(server.accepted, 2);
  });

  test('equal repeated Content-Lengths are one length', async () => {
    const { pool } = await serve(() => ['HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}']);
    assert.equal(reply(await send(pool)).body, '{}');
  });

  test('bytes after the reply: the reply is kept, the connection is not', async () => {
    const { server, pool } = await serve((_r, n) => [n === 1 ? `${OK}HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n` : OK]);
    assert.equal(reply(await send(pool)).body, JSON_REPLY);
    reply(await send(pool));
    assert.equal(server.accepted, 2);
  });
});

describe('upstream: connections', () => {
  test('keep-alive: sequential requests share one connection', async () => {
    const { server, pool } = await serve(() => [OK]);
    for (let i = 0; i < 5; i++) reply(await send(pool));
    assert.equal(server.accepted, 1);
  });

  test('Connection: close, and an HTTP/1.0 reply without keep-alive, are not reused', async () => {
    const { server, pool } = await serve((_r, n) =>
      n === 1
        ? [`HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}`]
        : [`HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}`],
    );
    reply(await send(pool));
    reply(await send(pool));
    reply(await send(pool));
    assert.equal(server.accepted, 3);
  });

  test('an idle connection is closed after the keep-alive time, and the next request opens another', async () => {
    const { server, pool } = await serve(() => [OK], { keepAliveTimeout: 100 });
    reply(await send(pool));
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(server.sockets.size, 0, 'closed by tollgate');
    reply(await send(pool));
    assert.equal(server.accepted, 2);
  });

  test("the server's Keep-Alive timeout, less a second, shortens the idle time", async () => {
    const { server, pool } = await serve(() => [`HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\n{}`]);
    reply(await send(pool));
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(server.sockets.size, 0, 'closed within a sweep: the server keeps it 1 s (the default is 4 s)');
  });

  test('an idle connection the server closes is dropped; the next request opens another', async () => {
    const { server, pool } = await serve((_r, _n, socket) => {
      socket.write(OK);
      setTimeout(() => socket.end(), 20);
    });
    reply(await send(pool));
    await new Promise((resolve) => setTimeout(resolve, 100));
    reply(await send(pool));
    assert.equal(server.accepted, 2);
    assert.equal(pool.connections, 1);
  });

  test('beyond its connections, requests wait and are served in order', async () => {
    const { server, pool } = await serve(
      (r, _n, socket) => {
        setTimeout(() => socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${Buffer.byteLength(r.body)}\r\n\r\n${r.body}`), 20);
      },
      { connections: 2 },
    );
    const outs = await Promise.all(Array.from({ length: 6 }, (_, i) => send(pool, request(`{"i":${i}}`))));
    assert.deepEqual(
      outs.map((o) => reply(o).body),
      Array.from({ length: 6 }, (_, i) => `{"i":${i}}`),
    );
    assert.equal(server.accepted, 2);
  });

  test('`queued` counts the requests waiting for a connection (aborted ones not); onConnection says when one has it', async () => {
    const sockets: Socket[] = [];
    const { pool } = await serve((_r, _n, socket) => void sockets.push(socket), { connections: 1 });
    const events: string[] = [];
    const tracked = (name: string): { handler: UpstreamHandler; done: Promise<Outcome> } => {
      const c = collect();
      return { ...c, handler: { ...c.handler, onConnection: () => void events.push(`${name} connection`) } };
    };
    const [a, b, c] = [tracked('a'), tracked('b'), tracked('c')];
    pool.dispatch(request(), a.handler);
    const bc = pool.dispatch(request(), b.handler);
    pool.dispatch(request(), c.handler);
    // a has the one connection (being opened) at once; b and c wait for it.
    assert.deepEqual(events, ['a connection']);
    assert.equal(pool.queued, 2);
    bc.abort(Object.assign(new Error('gave up'), { code: 'QUEUE_TIMEOUT' }));
    assert.equal(pool.queued, 1, 'an aborted waiter is not counted');
    assert.equal((await b.done).kind, 'error');
    while (sockets.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    (sockets[0] as Socket).write(OK);
    reply(await a.done);
    // The connection went to c (b left the queue): its wait is over.
    assert.deepEqual(events, ['a connection', 'c connection']);
    assert.equal(pool.queued, 0);
    (sockets[0] as Socket).write(OK);
    reply(await c.done);
  });

  test('a connection closed before the reply is SOCKET_CLOSED, and the request is not sent again', async () => {
    const { server, pool } = await serve((_r, n, socket) => (n === 1 ? [OK] : void socket.destroy()));
    reply(await send(pool));
    failure(await send(pool), 'SOCKET_CLOSED');
    assert.equal(server.received.length, 2);
  });

  test('a connection closed mid-body is SOCKET_CLOSED', async () => {
    const { pool } = await serve((_r, _n, socket) => {
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"partial":');
    });
    failure(await send(pool), 'SOCKET_CLOSED');
  });

  test('a connection reset (RST) once up is SOCKET_CLOSED, naming the socket error', async () => {
    const { pool } = await serve((_r, _n, socket) => void socket.resetAndDestroy());
    const err = failure(await send(pool), 'SOCKET_CLOSED');
    assert.match(err.message, /connection to the backend failed \(ECONNRESET\) without a reply/);
  });

  test('a refused connection fails with the socket error, and is not kept', async () => {
    const probe = await new ScriptedServer(() => [OK]).start();
    const port = probe.port;
    await probe.stop();
    const pool = new UpstreamPool(`http://127.0.0.1:${port}`, OPTIONS);
    pools.push(pool);
    failure(await send(pool), 'ECONNREFUSED');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(pool.connections, 0);
  });
});

describe('upstream: timeouts', () => {
  test('no reply head within headersTimeout: HEADERS_TIMEOUT, promptly', async () => {
    const { pool } = await serve(() => undefined);
    const t0 = performance.now();
    failure(await send(pool, request(undefined, { headersTimeout: 200 })), 'HEADERS_TIMEOUT');
    const took = performance.now() - t0;
    assert.ok(took >= 190 && took < 1_000, `after ${took} ms`);
  });

  test('a body that goes silent: BODY_TIMEOUT; a trickle that keeps coming is not cut', async () => {
    const { pool } = await serve((_r, n, socket) => {
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{"');
      if (n === 2) {
        let i = 0;
        const t = setInterval(() => {
          socket.write(i < 5 ? ' ' : '}');
          if (++i > 5) clearInterval(t);
        }, 60);
      }
    });
    failure(await send(pool, request(undefined, { bodyTimeout: 200 })), 'BODY_TIMEOUT');
    // Six more bytes, one every 60 ms (360 ms in all), each within the 200 ms bound.
    assert.equal(reply(await send(pool, request(undefined, { bodyTimeout: 200 }))).body.length, 8);
  });

  test('a reply the handler holds back (paused) is not timed out meanwhile, and ends once resumed', async () => {
    const { pool } = await serve((_r, _n, socket) => {
      socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n');
      setTimeout(() => socket.write('0\r\n\r\n'), 50);
    });
    const o = send(pool, request(undefined, { bodyTimeout: 150 }), (c, _chunk, n) => {
      if (n === 1) {
        c.pause();
        setTimeout(() => c.resume(), 500);
      }
    });
    assert.equal(reply(await o).body, '{}');
  });

  test('a connection not made within connectTimeout (here: a TLS handshake never answered): CONNECT_TIMEOUT', async () => {
    const { server } = await serve(() => undefined);
    const pool = new UpstreamPool(`https://127.0.0.1:${server.port}`, { ...OPTIONS, connectTimeout: 300 });
    pools.push(pool);
    const t0 = performance.now();
    const o = failure(await send(pool), 'CONNECT_TIMEOUT');
    const took = performance.now() - t0;
    assert.ok(took >= 290 && took < 1_500, `after ${took} ms`);
    assert.equal(o.started, false, 'the request was never written');
    assert.equal(server.received.length, 0);
  });
});

describe('upstream: abort and close', () => {
  test('thousands of waiters aborted before their turn are skipped, not recursed through; the next request is served', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const { server, pool } = await serve(
      (_r, n, socket) => {
        if (n === 1) void held.then(() => socket.write(OK));
        else socket.write(OK);
      },
      { connections: 1 },
    );
    const first = send(pool);
    const waiters = Array.from({ length: 5_000 }, () => collect());
    const controllers = waiters.map((w) => pool.dispatch(request(), w.handler));
    for (const c of controllers) c.abort(Object.assign(new Error('gone'), { code: 'CLIENT_GONE' }));
    for (const w of waiters) failure(await w.done, 'CLIENT_GONE');
    release();
    reply(await first);
    reply(await send(pool));
    assert.equal(server.received.length, 2, 'no aborted waiter was written');
  });

  test("an abort, pause or resume of a finished request does not reach the connection's next request", async () => {
    const { pool } = await serve((_r, n, socket) => {
      socket.write(n === 1 ? OK : 'HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n{}');
      if (n === 2) setTimeout(() => socket.write('  '), 50);
    });
    const a = collect();
    const ca = pool.dispatch(request(), a.handler);
    reply(await a.done);
    const b = send(pool);
    await new Promise((resolve) => setTimeout(resolve, 10));
    ca.pause();
    ca.abort(Object.assign(new Error('late'), { code: 'REPLY_TOO_LARGE' }));
    assert.equal(reply(await b).body, '{}  ');
  });

  test('a connection the server closed while idle is not handed to the next request', async () => {
    const { server, pool } = await serve((_r, n, socket) => {
      socket.write(OK);
      if (n === 1) setTimeout(() => socket.end(), 20);
    });
    reply(await send(pool));
    // A request dispatched right after the client read the server's FIN, before the socket's close event.
    // eslint-disable-next-line @typescript-eslint/unbound-method -- restored as it was, and called with apply
    const emit = Socket.prototype.emit;
    const next = new Promise<Outcome>((resolve) => {
      Socket.prototype.emit = function (this: Socket, event: string | symbol, ...args: unknown[]): boolean {
        if (event === 'end' && this.remotePort === server.port) {
          Socket.prototype.emit = emit;
          setImmediate(() => resolve(send(pool)));
        }
        return emit.apply(this, [event, ...args] as Parameters<typeof emit>);
      } as typeof emit;
    });
    try {
      reply(await next);
    } finally {
      Socket.prototype.emit = emit;
    }
    assert.equal(server.received.length, 2);
    assert.equal(server.accepted, 2);
  });

  test('a handler that throws fails its own request only; the gateway process and the pool carry on', async () => {
    const { server, pool } = await serve(() => [OK]);
    let result: Outcome | undefined;
    const done = new Promise<void>((resolve) => {
      pool.dispatch(request(), {
        onRequestStart: () => undefined,
        onResponseStart: () => undefined,
        onResponseData: () => {
          throw new Error('handler bug');
        },
        onResponseEnd: () => resolve(),
        onResponseError: (_c, err) => {
          result = { kind: 'error', code: undefined, message: err.message, started: true };
          resolve();
        },
      });
    });
    await done;
    assert.equal(result?.kind === 'error' ? result.message : undefined, 'handler bug');
    reply(await send(pool));
    assert.equal(server.accepted, 2, 'the connection in an unknown state was closed');
  });

  test('close() called twice: both resolve', async () => {
    const { pool } = await serve((_r, _n, socket) => {
      setTimeout(() => socket.write(OK), 50);
    });
    const inFlight = send(pool);
    await new Promise((resolve) => setTimeout(resolve, 10));
    await Promise.all([pool.close(), pool.close(), inFlight]);
  });

  test('abort mid-body closes the connection and reports the abort; the pool serves on', async () => {
    const { server, pool } = await serve((_r, n, socket) =>
      n === 1 ? void socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"a"') : [OK],
    );
    const o = await send(pool, request(), (c) => c.abort(Object.assign(new Error('client left'), { code: 'CLIENT_GONE' })));
    failure(o, 'CLIENT_GONE');
    reply(await send(pool));
    assert.equal(server.accepted, 2);
  });

  test('aborted as it starts: nothing is written, the connection is kept', async () => {
    const { server, pool } = await serve(() => [OK]);
    reply(await send(pool));
    let result: Outcome | undefined;
    pool.dispatch(request(), {
      onRequestStart: (c) => c.abort(Object.assign(new Error('gone'), { code: 'CLIENT_GONE' })),
      onResponseStart: () => undefined,
      onResponseData: () => undefined,
      onResponseEnd: () => undefined,
      onResponseError: (_c, err) =>
        (result = { kind: 'error', code: (err as { code?: string }).code, message: err.message, started: true }),
    });
    assert.equal((result as { code?: string } | undefined)?.code, 'CLIENT_GONE');
    reply(await send(pool));
    assert.equal(server.received.length, 2);
    assert.equal(server.accepted, 1);
  });

  test('close() waits for the request in flight and then refuses new ones', async () => {
    const { pool } = await serve((_r, _n, socket) => {
      setTimeout(() => socket.write(OK), 100);
    });
    const inFlight = send(pool);
    await new Promise((resolve) => setTimeout(resolve, 20));
    let closed = false;
    const closing = pool.close().then(() => (closed = true));
    assert.equal(closed, false);
    reply(await inFlight);
    await closing;
    failure(await send(pool), 'POOL_CLOSED');
  });
});
