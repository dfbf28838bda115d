/**
 * The wait for a backend connection (QUEUE_TIMEOUT): undici's headersTimeout starts only once a request is on
 * a socket, so the exchange bounds the wait before that itself. A dispatcher stands in for undici's Pool:
 * one that never starts the request (every connection busy), and ones that start it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Dispatcher } from 'undici';
import { ClientLink, Exchange } from '../../../src/gateway/exchange.js';

const OPTS: Dispatcher.DispatchOptions = { path: '/v1/chat/completions', method: 'POST' };

function exchange(): Exchange {
  return new Exchange({ client: new ClientLink(), sink: undefined, replyCap: 1024, errorCap: 1024 });
}

/** Never gives the request a connection (every one busy). */
const busy = { dispatch: () => true } as unknown as Dispatcher;

/** Starts the request at once and answers 200 `ok`. */
const answering = {
  dispatch(_opts: Dispatcher.DispatchOptions, h: Dispatcher.DispatchHandler): boolean {
    const controller = {
      abort: () => undefined,
      pause: () => undefined,
      resume: () => undefined,
    } as unknown as Dispatcher.DispatchController;
    setImmediate(() => {
      h.onRequestStart?.(controller, {});
      h.onResponseStart?.(controller, 200, {}, 'OK');
      h.onResponseData?.(controller, Buffer.from('ok'));
      h.onResponseEnd?.(controller, {});
    });
    return true;
  },
} as unknown as Dispatcher;

describe('Exchange: the wait for a connection', () => {
  test('a request that gets no connection fails with QUEUE_TIMEOUT, after its wait and not much later', async () => {
    const t0 = performance.now();
    const [short, long] = await Promise.all([exchange().send(busy, OPTS, 300), exchange().send(busy, OPTS, 700)]);
    const waited = performance.now() - t0;
    for (const r of [short, long]) {
      assert.equal(r.kind, 'failed');
      assert.equal((r as { err: { code?: string } }).err.code, 'QUEUE_TIMEOUT');
    }
    assert.ok(waited >= 700 && waited < 1_500, `both failed after ${waited} ms`);
  });

  test('a request that gets its connection is not cut by that bound, however long its reply takes', async () => {
    const r = await exchange().send(answering, OPTS, 100);
    assert.equal(r.kind, 'reply');
    // Past the wait: nothing aborts what already started.
    const slow = exchange();
    let settled = false;
    const controller = { abort: () => (settled = true), pause: () => undefined, resume: () => undefined };
    let handler: Dispatcher.DispatchHandler | undefined;
    const started = {
      dispatch: (_o: unknown, h: Dispatcher.DispatchHandler) => ((handler = h), h.onRequestStart?.(controller as never, {}), true),
    };
    const done = slow.send(started as unknown as Dispatcher, OPTS, 100);
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(settled, false, 'not aborted after its connection came');
    handler?.onResponseStart?.(controller as never, 200, {}, 'OK');
    handler?.onResponseEnd?.(controller as never, {});
    assert.equal((await done).kind, 'reply');
  });
});
