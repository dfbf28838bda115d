/**
 * Where the logger's lines go: stdout (or a file), written in batches: at most every 10 ms.
 *
 * pino's own destination (sonic-boom) measures its whole pending buffer on every line and writes through
 * libuv's thread pool as often as it can; in the gateway that cost about 15 µs a request over no log at
 * all (bench/gateway.ts's child, both in one run). Here a line is pushed onto an array; 10 ms after the
 * first of a batch the lines are joined and written with one `fs.write`, one write in flight at a time,
 * so the process writes at most about a hundred times a second whatever its rate, and a line is out
 * within about 10 ms.
 *
 * The buffer is bounded: a destination that stops taking lines (a full pipe nobody reads) costs at most
 * `maxPendingBytes` of memory; lines past that are dropped and counted, and a line saying how many is
 * written once the destination takes lines again. Lines still pending when the process exits are written
 * synchronously from the `exit` event, so a crash or `process.exit()` loses nothing already logged.
 */
import fs from 'node:fs';

const DEFAULT_MAX_PENDING = 64 * 1024 * 1024;
/** Before trying again after EAGAIN (a non-blocking pipe that is full). */
const RETRY_MS = 10;
/**
 * How long a line may wait for others to share its write. Once per turn of the event loop was one write
 * (a thread-pool round trip) per request at low concurrency, where each turn serves one request.
 */
const BATCH_MS = 10;

/** Destinations with lines pending, written out at exit (one listener for all of them). */
const live = new Set<LogDestination>();
let exitHooked = false;

export class LogDestination {
  readonly #fd: number;
  readonly #maxPending: number;
  #parts: string[] = [];
  /** UTF-16 units in `#parts`: cheap to keep, and close enough to bytes for a bound. */
  #partsLength = 0;
  /** The bytes handed to `fs.write` and not yet written (the rest after a partial write), and their lines. */
  #inFlight: Buffer | undefined;
  #inFlightLines = 0;
  /** An `fs.write` of `#inFlight` is under way (false while it waits to be tried again). */
  #writing = false;
  #scheduled = false;
  #dropped = 0;
  #closed = false;

  constructor(opts: { fd: number; maxPendingBytes?: number }) {
    this.#fd = opts.fd;
    this.#maxPending = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING;
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', () => {
        for (const d of live) d.flushSync();
      });
    }
  }

  /** A destination appending to the file at `path` (created when missing). */
  static toFile(path: string, opts: { maxPendingBytes?: number } = {}): LogDestination {
    return new LogDestination({ fd: fs.openSync(path, 'a'), ...opts });
  }

  /** Lines dropped because the destination did not keep up, not yet reported by a line of their own. */
  get dropped(): number {
    return this.#dropped;
  }

  write(line: string): boolean {
    if (this.#closed) return false;
    if (this.#partsLength + (this.#inFlight?.length ?? 0) + line.length > this.#maxPending) {
      this.#dropped++;
      return false;
    }
    this.#parts.push(line);
    this.#partsLength += line.length;
    if (this.#inFlight === undefined) this.#schedule();
    return true;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    live.add(this);
    // Unreferenced: a process with nothing else to do exits, and the exit hook writes what is pending.
    setTimeout(this.#flush, BATCH_MS).unref();
  }

  /** pino's `logger.flush(cb)`: the lines not yet handed to the OS are written before `cb`. */
  flush(cb?: (err?: Error) => void): void {
    try {
      this.flushSync();
      cb?.();
    } catch (err) {
      cb?.(err as Error);
    }
  }

  /**
   * Writes the pending lines now, blocking (exit, shutdown). A batch already handed to an asynchronous
   * write is left to it: writing it again here would write it twice.
   */
  flushSync(): void {
    if (this.#writing) return;
    const buf = this.#inFlight ?? this.#take();
    if (buf === undefined) return;
    let off = 0;
    let spins = 0;
    while (off < buf.length) {
      try {
        off += fs.writeSync(this.#fd, buf, off);
      } catch (err) {
        // A full non-blocking pipe: give the reader a moment, a bounded number of times.
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || ++spins > 1000) break;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
      }
    }
    this.#inFlight = undefined;
    // Lines that came with a retry pending are still to go.
    if (this.#parts.length > 0) this.flushSync();
    else live.delete(this);
  }

  /** Flushes, then takes no more lines (the file, if any, is the caller's to close). */
  end(): void {
    this.flushSync();
    this.#closed = true;
  }

  /** The pending lines joined (with a line counting the dropped ones first, once there is room), now in flight. */
  #take(): Buffer | undefined {
    if (this.#dropped > 0 && this.#partsLength < this.#maxPending / 2) {
      const note = `{"level":40,"time":"${new Date().toISOString()}","service":"tollgate","dropped_lines":${this.#dropped},"msg":"log lines were dropped: the log destination did not keep up"}\n`;
      this.#dropped = 0;
      this.#parts.push(note);
    }
    if (this.#parts.length === 0) return undefined;
    const text = this.#parts.length === 1 ? (this.#parts[0] as string) : this.#parts.join('');
    this.#inFlightLines = this.#parts.length;
    this.#parts = [];
    this.#partsLength = 0;
    this.#inFlight = Buffer.from(text, 'utf8');
    return this.#inFlight;
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    if (this.#inFlight !== undefined) return;
    const buf = this.#take();
    if (buf === undefined) live.delete(this);
    else this.#send(buf);
  };

  /** Writes the in-flight `buf`; the rest after a partial write; then whatever came meanwhile. */
  #send(buf: Buffer): void {
    this.#writing = true;
    fs.write(this.#fd, buf, 0, buf.length, null, (err, written) => {
      this.#writing = false;
      if (err !== null) {
        if (err.code === 'EAGAIN' || err.code === 'EBUSY') {
          // Unreferenced: a process that has nothing else to do exits, and the exit hook writes these.
          setTimeout(() => {
            if (this.#inFlight === buf) this.#send(buf);
          }, RETRY_MS).unref();
          return;
        }
        // EPIPE, EBADF…: nobody will read these lines; drop them rather than hold them forever.
        this.#dropped += this.#inFlightLines;
      } else if (written < buf.length) {
        const rest = buf.subarray(written);
        this.#inFlight = rest;
        this.#send(rest);
        return;
      }
      this.#inFlight = undefined;
      if (this.#parts.length > 0 || this.#dropped > 0) this.#schedule();
      else live.delete(this);
    });
  }
}
