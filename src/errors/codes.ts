/**
 * One table for every error tollgate answers with: the Envoy denial (DeniedHttpResponse), the gateway's
 * OpenAI error JSON and the gRPC status code all render from it, so a code without a mapping fails to
 * compile. Messages say what to do; they never echo a key, a token or a prompt.
 */

/** Every error code of the contract (../shared/CONTRACT.md, "Denials"). */
export type ErrorCode =
  | 'invalid_body'
  | 'missing_model'
  // The gateway's HTTP server: a request it cannot read (the status says which fault: 400, 408, 417, 431, 501, 505).
  | 'malformed_request'
  | 'missing_jwt'
  | 'invalid_jwt'
  | 'missing_api_key'
  | 'invalid_api_key'
  | 'expired_api_key'
  | 'model_not_allowed'
  | 'policy_denied'
  | 'key_blocked'
  | 'model_not_found'
  | 'request_too_large'
  | 'rate_limit_exceeded'
  | 'budget_exceeded'
  | 'store_unavailable'
  | 'no_healthy_deployment'
  // The gateway's own (contract extension): what a backend did, rendered in the same shape.
  | 'not_found'
  /** An OpenAI endpoint asked with another method than its own (GET /v1/chat/completions). */
  | 'method_not_allowed'
  /** The admin API: the record exists already, or is declared in the config file (read-only). */
  | 'conflict'
  | 'upstream_invalid_request'
  | 'upstream_error'
  | 'upstream_timeout'
  // Envoy's own (envoy/envoy.yaml local_reply_config): the gateway behind it could not be reached.
  | 'gateway_unavailable'
  | 'authz_unavailable';

/** OpenAI's `error.type` values that tollgate uses. */
export type OpenAiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'rate_limit_error'
  | 'insufficient_quota'
  | 'service_unavailable'
  | 'api_error'
  | 'timeout';

/** gRPC status codes (grpc/status.proto numbering) used in CheckResponse.status of a denial. */
export const GrpcCode = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
  DEADLINE_EXCEEDED: 4,
  INTERNAL: 13,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcCodeValue = (typeof GrpcCode)[keyof typeof GrpcCode];

export interface ErrorSpec {
  readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 413 | 429 | 502 | 503 | 504;
  readonly type: OpenAiErrorType;
  readonly grpc: GrpcCodeValue;
  /** Default message; a denial may carry a more specific one (still never echoing a secret). */
  readonly message: string;
  /** Headers every reply with this code carries (e.g. `x-should-retry: false`, obeyed by the OpenAI SDKs). */
  readonly headers?: Readonly<Record<string, string>>;
}

