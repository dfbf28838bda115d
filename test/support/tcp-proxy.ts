/**
 * A TCP proxy to a port on 127.0.0.1 that stands between tollgate and a real store (the shared Redis or
 * PostgreSQL, never stopped) to stage its faults: `freeze` drops every byte both ways and leaves the
 * connections open, as a network path that loses packets without a reset does (new connections are
 * accepted and then hear nothing); `pass` carries bytes again. Connections frozen once stay dead — what
 * their peers missed is gone — so a client recovers only by making new ones.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  freeze(): void;
  pass(): void;
  close(): Promise<void>;
}

/** `port`: the proxy's own (default: any free one). */
export async function startTcpProxy(target: number, port = 0): Promise<TcpProxy> {
  let frozen = false;
  const sockets = new Set<Socket>();
  const dead = new WeakSet<Socket>();
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  };
  const server = createServer((client) => {
    track(client);
    if (frozen) {
      dead.add(client);
      client.pause();
      return;
    }
    const upstream = connect(target, '127.0.0.1');
    track(upstream);
    const relay = (from: Socket, to: Socket): void => {
      from.on('data', (d: Buffer) => {
        if (!frozen && !dead.has(from)) to.write(d);
      });
    };
    relay(client, upstream);
    relay(upstream, client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    freeze() {
      frozen = true;
      for (const s of sockets) dead.add(s);
    },
    pass() {
      frozen = false;
    },
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
