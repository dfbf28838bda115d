/**
 * An HTTP stand-in for Envoy as envoy/envoy.yaml configures it, for end-to-end tests (no Envoy binary runs
 * here): client-sent `x-tollgate-*` headers are stripped, Check is called with Envoy's own protos
 * (with_request_body, pack_as_bytes), a denial is answered with its status, headers and body, a Check
 * failure with `status_on_error` 500 (failure_mode_allow: false; local_reply_config makes it a 503), and an allowed request is forwarded to
 * the gateway with the OkHttpResponse applied by Envoy's header semantics and `response_headers_to_add`
 * added to the reply, which is streamed back as it comes. Every reply the stand-in makes itself (a denial,
 * a failed Check, the gateway unreachable) goes through envoy.yaml's local_reply_config, as Envoy's do.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request } from 'undici';
import { parse } from 'yaml';
import type { JsonObject } from './envoy-bootstrap.js';
import { applyOkResponse, deniedHeaders, EnvoyCheckClient } from './envoy.js';
import { localReplyMappers, mapLocalReply, type LocalReply } from './envoy-local-reply.js';

/** envoy/envoy.yaml's mappers (the client listener's connection manager is the first listener's only filter). */
const MAPPERS = localReplyMappers(
  (
    parse(readFileSync(new URL('../../../envoy/envoy.yaml', import.meta.url), 'utf8')) as {
      static_resources: { listeners: { filter_chains: { filters: { typed_config: JsonObject }[] }[] }[] };
    }
  ).static_resources.listeners[0]?.filter_chains[0]?.filters[0]?.typed_config ?? {},
);

/** Envoy's sendLocalReply: the mappers applied, then the reply written. */
function localReply(res: ServerResponse, reply: LocalReply, headers: Record<string, string> = {}): void {
  const out = mapLocalReply(MAPPERS, reply);
  const head: Record<string, string> = { ...headers };
  if (out.contentType !== undefined) head['content-type'] = out.contentType;
  res.writeHead(out.status, head).end(out.body);
}

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
        localReply(res, { status: 500, flags: ['UAEX'], body: '', contentType: undefined }); // status_on_error
        return;
      }
      const denied = answer.denied_response;
      if (answer.ok_response === undefined || answer.ok_response === null) {
        const raw = (denied?.status as { code?: unknown } | null | undefined)?.code;
        const code = typeof raw === 'string' ? raw : '';
        const headers = denied === undefined ? {} : deniedHeaders(denied);
        localReply(
          res,
          { status: STATUS[code] ?? 403, flags: ['UAEX'], body: denied?.body ?? '', contentType: headers['content-type'] },
          headers,
        );
        return;
      }
      const forwarded = applyOkResponse(headers, answer.ok_response);
      const out: Record<string, string> = {};
      for (const [k, v] of forwarded) if (!k.startsWith(':') && k !== 'host' && k !== 'content-length') out[k] = v.join(',');
      let upstream;
      try {
        upstream = await request(`http://127.0.0.1:${opts.gatewayPort}${req.url ?? '/'}`, {
          method: (req.method ?? 'GET') as 'GET',
          headers: out,
          body: body.length === 0 ? undefined : body,
        });
      } catch {
        // Envoy's words for it, and its flag: upstream connection failure.
        const body = 'upstream connect error or disconnect/reset before headers. reset reason: connection failure';
        localReply(res, { status: 503, flags: ['UF'], body, contentType: 'text/plain' });
        return;
      }
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
