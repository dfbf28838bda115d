import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { withoutDeployment } from '../../../src/gateway/backend-failure.js';
import type { Deployment } from '../../../src/routing/deployments.js';

const at = (origin: string, apiKey?: string): Deployment => ({ origin, apiKey }) as unknown as Deployment;

describe('withoutDeployment: what a backend message quotes of the deployment', () => {
  test('its host, as a whole name, and its api_key are cut', () => {
    assert.equal(
      withoutDeployment(
        'key sk-abcdefgh123 refused by vllm-a.ns.svc:8000 (vllm-a.ns.svc)',
        at('http://vllm-a.ns.svc:8000', 'sk-abcdefgh123'),
      ),
      'key … refused by … (…)',
    );
    assert.equal(withoutDeployment('qwen:8000 down; qwen restarting.', at('http://qwen:8000')), '… down; … restarting.');
  });

  test('a host inside a longer name, and a placeholder api_key, are left alone', () => {
    assert.equal(withoutDeployment('qwen-7b is not loaded on qwen2', at('http://qwen:8000')), 'qwen-7b is not loaded on qwen2');
    assert.equal(withoutDeployment("Input should be 'none' or 'auto'", at('http://vllm:8000', 'none')), "Input should be 'none' or 'auto'");
  });
});
