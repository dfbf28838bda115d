/**
 * Bench child: tollgate's own HTTP stack with nothing of tollgate on it — its server (http-server.ts) reads
 * the request, its backend client (upstream.ts) sends the body unchanged and the reply is relayed as it
 * arrives, as servers/bare-proxy.ts does over node:http and undici. No parsing, no auth, no accounting. The
 * gap between this floor and tollgate is what tollgate's own work per request costs; the gap between it and
 * the bare proxy is what the HTTP stacks cost. The backend origin comes in BARE_PROXY_BACKEND.
 */
import { HttpServer } from '../../src/gateway/http-server.js';
import type { HttpResponse } from '../../src/gateway/http-response.js';
import { UpstreamPool, type UpstreamController, type UpstreamHandler } from '../../src/gateway/upstream.js';
import { failStartup, serveParent } from './ipc.js';

const TIMEOUT_MS = 30_000;
const EMPTY = Buffer.alloc(0);

/** Relays one backend reply to `res` as it comes. */
class Relay implements UpstreamHandler {
  readonly #res: HttpResponse;
  constructor(res: HttpResponse) {
    this.#res = res;
  }
  onRequestStart(): void {}
  onResponseStart(_c: UpstreamController, status: number, headers: Readonly<Record<string, string>>): void {
    const length = headers['content-length'];
    const head = ['content-type', headers['content-type'] ?? 'application/json'];
    if (length !== undefined) head.push('content-length', length);
    this.#res.writeHead(status, head);
  }
  onResponseData(_c: UpstreamController, chunk: Buffer): void {
    this.#res.write(chunk);
  }
  onResponseEnd(): void {
    this.#res.end();
  }
  onResponseError(): void {
    if (this.#res.headersSent) this.#res.destroy();
    else this.#res.writeHead(502).end();
  }
}

async function main(): Promise<void> {
  const backend = process.env['BARE_PROXY_BACKEND'];
  if (backend === undefined) throw new Error('BARE_PROXY_BACKEND is not set');
  const pool = new UpstreamPool(backend, { connections: 128, connectTimeout: TIMEOUT_MS, keepAliveTimeout: 4_000 });
  const server = new HttpServer(
    {
      keepAliveTimeoutMs: 65_000,
      headersTimeoutMs: TIMEOUT_MS,
      requestTimeoutMs: TIMEOUT_MS,
      maxHeaderBytes: 16 * 1024,
      maxBodyBytes: 1024 * 1024,
    },
    (req, res) => {
      pool.dispatch(
        {
          path: req.url,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: req.body ?? EMPTY,
          headersTimeout: TIMEOUT_MS,
          bodyTimeout: TIMEOUT_MS,
        },
        new Relay(res),
      );
    },
  );
  const port = await server.listen(0, '127.0.0.1');
  serveParent(port, () => server.close());
}

main().catch(failStartup);
