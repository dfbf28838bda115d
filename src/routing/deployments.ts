/**
 * Deployments (one `model_list` entry each) grouped by the alias clients send as `model`. Deployment ids
 * come from `model_info.id` or are derived from the entry's content, so every replica names the same
 * deployment the same way (authz picks one, the gateway routes to it).
 */
import { createHash } from 'node:crypto';
import { DEFAULT_MAX_PARALLEL_REQUESTS, DEFAULT_TIMEOUT_S, type ModelEntry } from '../config/schema.js';

export interface Deployment {
  readonly id: string;
  /** The alias clients send as `model`. */
  readonly alias: string;
  /** `openai` or `hosted_vllm`: both speak the OpenAI API. */
  readonly provider: string;
  /** The model id the backend serves (`meta-llama/Llama-3.1-8B-Instruct`, or Ray Serve's `base:adapter`). */
  readonly backendModel: string;
  /** Without a trailing slash, e.g. `http://vllm-llama:8000/v1`. */
  readonly apiBase: string;
  /** `http://vllm-llama:8000`: where its connections go. */
  readonly origin: string;
  /** `/v1`: the path requests are sent under. */
  readonly basePath: string;
  readonly apiKey: string | undefined;
  readonly rpm: number | undefined;
  readonly tpm: number | undefined;
  readonly weight: number;
  /**
   * LiteLLM's `order` (litellm_params, else model_info): the deployments of the lowest order that has one
   * available take the traffic. Undefined: after every ordered one (orderRank).
   */
  readonly order: number | undefined;
  readonly timeoutMs: number;
  readonly streamTimeoutMs: number | undefined;
  /**
   * At most this many requests in flight to it from one replica (LiteLLM's max_parallel_requests): its
   * connection pool's size. The rest wait for a connection, and that wait is not the backend's time.
   */
  readonly maxParallelRequests: number;
  readonly inputCostPerToken: number;
  readonly outputCostPerToken: number;
  readonly maxTokens: number | undefined;
}

/** What a deployment takes from the router when its own litellm_params do not say. */
export interface DeploymentDefaults {
  /** router_settings.timeout (LiteLLM's Router `timeout`); absent: DEFAULT_TIMEOUT_S. */
  readonly timeoutS?: number | undefined;
  /** router_settings.stream_timeout; absent: the deployment's timeout bounds streams too. */
  readonly streamTimeoutS?: number | undefined;
  /** router_settings.default_max_parallel_requests; absent: DEFAULT_MAX_PARALLEL_REQUESTS. */
  readonly maxParallelRequests?: number | undefined;
}

/**
 * The deployment of a model_list entry. Its timeout: litellm_params.timeout, else the router's, else
 * DEFAULT_TIMEOUT_S — LiteLLM's order (a deployment's own timeout wins over the Router's); its
 * max_parallel_requests likewise (else DEFAULT_MAX_PARALLEL_REQUESTS).
 */
export function deploymentFromEntry(entry: ModelEntry, indexInAlias: number, defaults: DeploymentDefaults = {}): Deployment {
  const p = entry.litellm_params;
  const slash = p.model.indexOf('/');
  const streamS = p.stream_timeout ?? defaults.streamTimeoutS;
  const id =
    entry.model_info.id ??
    `${entry.model_name.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 40)}-${createHash('sha256')
      .update(`${entry.model_name}\n${p.model}\n${p.api_base}\n${indexInAlias}`)
      .digest('hex')
      .slice(0, 8)}`;
  return {
    id,
    alias: entry.model_name,
    provider: p.model.slice(0, slash),
    backendModel: p.model.slice(slash + 1),
    apiBase: p.api_base.replace(/\/+$/, ''),
    origin: new URL(p.api_base).origin,
    basePath: new URL(p.api_base).pathname.replace(/\/+$/, ''),
    apiKey: p.api_key,
    rpm: p.rpm,
    tpm: p.tpm,
    weight: p.weight,
    // LiteLLM's _get_deployment_order (litellm/utils.py): litellm_params first, then model_info.
    order: p.order ?? entry.model_info.order,
    timeoutMs: (p.timeout ?? defaults.timeoutS ?? DEFAULT_TIMEOUT_S) * 1000,
    streamTimeoutMs: streamS === undefined ? undefined : streamS * 1000,
    maxParallelRequests: p.max_parallel_requests ?? defaults.maxParallelRequests ?? DEFAULT_MAX_PARALLEL_REQUESTS,
    inputCostPerToken: entry.model_info.input_cost_per_token ?? p.input_cost_per_token ?? 0,
    outputCostPerToken: entry.model_info.output_cost_per_token ?? p.output_cost_per_token ?? 0,
    maxTokens: entry.model_info.max_output_tokens ?? entry.model_info.max_tokens,
  };
}

