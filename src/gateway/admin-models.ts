/**
 * The admin API's models: `GET /model/info`, `POST /model/new`, `POST /model/delete`, and `GET /health`
 * (every deployment probed through its `/models`). `/model/new` is an SSRF surface — an admin could point
 * tollgate at any host — so `api_base` must match `general_settings.allowed_api_bases`; a backend api_key
 * is stored sealed (or as an `os.environ/` reference) and never returned.
 */
import { randomUUID } from 'node:crypto';
import { isIP } from 'node:net';
import { request } from 'undici';
import type { z } from 'zod';
import type { Deployment, ModelCatalog } from '../routing/deployments.js';
import { SecretBox } from '../identity/secret-box.js';
import type { StoredModel } from '../store/records.js';
import type { modelNew } from './admin-schemas.js';

const ENV_REF = /^os\.environ\/([A-Za-z_][A-Za-z0-9_]*)$/;
const PROBE_TIMEOUT_MS = 5_000;

/**
 * Whether `apiBase`'s host (and port, when the pattern names one) matches one of `patterns`: `*` stands for
 * any run of characters within one DNS label (`vllm-*.models.svc`), so a pattern never spans a dot. An IP
 * address must be listed exactly (both sides normalised as URLs are): a wildcard never matches one, since
 * `*` would otherwise take in any IPv6 literal (`[::ffff:a9fe:a9fe]` is 169.254.169.254).
 */
export function apiBaseAllowed(apiBase: string, patterns: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(apiBase);
  } catch {
    return false;
  }
  if (url.username !== '' || url.password !== '') return false;
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = url.port === '' ? (url.protocol === 'https:' ? '443' : '80') : url.port;
  return patterns.some((p) => {
    const lower = p.toLowerCase();
    const colon = lower.lastIndexOf(':');
    // `host:port` (an IPv6 pattern is written in brackets: `[::1]:8000`).
    const bare = !lower.includes('[') && lower.indexOf(':') !== colon; // `::1`: an IPv6 address without a port
    const hasPort = colon > 0 && !bare && /^\d+$/.test(lower.slice(colon + 1)) && (!lower.includes('[') || lower.includes(']:'));
    const hostPattern = (hasPort ? lower.slice(0, colon) : lower).replace(/^\[|\]$/g, '');
    if (hasPort && lower.slice(colon + 1) !== port) return false;
    if (isIP(host) !== 0) return !hostPattern.includes('*') && normalisedHost(hostPattern) === host;
    const re = new RegExp(`^${hostPattern.split('*').map(escapeRegExp).join('[^.]*')}$`);
    return re.test(host);
  });
}

