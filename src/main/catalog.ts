/**
 * The routing catalog of one replica: the config file's `model_list`, then the models added through the
 * admin API (`POST /model/new`, kept in the records database and broadcast). A stored model is validated
 * again here, as a config entry, with its api_key opened (sealed) or read from this replica's environment;
 * one that cannot be used here is left out with an error logged, never routed half-configured.
 */
import type { ModelEntry } from '../config/schema.js';
import { modelEntry } from '../config/schema.js';
import type { SecretBox } from '../identity/secret-box.js';
import { apiBaseAllowed, storedApiKey } from '../gateway/admin-models.js';
import { ModelCatalog } from '../routing/deployments.js';
import type { StoredModel } from '../store/records.js';
import type { Logger } from '../telemetry/logger.js';

export function composeCatalog(
  configModels: readonly ModelEntry[],
  stored: readonly StoredModel[],
  opts: {
    box: SecretBox | undefined;
    env: Readonly<Record<string, string | undefined>>;
    logger: Logger;
    /** A stored model whose api_base is no longer allowed (a reloaded allowed_api_bases) is not routed. */
    allowedApiBases: readonly string[];
    /** router_settings.timeout: the timeout of a model (from the file or the admin API) that sets none. */
    defaultTimeoutS?: number | undefined;
    /** router_settings.stream_timeout, for the database's models (config entries have it written in). */
    defaultStreamTimeoutS?: number | undefined;
    /** router_settings.default_max_parallel_requests, for the database's models (config entries have it written in). */
    defaultMaxParallelRequests?: number | undefined;
  },
): ModelCatalog {
  const entries: ModelEntry[] = [...configModels];
  const configIds = new Set(configModels.map((m) => m.model_info.id).filter((id) => id !== undefined));
  for (const m of stored) {
    if (configIds.has(m.id)) {
      opts.logger.error({ model_id: m.id }, 'a model added through the admin API has the id of a config model; the config one is used');
      continue;
    }
    if (!apiBaseAllowed(String(m.litellmParams['api_base']), opts.allowedApiBases)) {
      opts.logger.error(
        { model_id: m.id, model_name: m.modelName },
        'a model added through the admin API points outside allowed_api_bases; it is not routed',
      );
      continue;
    }
    const params: Record<string, unknown> = { ...m.litellmParams };
    if ('api_key' in params) {
      const key = opts.box === undefined ? null : storedApiKey(params['api_key'], opts.box, opts.env);
      if (key === null) {
        opts.logger.error(
          { model_id: m.id, model_name: m.modelName },
          'a model added through the admin API cannot be used here: its api_key is sealed under another secret or names an unset variable (set context_signing_key alike on every replica, or the variable)',
        );
        continue;
      }
      params['api_key'] = key;
    }
    const parsed = modelEntry.safeParse({ model_name: m.modelName, litellm_params: params, model_info: { ...m.modelInfo, id: m.id } });
    if (!parsed.success) {
      opts.logger.error(
        { model_id: m.id, model_name: m.modelName },
        'a model in the records database is not valid any more; it is not routed',
      );
      continue;
    }
    entries.push(parsed.data);
  }
  return ModelCatalog.fromConfig(entries, {
    timeoutS: opts.defaultTimeoutS,
    streamTimeoutS: opts.defaultStreamTimeoutS,
    maxParallelRequests: opts.defaultMaxParallelRequests,
  });
}
