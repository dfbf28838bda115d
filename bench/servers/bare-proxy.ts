/**
 * Bench child: the least a Node gateway can do — a node:http server that reads the request body, sends it
 * unchanged to the backend over an undici Pool (the dispatch handler API tollgate uses too) and relays the
 * reply as it arrives: status, content type and length, then each body chunk, so a stream's first token is
 * passed on at once. No parsing, no auth, no accounting. It shows what the HTTP stacks alone cost on this
 * machine, the floor under every one of tollgate's figures. The backend origin comes in BARE_PROXY_BACKEND.
 */
import { createServer, type ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { failStartup, serveParent } from './ipc.js';

/** Relays one backend reply to `res` as it comes. */
class Relay implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse;
  constructor(res: ServerResponse) {
    this.#res = res;
  }
  onRequestStart(): void {}
  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: Record<string, string | string[] | undefined>): void {
    const head: Record<string, string> = { 'content-type': String(headers['content-type'] ?? 'application/json') };
    const length = headers['content-length'];
    if (typeof length === 'string') head['content-length'] = length;
    this.#res.writeHead(status, head);
  }
  onResponseData(_c: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#res.write(chunk);
  }
  onResponseEnd(): void {
    this.#res.end();
  }
  onResponseError(_c: Dispatcher.DispatchController | undefined, _err: Error): void {
    if (this.#res.headersSent) this.#res.destroy();
    else this.#res.writeHead(502).end();
  }
}

async function main(): Promise<void> {
  const backend = process.env['BARE_PROXY_BACKEND'];
  if (backend === undefined) throw new Error('BARE_PROXY_BACKEND is not set');
  const pool = new Pool(backend, { connections: 128, pipelining: 1 });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      pool.dispatch(
        { path: req.url ?? '/', method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) },
        new Relay(res),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  serveParent(typeof addr === 'object' && addr !== null ? addr.port : 0, async () => {
    server.close();
    await pool.close();
  });
}

main().catch(failStartup);