export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = {
  invalid_body: {
    status: 400,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'The request body must be a JSON object.',
  },
  malformed_request: {
    status: 400,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'The HTTP request is malformed.',
  },
  missing_model: {
    status: 400,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'The request body has no "model": set it to one of the models listed by GET /v1/models.',
  },
  missing_jwt: {
    status: 401,
    type: 'authentication_error',
    grpc: GrpcCode.UNAUTHENTICATED,
    message: 'No identity token: send an OAuth 2.0 access token in the X-Cake-Authorization header.',
  },
  invalid_jwt: {
    status: 401,
    type: 'authentication_error',
    grpc: GrpcCode.UNAUTHENTICATED,
    message: 'The identity token in X-Cake-Authorization is not valid: get a new token from your identity provider.',
  },
  missing_api_key: {
    status: 401,
    type: 'authentication_error',
    grpc: GrpcCode.UNAUTHENTICATED,
    message: 'No API key: send your virtual key as "Authorization: Bearer sk-...".',
  },
  invalid_api_key: {
    status: 401,
    type: 'authentication_error',
    grpc: GrpcCode.UNAUTHENTICATED,
    message: 'The API key is not valid: check the key you sent in the Authorization header.',
  },
  expired_api_key: {
    status: 401,
    type: 'authentication_error',
    grpc: GrpcCode.UNAUTHENTICATED,
    message: 'The API key has expired: ask your platform team for a new key.',
  },
  model_not_allowed: {
    status: 403,
    type: 'permission_error',
    grpc: GrpcCode.PERMISSION_DENIED,
    message: 'This key may not use the requested model: use one of the models listed by GET /v1/models.',
  },
  policy_denied: {
    status: 403,
    type: 'permission_error',
    grpc: GrpcCode.PERMISSION_DENIED,
    message: 'The request was denied by policy.',
  },
  key_blocked: {
    status: 403,
    type: 'permission_error',
    grpc: GrpcCode.PERMISSION_DENIED,
    message: 'This API key is blocked: ask your platform team to unblock it.',
  },
  model_not_found: {
    status: 404,
    type: 'invalid_request_error',
    grpc: GrpcCode.NOT_FOUND,
    message: 'The requested model does not exist: use one of the models listed by GET /v1/models.',
  },
  request_too_large: {
    status: 413,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'The request body is too large: send a smaller request.',
  },
  rate_limit_exceeded: {
    status: 429,
    type: 'rate_limit_error',
    grpc: GrpcCode.RESOURCE_EXHAUSTED,
    message: 'Rate limit exceeded: retry after the time given in the retry-after header.',
  },
  budget_exceeded: {
    status: 429,
    type: 'insufficient_quota',
    grpc: GrpcCode.RESOURCE_EXHAUSTED,
    message: 'The budget is exhausted: wait for the budget period to reset or ask for a higher budget.',
    // The OpenAI SDKs retry 429 unless told not to; retrying cannot help until the period resets.
    headers: { 'x-should-retry': 'false' },
  },
  store_unavailable: {
    status: 503,
    type: 'service_unavailable',
    grpc: GrpcCode.UNAVAILABLE,
    message: 'tollgate cannot reach its state store right now: retry shortly.',
  },
  no_healthy_deployment: {
    status: 503,
    type: 'service_unavailable',
    grpc: GrpcCode.UNAVAILABLE,
    message: 'No deployment of the requested model is available right now: retry shortly.',
  },
  not_found: {
    status: 404,
    type: 'invalid_request_error',
    grpc: GrpcCode.NOT_FOUND,
    message:
      "No such endpoint: tollgate serves the OpenAI API under /v1 (chat/completions, completions, embeddings, models) and LiteLLM's admin routes that its README lists.",
  },
  method_not_allowed: {
    status: 405,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'This endpoint takes POST.',
  },
  conflict: {
    status: 409,
    type: 'invalid_request_error',
    grpc: GrpcCode.ALREADY_EXISTS,
    message: 'The record exists already, or is declared in the config file (change it there).',
  },
  upstream_invalid_request: {
    status: 400,
    type: 'invalid_request_error',
    grpc: GrpcCode.INVALID_ARGUMENT,
    message: 'The model server refused the request: check its parameters.',
  },
  upstream_error: {
    status: 502,
    type: 'api_error',
    grpc: GrpcCode.INTERNAL,
    message: 'The model server failed to answer: retry shortly.',
  },
  upstream_timeout: {
    status: 504,
    type: 'timeout',
    grpc: GrpcCode.DEADLINE_EXCEEDED,
    message: 'The model server did not answer in time: retry, or ask for fewer tokens.',
  },
  gateway_unavailable: {
    status: 503,
    type: 'service_unavailable',
    grpc: GrpcCode.UNAVAILABLE,
    message: 'tollgate is not reachable right now: retry shortly.',
  },
  /** Envoy's local reply when a Check fails (authz unreachable or timed out): envoy/envoy.yaml. */
  authz_unavailable: {
    status: 503,
    type: 'service_unavailable',
    grpc: GrpcCode.UNAVAILABLE,
    message: 'tollgate cannot authorize requests right now: retry shortly.',
  },
};

/** The OpenAI error body: `{"error": {"message", "type", "param", "code"}}`; `param` names the field at fault. */
export function errorBody(code: ErrorCode, message?: string, param?: string): string {
  const spec = ERRORS[code];
  return JSON.stringify({
    error: { message: message ?? spec.message, type: spec.type, param: param ?? null, code },
  });
}

/**
 * How long to wait before sending again, for the client: `retry-after` in whole seconds rounded up (RFC 9110
 * §10.2.3 delay-seconds), and `retry-after-ms`, which the OpenAI SDKs read first (FIELD-NOTES) — the same
 * wait, so whichever a client reads, it does not come back early.
 */
export function retryAfterHeaders(waitMs: number): [string, string][] {
  const ms = Math.max(0, Math.ceil(waitMs));
  return [
    ['retry-after', String(Math.ceil(ms / 1000))],
    ['retry-after-ms', String(ms)],
  ];
}
