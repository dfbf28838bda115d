/** The error table against ../shared/CONTRACT.md, "Denials": status, OpenAI type, gRPC code, body shape. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ERRORS, errorBody, GrpcCode, retryAfterHeaders, type ErrorCode } from '../../../src/errors/codes.js';

/**
 * The contract's Denials table. The contract does not fix gRPC codes; these follow the usual HTTP ↔ gRPC
 * pairing (google.rpc.Code docs): 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
 * 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE; 413 is a bad argument (the body).
 */
const CONTRACT: Record<ErrorCode, [status: number, type: string, grpc: number]> = {
  invalid_body: [400, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  missing_model: [400, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  // The gateway's HTTP server, for a request it cannot read (sent with 400, 408, 417, 431, 501 or 505).
  malformed_request: [400, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  missing_jwt: [401, 'authentication_error', GrpcCode.UNAUTHENTICATED],
  invalid_jwt: [401, 'authentication_error', GrpcCode.UNAUTHENTICATED],
  missing_api_key: [401, 'authentication_error', GrpcCode.UNAUTHENTICATED],
  invalid_api_key: [401, 'authentication_error', GrpcCode.UNAUTHENTICATED],
  expired_api_key: [401, 'authentication_error', GrpcCode.UNAUTHENTICATED],
  model_not_allowed: [403, 'permission_error', GrpcCode.PERMISSION_DENIED],
  policy_denied: [403, 'permission_error', GrpcCode.PERMISSION_DENIED],
  key_blocked: [403, 'permission_error', GrpcCode.PERMISSION_DENIED],
  model_not_found: [404, 'invalid_request_error', GrpcCode.NOT_FOUND],
  request_too_large: [413, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  rate_limit_exceeded: [429, 'rate_limit_error', GrpcCode.RESOURCE_EXHAUSTED],
  budget_exceeded: [429, 'insufficient_quota', GrpcCode.RESOURCE_EXHAUSTED],
  store_unavailable: [503, 'service_unavailable', GrpcCode.UNAVAILABLE],
  no_healthy_deployment: [503, 'service_unavailable', GrpcCode.UNAVAILABLE],
  // The gateway's extension of the table (backend outcomes), in the same shape.
  not_found: [404, 'invalid_request_error', GrpcCode.NOT_FOUND],
  method_not_allowed: [405, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  conflict: [409, 'invalid_request_error', GrpcCode.ALREADY_EXISTS],
  upstream_invalid_request: [400, 'invalid_request_error', GrpcCode.INVALID_ARGUMENT],
  upstream_error: [502, 'api_error', GrpcCode.INTERNAL],
  upstream_timeout: [504, 'timeout', GrpcCode.DEADLINE_EXCEEDED],
  // Envoy's local reply when the gateway cannot be reached (envoy/envoy.yaml).
  gateway_unavailable: [503, 'service_unavailable', GrpcCode.UNAVAILABLE],
  // Envoy's local reply when a Check fails (status_on_error, mapped).
  authz_unavailable: [503, 'service_unavailable', GrpcCode.UNAVAILABLE],
};

describe('ERRORS matches the contract', () => {
  test('exactly the contract codes and the gateway extension, no more, no fewer', () => {
    assert.deepEqual(Object.keys(ERRORS).sort(), Object.keys(CONTRACT).sort());
  });
  for (const [code, [status, type, grpc]] of Object.entries(CONTRACT) as Array<[ErrorCode, [number, string, number]]>) {
    test(`${code} → ${status} ${type}, gRPC ${grpc}`, () => {
      const spec = ERRORS[code];
      assert.equal(spec.status, status);
      assert.equal(spec.type, type);
      assert.equal(spec.grpc, grpc);
      assert.notEqual(spec.grpc, GrpcCode.OK, 'a denial never carries gRPC OK');
      assert.ok(spec.message.length > 10 && spec.message.length < 200);
      assert.doesNotMatch(spec.message, /\n/);
    });
  }
  test('messages are distinct', () => {
    const messages = Object.values(ERRORS).map((s) => s.message);
    assert.equal(new Set(messages).size, messages.length);
  });
});

describe('errorBody', () => {
  for (const code of Object.keys(CONTRACT) as ErrorCode[]) {
    test(`${code}: {"error":{"message","type","param":null,"code"}}`, () => {
      const text = errorBody(code);
      const parsed = JSON.parse(text) as unknown;
      assert.deepEqual(parsed, { error: { message: ERRORS[code].message, type: ERRORS[code].type, param: null, code } });
      assert.deepEqual(Object.keys((parsed as { error: object }).error), ['message', 'type', 'param', 'code']);
      assert.deepEqual(Object.keys(parsed as object), ['error']);
    });
  }
  const custom: Array<[name: string, message: string | undefined, expected: string]> = [
    ['a specific message replaces the default', 'guests may only use llama', 'guests may only use llama'],
    ['quotes and newlines are JSON-escaped', 'say "hi"\nthen go', 'say "hi"\nthen go'],
    ['undefined keeps the default', undefined, ERRORS.policy_denied.message],
  ];
  for (const [name, message, expected] of custom) {
    test(name, () => {
      const text = errorBody('policy_denied', message);
      assert.doesNotMatch(text, /[\n\r]/, 'one line of JSON');
      assert.deepEqual(JSON.parse(text), { error: { message: expected, type: 'permission_error', param: null, code: 'policy_denied' } });
    });
  }
});

describe('retryAfterHeaders', () => {
  test('retry-after in whole seconds rounded up, retry-after-ms in whole ms rounded up: the same wait', () => {
    for (const [ms, seconds, millis] of [
      [29_999.2, '30', '30000'],
      [30_000, '30', '30000'],
      [30_001, '31', '30001'],
      [1, '1', '1'],
      [0, '0', '0'],
      // A cooldown that ended while the answer was being made: no negative wait.
      [-5, '0', '0'],
    ] as const) {
      assert.deepEqual(
        retryAfterHeaders(ms),
        [
          ['retry-after', seconds],
          ['retry-after-ms', millis],
        ],
        String(ms),
      );
    }
  });
});
