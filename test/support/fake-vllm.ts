/**
 * A fake vLLM OpenAI-compatible server (node:http) for the gateway's tests, with injectable faults.
 *
 * Wire shapes follow vllm-project/vllm (checked in vllm/entrypoints/openai/): chat_completion/serving.py
 * (role chunk first, `exclude_unset` chunks, usage chunk `choices: []` only with include_usage, then
 * `data: [DONE]`; an in-stream failure is `data: {"error": {...}}` and is still followed by [DONE]),
 * completion/serving.py (no role chunk; `stop_reason` on every choice), engine/serving.py (`_check_model`:
 * 404 NotFoundError, param "model"; nested ErrorResponse) and server_utils.py (--api-key guards /v1 only and
 * answers 401 `{"error": "Unauthorized"}`). Ray Serve's 408: python/ray/serve/_private/proxy.py answers a
 * plain-text `Request <id> timed out after <s>s.` (convert_object_to_asgi_messages of a str).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomUUID } from 'node:crypto';

export type Fault =
  | { kind: 'status'; status: number; body?: unknown; flatError?: boolean; headers?: Record<string, string> }
  | { kind: 'delay-headers'; ms: number }
  | { kind: 'close-before-headers' }
  /** The connection reset (RST) before any reply, as a crashed pod's kernel answers. */
  | { kind: 'reset-before-headers' }
  | { kind: 'close-mid-stream'; afterChunks: number }
  /** `done: false` omits the `data: [DONE]` that vLLM sends after the error event. */
  | { kind: 'stream-error'; afterChunks: number; message?: string; done?: boolean }
  | { kind: 'garbage' }
  /**
   * A stream's head is sent at once, its first event only once `release` resolves (a model slow to its first
   * token); `ping`: a keep-alive comment meanwhile, as sse-starlette (Ray Serve) sends one.
   */
  | { kind: 'hold-first-event'; release: Promise<void>; ping?: boolean }
  /** `ms`: wait before answering (default 0); `timeoutS`: the request_timeout_s quoted in the message. */
  | { kind: 'ray-timeout'; ms?: number; timeoutS?: number }
  /** A 200 JSON head at once, then one space every `everyMs`, never ending: no silence long enough for a per-wait timeout. */
  | { kind: 'trickle'; everyMs: number }
  /**
   * A non-streamed 200 JSON reply (chat, completion, embeddings) sent but for its last `bytes` (default 64),
   * which follow once `release` resolves: what a client has of the reply before then went on as it came.
   */
  | { kind: 'hold-reply-tail'; release: Promise<void>; bytes?: number }
  /** A non-streamed 200 JSON reply, its head announcing the whole length, cut off (connection closed) after `afterBytes`. */
  | { kind: 'cut-reply'; afterBytes: number };

export interface ReceivedRequest {
  method: string;
  /** path with query string, as sent */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** parsed JSON, the raw string when not JSON, undefined when empty */
  body: unknown;
  /** the body as sent ('' when empty) */
  raw: string;
  /** the client closed the connection before the response finished */
  aborted: boolean;
  /** a 200 JSON reply's body as sent (whole, even when a fault cut it off on the wire) */
  reply?: string;
}

export interface FakeVllm {
  readonly url: string;
  readonly apiBase: string;
  readonly received: ReceivedRequest[];
  /** faults for the next inference requests (POST /v1/...), in order, one each; /health and /v1/models are never faulted */
  queueFaults(...faults: Fault[]): void;
  /** fault applied to every inference request until cleared (queued faults take precedence) */
  setFault(fault: Fault | undefined): void;
  inFlight(): number;
  waitForAbort(timeoutMs?: number): Promise<ReceivedRequest>;
  close(): Promise<void>;
}

