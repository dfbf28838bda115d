/**
 * The embedded default's model discovery: what asking vLLM's port gave, in words that name no address, and
 * a log that says when discovery starts failing and when it recovers — not at every poll.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { discoverModels, discoveryReporter, type Discovery } from '../../../src/main/embedded-default.js';
import { freePort } from '../../support/process.js';

const servers: http.Server[] = [];
after(() => {
  for (const s of servers) s.closeAllConnections();
  for (const s of servers) s.close();
});

/** A server answering every request with `handler`; resolves with its /v1 base URL. */
async function serve(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}

test('discoverModels: the served ids, or what came back instead', async () => {
  const ok = await serve((_req, res) => res.end(JSON.stringify({ object: 'list', data: [{ id: 'meta-llama/Llama-3.1-8B-Instruct' }] })));
  assert.deepEqual(await discoverModels(ok), { ids: ['meta-llama/Llama-3.1-8B-Instruct'] });

  const refused = `http://127.0.0.1:${await freePort()}/v1`;
  assert.deepEqual(await discoverModels(refused), { failure: 'connection refused (nothing listens there)' });

  const notFound = await serve((_req, res) => {
    res.statusCode = 404;
    res.end('{"detail":"Not Found"}');
  });
  assert.deepEqual(await discoverModels(notFound), { failure: 'HTTP 404' });

  const html = await serve((_req, res) => res.end('<html>a web server</html>'));
  assert.match(failureOf(await discoverModels(html)), /not JSON/);

  const noList = await serve((_req, res) => res.end('{"models": []}'));
  assert.match(failureOf(await discoverModels(noList)), /without a "data" list/);

  const empty = await serve((_req, res) => res.end('{"object": "list", "data": []}'));
  assert.deepEqual(await discoverModels(empty), { failure: 'an empty list of models' });

  const silent = await serve(() => undefined); // takes the request, never answers
  assert.deepEqual(await discoverModels(silent, 200), { failure: 'no answer within 0.2 s' });
});

test('discoveryReporter: a warning when discovery starts failing, one line when it recovers, nothing at every poll', () => {
  const lines: { level: 'warn' | 'info'; obj: Record<string, unknown>; msg: string }[] = [];
  const logger = {
    warn: (obj: object, msg: string) => void lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    info: (obj: object, msg: string) => void lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
  };
  const base = 'http://127.0.0.1:8000/v1';
  const report = discoveryReporter(logger, base, 10);
  const refused: Discovery = { failure: 'connection refused (nothing listens there)' };
  const up: Discovery = { ids: ['llama'] };

  report(refused, 0);
  report(refused, 0);
  report({ failure: 'HTTP 503' }, 0);
  assert.equal(lines.length, 1, 'one warning however many failed polls');
  const [first] = lines;
  assert.equal(first?.level, 'warn');
  assert.equal(first?.obj['vllm'], base);
  assert.equal(first?.obj['failure'], 'connection refused (nothing listens there)');
  assert.match(first?.msg ?? '', /^model discovery: asked http:\/\/127\.0\.0\.1:8000\/v1\/models and got connection refused/);
  assert.match(first?.msg ?? '', /serves no models until it does \(every request gets 404 model_not_found\)/);
  assert.match(first?.msg ?? '', /Start vLLM there .*or write a config with model_list .*--config\. Asking again every 10 s/);

  report(up, 0);
  report(up, 1);
  assert.equal(lines.length, 2, 'one line when it recovers');
  assert.equal(lines[1]?.level, 'info');
  assert.match(lines[1]?.msg ?? '', /answers again/);
  assert.deepEqual(lines[1]?.obj['models'], ['llama']);

  report({ failure: 'no answer within 2 s' }, 1);
  report({ failure: 'no answer within 2 s' }, 1);
  assert.equal(lines.length, 3, 'failing again: one more warning');
  assert.match(lines[2]?.msg ?? '', /got no answer within 2 s; the 1 models it listed before stay routed/);
});

test('discoveryReporter: a discovery that works from the start logs nothing of its own', () => {
  let n = 0;
  const report = discoveryReporter({ warn: () => void n++, info: () => void n++ }, 'http://127.0.0.1:8000/v1', 10);
  report({ ids: ['a'] }, 0);
  report({ ids: ['a'] }, 1);
  assert.equal(n, 0);
});

function failureOf(d: Discovery): string {
  assert.ok('failure' in d, `expected a failure, got ${JSON.stringify(d)}`);
  return d.failure;
}
