/**
 * The few messages a bench server child and the load generator exchange over the fork IPC channel:
 * the child reports its port once listening, answers CPU-usage probes, and stops on request (a clean
 * exit, so `--cpu-prof` writes its profile).
 */

export type ToParent =
  | { readonly type: 'ready'; readonly port: number }
  | { readonly type: 'cpu'; readonly id: number; readonly user: number; readonly system: number }
  | { readonly type: 'failed'; readonly message: string };

export type ToChild = { readonly type: 'cpu'; readonly id: number } | { readonly type: 'stop' };

function send(message: ToParent): void {
  process.send?.(message);
}

/** Reports `port`, then serves CPU probes until told to stop (or the parent goes away). */
export function serveParent(port: number, stop: () => Promise<void>): void {
  let stopping = false;
  const shutdown = (): void => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('message', (m: ToChild) => {
    if (m.type === 'cpu') {
      const u = process.cpuUsage();
      send({ type: 'cpu', id: m.id, user: u.user, system: u.system });
    } else shutdown();
  });
  process.on('disconnect', shutdown);
  send({ type: 'ready', port });
}

/** Reports a startup failure and exits non-zero (after the message is flushed). */
export function failStartup(err: unknown): void {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  if (process.send !== undefined && process.connected) {
    process.send({ type: 'failed', message } satisfies ToParent, () => process.exit(1));
  } else {
    console.error(message);
    process.exit(1);
  }
}