export interface FakeVllmOptions {
  models?: string[];
  /** the port on 127.0.0.1 (vLLM's own 8000, for the embedded default); default: any free one */
  port?: number;
  /** LoRA adapters: adapter id → base model id; served as their own ids with `parent` set */
  loras?: Record<string, string>;
  name?: string;
  requireApiKey?: string;
  chunkDelayMs?: number;
  chunks?: number;
  promptTokens?: number;
  /** default: `chunks` (one token per content chunk) */
  completionTokens?: number;
  /** add `"usage": null` to every chunk when include_usage is set; current vLLM does NOT do this (exclude_unset) */
  usageNullInChunks?: boolean;
  /**
   * The embedding model's dimensions (default 8). An embedding of 4096 floats is about 80 KB of JSON: a
   * thousand inputs make an 80 MB reply, as vLLM sends it (`encoding_format: "base64"`: float32 bytes in
   * base64, about 22 KB each).
   */
  embeddingDims?: number;
  /**
   * A 200 JSON reply is sent chunked (`transfer-encoding: chunked`) in chunks of this many bytes, as a server
   * that writes it piece by piece; default: whole, with its `content-length`.
   */
  replyChunkBytes?: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const hex = (): string => randomUUID().replace(/-/g, '');
const ERROR_TYPES: Record<number, string> = { 400: 'BadRequestError', 404: 'NotFoundError', 500: 'InternalServerError' };

/** vLLM's error body: nested ErrorResponse (>= 0.10.1) or the older flat one. Unmapped statuses use the HTTP phrase, as vLLM's HTTPException handler does. */
export function vllmErrorBody(status: number, message: string, opts: { type?: string; param?: string | null; flat?: boolean } = {}): Obj {
  const type = opts.type ?? ERROR_TYPES[status] ?? http.STATUS_CODES[status] ?? 'Error';
  const info = { message, type, param: opts.param ?? null, code: status };
  return opts.flat ? { object: 'error', ...info } : { error: info };
}

/**
 * The fake's embedding of `input` in `dims` dimensions: deterministic (a hash of the input seeds it) and of
 * unit length. Values are float32s, as a model's are, so the base64 form holds them exactly.
 */
export function embeddingVector(input: unknown, dims: number): number[] {
  const h = createHash('sha256')
    .update(JSON.stringify(input ?? null))
    .digest();
  let v: number[];
  if (dims === 8) v = Array.from({ length: 8 }, (_, k) => h.readInt16BE(k * 2) / 32768);
  else {
    // xorshift32 from the hash: cheap enough for millions of values.
    let x = h.readUInt32BE(0) || 1;
    v = new Array<number>(dims);
    for (let k = 0; k < dims; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      v[k] = (x | 0) / 2 ** 31;
    }
  }
  const norm = Math.sqrt(v.reduce((s, n) => s + n * n, 0)) || 1;
  return Array.from(new Float32Array(v.map((n) => n / norm)));
}

export async function startFakeVllm(opts: FakeVllmOptions = {}): Promise<FakeVllm> {
  const loras = opts.loras ?? {};
  const baseModels = opts.models ?? ['meta-llama/Llama-3.1-8B-Instruct'];
  const served = [...baseModels, ...Object.keys(loras)];
  const name = opts.name ?? 'fake-vllm';
  const nChunks = opts.chunks ?? 5;
  const promptTokens = opts.promptTokens ?? 11;
  const completionTokens = opts.completionTokens ?? nChunks;
  const dims = opts.embeddingDims ?? 8;
  const pieces = Array.from({ length: nChunks }, (_, i) => (i === 0 ? `Hello from ${name}.` : ` token${i}`));
  const text = pieces.join('');
  const created = Math.floor(Date.now() / 1000);

  const received: ReceivedRequest[] = [];
  const queue: Fault[] = [];
  let sticky: Fault | undefined;
  let inflight = 0;
  let closing = false;
  const pendingAborts: ReceivedRequest[] = [];
  const abortWaiters: Array<(r: ReceivedRequest) => void> = [];
  const timers = new Map<NodeJS.Timeout, () => void>();

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const t = setTimeout(() => (timers.delete(t), resolve()), ms);
      timers.set(t, () => resolve());
    });
  const notifyAbort = (rec: ReceivedRequest): void => {
    const w = abortWaiters.shift();
    if (w) w(rec);
    else pendingAborts.push(rec);
  };
  const usage = (details: boolean): Obj => ({
    prompt_tokens: promptTokens,
    total_tokens: promptTokens + completionTokens,
    completion_tokens: completionTokens,
    ...(details ? { prompt_tokens_details: null } : {}),
  });

  interface Ctx {
    res: http.ServerResponse;
    rec: ReceivedRequest;
    /** close the connection ourselves (not a client abort); after headers, flush what was written first */
    /** Closes the connection (a FIN; `reset`: an RST). */
    kill(reset?: boolean): void;
    gone(): boolean;
  }
  const sendJson = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    const payload = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers });
    res.end(payload);
  };
  const sse = (res: http.ServerResponse, data: unknown): void => {
    res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  };

  async function stream(ctx: Ctx, kind: 'chat' | 'text', body: Obj, model: string, fault: Fault | undefined): Promise<void> {
    const { res } = ctx;
    const so = body['stream_options'];
    const includeUsage = isObj(so) && so['include_usage'] === true;
    const id = kind === 'chat' ? `chatcmpl-${hex()}` : `cmpl-${hex()}`;
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (choice: Obj): Obj => ({
      id,
      object,
      created,
      model,
      choices: [{ index: 0, ...choice }],
      ...(includeUsage && opts.usageNullInChunks ? { usage: null } : {}),
    });
    const piece = (p: string, finish: string | null): Obj =>
      kind === 'chat'
        ? chunk({ delta: { content: p }, logprobs: null, finish_reason: finish, ...(finish ? { stop_reason: null } : {}) })
        : chunk({ text: p, logprobs: null, finish_reason: finish, stop_reason: null });

    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8' });
    if (fault?.kind === 'garbage') {
      res.write('data: {"id": "chatcmpl-broken", "choices": [{\n\n');
      res.end('this is not an SSE line\n\ndata: {{{ not json }}}\n\n');
      return;
    }
    if (fault?.kind === 'hold-first-event') {
      res.flushHeaders();
      if (fault.ping === true) res.write(`: ping - ${new Date().toISOString()}\r\n\r\n`);
      await fault.release;
      if (ctx.gone()) return;
    }
    if (kind === 'chat') sse(res, chunk({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
    for (let i = 0; i <= pieces.length; i++) {
      if (opts.chunkDelayMs) await sleep(opts.chunkDelayMs);
      if (ctx.gone()) return;
      if (fault?.kind === 'close-mid-stream' && i === fault.afterChunks) return ctx.kill();
      if (fault?.kind === 'stream-error' && i === fault.afterChunks) {
        // vLLM: json.dumps(ErrorResponse.model_dump()), i.e. Python's default separators
        const msg = JSON.stringify(fault.message ?? 'Internal server error');
        sse(res, `{"error": {"message": ${msg}, "type": "InternalServerError", "param": null, "code": 500}}`);
        if (fault.done !== false) sse(res, '[DONE]');
        res.end();
        return;
      }
      const p = pieces[i];
      sse(res, p === undefined ? piece('', 'stop') : piece(p, null));
    }
    if (includeUsage) sse(res, { id, object, created, model, choices: [], usage: usage(false) });
    sse(res, '[DONE]');
    res.end();
  }

  function embeddings(ctx: Ctx, body: Obj, model: string, fault: Fault | undefined): Promise<void> {
    const input = body['input'];
    const inputs: unknown[] = Array.isArray(input) && !input.every((x) => typeof x === 'number') ? input : [input];
    const base64 = body['encoding_format'] === 'base64';
    const data = inputs.map((x, index) => {
      const v = embeddingVector(x, dims);
      // vLLM: base64 of the float32 values' bytes (little-endian), else the floats as JSON numbers.
      const embedding = base64 ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v;
      return { index, object: 'embedding', embedding };
    });
    const tokens = promptTokens * inputs.length;
    return reply(
      ctx,
      {
        id: `embd-${hex()}`,
        object: 'list',
        created,
        model,
        data,
        usage: { prompt_tokens: tokens, total_tokens: tokens, completion_tokens: 0, prompt_tokens_details: null },
      },
      fault,
    );
  }

  /** A 200 JSON reply, whole or as `fault` shapes it on the wire (hold-reply-tail, cut-reply). */
  async function reply(ctx: Ctx, body: Obj, fault: Fault | undefined): Promise<void> {
    const { res } = ctx;
    const payload = JSON.stringify(body);
    ctx.rec.reply = payload;
    const piece = opts.replyChunkBytes;
    if (fault === undefined && piece !== undefined) {
      const bytes = Buffer.from(payload);
      res.writeHead(200, { 'content-type': 'application/json' });
      for (let at = 0; at < bytes.length; at += piece) res.write(bytes.subarray(at, at + piece));
      return void res.end();
    }
    if (fault?.kind !== 'hold-reply-tail' && fault?.kind !== 'cut-reply') return sendJson(res, 200, payload);
    const bytes = Buffer.from(payload);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
    if (fault.kind === 'cut-reply') {
      res.write(bytes.subarray(0, fault.afterBytes));
      return ctx.kill();
    }
    const at = Math.max(0, bytes.length - (fault.bytes ?? 64));
    res.write(bytes.subarray(0, at));
    await fault.release;
    if (!ctx.gone()) res.end(bytes.subarray(at));
  }

  async function inference(ctx: Ctx, route: string, body: unknown, fault: Fault | undefined): Promise<void> {
    const { res } = ctx;
    if (fault?.kind === 'close-before-headers') return ctx.kill();
    if (fault?.kind === 'reset-before-headers') {
      ctx.kill(true);
      return;
    }
    if (fault?.kind === 'status') {
      const msg = `Injected error (${fault.status}) from ${name}`;
      return sendJson(res, fault.status, fault.body ?? vllmErrorBody(fault.status, msg, { flat: fault.flatError ?? false }), fault.headers);
    }
    if (fault?.kind === 'trickle') {
      res.writeHead(200, { 'content-type': 'application/json' });
      while (!ctx.gone()) {
        res.write(' ');
        await sleep(fault.everyMs);
      }
      return;
    }
    if (fault?.kind === 'delay-headers' || fault?.kind === 'ray-timeout') {
      await sleep(fault.ms ?? 0);
      if (ctx.gone()) return;
    }
    if (fault?.kind === 'ray-timeout') {
      const rid = randomUUID();
      const msg = `Request ${rid} timed out after ${fault.timeoutS ?? 60}s.`;
      res.writeHead(408, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(msg), 'x-request-id': rid });
      return void res.end(msg);
    }
    if (!isObj(body)) return sendJson(res, 400, vllmErrorBody(400, 'Request body must be a JSON object', { type: 'Bad Request' }));
    const model = typeof body['model'] === 'string' ? body['model'] : '';
    if (!served.includes(model)) {
      return sendJson(res, 404, vllmErrorBody(404, `The model \`${model}\` does not exist.`, { param: 'model' }));
    }
    if (route === '/v1/embeddings') return embeddings(ctx, body, model, fault);
    const kind = route === '/v1/chat/completions' ? 'chat' : 'text';
    if (body['stream'] === true) return stream(ctx, kind, body, model, fault);
    if (fault?.kind === 'garbage') return sendJson(res, 200, `<html><body>502 Bad Gateway from ${name}</body></html>`);
    if (fault?.kind === 'stream-error') {
      // a non-streaming request failing in generation: vLLM answers 500 InternalServerError
      return sendJson(res, 500, vllmErrorBody(500, fault.message ?? 'Internal server error'));
    }
    if (fault?.kind === 'close-mid-stream') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 4096 });
      res.write('{"id": "chatcmpl-');
      return ctx.kill();
    }
    const common = { created, model, service_tier: null, system_fingerprint: null };
    const choice = { index: 0, logprobs: null, finish_reason: 'stop', stop_reason: null };
    if (kind === 'chat') {
      const message = {
        role: 'assistant',
        content: text,
        refusal: null,
        annotations: null,
        audio: null,
        function_call: null,
        tool_calls: [],
        reasoning_content: null,
      };
      return reply(
        ctx,
        {
          id: `chatcmpl-${hex()}`,
          object: 'chat.completion',
          ...common,
          choices: [{ ...choice, message }],
          usage: usage(true),
          prompt_logprobs: null,
          kv_transfer_params: null,
        },
        fault,
      );
    }
    return reply(
      ctx,
      {
        id: `cmpl-${hex()}`,
        object: 'text_completion',
        ...common,
        choices: [{ ...choice, text, prompt_logprobs: null }],
        usage: usage(true),
        kv_transfer_params: null,
      },
      fault,
    );
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    res.on('error', () => {});
    const parts: Buffer[] = [];
    try {
      for await (const c of req) parts.push(c as Buffer);
    } catch {
      return; // client went away while sending the body
    }
    const raw = Buffer.concat(parts).toString('utf8');
    let body: unknown = raw === '' ? undefined : raw;
    try {
      if (raw !== '') body = JSON.parse(raw) as unknown;
    } catch {
      /* keep the raw string */
    }
    const rec: ReceivedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: { ...req.headers },
      body,
      raw,
      aborted: false,
    };
    received.push(rec);
    inflight++;
    let selfClosed = false;
    res.on('close', () => {
      inflight--;
      if (!res.writableEnded && !selfClosed && !closing) {
        rec.aborted = true;
        notifyAbort(rec);
      }
    });
    const ctx: Ctx = {
      res,
      rec,
      kill: (reset = false) => {
        selfClosed = true;
        if (reset) req.socket.resetAndDestroy();
        else if (res.headersSent) req.socket.end();
        else req.socket.destroy();
      },
      gone: () => closing || rec.aborted || res.destroyed,
    };
    const route = new URL(req.url ?? '/', 'http://fake').pathname;
    if (req.method === 'GET' && route === '/health') return void res.writeHead(200, { 'content-length': 0 }).end();
    if (opts.requireApiKey !== undefined && route.startsWith('/v1') && req.headers.authorization !== `Bearer ${opts.requireApiKey}`) {
      return sendJson(res, 401, { error: 'Unauthorized' });
    }
    if (req.method === 'GET' && route === '/v1/models') {
      const data = served.map((id) => ({
        id,
        object: 'model',
        created,
        owned_by: 'vllm',
        root: loras[id] !== undefined ? `/adapters/${id}` : id,
        parent: loras[id] ?? null,
        max_model_len: 8192,
        permission: [{ id: `modelperm-${hex()}`, object: 'model_permission', created, allow_sampling: true, allow_logprobs: true }],
      }));
      return sendJson(res, 200, { object: 'list', data });
    }
    if (req.method === 'POST' && ['/v1/chat/completions', '/v1/completions', '/v1/embeddings'].includes(route)) {
      return inference(ctx, route, body, queue.shift() ?? sticky);
    }
    return sendJson(res, 404, { detail: 'Not Found' });
  }

  const server = http.createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    apiBase: `${url}/v1`,
    received,
    queueFaults: (...faults) => void queue.push(...faults),
    setFault: (fault) => void (sticky = fault),
    inFlight: () => inflight,
    waitForAbort(timeoutMs = 5000) {
      const ready = pendingAborts.shift();
      if (ready) return Promise.resolve(ready);
      return new Promise((resolve, reject) => {
        const waiter = (r: ReceivedRequest): void => {
          clearTimeout(t);
          resolve(r);
        };
        const t = setTimeout(() => {
          abortWaiters.splice(abortWaiters.indexOf(waiter), 1);
          reject(new Error(`fake-vllm: no request aborted within ${timeoutMs}ms`));
        }, timeoutMs);
        abortWaiters.push(waiter);
      });
    },
    async close() {
      closing = true;
      for (const [t, resolve] of timers) {
        clearTimeout(t);
        resolve();
      }
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
