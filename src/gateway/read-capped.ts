/** Reads a whole body into memory up to `max` bytes, with events (cheaper than an async iterator). */
import type { Readable } from 'node:stream';

/** The body, or null when it grew past `max` (the stream is then drained without buffering). */
export function readCapped(stream: Readable, max: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    const onData = (chunk: Buffer): void => {
      if (over) return;
      size += chunk.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        resolve(null);
        return;
      }
      chunks.push(chunk);
    };
    stream.on('data', onData);
    stream.once('end', () => {
      if (!over) resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    });
    stream.once('error', (err) => (over ? undefined : reject(err)));
    stream.once('close', () => {
      if (!over && !stream.readableEnded)
        reject(Object.assign(new Error('the stream closed before it ended'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    });
  });
}
