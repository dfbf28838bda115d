/**
 * Where the logger's lines go: stdout (or a file), written in batches: at most every 10 ms.
 *
 * pino's own destination (sonic-boom) measures its whole pending buffer on every line and writes through
 * libuv's thread pool as often as it can; in the gateway that cost about 15 µs a request over no log at
 * all (bench/gateway.ts's child, both in one run). Here a line is encoded at once into a buffer reused
 * from batch to batch; 10 ms after the first line of a batch the buffer is written with one `fs.write`,
 * one write in flight at a time, so the process writes at most about a hundred times a second whatever
 * its rate, and a line is out within about 10 ms. (Lines kept as strings and joined per batch cost about
 * 8.5 µs a line, most of it the garbage collector's — each batch was a new string of a few hundred KB and a
 * Buffer as large — against about 3 µs encoded into reused buffers: 200 000 RequestLog lines into a file,
 * process CPU per line, less the same loop without the log.)
 *
 * The buffer is bounded: a destination that stops taking lines (a full pipe nobody reads) costs at most
 * `maxPendingBytes` of memory; lines past that are dropped and counted, and a line saying how many goes
 * out with the next batch once there is room. A destination that is gone (EPIPE, EBADF) stops being
 * written to and only counts. Lines still pending when the process exits are written synchronously from
 * the `exit` event, so a crash or `process.exit()` loses nothing already logged (a batch whose
 * asynchronous write is under way at that moment is left to it, as sonic-boom leaves it).
 */
import fs from 'node:fs';

const DEFAULT_MAX_PENDING = 64 * 1024 * 1024;
/** Lines are encoded into buffers of this size, reused once written (a longer line gets one of its own). */
const CHUNK_BYTES = 256 * 1024;
/** Written buffers kept for reuse. */
const SPARE_CHUNKS = 2;
const NEWLINE = Buffer.from('\n');
/** Before trying again after EAGAIN (a non-blocking pipe that is full). */
const RETRY_MS = 10;
/**
 * How long a line may wait for others to share its write. Once per turn of the event loop was one write
 * (a thread-pool round trip) per request at low concurrency, where each turn serves one request.
 */
const BATCH_MS = 10;
/** Something to `Atomics.wait` on for a millisecond between synchronous tries. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/** Destinations with lines pending, written out at exit (one listener for all of them). */
const live = new Set<LogDestination>();
let exitHooked = false;

export class LogDestination {
  readonly #fd: number;
  readonly #maxPending: number;
  /** The buffer lines are being encoded into, and how much of it they fill. */
  #chunk: Buffer | undefined;
  #off = 0;
  /** Filled parts of earlier buffers of this batch (a batch larger than one buffer). */
  #full: Buffer[] = [];
  /** Lines and bytes pending (not yet taken into a write). */
  #lines = 0;
  #pendingBytes = 0;
  /** Written buffers, for reuse. */
  #spare: Buffer[] = [];
  /** The buffer a write in flight points into: reused only once that write is done. */
  #inFlightChunk: Buffer | undefined;
  /** The bytes handed to `fs.write` and not yet written (the rest after a partial write), and their lines. */
  #inFlight: Buffer | undefined;
  #inFlightLines = 0;
  /** Bytes of the batch in flight when it was taken: less is left once part of it went out. */
  #batchLength = 0;
  /** An `fs.write` of `#inFlight` is under way (false while it waits to be tried again). */
  #writing = false;
  #scheduled = false;
  #dropped = 0;
  /** The fd is gone (EPIPE, EBADF): nothing more is written, lines are only counted. */
  #gone = false;
  /** A write stopped inside a line: the next batch starts on a new line, so every later line parses. */
  #cutLine = false;
  /** `flush(cb)` calls waiting for the write under way. */
  #waiting: (() => void)[] = [];

  /** Whether the logger writes warnings: the line counting dropped lines is one (false: the count is only kept). */
  readonly #warns: () => boolean;

