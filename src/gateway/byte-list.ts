/**
 * A reply's bytes held as they arrive, in few buffers. The backend client hands a reply on in the pieces its
 * framing cut (upstream.ts: a slice of a socket read per chunk of a chunked body), as small as the backend's
 * writes; a Buffer object costs a hundred-odd bytes of heap beside its bytes, so kept one by one a 12 MiB reply
 * in 16-byte chunks took 150 MiB. A piece under COPY_BELOW is copied into a block that grows with what is
 * held (to MAX_BLOCK); a larger one, whose bytes outweigh its object, is kept as it is, and so is the first
 * (and so are the first KEEP_FIRST: a small reply in a few reads is never copied). What is held costs about its bytes, plus one block's free room.
 */
const COPY_BELOW = 8 * 1024;
/**
 * The first pieces are kept as they are, whatever their size: a small reply in two or three reads (the
 * common case on a real network) costs no block and no copy; only a reply in many small pieces is packed.
 */
const KEEP_FIRST = 8;
const MIN_BLOCK = 16 * 1024;
const MAX_BLOCK = 1024 * 1024;

export class ByteList {
  /** The bytes held. */
  length = 0;
  #parts: Buffer[] = [];
  /** The block small pieces are copied into, filled up to #used; its bytes from #from are not in #parts yet. */
  #block: Buffer | undefined;
  #from = 0;
  #used = 0;

  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    this.length += n;
    if (n >= COPY_BELOW || this.#parts.length < KEEP_FIRST) {
      this.#cut();
      this.#parts.push(chunk);
      return;
    }
    let at = 0;
    while (at < n) {
      let block = this.#block;
      if (block === undefined || this.#used === block.length) {
        this.#cut();
        block = this.#block = Buffer.allocUnsafe(Math.min(MAX_BLOCK, Math.max(MIN_BLOCK, this.length)));
        this.#from = this.#used = 0;
      }
      const k = chunk.copy(block, this.#used, at);
      at += k;
      this.#used += k;
    }
  }

  /** The bytes held, in order (views of the blocks: valid until clear()). */
  list(): readonly Buffer[] {
    this.#cut();
    return this.#parts;
  }

  /** The bytes held, in one buffer (the first piece itself when it is the only one). */
  concat(): Buffer {
    const parts = this.list();
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, this.length);
  }

  clear(): void {
    this.length = 0;
    this.#parts = [];
    this.#block = undefined;
    this.#from = this.#used = 0;
  }

  /** What the block holds past #parts goes in as one part (before a piece kept as it is, or for list()). */
  #cut(): void {
    if (this.#block === undefined || this.#used === this.#from) return;
    this.#parts.push(this.#block.subarray(this.#from, this.#used));
    this.#from = this.#used;
  }
}
