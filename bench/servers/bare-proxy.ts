/**
 * Bench child: the least a Node gateway can do — a node:http server that reads the request body, sends it
 * unchanged to the backend over an undici Pool, reads the whole reply and writes it back. No parsing, no
 * auth, no accounting. It shows what the HTTP stacks alone cost on this machine, the floor under tollgate's
 * figures. The backend origin comes in BARE_PROXY_BACKEND.
 */
import { createServer } from 'node:http';
import { Pool } from 'undici';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const backend = process.env['BARE_PROXY_BACKEND'];
  if (backend === undefined) throw new Error('BARE_PROXY_BACKEND is not set');
  const pool = new Pool(backend, { connections: 128, pipelining: 1 });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      pool
        .request({
          path: req.url ?? '/',
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: Buffer.concat(chunks),
        })
        .then(async (r) => {
          const body = Buffer.from(await r.body.arrayBuffer());
          res.writeHead(r.statusCode, { 'content-type': 'application/json', 'content-length': body.length });
          res.end(body);
        })
        .catch(() => {
          res.writeHead(502).end();
        });
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
