/**
 * Bench child: the fake vLLM server of the gateway tests (test/support/fake-vllm.ts) with no delay between
 * stream chunks, on 127.0.0.1:0, so the backend costs the same for every path the gateway bench measures.
 * TOLLGATE_BENCH_EMBEDDING_DIMS sets its embedding model's dimensions, TOLLGATE_BENCH_REPLY_CHUNK the size of
 * the chunks it writes a non-streamed reply in (large-reply.ts).
 */
import { startFakeVllm } from '../../test/support/fake-vllm.js';
import { failStartup, serveParent } from './ipc.js';

async function main(): Promise<void> {
  const dims = process.env['TOLLGATE_BENCH_EMBEDDING_DIMS'];
  const chunk = process.env['TOLLGATE_BENCH_REPLY_CHUNK'];
  const fake = await startFakeVllm({
    chunkDelayMs: 0,
    ...(dims === undefined ? {} : { embeddingDims: Number(dims) }),
    ...(chunk === undefined ? {} : { replyChunkBytes: Number(chunk) }),
  });
  // The fake keeps every request for the tests' assertions; a bench sends hundreds of thousands.
  const trim = setInterval(() => fake.received.splice(0), 250);
  trim.unref();
  serveParent(Number(new URL(fake.url).port), () => fake.close());
}

main().catch(failStartup);
