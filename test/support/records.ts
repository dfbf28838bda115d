/** Records as the stores hold them, for tests that need one without caring for most of its fields. */
import { createHash } from 'node:crypto';
import { keyId, type KeyRecord } from '../../src/identity/keys.js';

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
    limits: { maxBudget: undefined, budgetDuration: undefined, rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: undefined },
    metadata: {},
    source: 'api',
    ...over,
  };
}
