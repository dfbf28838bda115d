/**
 * The wait for a backend connection (QUEUE_TIMEOUT): the connection's headersTimeout starts only once a
 * request is on a socket, so the exchange bounds the wait before that itself; the whole exchange's bound
 * (REQUEST_TIMEOUT) starts once it has its connection. A stand-in for the connection
 * pool (upstream.ts): one that never starts the request (every connection busy), and ones that start it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClientLink, Exchange, type RelaySink } from '../../../src/gateway/exchange.js';
import type { Upstream, UpstreamController, UpstreamHandler, UpstreamRequest } from '../../../src/gateway/upstream.js';

const OPTS: UpstreamRequest = {
  path: '/v1/chat/completions',
  method: 'POST',
  headers: {},
  body: '{}',
  headersTimeout: 60_000,
  bodyTimeout: 60_000,
};

function exchange(): Exchange {
  return new Exchange({ client: new ClientLink(), sink: undefined, replyCap: 1024, errorCap: 1024 });
}

/** Never gives the request a connection (every one busy). */
const NOOP: UpstreamController = { abort: () => undefined, pause: () => undefined, resume: () => undefined };
const busy: Upstream = { dispatch: () => NOOP };

/** Starts the request at once and answers 200 with `body` and `headers`. */
function answer(body: string, headers: Record<string, string> = {}): Upstream {
  return {
    dispatch(_req: UpstreamRequest, h: UpstreamHandler): UpstreamController {
      setImmediate(() => {
        h.onRequestStart(NOOP);
        h.onResponseStart(NOOP, 200, headers);
        h.onResponseData(NOOP, Buffer.from(body));
        h.onResponseEnd(NOOP);
      });
      return NOOP;
    },
  };
}
const answering = answer('ok');

describe('Exchange: the wait for a connection', () => {
  test('a request that gets no connection fails with QUEUE_TIMEOUT, after its wait and not much later', async () => {
    const t0 = performance.now();
    const [short, long] = await Promise.all([exchange().send(busy, OPTS, 300, 60_000), exchange().send(busy, OPTS, 700, 60_000)]);
    const waited = performance.now() - t0;
    for (const r of [short, long]) {
      assert.equal(r.kind, 'failed');
      assert.equal((r as { err: { code?: string } }).err.code, 'QUEUE_TIMEOUT');
    }
    assert.ok(waited >= 700 && waited < 1_500, `both failed after ${waited} ms`);
  });

  test('a request that gets its connection is not cut by that bound, however long its reply takes', async () => {
    const r = await exchange().send(answering, OPTS, 100, 60_000);
    assert.equal(r.kind, 'reply');
    // Past the wait: nothing aborts what already started.
    const slow = exchange();
    let settled = false;
    const controller = { abort: () => (settled = true), pause: () => undefined, resume: () => undefined };
    let handler: UpstreamHandler | undefined;
    const started: Upstream = {
      dispatch: (_r, h) => {
        handler = h;
        h.onRequestStart(controller);
        return controller;
      },
    };
    const done = slow.send(started, OPTS, 100, 60_000);
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(settled, false, 'not aborted after its connection came');
    handler?.onResponseStart(controller, 200, {});
    handler?.onResponseEnd(controller);
    assert.equal((await done).kind, 'reply');
  });
});