  constructor(opts: { fd: number; maxPendingBytes?: number; warns?: () => boolean }) {
    this.#fd = opts.fd;
    this.#maxPending = opts.maxPendingBytes ?? DEFAULT_MAX_PENDING;
    this.#warns = opts.warns ?? (() => true);
    if (!exitHooked) {
      exitHooked = true;
      process.once('exit', () => {
        for (const d of live) d.flushSync();
      });
    }
  }

  /** A destination appending to the file at `path` (created when missing). */
  static toFile(path: string, opts: { maxPendingBytes?: number; warns?: () => boolean } = {}): LogDestination {
    return new LogDestination({ fd: fs.openSync(path, 'a'), ...opts });
  }

  /** Lines dropped (the destination did not keep up, or is gone), not yet reported by a line of their own. */
  get dropped(): number {
    return this.#dropped;
  }

  write(line: string): boolean {
    if (this.#gone || this.#pendingBytes + (this.#inFlight?.length ?? 0) + line.length > this.#maxPending) {
      this.#dropped++;
      return false;
    }
    this.#append(line);
    if (this.#inFlight === undefined) this.#schedule();
    return true;
  }

  /** Encodes `line` after the pending ones. */
  #append(line: string): void {
    // UTF-8 takes at most three bytes for each UTF-16 unit.
    const room = line.length * 3;
    let chunk = this.#chunk;
    if (chunk === undefined || chunk.length - this.#off < room) {
      if (chunk !== undefined && this.#off > 0) this.#full.push(chunk.subarray(0, this.#off));
      chunk = room > CHUNK_BYTES ? Buffer.allocUnsafeSlow(room) : (this.#spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK_BYTES));
      this.#chunk = chunk;
      this.#off = 0;
    }
    const n = chunk.write(line, this.#off, 'utf8');
    this.#off += n;
    this.#pendingBytes += n;
    this.#lines++;
  }

  /** A buffer whose write is done, back for reuse. */
  #release(chunk: Buffer | undefined): void {
    if (chunk !== undefined && chunk.length === CHUNK_BYTES && this.#spare.length < SPARE_CHUNKS) this.#spare.push(chunk);
  }

  /** pino's `logger.flush(cb)`: once the write under way (if any) is done, everything pending is written, then `cb`. */
  flush(cb?: (err?: Error) => void): void {
    if (this.#writing) {
      this.#waiting.push(() => this.flush(cb));
      return;
    }
    this.flushSync();
    cb?.();
  }

  /**
   * Writes what is pending now, blocking (the exit hook, `flush`). A batch whose asynchronous write is under
   * way is left to it: writing it here too could write it twice.
   */
  flushSync(): void {
    if (!this.#writing && this.#inFlight !== undefined) {
      // Waiting to be tried again after EAGAIN: nobody else will write it now.
      const buf = this.#inFlight;
      this.#inFlight = undefined;
      if (!this.#writeSync(buf, this.#inFlightLines, this.#batchLength)) return;
      this.#release(this.#inFlightChunk);
      this.#inFlightChunk = undefined;
    }
    const batch = this.#take();
    if (batch !== undefined && this.#writeSync(batch.buf, batch.lines, batch.buf.length)) this.#release(batch.chunk);
    if (!this.#writing) live.delete(this);
  }

  /** Writes `buf` whole, or gives up after about a second of a full pipe (its lines counted as dropped). */
  #writeSync(buf: Buffer, lines: number, batchLength: number): boolean {
    if (this.#gone) {
      this.#dropped += lines;
      return false;
    }
    let off = 0;
    let spins = 0;
    while (off < buf.length) {
      try {
        off += fs.writeSync(this.#fd, buf, off);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A full non-blocking pipe: give the reader a moment, a bounded number of times.
        if (code === 'EAGAIN' && ++spins <= 1000) {
          Atomics.wait(PAUSE, 0, 0, 1);
          continue;
        }
        this.#lost(code, buf.subarray(off), lines, batchLength);
        return false;
      }
    }
    return true;
  }

  /** What was left of a batch could not be written: count its lines, and remember a cut line or a gone fd. */
  #lost(code: string | undefined, rest: Buffer, lines: number, batchLength: number): void {
    let n = 0;
    for (let i = rest.indexOf(10); i >= 0; i = rest.indexOf(10, i + 1)) n++;
    this.#dropped += Math.min(lines, n);
    // Part of the batch went out: it may have stopped inside a line.
    if (rest.length > 0 && rest.length < batchLength) this.#cutLine = true;
    if (code === 'EPIPE' || code === 'EBADF') {
      this.#gone = true;
      this.#dropped += this.#lines;
      this.#lines = 0;
      this.#pendingBytes = 0;
      this.#off = 0;
      this.#full = [];
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#gone) return;
    this.#scheduled = true;
    live.add(this);
    // Unreferenced: a process with nothing else to do exits, and the exit hook writes what is pending.
    setTimeout(this.#flush, BATCH_MS).unref();
  }

  /**
   * The pending lines as one buffer (a note counting dropped lines last, once there is room), how many, and
   * the reusable buffer it points into (undefined when it is a copy).
   */
  #take(): { buf: Buffer; lines: number; chunk: Buffer | undefined } | undefined {
    if (this.#lines === 0) return undefined;
    if (this.#dropped > 0 && this.#pendingBytes < this.#maxPending / 2 && this.#warns()) {
      this.#append(
        `{"level":40,"time":"${new Date().toISOString()}","service":"tollgate","dropped_lines":${this.#dropped},"msg":"log lines were dropped: the log destination did not keep up"}\n`,
      );
      this.#dropped = 0;
    }
    const chunk = this.#chunk as Buffer;
    const parts = [...this.#full, chunk.subarray(0, this.#off)];
    if (this.#cutLine) {
      parts.unshift(NEWLINE);
      this.#cutLine = false;
    }
    const lines = this.#lines;
    this.#full = [];
    this.#lines = 0;
    this.#pendingBytes = 0;
    this.#off = 0;
    if (parts.length > 1) return { buf: Buffer.concat(parts), lines, chunk: undefined }; // copied: the buffer is free again
    // The batch points into the buffer: the next lines go into another until its write is done.
    this.#chunk = undefined;
    return { buf: parts[0] as Buffer, lines, chunk };
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    if (this.#inFlight !== undefined || this.#gone) return;
    const batch = this.#take();
    if (batch === undefined) {
      live.delete(this);
      return;
    }
    this.#inFlight = batch.buf;
    this.#inFlightChunk = batch.chunk;
    this.#inFlightLines = batch.lines;
    this.#batchLength = batch.buf.length;
    this.#send(batch.buf);
  };

  /** Writes the in-flight `buf`; the rest after a partial write; then schedules whatever came meanwhile. */
  #send(buf: Buffer): void {
    this.#writing = true;
    fs.write(this.#fd, buf, 0, buf.length, null, (err, written) => {
      this.#writing = false;
      if (this.#inFlight !== buf) return this.#wake(); // written by the exit hook meanwhile
      if (err !== null && (err.code === 'EAGAIN' || err.code === 'EBUSY')) {
        // Unreferenced: a process that has nothing else to do exits, and the exit hook writes these.
        setTimeout(() => {
          if (this.#inFlight === buf && !this.#writing) this.#send(buf);
        }, RETRY_MS).unref();
        return this.#wake();
      }
      if (err === null && written < buf.length) {
        const rest = buf.subarray(written);
        this.#inFlight = rest;
        this.#send(rest);
        return;
      }
      if (err !== null) this.#lost(err.code, buf, this.#inFlightLines, this.#batchLength);
      this.#inFlight = undefined;
      this.#release(this.#inFlightChunk);
      this.#inFlightChunk = undefined;
      if (this.#lines > 0) this.#schedule();
      else live.delete(this);
      this.#wake();
    });
  }

  /** Lets the `flush(cb)` calls that waited for the write go on. */
  #wake(): void {
    const waiting = this.#waiting;
    if (waiting.length === 0) return;
    this.#waiting = [];
    for (const w of waiting) w();
  }
}