/** An alias and its deployments, with cumulative weights for the weighted shuffle. */
export interface ModelGroup {
  readonly alias: string;
  readonly deployments: readonly Deployment[];
  readonly cumulativeWeights: readonly number[];
  /** Its deployments are not all of one order (orderRank): each pick keeps to the first order available. */
  readonly ordered: boolean;
}

/**
 * A deployment's place in its alias's priority: its `order`, and after every order when it has none.
 * LiteLLM's _get_order_filtered_deployments (litellm/utils.py) keeps, among the deployments that may take
 * the request, those of the lowest order; ones without an order only when none of those left has one.
 */
export function orderRank(d: Deployment): number {
  return d.order ?? Infinity;
}

/** Those of `candidates` in the lowest order among them: `candidates` itself when they share one. */
export function firstOrder(candidates: readonly Deployment[]): readonly Deployment[] {
  let min = Infinity;
  let max = -Infinity;
  for (const d of candidates) {
    const r = orderRank(d);
    if (r < min) min = r;
    if (r > max) max = r;
  }
  return min === max ? candidates : candidates.filter((d) => orderRank(d) === min);
}

/**
 * The next deployment to ask when `from` cannot take a request (at its rpm/tpm): another of its order not in
 * `skip`, in config order, else one of the next order up. A lower order is not gone back to: the pick passed
 * it over as unavailable.
 */
export function nextInOrder(group: ModelGroup, from: Deployment, skip: ReadonlySet<string>): Deployment | undefined {
  const rank = orderRank(from);
  let next: Deployment | undefined;
  for (const d of group.deployments) {
    if (skip.has(d.id) || d.id === from.id) continue;
    const r = orderRank(d);
    if (r === rank) return d;
    if (r > rank && (next === undefined || r < orderRank(next))) next = d;
  }
  return next;
}

/** A deployment's cooldown: when it ends, and whether a 429 of its backend (rate limiting) put it there. */
export interface Cooldown {
  readonly untilMs: number;
  readonly rateLimited: boolean;
}

/** Which deployments may take traffic now (cooldowns arrive with the gateway's health tracking). */
export interface DeploymentHealth {
  isAvailable(deploymentId: string, nowMs: number): boolean;
  /** The deployment's cooldown, while it is cooling down; absent: this view does not know cooldowns. */
  cooldown?(deploymentId: string, nowMs: number): Cooldown | undefined;
}

/**
 * When every deployment of `groups` is cooling down, the cooldown that ends first (a tie goes to one a 429
 * caused): when the client may come back, and why it is out. Undefined when one of them is available, or
 * when `health` does not know cooldowns (it cannot say when they end).
 */
export function firstBack(groups: Iterable<ModelGroup>, health: DeploymentHealth, nowMs: number): Cooldown | undefined {
  let first: Cooldown | undefined;
  for (const g of groups) {
    for (const d of g.deployments) {
      const c = health.cooldown?.(d.id, nowMs);
      if (c === undefined) return undefined;
      if (first === undefined || c.untilMs < first.untilMs || (c.untilMs === first.untilMs && c.rateLimited)) first = c;
    }
  }
  return first;
}

export interface AliasIndex {
  readonly sorted: readonly string[];
  readonly digest: string;
}

/** `subset` of `index.sorted` as a bitmap (bit i: the i-th alias), base64url. */
export function aliasBitmap(index: AliasIndex, subset: ReadonlySet<string>): string {
  const bits = new Uint8Array(Math.ceil(index.sorted.length / 8));
  index.sorted.forEach((a, i) => {
    if (subset.has(a)) bits[i >> 3] = (bits[i >> 3] as number) | (1 << (i & 7));
  });
  return Buffer.from(bits).toString('base64url');
}

