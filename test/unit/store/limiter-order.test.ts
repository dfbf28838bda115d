/**
 * Check's admission (Limiter.admit) when the deployment it picked is at its own rpm: another of the model's
 * deployments takes the request — of the same `order` first, then of the next (LiteLLM counts a deployment
 * past its rpm/tpm as unavailable before it looks at the next order).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ModelCatalog } from '../../../src/routing/deployments.js';
import { prepareConfigText } from '../../../src/main/config-source.js';
import { Limiter } from '../../../src/store/limiter.js';
import { MemoryCounters } from '../../../src/store/memory-counters.js';
import { UTC_CALENDAR } from '../../../src/store/calendar.js';
import { createLogger } from '../../../src/telemetry/logger.js';

const T = 1_800_000_000_000;

test('a deployment at its rpm at Check: another of its order takes the request first, then one of the next order', () => {
  // The backup is listed first: config order alone would send the overflow there before the other primary.
  const { config } = prepareConfigText(
    `
model_list:
  - model_name: llama
    litellm_params: { model: openai/m, api_base: "http://backup:8000/v1", order: 2, rpm: 1 }
    model_info: { id: backup }
  - model_name: llama
    litellm_params: { model: openai/m, api_base: "http://p1:8000/v1", order: 1, rpm: 1 }
    model_info: { id: p1 }
  - model_name: llama
    litellm_params: { model: openai/m, api_base: "http://p2:8000/v1", order: 1, rpm: 1 }
    model_info: { id: p2 }
`,
    'limiter-order.yaml',
    {},
  );
  const catalog = ModelCatalog.fromConfig(config.model_list);
  const limiter = new Limiter({
    counters: new MemoryCounters(),
    dirs: { keys: { get: () => undefined, byId: () => undefined }, teams: new Map(), users: new Map(), catalog: () => catalog },
    failureMode: 'closed',
    logger: createLogger('silent'),
    defaultMaxTokens: 16,
    calendar: UTC_CALENDAR,
  });
  const who = { keyId: undefined, userId: undefined, teamId: undefined };
  const body = { maxTokens: 1, choices: 1, bytes: 10 };
  const admitted: string[] = [];
  for (let i = 0; i < 4; i++) {
    const a = limiter.admit(who, catalog.deployment('p1'), body, T + i);
    assert.ok(!(a instanceof Promise));
    admitted.push(a.ok ? (a.deployment?.id ?? 'none') : a.code);
  }
  assert.deepEqual(admitted, ['p1', 'p2', 'backup', 'rate_limit_exceeded']);
});
