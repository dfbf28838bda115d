/**
 * The gateway's memory for large non-streamed replies: embeddings of many inputs of a 4096-dimension model
 * (a thousand make about 80 MB of JSON floats, 22 MB as base64), through a tollgate gateway child, read by a
 * fast client, by several at once, by a slow one, and from a backend writing in 16-byte chunks. Prints each
 * reply's size, its time to first byte and to its end, and the gateway's peak RSS above what it held before
 * (Linux VmHWM, reset per row through /proc/<pid>/clear_refs).
 *
 *   node dist/bench/large-reply.js [--inputs 1000] [--dims 4096]
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { ALIAS, gatewayBenchConfig, startChild } from './gateway-children.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}
const INPUTS = arg('--inputs', 1000);
const DIMS = arg('--dims', 4096);

/** A line of /proc/<pid>/status in bytes (VmRSS, VmHWM). */
function procKb(pid: number | undefined, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
}

interface Read {
  readonly bytes: number;
  readonly firstByteMs: number;
  readonly totalMs: number;
  readonly head: string;
  readonly tail: string;
  readonly cost: string | undefined;
}

/** One embeddings request; `mbPerS`: the client reads no faster than this (undefined: as fast as it can). */
function embed(port: number, key: string, inputs: number, format: 'float' | 'base64', mbPerS: number | undefined): Promise<Read> {
  const body = JSON.stringify({ model: ALIAS, input: Array.from({ length: inputs }, (_, i) => `input ${i}`), encoding_format: format });
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/embeddings',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      },
      (res) => {
        let bytes = 0;
        let firstByteMs = NaN;
        let head = '';
        let tail = '';
        res.on('data', (chunk: Buffer) => {
          if (bytes === 0) firstByteMs = performance.now() - t0;
          bytes += chunk.length;
          if (head.length < 200) head += chunk.toString('latin1', 0, 200);
          tail = (tail + chunk.toString('latin1', Math.max(0, chunk.length - 300))).slice(-300);
          if (mbPerS === undefined) return;
          const ahead = bytes / (mbPerS * 1e3) - (performance.now() - t0);
          if (ahead > 1) {
            res.pause();
            setTimeout(() => res.resume(), ahead);
          }
        });
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${head}`));
          else {
            const cost = res.headers['x-tollgate-response-cost'];
            resolve({ bytes, firstByteMs, totalMs: performance.now() - t0, head, tail, cost: typeof cost === 'string' ? cost : undefined });
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

interface Row {
  readonly label: string;
  readonly inputs: number;
  readonly format: 'float' | 'base64';
  /** Requests at once. */
  readonly n: number;
  /** The client's reading speed, MB/s (undefined: as fast as it can). */
  readonly mbPerS?: number;
  /** The backend writes the reply in chunks of this many bytes (undefined: whole). */
  readonly chunk?: number;
}

async function main(): Promise<void> {
  const key = `sk-bench-${randomBytes(16).toString('hex')}`;
  const keyHash = `sha256:${createHash('sha256').update(key).digest('hex')}`;
  const backend = await startChild('fake-vllm', './servers/fake-vllm.js', { env: { TOLLGATE_BENCH_EMBEDDING_DIMS: String(DIMS) } });
  const config = gatewayBenchConfig(`http://127.0.0.1:${backend.port}/v1`, keyHash, undefined);
  // The same fake writing its replies in 16-byte chunks: what is held must cost its bytes, not a Buffer a chunk.
  const CHUNK = 16;
  const chunked = await startChild('fake-vllm chunked', './servers/fake-vllm.js', {
    env: { TOLLGATE_BENCH_EMBEDDING_DIMS: String(DIMS), TOLLGATE_BENCH_REPLY_CHUNK: String(CHUNK) },
  });
  const chunkedConfig = gatewayBenchConfig(`http://127.0.0.1:${chunked.port}/v1`, keyHash, undefined);
  /** Inputs per MB of JSON floats, about (an embedding's floats take ~21 bytes each). */
  const perMb = 1e6 / (DIMS * 21.4);
  const rows: Row[] = [
    // Under 1 MiB (parsed whole), under 16 MiB (held, unparsed), then --inputs (relayed, when past 16 MiB).
    { label: 'floats', inputs: Math.max(1, Math.floor(0.9 * perMb)), format: 'float', n: 1 },
    { label: 'floats', inputs: Math.floor(15 * perMb), format: 'float', n: 1 },
    { label: 'floats', inputs: INPUTS, format: 'float', n: 1 },
    { label: 'base64', inputs: INPUTS, format: 'base64', n: 1 },
    { label: 'floats', inputs: INPUTS, format: 'float', n: 4 },
    { label: 'floats, the client reading 20 MB/s', inputs: INPUTS, format: 'float', n: 1, mbPerS: 20 },
    { label: `floats, the backend writing ${CHUNK}-byte chunks`, inputs: Math.floor(15 * perMb), format: 'float', n: 1, chunk: CHUNK },
  ];
  console.log(`embeddings of a ${DIMS}-dimension model through a fresh tollgate gateway each row`);
  console.log('| reply | inputs | MB | at once | first byte ms | whole ms | cost header | peak RSS added MB |');
  console.log('|---|---|---|---|---|---|---|---|');
  try {
    for (const row of rows) {
      const tollgate = await startChild('tollgate', './servers/tollgate-gateway.js', {
        env: { TOLLGATE_BENCH_CONFIG: row.chunk === undefined ? config : chunkedConfig },
      });
      try {
        const pid = tollgate.child.pid;
        // Warm: code paths compiled, the pool's connections open.
        for (let i = 0; i < 20; i++) await embed(tollgate.port, key, 4, row.format, undefined);
        await new Promise((r) => setTimeout(r, 300));
        writeFileSync(`/proc/${pid}/clear_refs`, '5'); // VmHWM := VmRSS
        const before = procKb(pid, 'VmRSS');
        const reads = await Promise.all(Array.from({ length: row.n }, () => embed(tollgate.port, key, row.inputs, row.format, row.mbPerS)));
        const peak = procKb(pid, 'VmHWM');
        for (const r of reads)
          if (!r.head.includes(`"model":"${ALIAS}"`) || !r.tail.includes('"usage"'))
            throw new Error(`a reply without the alias or its usage: ${r.head} … ${r.tail}`);
        const r = reads[0] as Read;
        console.log(
          `| ${row.label} | ${row.inputs} | ${(r.bytes / 1e6).toFixed(1)} | ${row.n} | ${r.firstByteMs.toFixed(0)} | ${r.totalMs.toFixed(0)} | ` +
            `${r.cost === undefined ? 'no' : 'yes'} | ${((peak - before) / 1e6).toFixed(0)} |`,
        );
      } finally {
        await tollgate.stop();
      }
    }
  } finally {
    await backend.stop();
    await chunked.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
