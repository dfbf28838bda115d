/**
 * An HTTP stand-in for Envoy as envoy/envoy.yaml configures it, for end-to-end tests (no Envoy binary runs
 * here): client-sent `x-tollgate-*` headers are stripped, Check is called with Envoy's own protos
 * (with_request_body, pack_as_bytes), a denial is answered with its status, headers and body, a Check
 * failure with `status_on_error` 503 (failure_mode_allow: false), and an allowed request is forwarded to
 * the gateway with the OkHttpResponse applied by Envoy's header semantics and `response_headers_to_add`
 * added to the reply, which is streamed back as it comes.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { request } from 'undici';
import { applyOkResponse, deniedHeaders, EnvoyCheckClient } from './envoy.js';

/** envoy.type.v3.StatusCode names (the client loads enums as strings) → HTTP status. */
const STATUS: Readonly<Record<string, number>> = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  Conflict: 409,
  PayloadTooLarge: 413,
  TooManyRequests: 429,
  InternalServerError: 500,
  BadGateway: 502,
  ServiceUnavailable: 503,
  GatewayTimeout: 504,
};

export interface EnvoyProxy {
  readonly url: string;
  close(): Promise<void>;
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function startEnvoyProxy(opts: { authzPort: number; gatewayPort: number }): Promise<EnvoyProxy> {
  const check = new EnvoyCheckClient(opts.authzPort);
  const server: Server = createServer((req, res) => {
    void (async () => {
      const body = await readAll(req);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        // The header mutation filter runs before ext_authz: no client-sent x-tollgate-* survives.
        if (v === undefined || k.startsWith('x-tollgate-')) continue;
        headers[k] = Array.isArray(v) ? v.join(',') : v;
      }
      let answer;
      try {
        answer = await check.check({ method: req.method ?? 'GET', path: req.url ?? '/', headers, rawBody: body });
      } catch {
        res.writeHead(503).end(); // status_on_error
        return;
      }
      const denied = answer.denied_response;
      if (answer.ok_response === undefined || answer.ok_response === null) {
        const raw = (denied?.status as { code?: unknown } | null | undefined)?.code;
        const code = typeof raw === 'string' ? raw : '';
        res.writeHead(STATUS[code] ?? 403, denied === undefined ? {} : deniedHeaders(denied));
        res.end(denied?.body ?? '');
        return;
      }
      const forwarded = applyOkResponse(headers, answer.ok_response);
      const out: Record<string, string> = {};
      for (const [k, v] of forwarded) if (!k.startsWith(':') && k !== 'host' && k !== 'content-length') out[k] = v.join(',');
      const upstream = await request(`http://127.0.0.1:${opts.gatewayPort}${req.url ?? '/'}`, {
        method: (req.method ?? 'GET') as 'GET',
        headers: out,
        body: body.length === 0 ? undefined : body,
      });
      const replyHeaders: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(upstream.headers)) {
        if (v !== undefined && k !== 'transfer-encoding' && k !== 'connection' && k !== 'keep-alive') replyHeaders[k] = v;
      }
      for (const h of answer.ok_response.response_headers_to_add) replyHeaders[h.header.key.toLowerCase()] = h.header.value;
      res.writeHead(upstream.statusCode, replyHeaders);
      for await (const chunk of upstream.body) res.write(chunk as Buffer);
      res.end();
    })().catch(() => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      check.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