/** A pattern's host as the URL parser writes it (`127.1` → `127.0.0.1`, `::FFFF:1` → `::ffff:1`). */
function normalisedHost(h: string): string | undefined {
  try {
    return new URL(`http://${isIP(h) === 6 ? `[${h}]` : h}/`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return undefined;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export type NewModel = z.output<typeof modelNew>;

/** What /model/new stores, or why it cannot: the field at fault and what to do. */
export function prepareModel(
  body: NewModel,
  opts: {
    allowed: readonly string[];
    catalog: ModelCatalog;
    box: SecretBox | undefined;
    env: Readonly<Record<string, string | undefined>>;
    /** True for a value tollgate holds as its own secret (master key, signing key, store URLs, a virtual key). */
    ownSecret?: ((value: string) => boolean) | undefined;
  },
): StoredModel | { field: string; message: string; conflict?: true } {
  const p = body.litellm_params;
  if (!apiBaseAllowed(p.api_base, opts.allowed)) {
    return {
      field: 'litellm_params.api_base',
      message:
        opts.allowed.length === 0
          ? 'litellm_params.api_base: no host is allowed: list the backend hosts in general_settings.allowed_api_bases first'
          : 'litellm_params.api_base: this host is not in general_settings.allowed_api_bases',
    };
  }
  const id = body.model_info.id ?? randomUUID();
  if (opts.catalog.deployment(id) !== undefined) {
    return { field: 'model_info.id', message: 'model_info.id: a deployment with this id exists already', conflict: true };
  }
  let apiKey = p.api_key;
  if (apiKey !== undefined) {
    const ref = ENV_REF.exec(apiKey);
    if (ref !== null) {
      const name = ref[1] ?? '';
      const value = opts.env[name] ?? '';
      if (value === '')
        return { field: 'litellm_params.api_key', message: `litellm_params.api_key: ${apiKey} is not set in tollgate's environment` };
      // The backend gets this value as a bearer token: never one of tollgate's own secrets.
      if (name.startsWith('TOLLGATE_') || opts.ownSecret?.(value) === true)
        return {
          field: 'litellm_params.api_key',
          message: `litellm_params.api_key: ${apiKey} holds one of tollgate's own secrets: name a variable made for this backend`,
        };
    } else if (opts.box === undefined) {
      return {
        field: 'litellm_params.api_key',
        message:
          'litellm_params.api_key: tollgate has no shared secret to seal it with: set general_settings.context_signing_key (or master_key), or pass os.environ/NAME',
      };
    } else apiKey = opts.box.seal(apiKey);
  }
  const params: Record<string, unknown> = { ...p };
  if (apiKey === undefined) delete params['api_key'];
  else params['api_key'] = apiKey;
  return { id, modelName: body.model_name, litellmParams: params, modelInfo: { ...body.model_info, id } };
}

/**
 * The api_key of a stored model as the backend needs it: opened, or read from the environment. `null`:
 * it cannot be (sealed under another secret, or an unset variable), so the model is not routable here.
 */
export function storedApiKey(value: unknown, box: SecretBox, env: Readonly<Record<string, string | undefined>>): string | undefined | null {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') return null;
  if (SecretBox.isSealed(value)) return box.open(value) ?? null;
  const ref = ENV_REF.exec(value);
  if (ref !== null) {
    const v = env[ref[1] ?? ''];
    return v === undefined || v === '' ? null : v;
  }
  return null;
}

/**
 * An api_base as the admin API shows it: credentials in it (`user:pass@`, a query such as `?api-key=`) are
 * replaced, since the config file may hold them (/model/new refuses them) and admin JWT groups read this.
 */
export function shownApiBase(apiBase: string): string {
  let u: URL;
  try {
    u = new URL(apiBase);
  } catch {
    return '[redacted]';
  }
  if (u.username === '' && u.password === '' && u.search === '' && u.hash === '') return apiBase;
  const who = u.username !== '' || u.password !== '' ? '[redacted]@' : '';
  return `${u.protocol}//${who}${u.host}${u.pathname}${u.search === '' ? '' : '?[redacted]'}`;
}

/** A deployment as /model/info shows it: never its api_key, nor credentials in its api_base. */
export function modelView(d: Deployment, fromDb: boolean): Record<string, unknown> {
  return {
    model_name: d.alias,
    litellm_params: {
      model: `${d.provider}/${d.backendModel}`,
      api_base: shownApiBase(d.apiBase),
      rpm: d.rpm ?? null,
      tpm: d.tpm ?? null,
      weight: d.weight,
      // Where LiteLLM shows it (its litellm_params as written), and for model_info.order too: the one used.
      order: d.order ?? null,
      timeout: d.timeoutMs / 1000,
      stream_timeout: d.streamTimeoutMs === undefined ? null : d.streamTimeoutMs / 1000,
      max_parallel_requests: d.maxParallelRequests,
    },
    model_info: {
      id: d.id,
      db_model: fromDb,
      input_cost_per_token: d.inputCostPerToken,
      output_cost_per_token: d.outputCostPerToken,
      max_tokens: d.maxTokens ?? null,
      api_key_set: d.apiKey !== undefined,
    },
  };
}

export interface ProbeResult {
  readonly model: string;
  readonly model_id: string;
  readonly api_base: string;
  readonly error?: string;
}

/** `GET /health`: each deployment's `/models`, in parallel, bounded in time. */
export async function probeDeployments(catalog: ModelCatalog): Promise<{
  healthy_endpoints: ProbeResult[];
  unhealthy_endpoints: ProbeResult[];
  healthy_count: number;
  unhealthy_count: number;
}> {
  const deployments = [...catalog.aliases()].flatMap((a) => catalog.group(a)?.deployments ?? []);
  const results = await Promise.all(deployments.map((d) => probe(d)));
  const healthy = results.filter((r) => r.error === undefined);
  const unhealthy = results.filter((r) => r.error !== undefined);
  return { healthy_endpoints: healthy, unhealthy_endpoints: unhealthy, healthy_count: healthy.length, unhealthy_count: unhealthy.length };
}

async function probe(d: Deployment): Promise<ProbeResult> {
  const base = { model: d.alias, model_id: d.id, api_base: shownApiBase(d.apiBase) };
  try {
    const res = await request(`${d.apiBase}/models`, {
      method: 'GET',
      headers: d.apiKey === undefined ? {} : { authorization: `Bearer ${d.apiKey}` },
      headersTimeout: PROBE_TIMEOUT_MS,
      bodyTimeout: PROBE_TIMEOUT_MS,
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    });
    const text = await res.body.text();
    if (res.statusCode !== 200) return { ...base, error: `GET /models answered ${res.statusCode}` };
    const served = (JSON.parse(text) as { data?: { id?: unknown }[] }).data?.map((m) => m.id) ?? [];
    if (!served.includes(d.backendModel)) return { ...base, error: `the server does not list ${d.backendModel}` };
    return base;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { ...base, error: typeof code === 'string' ? `unreachable (${code})` : 'unreachable' };
  }
}
