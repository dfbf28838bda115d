/**
 * Bench child: the least any proxy process can do — a TCP relay that pipes each client connection to a
 * connection of its own to the backend, byte for byte, without reading HTTP at all. What it costs is the
 * price of one more process and two more sockets on the request's path on this machine: no HTTP gateway,
 * in any language, adds less. The backend origin comes in TCP_RELAY_BACKEND.
 */
import { connect, createServer } from 'node:net';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const backend = process.env['TCP_RELAY_BACKEND'];
  if (backend === undefined) throw new Error('TCP_RELAY_BACKEND is not set');
  const { hostname, port } = new URL(backend);
  const server = createServer((client) => {
    client.setNoDelay(true);
    const upstream = connect({ host: hostname, port: Number(port), noDelay: true });
    client.pipe(upstream);
    upstream.pipe(client);
    // Either side closing or failing closes the other.
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  serveParent(typeof addr === 'object' && addr !== null ? addr.port : 0, async () => {
    server.close();
  });
}

main().catch(failStartup);
