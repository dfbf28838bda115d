/** Records as the stores hold them, for tests that need one without caring for most of its fields. */
import { createHash } from 'node:crypto';
import { keyId, type KeyRecord, type Limits } from '../../src/identity/keys.js';

/** Limits of a record that has none. */
export const NO_LIMITS: Limits = {
  maxBudget: undefined,
  budgetDuration: undefined,
  rpmLimit: undefined,
  tpmLimit: undefined,
  maxParallelRequests: undefined,
};

/** A virtual key created through the admin API for the secret `key`: no limits, no models, not blocked. */
export function apiKeyRecord(key: string, over: Partial<KeyRecord> = {}): KeyRecord {
  const hash = createHash('sha256').update(key).digest('hex');
  return {
    hash,
    id: keyId(hash),
    alias: 'k',
    models: [],
    userId: undefined,
    teamId: undefined,
    expiresAt: undefined,
    blocked: false,
    limits: NO_LIMITS,
    metadata: {},
    source: 'api',
    ...over,
  };
}
