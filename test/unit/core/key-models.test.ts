/**
 * LiteLLM's special model names on a key: `all-team-models` (the models of the key's team) and
 * `all-proxy-models` (every model), as the model check of decide() and GET /v1/models apply them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allows, keyAllows, type TeamRecord } from '../../../src/core/decide.js';

const team = (models: string[]): TeamRecord => ({
  teamId: 't',
  alias: undefined,
  models,
  blocked: false,
  limits: { maxBudget: undefined, budgetDuration: undefined, rpmLimit: undefined, tpmLimit: undefined, maxParallelRequests: undefined },
  metadata: {},
});

test('all-team-models allows what the key team allows, and nothing without a team', () => {
  const rows: [string[], string, TeamRecord | undefined, boolean][] = [
    [['all-team-models'], 'llama', team(['llama']), true],
    [['all-team-models'], 'qwen', team(['llama']), false],
    [['all-team-models'], 'qwen', team([]), true],
    [['all-team-models'], 'llama', undefined, false],
    [['all-team-models', 'qwen'], 'qwen', team(['llama']), true],
    [['all-proxy-models'], 'anything', undefined, true],
    [['llama'], 'llama', undefined, true],
    [['llama'], 'qwen', team([]), false],
    [[], 'qwen', undefined, true],
  ];
  for (const [list, model, t, want] of rows)
    assert.equal(keyAllows(list, model, t), want, `${JSON.stringify(list)} ${model} team=${t?.models.join(',')}`);
  assert.equal(allows(['all-proxy-models'], 'x'), true, 'a team may list all-proxy-models too');
});
