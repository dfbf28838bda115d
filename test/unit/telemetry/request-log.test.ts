import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { createLogger, type Logger } from '../../../src/telemetry/logger.js';
import { RequestLog } from '../../../src/telemetry/request-log.js';
import type { SpendEntry } from '../../../src/store/spend.js';

/** A logger writing into an array, its clock fixed so two lines of one content are equal byte for byte. */
function capture(level = 'info'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino(
    { level, base: { service: 'tollgate' }, timestamp: () => ',"time":"2026-11-23T12:00:00.000Z"' },
    { write: (s: string) => void lines.push(s) },
  );
  return { logger, lines };
}

const entry: SpendEntry = {
  requestId: '5f0c6f2e-1b7e-4c55-a0b2-8a0c1f3e9d11',
  keyId: '0123456789abcdef',
  userId: 'alice',
  teamId: 'ml-platform',
  model: 'llama-3.1-8b-instruct',
  deployment: 'vllm-a',
  promptTokens: 11,
  completionTokens: 5,
  cost: 0.000016,
  status: 200,
  latencyMs: 3.14159,
  estimated: false,
  at: 0,
  endpoint: 'chat/completions',
  backendMs: 2,
  ttftMs: undefined,
};

test('a forwarded request is the line pino writes for the same fields, byte for byte', () => {
  const { logger, lines } = capture();
  new RequestLog(logger).forwarded(entry);
  logger.info(
    {
      request_id: entry.requestId,
      key_id: entry.keyId,
      user_id: entry.userId,
      team_id: entry.teamId,
      model: entry.model,
      deployment: entry.deployment,
      endpoint: entry.endpoint,
      status: 200,
      latency_ms: 3.14,
      prompt_tokens: 11,
      completion_tokens: 5,
      cost: 0.000016,
    },
    'request',
  );
  assert.equal(lines.length, 2);
  assert.equal(lines[0], lines[1]);
});

test('absent fields are left out, estimated usage is flagged, odd text stays valid JSON and intact', () => {
  const { logger, lines } = capture();
  const odd = 'a "quoted" \\ alias\nwith a newline, ✓ and \u0001';
  new RequestLog(logger).forwarded({
    ...entry,
    keyId: undefined,
    userId: odd,
    teamId: undefined,
    deployment: undefined,
    status: 499,
    cost: Number.NaN,
    estimated: true,
  });
  assert.equal(lines.length, 1);
  const line = lines[0] as string;
  assert.ok(line.endsWith('}\n') && !line.slice(0, -1).includes('\n'), 'one line');
  const o = JSON.parse(line) as Record<string, unknown>;
  assert.deepEqual(Object.keys(o), [
    'level',
    'time',
    'service',
    'request_id',
    'user_id',
    'model',
    'endpoint',
    'status',
    'latency_ms',
    'prompt_tokens',
    'completion_tokens',
    'cost',
    'estimated',
    'msg',
  ]);
  assert.equal(o['user_id'], odd);
  assert.equal(o['cost'], null);
  assert.equal(o['estimated'], true);
});

test('requests not forwarded: info, except probes and scrapes at debug; the logger level is read at each line', () => {
  const { logger, lines } = capture('info');
  const log = new RequestLog(logger);
  const r = { requestId: undefined, method: 'GET', route: 'probe', status: 200, latencyMs: 0.123 };
  log.answered(r, true);
  assert.equal(lines.length, 0, 'a probe is below info');
  log.answered({ ...r, requestId: 'rid', route: 'models' }, false);
  assert.deepEqual(JSON.parse(lines[0] as string), {
    level: 30,
    time: '2026-11-23T12:00:00.000Z',
    service: 'tollgate',
    request_id: 'rid',
    method: 'GET',
    route: 'models',
    status: 200,
    latency_ms: 0.12,
    msg: 'request',
  });
  // A level changed on the running logger applies to the next line.
  logger.level = 'debug';
  log.answered(r, true);
  assert.equal((JSON.parse(lines[1] as string) as { level: number }).level, 20);
  logger.level = 'warn';
  log.forwarded(entry);
  log.answered(r, false);
  assert.equal(lines.length, 2, 'nothing below warn');
});

test('the line goes to the destination of tollgate’s own logger, bindings included', () => {
  const lines: string[] = [];
  const logger = createLogger('info', { write: (s: string) => void lines.push(s) });
  new RequestLog(logger).forwarded(entry);
  const o = JSON.parse(lines[0] as string) as Record<string, unknown>;
  assert.equal(o['service'], 'tollgate');
  assert.match(String(o['time']), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(o['msg'], 'request');
});

test('a request whose attempts failed names what each met', () => {
  const { logger, lines } = capture();
  new RequestLog(logger).forwarded({ ...entry, status: 502, upstream: 'vllm-a: HTTP 401; vllm-b: CONNECT_TIMEOUT' });
  const line = JSON.parse(lines[0] ?? '{}') as { status?: number; upstream?: string };
  assert.equal(line.status, 502);
  assert.equal(line.upstream, 'vllm-a: HTTP 401; vllm-b: CONNECT_TIMEOUT');
});

test("a request answered with an error names the contract's code", () => {
  const { logger, lines } = capture();
  new RequestLog(logger).answered(
    { requestId: 'r1', method: 'POST', route: 'chat', status: 401, latencyMs: 0.5, code: 'invalid_api_key' },
    false,
  );
  const line = JSON.parse(lines[0] ?? '{}') as { status?: number; code?: string };
  assert.deepEqual([line.status, line.code], [401, 'invalid_api_key']);
});

test('a policy denial names the rule in detail, as Check\'s "check denied" line does', () => {
  const { logger, lines } = capture();
  new RequestLog(logger).answered(
    { requestId: 'r1', method: 'POST', route: 'chat', status: 403, latencyMs: 0.5, code: 'policy_denied', detail: 'rule no-guests' },
    false,
  );
  const line = JSON.parse(lines[0] ?? '{}') as { code?: string; detail?: string };
  assert.deepEqual([line.code, line.detail], ['policy_denied', 'rule no-guests']);
});