describe('Exchange: the bound on the whole exchange (timeout)', () => {
  /** Starts the request and sends a 200 head, then a byte every 50 ms, never ending: the connection's per-wait timers would never fire. */
  const trickling = (aborted: { err?: Error }): Upstream => ({
    dispatch(_r: UpstreamRequest, h: UpstreamHandler): UpstreamController {
      const trickle: { timer?: NodeJS.Timeout } = {};
      const controller = {
        abort: (err: Error) => ((aborted.err = err), clearInterval(trickle.timer)),
        pause: () => undefined,
        resume: () => undefined,
      };
      h.onRequestStart(controller);
      h.onResponseStart(controller, 200, { 'content-type': 'application/json' });
      trickle.timer = setInterval(() => h.onResponseData(controller, Buffer.from(' ')), 50);
      return controller;
    },
  });

  for (const [queueMs, label] of [
    [300, 'the same bound as the connection wait'],
    [100, 'a connection wait shorter than it'],
  ] as const) {
    test(`a reply still coming after the bound is aborted with REQUEST_TIMEOUT (${label})`, async () => {
      const aborted: { err?: Error } = {};
      const t0 = performance.now();
      const r = await exchange().send(trickling(aborted), OPTS, queueMs, 300);
      const took = performance.now() - t0;
      assert.equal(r.kind, 'failed');
      assert.equal((r as { err: { code?: string } }).err.code, 'REQUEST_TIMEOUT');
      assert.equal((aborted.err as { code?: string } | undefined)?.code, 'REQUEST_TIMEOUT', 'the backend request is aborted');
      assert.ok(took >= 290 && took < 1_000, `aborted after ${took} ms`);
    });
  }

  for (const [event, label] of [
    ['onConnection', 'the pool says when it has its connection'],
    ['onRequestStart', 'a stand-in that says nothing before the start'],
  ] as const) {
    test(`the bound counts from the connection on: a wait in the queue is not the backend's time (${label})`, async () => {
      // A request that waits 400 ms for a connection (the deployment's max_parallel_requests all busy), then
      // gets a reply that trickles, never ending: cut at 300 ms from its connection, not from its dispatch.
      const aborted: { err?: Error } = {};
      const ex = exchange();
      const upstream: Upstream = {
        dispatch(_r, h) {
          const trickle: { timer?: NodeJS.Timeout } = {};
          const controller = {
            abort: (err: Error) => ((aborted.err = err), clearInterval(trickle.timer)),
            pause: () => undefined,
            resume: () => undefined,
          };
          setTimeout(() => {
            if (event === 'onConnection') h.onConnection?.(controller);
            h.onRequestStart(controller);
            h.onResponseStart(controller, 200, { 'content-type': 'application/json' });
            trickle.timer = setInterval(() => h.onResponseData(controller, Buffer.from(' ')), 50);
          }, 400);
          return controller;
        },
      };
      const t0 = performance.now();
      const r = await ex.send(upstream, OPTS, 1_000, 300);
      const took = performance.now() - t0;
      assert.equal(r.kind, 'failed');
      assert.equal((r as { err: { code?: string } }).err.code, 'REQUEST_TIMEOUT');
      assert.equal(ex.queued, false, 'it had a connection');
      assert.equal((aborted.err as { code?: string } | undefined)?.code, 'REQUEST_TIMEOUT');
      assert.ok(took >= 690 && took < 1_500, `aborted after ${Math.round(took)} ms: 400 in the queue, then 300`);
    });
  }

  test('a request that never had a connection says so (queued): it was never sent', async () => {
    const ex = exchange();
    const r = await ex.send(busy, OPTS, 100, 60_000);
    assert.equal((r as { err: { code?: string } }).err.code, 'QUEUE_TIMEOUT');
    assert.equal(ex.queued, true);
  });

  test('a 2xx to a stream that is not an event stream fails at its head (NOT_EVENT_STREAM), whatever its size, none of it read', async () => {
    const events: string[] = [];
    const sink = { start: () => events.push('start'), data: () => (events.push('data'), true), end: () => events.push('end') };
    let aborted: Error | undefined;
    const controller = { abort: (err: Error) => (aborted = err), pause: () => undefined, resume: () => undefined };
    const upstream: Upstream = {
      dispatch(_req, h) {
        setImmediate(() => {
          h.onRequestStart(controller);
          h.onResponseStart(controller, 200, { 'content-type': 'application/json' });
          // What a backend not told of the abort yet would send: past replyCap, refused as too large (502, no
          // retry) before, when the exchange collected it for the forwarder to judge.
          if (aborted === undefined) {
            h.onResponseData(controller, Buffer.alloc(5000, 0x20));
            h.onResponseEnd(controller);
          }
        });
        return controller;
      },
    };
    const ex = new Exchange({ client: new ClientLink(), sink, replyCap: 1024, errorCap: 1024 });
    const r = await ex.send(upstream, OPTS, 1_000, 1_000);
    assert.deepEqual(events, [], 'the stream was not started');
    assert.equal(r.kind, 'failed');
    assert.equal((r as { err: { code?: string } }).err.code, 'NOT_EVENT_STREAM');
    assert.equal((aborted as { code?: string } | undefined)?.code, 'NOT_EVENT_STREAM', 'the backend request is closed');
  });
});