/** The aliases a bitmap (aliasBitmap) names, or undefined when it was made over another list. */
export function aliasesOfBitmap(index: AliasIndex, digest: string, bitmap: string): string[] | undefined {
  if (digest !== index.digest) return undefined;
  const bits = Buffer.from(bitmap, 'base64url');
  if (bits.length !== Math.ceil(index.sorted.length / 8)) return undefined;
  return index.sorted.filter((_, i) => ((bits[i >> 3] as number) & (1 << (i & 7))) !== 0);
}

export const ALWAYS_HEALTHY: DeploymentHealth = { isAvailable: () => true };

export class ModelCatalog {
  readonly #groups: ReadonlyMap<string, ModelGroup>;
  readonly #byId: ReadonlyMap<string, Deployment>;

  constructor(deployments: readonly Deployment[]) {
    const groups = new Map<string, Deployment[]>();
    for (const d of deployments) {
      const list = groups.get(d.alias);
      if (list) list.push(d);
      else groups.set(d.alias, [d]);
    }
    this.#groups = new Map(
      [...groups].map(([alias, ds]) => {
        let sum = 0;
        const cumulativeWeights = ds.map((d) => (sum += d.weight));
        const ordered = ds.some((d) => orderRank(d) !== orderRank(ds[0] as Deployment));
        return [alias, { alias, deployments: ds, cumulativeWeights, ordered }] as const;
      }),
    );
    this.#byId = new Map(deployments.map((d) => [d.id, d] as const));
  }

  static fromConfig(entries: readonly ModelEntry[], defaults: DeploymentDefaults = {}): ModelCatalog {
    const seen = new Map<string, number>();
    return new ModelCatalog(
      entries.map((e) => {
        const n = seen.get(e.model_name) ?? 0;
        seen.set(e.model_name, n + 1);
        return deploymentFromEntry(e, n, defaults);
      }),
    );
  }

  group(alias: string): ModelGroup | undefined {
    return this.#groups.get(alias);
  }

  /** The groups of `aliases` that the catalog has, in their order. */
  groups(aliases: Iterable<string>): ModelGroup[] {
    const out: ModelGroup[] = [];
    for (const alias of aliases) {
      const g = this.#groups.get(alias);
      if (g !== undefined) out.push(g);
    }
    return out;
  }

  deployment(id: string): Deployment | undefined {
    return this.#byId.get(id);
  }

  aliases(): IterableIterator<string> {
    return this.#groups.keys();
  }

  #listing: AliasIndex | undefined;

  /** The aliases sorted, and a digest naming that list: a set of them travels as a bitmap over it. */
  get listing(): AliasIndex {
    if (this.#listing === undefined) {
      const sorted = [...this.#groups.keys()].sort();
      const digest = createHash('sha256').update(sorted.join('\n')).digest('base64url').slice(0, 11);
      this.#listing = { sorted, digest };
    }
    return this.#listing;
  }

  get size(): number {
    return this.#byId.size;
  }
}

/**
 * LiteLLM's `simple-shuffle`: a random deployment, weighted by `weight`, among those available — of the
 * lowest order that has one (orderRank). `random` is in [0, 1) (injected so the choice is testable).
 */
export function weightedPick(group: ModelGroup, health: DeploymentHealth, nowMs: number, random: number): Deployment | undefined {
  const { deployments, cumulativeWeights } = group;
  if (group.ordered) return weighted(firstOrder(deployments.filter((d) => health.isAvailable(d.id, nowMs))), random);
  const total = cumulativeWeights[cumulativeWeights.length - 1] ?? 0;
  const target = random * total;
  let idx = cumulativeWeights.findIndex((w) => target < w);
  if (idx < 0) idx = deployments.length - 1;
  const first = deployments[idx];
  if (first !== undefined && health.isAvailable(first.id, nowMs)) return first;
  // The pick is cooling down: weighted choice among the rest that are available.
  return weighted(
    deployments.filter((d) => health.isAvailable(d.id, nowMs)),
    random,
  );
}

/** One of `list`, weighted by `weight`; `random` in [0, 1). Undefined for an empty list. */
export function weighted(list: readonly Deployment[], random: number): Deployment | undefined {
  const total = list.reduce((s, d) => s + d.weight, 0);
  let t = random * total;
  for (const d of list) {
    t -= d.weight;
    if (t < 0) return d;
  }
  return list[list.length - 1];
}
