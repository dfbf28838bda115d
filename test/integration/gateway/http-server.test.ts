/**
 * The gateway's HTTP/1.1 server (src/gateway/http-server.ts) over real sockets: framing (RFC 9112), strict
 * refusals of what could smuggle a request, bodies over the limit, Expect: 100-continue, keep-alive and
 * pipelining, deadlines, and a client that leaves mid-response.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { parseHead } from '../../../src/gateway/http-head.js';
import type { HttpResponse } from '../../../src/gateway/http-response.js';
import { HttpServer, type HttpRequest } from '../../../src/gateway/http-server.js';

const MAX_BODY = 1024;
/** A reply far larger than the socket buffers, read slowly. */
const BIG = 16 * 1024 * 1024;

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | null;
}

/** Answers every request with what it received, as JSON; `/stream` streams three chunks; `/hang` never answers. */
function echo(seen: Seen[], closed: HttpResponse[]): (req: HttpRequest, res: HttpResponse) => void {
  return (req, res) => {
    const s: Seen = { method: req.method, url: req.url, headers: req.headers, body: req.body === null ? null : req.body.toString('utf8') };
    seen.push(s);
    res.onclose = () => closed.push(res);
    if (req.url === '/hang') return;
    const status = /^\/status\/(\d+)$/.exec(req.url);
    if (status !== null) {
      // A body the status forbids (RFC 9110 §6.4.1) is not sent.
      res.writeHead(Number(status[1]), ['content-type', 'application/json', 'content-length', '13']);
      res.end('{"error":"x"}');
      return;
    }
    if (req.url === '/late-destroy') {
      res.writeHead(200, ['content-type', 'text/plain']);
      res.end('first');
      setTimeout(() => res.destroy(), 100);
      return;
    }
    if (req.url === '/big') {
      res.writeHead(200, ['content-type', 'application/octet-stream']);
      res.end(Buffer.alloc(BIG, 0x61));
      return;
    }
    if (req.url === '/close') {
      res.writeHead(200, ['connection', 'close', 'content-type', 'text/plain']);
      res.end('bye');
      return;
    }
    if (req.url === '/stream') {
      res.writeHead(200, ['content-type', 'text/event-stream']);
      res.write('data: 1\n\n');
      res.write(Buffer.from('data: 2\n\n'));
      res.end('data: [DONE]\n\n');
      return;
    }
    if (req.body === null) {
      res.writeHead(413, { 'content-type': 'application/json' });
      res.end('{"too":"large"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'x-echo': 'é' });
    res.end(JSON.stringify(s));
  };
}

/** A raw client: writes `text`, collects everything until the server closes or `until` holds. */
async function exchange(
  port: number,
  text: string | string[],
  until?: (got: string) => boolean,
  ms = 5_000,
  gapMs = 20,
): Promise<{ got: string; closed: boolean }> {
  const socket = connect(port, '127.0.0.1');
  socket.setEncoding('latin1');
  let got = '';
  let closed = false;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms; got: ${JSON.stringify(got)}`)), ms);
    socket.on('data', (d: string) => {
      got += d;
      if (until?.(got) === true) {
        clearTimeout(timer);
        resolve();
      }
    });
    socket.on('close', () => {
      closed = true;
      clearTimeout(timer);
      resolve();
    });
    socket.on('error', () => {});
  });
  for (const part of Array.isArray(text) ? text : [text]) {
    socket.write(part);
    await new Promise((r) => setTimeout(r, gapMs));
  }
  await done;
  socket.destroy();
  return { got, closed };
}

/** The responses in `raw`, each with status, headers and (Content-Length or chunked) body. */
function responses(raw: string): Array<{ status: number; headers: Record<string, string>; body: string }> {
  const out: Array<{ status: number; headers: Record<string, string>; body: string }> = [];
  let rest = raw;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [line, ...fields] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const f of fields) headers[f.slice(0, f.indexOf(':')).toLowerCase()] = f.slice(f.indexOf(':') + 1).trim();
    rest = rest.slice(end + 4);
    let body = '';
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = Buffer.from(rest, 'latin1').subarray(0, n).toString('utf8');
      rest = Buffer.from(rest, 'latin1').subarray(n).toString('latin1');
    } else if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const eol = rest.indexOf('\r\n');
        const size = parseInt(rest.slice(0, eol), 16);
        rest = rest.slice(eol + 2);
        if (size === 0) {
          rest = rest.slice(2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else if (!/^HTTP\/1\.1 1\d\d/.test(line ?? '')) {
      body = rest;
      rest = '';
    }
    out.push({ status: Number((line ?? '').split(' ')[1]), headers, body });
  }
  return out;
}

const POST = (body: string, extra = ''): string =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe('parseHead: strict RFC 9112 request heads', () => {
  const ok = (text: string): Exclude<ReturnType<typeof parseHead>, { status: number }> => {
    const h = parseHead(text);
    assert.ok('method' in h, `refused: ${JSON.stringify(h)}`);
    return h;
  };
  const refused = (text: string, status: number): void => {
    const h = parseHead(text);
    assert.ok(!('method' in h), `accepted: ${text}`);
    assert.equal(h.status, status, h.message);
  };

  test('a request head: method, target, lower-cased fields, optional whitespace trimmed', () => {
    const h = ok('POST /v1/x?a=1 HTTP/1.1\r\nHost: gw\r\nX-Thing:  v a l \t\r\nContent-Length: 5');
    assert.equal(h.method, 'POST');
    assert.equal(h.url, '/v1/x?a=1');
    assert.deepEqual({ ...h.headers }, { host: 'gw', 'x-thing': 'v a l', 'content-length': '5' });
    assert.equal(h.length, 5);
    assert.equal(h.keepAlive, true);
  });

  test('a field named like an Object member is only a field', () => {
    const h = ok('GET / HTTP/1.1\r\nHost: gw\r\nConstructor: x\r\n__proto__: y');
    assert.equal(h.headers['constructor'], 'x');
    assert.equal(h.headers['__proto__'], 'y');
    assert.equal(h.headers['tostring'], undefined);
  });

  test('repeated fields: joined, cookie with "; ", the first Authorization only (as node:http)', () => {
    const h = ok(
      'GET / HTTP/1.1\r\nHost: gw\r\nAccept: a\r\nAccept: b\r\nCookie: x=1\r\nCookie: y=2\r\nAuthorization: Bearer one\r\nAuthorization: Bearer two',
    );
    assert.equal(h.headers['accept'], 'a, b');
    assert.equal(h.headers['cookie'], 'x=1; y=2');
    assert.equal(h.headers['authorization'], 'Bearer one');
  });

  test('framing that could smuggle a request is refused: CL with TE, two CLs, a TE other than chunked, TE on 1.0', () => {
    refused('POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked', 400);
    refused('POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 5', 400);
    refused('POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked', 501);
    refused('POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked', 501);
    refused('POST / HTTP/1.0\r\nTransfer-Encoding: chunked', 400);
    refused('POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: +5', 400);
    refused('POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5, 5', 400);
    assert.equal(ok('POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: Chunked').length, -1);
  });

  test('malformed heads: folding, space before the colon, control characters, no Host, other versions, other expectations', () => {
    refused('GET / HTTP/1.1\r\nHost: gw\r\nX-A: one\r\n two', 400);
    refused('GET / HTTP/1.1\r\nHost: gw\r\nX-A : one', 400);
    refused('GET / HTTP/1.1\r\nHost: gw\r\nX-A: o\x00ne', 400);
    refused('GET / HTTP/1.1\r\nHost: gw\r\nX-A: one\ntwo', 400);
    refused('GET / HTTP/1.1\r\nHost: gw\r\nno-colon', 400);
    refused('GET / HTTP/1.1\r\nX-A: one', 400);
    refused('GET  / HTTP/1.1\r\nHost: gw', 400);
    refused('GET / HTTP/2.0\r\nHost: gw', 505);
    refused('GET / HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok', 417);
  });

  test('keep-alive: HTTP/1.1 unless "close", HTTP/1.0 only when asked', () => {
    assert.equal(ok('GET / HTTP/1.1\r\nHost: gw\r\nConnection: Close').keepAlive, false);
    assert.equal(ok('GET / HTTP/1.1\r\nHost: gw\r\nConnection: te, close').keepAlive, false);
    assert.equal(ok('GET / HTTP/1.0').keepAlive, false);
    assert.equal(ok('GET / HTTP/1.0\r\nConnection: keep-alive').keepAlive, true);
  });
});

describe('HttpServer over sockets', () => {
  const seen: Seen[] = [];
  const closed: HttpResponse[] = [];
  let server: HttpServer;
  let port: number;

  before(async () => {
    server = new HttpServer(
      { keepAliveTimeoutMs: 1_500, headersTimeoutMs: 300, requestTimeoutMs: 600, maxHeaderBytes: 2048, maxBodyBytes: MAX_BODY },
      echo(seen, closed),
    );
    port = await server.listen(0, '127.0.0.1');
  });
  after(async () => {
    server.closeAllConnections();
    await server.close();
  });

  test('keep-alive: two requests on one connection, each answered with its length, Date and keep-alive', async () => {
    seen.length = 0;
    const { got, closed: wasClosed } = await exchange(port, [POST('{"a":1}'), POST('{"b":"ü"}')], (g) => responses(g).length === 2);
    const [r1, r2] = responses(got);
    assert.equal(wasClosed, false);
    assert.equal(r1?.status, 200);
    assert.equal(r1?.headers['connection'], 'keep-alive');
    assert.match(r1?.headers['date'] ?? '', /GMT$/);
    assert.equal(r1?.headers['x-echo'], 'é', 'a header value beyond ASCII goes as latin1 (one byte), as node:http sends it');
    assert.equal((JSON.parse(r2?.body ?? '') as Seen).body, '{"b":"ü"}');
    assert.deepEqual(
      seen.map((s) => s.body),
      ['{"a":1}', '{"b":"ü"}'],
    );
  });

  test('pipelined requests in one write are answered in order', async () => {
    seen.length = 0;
    const { got } = await exchange(port, POST('{"n":1}') + POST('{"n":2}') + POST('{"n":3}'), (g) => responses(g).length === 3);
    assert.deepEqual(
      responses(got).map((r) => (JSON.parse(r.body) as Seen).body),
      ['{"n":1}', '{"n":2}', '{"n":3}'],
    );
  });

  test('a chunked body is decoded (chunk extensions and trailer fields read and ignored)', async () => {
    seen.length = 0;
    const head = 'POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n';
    const { got } = await exchange(
      port,
      [head + '4;ext=1\r\n{"a"', '\r\n', '3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n'],
      (g) => responses(g).length === 1,
    );
    assert.equal(responses(got)[0]?.status, 200);
    assert.equal(seen[0]?.body, '{"a":1}');
  });

  test('a chunked body sent a byte at a time (every split of sizes, data and CRLFs) is decoded whole', async () => {
    seen.length = 0;
    const text = 'POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4;x\r\n":1}\r\n0\r\n\r\n';
    const { got } = await exchange(port, [...text], (g) => responses(g).length === 1, 10_000, 1);
    assert.equal(responses(got)[0]?.status, 200);
    assert.equal(seen[0]?.body, '{"a":1}');
  });

  test('204 and 304 go without the body a handler wrote; the next response follows at once', async () => {
    for (const code of [204, 304]) {
      const { got } = await exchange(port, `GET /status/${code} HTTP/1.1\r\nHost: gw\r\n\r\nGET /y HTTP/1.1\r\nHost: gw\r\n\r\n`, (g) =>
        /"url":"\/y"/.test(g),
      );
      const headEnd = got.indexOf('\r\n\r\n');
      assert.ok(got.startsWith(`HTTP/1.1 ${code}`));
      assert.ok(got.slice(headEnd + 4).startsWith('HTTP/1.1 200'), `no body after the ${code} head: ${JSON.stringify(got)}`);
    }
  });

  test('destroy() on a response already finished leaves the next request on the connection alone', async () => {
    closed.length = 0;
    const socket = connect(port, '127.0.0.1');
    socket.setEncoding('latin1');
    let got = '';
    socket.on('data', (d: string) => (got += d));
    socket.write('GET /late-destroy HTTP/1.1\r\nHost: gw\r\n\r\n');
    await waitFor(() => responses(got).length === 1);
    socket.write('GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(socket.destroyed || socket.readyState !== 'open', false, 'the connection is still open');
    assert.equal(closed.filter((r) => r.destroyed).length, 0, 'the request after it was not cut off');
    socket.destroy();
    await waitFor(() => closed.some((r) => r.destroyed));
  });

  test('a handler that asks for Connection: close gets it, once, and the connection closes', async () => {
    const { got, closed: wasClosed } = await exchange(port, 'GET /close HTTP/1.1\r\nHost: gw\r\n\r\n');
    assert.equal(got.match(/connection:/gi)?.length, 1);
    assert.equal(responses(got)[0]?.headers['connection'], 'close');
    assert.equal(wasClosed, true);
  });

  test('a large reply read slowly is not cut by the keep-alive deadline while it makes progress', async () => {
    const socket = connect(port, '127.0.0.1');
    let received = 0;
    socket.on('data', (d: Buffer) => {
      received += d.length;
      // Read in bursts with pauses, so the reply takes longer than the keep-alive deadline (1.5 s) and a
      // sweep (1 s) to go out: handed to the socket in one write, more than the kernel's buffers hold, it
      // must not be cut while it moves.
      socket.pause();
      setTimeout(() => socket.resume(), 15);
    });
    socket.write('GET /big HTTP/1.1\r\nHost: gw\r\n\r\n');
    await waitFor(() => received > BIG, 20_000);
    assert.ok(!socket.destroyed);
    socket.destroy();
  });

  test('a malformed chunk (its size, or no CRLF after its data): 400 malformed_request, and the connection closes', async () => {
    seen.length = 0;
    for (const chunks of ['zz\r\n', '3\r\nabcd\r\n0\r\n\r\n']) {
      const { got, closed: wasClosed } = await exchange(
        port,
        `POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}`,
      );
      const [r] = responses(got);
      assert.equal(r?.status, 400);
      assert.equal(errorCode(r?.body), 'malformed_request');
      assert.equal(r?.headers['connection'], 'close');
      assert.equal(wasClosed, true);
    }
    assert.equal(seen.length, 0);
  });

  test('a smuggling attempt (Content-Length and Transfer-Encoding) is refused and nothing after it is read', async () => {
    seen.length = 0;
    const smuggled = 'GET /admin HTTP/1.1\r\nHost: gw\r\n\r\n';
    const text = `POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`;
    const { got, closed: wasClosed } = await exchange(port, text);
    assert.equal(responses(got).length, 1);
    assert.equal(responses(got)[0]?.status, 400);
    assert.equal(wasClosed, true);
    assert.equal(seen.length, 0, 'no request reached the handler');
  });

  test('a body over the limit (Content-Length): the handler answers at once, the rest is drained, the connection goes on', async () => {
    seen.length = 0;
    const big = 'x'.repeat(MAX_BODY + 1);
    const { got } = await exchange(
      port,
      [POST(big).slice(0, 200), POST(big).slice(200) + POST('{"after":1}')],
      (g) => responses(g).length === 2,
    );
    const [r1, r2] = responses(got);
    assert.equal(r1?.status, 413);
    assert.equal(r2?.status, 200);
    assert.deepEqual(
      seen.map((s) => s.body),
      [null, '{"after":1}'],
    );
  });

  test('a chunked body over the limit: answered before it ends, and the rest is drained', async () => {
    seen.length = 0;
    const head = 'POST /x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n';
    const chunk = `${(600).toString(16)}\r\n${'y'.repeat(600)}\r\n`;
    const { got } = await exchange(
      port,
      [head + chunk + chunk, chunk + '0\r\n\r\n' + POST('{"after":2}')],
      (g) => responses(g).length === 2,
    );
    assert.deepEqual(
      responses(got).map((r) => r.status),
      [413, 200],
    );
    assert.deepEqual(
      seen.map((s) => s.body),
      [null, '{"after":2}'],
    );
  });

  test('Expect: 100-continue gets 100 Continue, then the answer; over the limit, no 100 and the connection closes', async () => {
    seen.length = 0;
    const body = '{"c":1}';
    const head = `POST /x HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`;
    const socket = connect(port, '127.0.0.1');
    socket.setEncoding('latin1');
    let got = '';
    socket.on('data', (d: string) => (got += d));
    socket.write(head);
    await waitFor(() => got.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
    socket.write(body);
    await waitFor(() => responses(got).length === 2);
    assert.equal(responses(got)[1]?.status, 200);
    socket.destroy();

    const { got: refusedGot, closed: wasClosed } = await exchange(
      port,
      `POST /x HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: ${MAX_BODY * 10}\r\n\r\n`,
    );
    assert.ok(!refusedGot.includes('100 Continue'));
    assert.equal(responses(refusedGot)[0]?.status, 413);
    assert.equal(responses(refusedGot)[0]?.headers['connection'], 'close');
    assert.equal(wasClosed, true);
  });

  test('a head over maxHeaderBytes: 431, and the connection closes', async () => {
    const { got, closed: wasClosed } = await exchange(port, `GET / HTTP/1.1\r\nHost: gw\r\nX-Big: ${'b'.repeat(3000)}\r\n\r\n`);
    assert.equal(responses(got)[0]?.status, 431);
    assert.equal(errorCode(responses(got)[0]?.body), 'malformed_request');
    assert.ok(!got.includes('bbbb'), 'what was sent is not echoed');
    assert.equal(wasClosed, true);
  });

  test('streams: chunked on HTTP/1.1; on HTTP/1.0 the body ends with the connection', async () => {
    const { got } = await exchange(
      port,
      'GET /stream HTTP/1.1\r\nHost: gw\r\n\r\n',
      (g) => responses(g).length === 1 && g.endsWith('0\r\n\r\n'),
    );
    const [r] = responses(got);
    assert.equal(r?.headers['transfer-encoding'], 'chunked');
    assert.equal(r?.body, 'data: 1\n\ndata: 2\n\ndata: [DONE]\n\n');
    const old = await exchange(port, 'GET /stream HTTP/1.0\r\n\r\n');
    assert.equal(old.closed, true);
    const [o] = responses(old.got);
    assert.equal(o?.headers['connection'], 'close');
    assert.equal(o?.headers['transfer-encoding'], undefined);
    assert.equal(o?.body, 'data: 1\n\ndata: 2\n\ndata: [DONE]\n\n');
  });

  test('HEAD: the head with its length, no body; a streamed one, no chunks — the next response follows at once', async () => {
    for (const target of ['/x', '/stream']) {
      const { got } = await exchange(port, `HEAD ${target} HTTP/1.1\r\nHost: gw\r\n\r\nGET /y HTTP/1.1\r\nHost: gw\r\n\r\n`, (g) =>
        /\r\n\r\n\{.*"url":"\/y"/.test(g),
      );
      const headEnd = got.indexOf('\r\n\r\n');
      if (target === '/x') assert.match(got.slice(0, headEnd), /content-length: [1-9]/);
      else assert.doesNotMatch(got.slice(0, headEnd), /transfer-encoding/);
      assert.ok(got.slice(headEnd + 4).startsWith('HTTP/1.1 200'), `the next response follows the head at once: ${JSON.stringify(got)}`);
    }
  });

  test('a client that leaves before the answer: the response closes unfinished', async () => {
    closed.length = 0;
    const socket = connect(port, '127.0.0.1');
    socket.write('GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n');
    await waitFor(() => seen.some((s) => s.url === '/hang'));
    socket.end();
    await waitFor(() => closed.length === 1);
    assert.equal(closed[0]?.destroyed, true);
    assert.equal(closed[0]?.writableFinished, false);
  });

  test('deadlines: a head that does not arrive gets 408; an idle connection closes', async () => {
    const slow = await exchange(port, 'GET / HTTP/1.1\r\nHost: gw\r\n', undefined, 5_000);
    assert.equal(responses(slow.got)[0]?.status, 408);
    assert.equal(slow.closed, true);
    const idle = await exchange(port, POST('{}'), undefined, 5_000);
    assert.equal(responses(idle.got)[0]?.status, 200);
    assert.equal(idle.closed, true, 'closed after keepAliveTimeoutMs');
  });

  test('a response header that would split the response throws in writeHead, before anything is sent', async () => {
    let thrown: unknown;
    const probe = new HttpServer(
      { keepAliveTimeoutMs: 1_000, headersTimeoutMs: 1_000, requestTimeoutMs: 1_000, maxHeaderBytes: 1_024, maxBodyBytes: 1_024 },
      (_req, res) => {
        try {
          res.writeHead(200, { 'x-a': 'one\r\nSet-Cookie: evil=1' });
          res.end('x');
        } catch (err) {
          thrown = err;
          // Nothing went out: the handler can still answer.
          assert.equal(res.headersSent, false);
          res.writeHead(500, ['content-type', 'text/plain']);
          res.end('refused');
        }
      },
    );
    const p = await probe.listen(0, '127.0.0.1');
    const { got } = await exchange(p, 'GET / HTTP/1.1\r\nHost: gw\r\n\r\n', (g) => responses(g).length === 1);
    assert.equal(responses(got)[0]?.status, 500);
    assert.ok(!/evil/i.test(got));
    assert.equal((thrown as { code?: unknown }).code, 'ERR_INVALID_CHAR');
    await probe.close();
  });
});

function errorCode(body: string | undefined): unknown {
  return (JSON.parse(body ?? '') as { error: { code: unknown } }).error.code;
}

async function waitFor(cond: () => boolean, ms = 3_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