describe('Exchange: a 2xx past what is held goes to the relay', () => {
  /** Starts the request, answers `status` with `chunks` (then ends, or fails with `err`); records the controller's pause and resume. */
  function chunked(status: number, chunks: string[], calls: string[], err?: Error): Upstream {
    return {
      dispatch(_req: UpstreamRequest, h: UpstreamHandler): UpstreamController {
        const controller = {
          abort: () => calls.push('abort'),
          pause: () => calls.push('pause'),
          resume: () => calls.push('resume'),
        };
        // Each step in a turn of its own, as a socket's reads come.
        const steps = [
          () => {
            h.onRequestStart(controller);
            h.onResponseStart(controller, status, { 'content-type': 'application/json' });
          },
          ...chunks.map((c) => () => h.onResponseData(controller, Buffer.from(c))),
          () => (err === undefined ? h.onResponseEnd(controller) : h.onResponseError(controller, err)),
        ];
        const next = (): void => {
          steps.shift()?.();
          if (steps.length > 0) setImmediate(next);
        };
        setImmediate(next);
        return controller;
      },
    };
  }

  /** A relay that records what it gets; `takes`: what data() answers (false: the client is not taking more). */
  function recorder(calls: string[], takes = true): () => RelaySink {
    return () => ({
      start: (_ex, held) => (calls.push(`start ${held.map((b) => b.length).join('+')}`), takes),
      data: (chunk) => (calls.push(`data ${chunk.length}`), takes),
      end: (err) => void calls.push(`end ${(err as { code?: string } | undefined)?.code ?? 'ok'}`),
    });
  }

  test('the bytes held so far, then the rest as it arrives, then its end; the result is relayed', async () => {
    const calls: string[] = [];
    const ex = new Exchange({ client: new ClientLink(), sink: undefined, relay: recorder(calls), replyCap: 1024, errorCap: 1024 });
    const r = await ex.send(chunked(200, ['a'.repeat(600), 'b'.repeat(600), 'c'.repeat(100)], calls), OPTS, 1_000, 1_000);
    assert.deepEqual(r, { kind: 'relayed', err: undefined });
    assert.deepEqual(calls, ['start 600+600', 'data 100', 'end ok']);
  });

  test('a relay that is not taking more pauses the backend; resume() resumes it', async () => {
    const calls: string[] = [];
    const ex = new Exchange({ client: new ClientLink(), sink: undefined, relay: recorder(calls, false), replyCap: 1024, errorCap: 1024 });
    const done = ex.send(chunked(200, ['a'.repeat(2000), 'b'], calls), OPTS, 1_000, 1_000);
    while (!calls.includes('pause')) await new Promise((resolve) => setImmediate(resolve));
    ex.resume();
    await done;
    assert.deepEqual(calls, ['start 2000', 'pause', 'resume', 'data 1', 'pause', 'end ok']);
  });

  test("once the relay sent the reply's head, the whole exchange's bound counts only the time the backend is read, not the client's", async () => {
    // The exchange's bound is 300 ms. The relay pauses the backend (a client whose socket is full) for 500 ms:
    // not counted. Then a backend that trickles a byte every 50 ms: counted, and cut at the bound.
    const calls: string[] = [];
    let handler: UpstreamHandler | undefined;
    const controller = {
      abort: (err: Error) => void calls.push(`abort ${(err as { code?: string }).code}`),
      pause: () => void calls.push('pause'),
      resume: () => void calls.push('resume'),
    };
    const upstream: Upstream = {
      dispatch(_r, h) {
        handler = h;
        h.onRequestStart(controller);
        h.onResponseStart(controller, 200, { 'content-type': 'application/json' });
        return controller;
      },
    };
    let taking = false;
    const relay = (): RelaySink => ({
      start: (exchange) => (exchange.headSent(), taking),
      data: () => taking,
      end: (err) => void calls.push(`end ${(err as { code?: string } | undefined)?.code ?? 'ok'}`),
    });
    const ex = new Exchange({ client: new ClientLink(), sink: undefined, relay, replyCap: 10, errorCap: 10 });
    const started = performance.now();
    const done = ex.send(upstream, OPTS, 300, 300);
    handler?.onResponseData(controller, Buffer.alloc(20, 0x20));
    assert.deepEqual(calls, ['pause']);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.deepEqual(calls, ['pause'], 'not cut while paused for the client, past the bound');
    taking = true;
    ex.resume();
    const trickle = setInterval(() => handler?.onResponseData(controller, Buffer.from(' ')), 50);
    const r = await done;
    clearInterval(trickle);
    const took = performance.now() - started;
    assert.equal(r.kind, 'relayed');
    assert.equal((r as { err?: { code?: string } }).err?.code, 'REQUEST_TIMEOUT');
    assert.ok(took >= 750, `cut after ${Math.round(took)} ms: the 500 ms paused are not counted`);
    assert.deepEqual(calls.slice(0, 3), ['pause', 'resume', 'abort REQUEST_TIMEOUT']);
  });

  test('a reply in many small chunks is held in few buffers (a Buffer a chunk cost ten times the bytes)', async () => {
    const chunks = Array.from({ length: 3000 }, (_, i) => String(i % 10).repeat(16));
    let held: readonly Buffer[] = [];
    const relay = (): RelaySink => ({
      start: (_ex, h) => ((held = [...h]), true),
      data: () => true,
      end: () => undefined,
    });
    const upstream: Upstream = {
      dispatch(_req, h) {
        setImmediate(() => {
          h.onRequestStart(NOOP);
          h.onResponseStart(NOOP, 200, { 'content-type': 'application/json' });
          for (const c of chunks) h.onResponseData(NOOP, Buffer.from(c));
          h.onResponseEnd(NOOP);
        });
        return NOOP;
      },
    };
    const r = await new Exchange({ client: new ClientLink(), sink: undefined, relay, replyCap: 40_000, errorCap: 1024 }).send(
      upstream,
      OPTS,
      1_000,
      1_000,
    );
    assert.equal(r.kind, 'relayed');
    // The first 8 pieces as they came (a small reply in a few reads is never copied), then a few blocks.
    assert.ok(held.length <= 12, `${held.length} buffers held`);
    // Held until past replyCap: 2501 chunks.
    assert.equal(Buffer.concat(held).toString(), chunks.join('').slice(0, 40_016));
    // Collected whole (no relay): the same bytes, in order.
    const whole = await new Exchange({ client: new ClientLink(), sink: undefined, replyCap: 100_000, errorCap: 1024 }).send(
      upstream,
      OPTS,
      1_000,
      1_000,
    );
    assert.equal((whole as { body: Buffer }).body.toString(), chunks.join(''));
  });

  test('a reply that breaks off while relayed ends the relay with its error', async () => {
    const calls: string[] = [];
    const ex = new Exchange({ client: new ClientLink(), sink: undefined, relay: recorder(calls), replyCap: 10, errorCap: 10 });
    const cut = Object.assign(new Error('closed'), { code: 'SOCKET_CLOSED' });
    const r = await ex.send(chunked(200, ['x'.repeat(20)], calls, cut), OPTS, 1_000, 1_000);
    assert.equal(r.kind, 'relayed');
    assert.equal((r as { err: Error }).err, cut);
    assert.deepEqual(calls, ['start 20', 'end SOCKET_CLOSED']);
  });

  test('up to replyCap the reply is held whole; past it without a relay, or past errorCap for a non-2xx, it fails with REPLY_TOO_LARGE', async () => {
    const calls: string[] = [];
    const held = await new Exchange({
      client: new ClientLink(),
      sink: undefined,
      relay: recorder(calls),
      replyCap: 1024,
      errorCap: 10,
    }).send(chunked(200, ['a'.repeat(1024)], []), OPTS, 1_000, 1_000);
    assert.equal(held.kind, 'reply');
    const none = await new Exchange({ client: new ClientLink(), sink: undefined, replyCap: 1024, errorCap: 1024 }).send(
      chunked(200, ['a'.repeat(1025)], []),
      OPTS,
      1_000,
      1_000,
    );
    const error = await new Exchange({
      client: new ClientLink(),
      sink: undefined,
      relay: recorder(calls),
      replyCap: 1024,
      errorCap: 10,
    }).send(chunked(500, ['a'.repeat(11)], []), OPTS, 1_000, 1_000);
    for (const r of [none, error]) {
      assert.equal(r.kind, 'failed');
      assert.equal((r as { err: { code?: string } }).err.code, 'REPLY_TOO_LARGE');
    }
    assert.deepEqual(calls, [], 'the relay was never made');
  });
});
