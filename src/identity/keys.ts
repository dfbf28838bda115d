/**
 * Virtual keys (LiteLLM's `sk-…`): stored and looked up by their sha256, never kept in clear. A lookup is
 * a hash-map probe on the sha256 of the presented key, so no secret-dependent comparison is made; where
 * two secrets are compared directly (the master key) it is constant-time.
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { DeclaredKey } from '../config/schema.js';

/** What a budget or limit applies to, as configured on a key or team. */
export interface Limits {
  readonly maxBudget: number | undefined;
  readonly budgetDuration: string | undefined;
  readonly rpmLimit: number | undefined;
  readonly tpmLimit: number | undefined;
  readonly maxParallelRequests: number | undefined;
  /**
   * Epoch ms from which spend counts toward the budget: a key record's creation, so a key deleted and made
   * again with the same value (the same key id) starts at zero, as in LiteLLM. Undefined: all of it.
   */
  readonly budgetFrom?: number | undefined;
}

export interface KeyRecord {
  /** sha256 hex of the key. */
  readonly hash: string;
  /** The key id of the contract: the first 16 hex characters of the hash. */
  readonly id: string;
  readonly alias: string | undefined;
  /** Model aliases the key may use; empty means all. */
  readonly models: readonly string[];
  readonly userId: string | undefined;
  readonly teamId: string | undefined;
  /** Epoch milliseconds; undefined: never expires. */
  readonly expiresAt: number | undefined;
  readonly blocked: boolean;
  readonly limits: Limits;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Keys from the config file are read-only through the admin API. */
  readonly source: 'config' | 'api';
  /** The ids this key had before /key/regenerate gave it new secrets, oldest first. */
  readonly previousIds?: readonly string[] | undefined;
}

/** Where Check finds keys: synchronous, since the hot path never waits on a database. */
export interface KeyDirectory {
  get(hash: string): KeyRecord | undefined;
  /** By key id (the first 16 hex of the hash), as x-tollgate-context carries it. */
  byId(id: string): KeyRecord | undefined;
  /**
   * A key `get` does not know, read from where records are kept: one another replica made a moment ago,
   * before its broadcast arrived. Undefined when it cannot be looked up now (no database, too many lookups
   * in flight, or the same hash missed a moment ago).
   */
  lookupMissing?(hash: string): Promise<KeyRecord | undefined> | undefined;
  /**
   * A change to this key, its team or its user that arrived and is being read (a block, a delete, a lowered
   * limit made on another replica): resolves when the new records are in (or after a bound). Undefined when
   * none is in flight, which is nearly always.
   */
  settling?(key: KeyRecord): Promise<void> | undefined;
  /**
   * The key with this id now: its record, or the record of the key it was regenerated into (a request
   * admitted under the old id that ends after the regenerate is charged there).
   */
  current?(id: string): KeyRecord | undefined;
}

/** One-shot `crypto.hash`: less than half the cost of createHash on the per-request key lookup. */
export function sha256Hex(value: string): string {
  return hash('sha256', value, 'hex');
}

export function keyId(hash: string): string {
  return hash.slice(0, 16);
}

/** `Authorization: Bearer sk-…` → the key; `undefined` when absent, `null` when present but malformed. */
export function bearerKey(header: string | undefined): string | undefined | null {
  if (header === undefined || header === '') return undefined;
  const m = /^\s*bearer\s+(\S+)\s*$/i.exec(header);
  const token = m?.[1];
  if (token === undefined || !token.startsWith('sk-') || token.length < 8 || token.length > 512) return null;
  return token;
}

/** Constant-time equality of two secrets (compares their sha256 so lengths do not leak either). */
export function secretEquals(a: string, b: string): boolean {
  return timingSafeEqual(hash('sha256', a, 'buffer'), hash('sha256', b, 'buffer'));
}

/** The limits of a config key, team or user. */
export function limitsOf(c: {
  max_budget?: number | undefined;
  budget_duration?: string | undefined;
  rpm_limit?: number | undefined;
  tpm_limit?: number | undefined;
  max_parallel_requests?: number | undefined;
}): Limits {
  return {
    maxBudget: c.max_budget,
    budgetDuration: c.budget_duration,
    rpmLimit: c.rpm_limit,
    tpmLimit: c.tpm_limit,
    maxParallelRequests: c.max_parallel_requests,
  };
}

export function keyFromConfig(k: DeclaredKey): KeyRecord {
  const hash = k.key.slice('sha256:'.length);
  return {
    hash,
    id: keyId(hash),
    alias: k.key_alias,
    models: k.models,
    userId: k.user_id,
    teamId: k.team_id,
    expiresAt: k.expires === undefined ? undefined : Date.parse(k.expires),
    blocked: k.blocked,
    limits: limitsOf(k),
    metadata: k.metadata,
    source: 'config',
  };
}

/** The keys declared in config, by hash. Later layers (generated keys) wrap or replace it. */
export class StaticKeyDirectory implements KeyDirectory {
  /** Every key, in the order declared (the admin API lists them). */
  readonly records: readonly KeyRecord[];
  readonly #byHash: ReadonlyMap<string, KeyRecord>;
  readonly #byId: ReadonlyMap<string, KeyRecord>;
  constructor(keys: readonly DeclaredKey[]) {
    const records = keys.map(keyFromConfig);
    this.records = records;
    this.#byHash = new Map(records.map((r) => [r.hash, r] as const));
    this.#byId = new Map(records.map((r) => [r.id, r] as const));
  }
  get(hash: string): KeyRecord | undefined {
    return this.#byHash.get(hash);
  }
  byId(id: string): KeyRecord | undefined {
    return this.#byId.get(id);
  }
}
