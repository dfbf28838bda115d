/**
 * What the gateway benches share (gateway.ts, gateway-ab.ts): forking the server children, reading a
 * process's CPU time, the chat body every request sends, and tollgate's bench config.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ToChild, ToParent } from './servers/ipc.js';

export const BACKEND_MODEL = 'meta-llama/Llama-3.1-8B-Instruct';
export const ALIAS = 'llama-3.1-8b-instruct';

export interface ServerChild {
  readonly name: string;
  readonly child: ChildProcess;
  readonly port: number;
  stop(): Promise<void>;
}

/** Forks a bench server (servers/*.js, or another checkout's), which reports its port over IPC (servers/ipc.ts). */
export async function startChild(
  name: string,
  script: string | URL,
  opts: { env?: NodeJS.ProcessEnv; execArgv?: string[] },
): Promise<ServerChild> {
  const child = fork(typeof script === 'string' ? new URL(script, import.meta.url) : script, [], {
    env: { ...process.env, ...opts.env },
    execArgv: opts.execArgv ?? [],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const tail = keepTail(child);
  const port = await new Promise<number>((resolve, reject) => {
    child.on('message', (m: ToParent) => {
      if (m.type === 'ready') resolve(m.port);
      else if (m.type === 'failed') reject(new Error(`${name} failed to start:\n${m.message}`));
    });
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before listening:\n${tail()}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    name,
    child,
    port,
    async stop() {
      if (child.exitCode === null && child.connected) child.send({ type: 'stop' } satisfies ToChild);
      await exited;
    },
  };
}

/** Keeps the last output of a child for error messages and drains the rest (servers log to stdout). */
export function keepTail(child: ChildProcess): () => string {
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

/** CPU time a process has used, in microseconds (Linux /proc, USER_HZ = 100); NaN elsewhere. */
export function cpuMicros(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return NaN;
  }
}

/** A chat-completions body of about 1 KB, as the OpenAI SDKs send it. */
export function chatBody(model: string, stream: boolean): string {
  return JSON.stringify({
    model,
    messages: [
      {
        role: 'system',
        content:
          'You are a careful assistant for the platform team. Answer with short, correct statements, cite the runbook section when one ' +
          'applies, and say so plainly when you do not know. Never invent configuration keys; prefer the documented defaults.',
      },
      { role: 'user', content: 'Our vLLM pods restart under load. Which settings should we look at first?' },
      {
        role: 'assistant',
        content:
          'Start with gpu_memory_utilization and max_num_seqs, then the pod memory limit and the liveness probe timeout; ' +
          'a probe that times out while the engine is busy restarts a healthy pod.',
      },
      { role: 'user', content: 'The probe timeout is 1 s and we run max_num_seqs 256. What would you change first?' },
    ],
    temperature: 0.2,
    max_tokens: 256,
    ...(stream ? { stream: true } : {}),
  });
}

/** The bench config's x-tollgate-context secret: the Envoy-path rows sign contexts as Check would. */
export const CONTEXT_SIGNING_KEY = 'bench-context-signing-key-0123456789abcdef';

/**
 * tollgate's config for the gateway benches: one alias on the fake vLLM, one declared key, the spend log in
 * `databaseUrl` (none: no records database), the counters in Redis at `redisUrl` under a prefix of their own
 * (none: in process).
 */
export function gatewayBenchConfig(apiBase: string, keyHash: string, databaseUrl: string | undefined, redisUrl?: string): string {
  return `
model_list:
  - model_name: ${ALIAS}
    litellm_params: { model: hosted_vllm/${BACKEND_MODEL}, api_base: "${apiBase}" }
    model_info: { id: fake-vllm-a }
general_settings:
  context_signing_key: ${CONTEXT_SIGNING_KEY}
${databaseUrl === undefined ? '' : `  database_url: ${databaseUrl}`}
${redisUrl === undefined ? '' : `  redis_url: ${redisUrl}\n  redis_key_prefix: "tollgate-bench-${randomBytes(6).toString('hex')}:"`}
keys:
  - key: "${keyHash}"
    key_alias: bench
    models: [${ALIAS}]
    user_id: alice
`;
}
