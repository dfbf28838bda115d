{{/* The chart name, at most 63 characters (a DNS label). */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tollgate.secretName" -}}
{{- default (include "tollgate.fullname" .) .Values.secret.name -}}
{{- end -}}

{{/* The PersistentVolumeClaim of the data directory (dataDir.persistence). */}}
{{- define "tollgate.dataClaimName" -}}
{{- default (printf "%s-data" (include "tollgate.fullname" .)) .Values.dataDir.persistence.existingClaim -}}
{{- end -}}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap's data: tollgate's config.yaml and Envoy's envoy.yaml (its checksum rolls the pods). */}}
{{- define "tollgate.configData" -}}
config.yaml: |
  {{- toYaml .Values.config | nindent 2 }}
envoy.yaml: |
  {{- include "tollgate.envoyConfig" . | nindent 2 }}
{{- end -}}

{{/* The Secret's data when the chart creates it. */}}
{{- define "tollgate.secretData" -}}
{{- range $name, $value := .Values.secret.values }}
{{ $name }}: {{ required (printf "secret.values.%s is empty" $name) $value | b64enc }}
{{- end }}
{{- end -}}

{{/*
"true" when the tollgate container gets the environment variable .name (from secretEnv or extraEnv), else "".
tollgate honours DATABASE_URL and REDIS_URL from the environment when the config sets no URL.
*/}}
{{- define "tollgate.hasEnv" -}}
{{- $name := .name -}}
{{- range concat (default (list) .root.Values.secretEnv) (default (list) .root.Values.extraEnv) -}}
{{- if eq .name $name -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when extraEnv sets the environment variable .name as a plain value (no valueFrom), else "". */}}
{{- define "tollgate.hasPlainEnv" -}}
{{- $name := .name -}}
{{- range default (list) .root.Values.extraEnv -}}
{{- if and (eq .name $name) (not .valueFrom) -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Walks the config value .value at .path (.secret: it lies under a field that holds a secret) and refuses what
would break the README's promise that no secret lands in the ConfigMap or Helm's release history, or keep the
pods from starting:
  - a literal in a field that holds a secret: tollgate's (master_key, context_signing_key, database_url,
    redis_url, api_key, keys[].key unless a sha256: hash), a LiteLLM field named like a credential
    (redis_password, cache_params.password, aws_secret_access_key, ...; the names chart-schema.mjs refuses
    too), everything under one, and a URL with a password in it;
  - os.environ/NAME with no NAME in the tollgate container: tollgate refuses to start on it;
  - os.environ/NAME in a secret field with NAME a plain extraEnv value, written into the Deployment.
*/}}
{{- define "tollgate.validateConfigValue" -}}
{{- $value := .value -}}
{{- if kindIs "map" $value -}}
{{- range $k, $v := $value -}}
{{- $secret := or $.secret (regexMatch `^(key|master_key|context_signing_key|database_url|redis_url|vertex_credentials)$|(^|_)(api_key|secret|secret_key|secret_access_key|password|session_token|identity_token|ad_token|license)$` (lower $k)) -}}
{{- include "tollgate.validateConfigValue" (dict "root" $.root "path" (printf "%s.%s" $.path $k) "secret" $secret "value" $v) -}}
{{- end -}}
{{- else if kindIs "slice" $value -}}
{{- range $i, $v := $value -}}
{{- include "tollgate.validateConfigValue" (dict "root" $.root "path" (printf "%s[%d]" $.path $i) "secret" $.secret "value" $v) -}}
{{- end -}}
{{- else if and (kindIs "string" $value) (regexMatch `^os\.environ/` $value) -}}
{{- $name := trimPrefix "os.environ/" $value -}}
{{- if not (include "tollgate.hasEnv" (dict "root" .root "name" $name)) -}}
{{- $where := "secretEnv (from a Secret), or under extraEnv when it is not secret" -}}
{{- if .secret -}}{{- $where = "secretEnv (from a Secret)" -}}{{- end -}}
{{- fail (printf "%s is os.environ/%s, but the tollgate container gets no %s and tollgate would not start: list it under %s" .path $name $name $where) -}}
{{- end -}}
{{- if and .secret (include "tollgate.hasPlainEnv" (dict "root" .root "name" $name)) -}}
{{- fail (printf "%s holds a secret, but extraEnv sets %s as a plain value, written into the Deployment and Helm's release history: take it from a Secret (secretEnv, or valueFrom.secretKeyRef in extraEnv)" .path $name) -}}
{{- end -}}
{{- else if and (kindIs "string" $value) (regexMatch `^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@` $value) -}}
{{- fail (printf "%s is a URL with a password, which would land in the ConfigMap and Helm's release history: write os.environ/NAME and provide NAME through secretEnv (from a Secret)" .path) -}}
{{- else if and (kindIs "string" $value) (regexMatch `^sha256:[0-9a-f]{64}$` $value) -}}
{{- /* A key's hash (keys[].key): what the config holds instead of the key. */ -}}
{{- else if and .secret (or (kindIs "string" $value) (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value)) -}}
{{- fail (printf "%s holds a secret in clear text, which would land in the ConfigMap and Helm's release history: write os.environ/NAME and provide NAME through secretEnv (from a Secret)" .path) -}}
{{- end -}}
{{- end -}}

{{/* "true" when tollgate has a PostgreSQL URL (config or DATABASE_URL), else "": without one, records live in PGlite. */}}
{{- define "tollgate.hasDatabase" -}}
{{- $gs := .Values.config.general_settings | default dict -}}
{{- if or $gs.database_url (include "tollgate.hasEnv" (dict "root" . "name" "DATABASE_URL")) -}}true{{- end -}}
{{- end -}}

{{/*
Envoy's heap cap for the overload manager (fixed_heap monitor), in bytes: envoy.overload.maxHeapSizeBytes when
above 0, else envoy.overload.heapPercentOfMemoryLimit of envoy.resources.limits.memory (a Kubernetes quantity:
plain bytes, or with a suffix k, M, G, T, Ki, Mi, Gi or Ti).
*/}}
{{- define "tollgate.envoyMaxHeapBytes" -}}
{{- $overload := .Values.envoy.overload | default dict -}}
{{- if gt (int $overload.maxHeapSizeBytes) 0 -}}
{{- int $overload.maxHeapSizeBytes -}}
{{- else -}}
{{- $resources := .Values.envoy.resources | default dict -}}
{{- $limits := $resources.limits | default dict -}}
{{- $limit := required "envoy.resources.limits.memory is needed to size Envoy's overload manager (heapPercentOfMemoryLimit of it), or set envoy.overload.maxHeapSizeBytes" $limits.memory -}}
{{- $bytes := 0.0 -}}
{{- if kindIs "string" $limit -}}
{{- if not (regexMatch `^[0-9]+(\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$` $limit) -}}
{{- fail (printf "envoy.resources.limits.memory %s: write bytes or a quantity such as 256Mi or 1G, or set envoy.overload.maxHeapSizeBytes" $limit) -}}
{{- end -}}
{{- $bytes = float64 $limit -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- range $suffix, $factor := $units -}}
{{- if hasSuffix $suffix $limit -}}
{{- $bytes = mulf (float64 (trimSuffix $suffix $limit)) $factor -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- /* A number: bytes (a values file gives float64, --set int64). */ -}}
{{- $bytes = float64 $limit -}}
{{- end -}}
{{- int (divf (mulf $bytes (default 80 $overload.heapPercentOfMemoryLimit)) 100) -}}
{{- end -}}
{{- end -}}

{{/*
Refuses values that would deploy something broken, with the reason. Rendered (as nothing) by the
Deployment, so `helm template` and `helm install` both stop on it.
*/}}
{{- define "tollgate.validate" -}}
{{- $gs := .Values.config.general_settings | default dict -}}
{{- $rs := .Values.config.router_settings | default dict -}}
{{- if .Values.config.environment_variables -}}
{{- fail "config.environment_variables would put its values in the ConfigMap and Helm's release history: provide each variable through secretEnv (from a Secret), or through extraEnv when it is not secret" -}}
{{- end -}}
{{- /* tollgate reads these from the environment as secrets (a URL carries its password). */ -}}
{{- range list "DATABASE_URL" "REDIS_URL" "LITELLM_MASTER_KEY" -}}
{{- if include "tollgate.hasPlainEnv" (dict "root" $ "name" .) -}}
{{- fail (printf "extraEnv %s is a secret tollgate reads, and a plain value is written into the Deployment and Helm's release history: provide it through secretEnv (or valueFrom.secretKeyRef in extraEnv)" .) -}}
{{- end -}}
{{- end -}}
{{- include "tollgate.validateConfigValue" (dict "root" . "path" "config" "secret" false "value" .Values.config) -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}
{{- $db := include "tollgate.hasDatabase" . -}}
{{- /* LiteLLM's router Redis (router_settings.redis_host or redis_url) is tollgate's redis_url too. */ -}}
{{- $redis := or $gs.redis_url $rs.redis_url $rs.redis_host (include "tollgate.hasEnv" (dict "root" . "name" "REDIS_URL")) -}}
{{- if not (and $db $redis) -}}
{{- fail "several replicas share keys, budgets and rate limits only through PostgreSQL and Redis: set config.general_settings.database_url and redis_url (e.g. os.environ/DATABASE_URL and os.environ/REDIS_URL), or provide DATABASE_URL and REDIS_URL through secretEnv, or run one replica without autoscaling" -}}
{{- end -}}
{{- if not (or $gs.master_key $gs.context_signing_key) -}}
{{- fail "several replicas need one shared secret (it signs x-tollgate-context and seals backend api keys added by API): set config.general_settings.master_key or context_signing_key" -}}
{{- end -}}
{{- if .Values.dataDir.persistence.enabled -}}
{{- fail "dataDir.persistence is one replica's embedded PGlite on a ReadWriteOnce claim, which one PGlite process at a time may open: several replicas keep records in PostgreSQL, so turn it off" -}}
{{- end -}}
{{- end -}}
{{- if .Values.autoscaling.enabled -}}
{{- if not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage) -}}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- $requests := list (.Values.resources.requests | default dict) (.Values.envoy.resources.requests | default dict) -}}
{{- range $requests -}}
{{- if and $.Values.autoscaling.targetCPUUtilizationPercentage (not .cpu) -}}
{{- fail "a CPU utilization target needs resources.requests.cpu and envoy.resources.requests.cpu (the HPA divides the pod's usage by the sum of its containers' requests)" -}}
{{- end -}}
{{- if and $.Values.autoscaling.targetMemoryUtilizationPercentage (not .memory) -}}
{{- fail "a memory utilization target needs resources.requests.memory and envoy.resources.requests.memory" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.secret.create -}}
{{- range .Values.secretEnv -}}
{{- if and (not .secretName) (not (hasKey $.Values.secret.values (default .name .key))) -}}
{{- fail (printf "secretEnv %s: secret.create is true but secret.values has no %s" .name (default .name .key)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /*
A Check of a key tollgate has not cached waits up to 0.5 s on the database (MISS_WAIT_MS, src/store/records.ts),
after up to 0.2 s for a record being changed (SETTLE_WAIT_MS): a shorter timeout turns such a Check into
Envoy's 503 although tollgate would have answered.
*/ -}}
{{- if lt (float64 (trimSuffix "s" .Values.envoy.authzTimeout)) 1.0 -}}
{{- fail (printf "envoy.authzTimeout %s must be at least 1s: tollgate's Check may wait up to 0.5 s on the database for a key it has not cached, plus 0.2 s for a record being changed, and Envoy answers 503 when its timeout passes first" .Values.envoy.authzTimeout) -}}
{{- end -}}
{{- /*
Envoy's idle timeout against tollgate's longest silence. A non-streamed completion sends Envoy nothing until the
backend's whole reply is in, and an attempt that fails (timeout, 5xx, 429, ...) is retried on another deployment
before anything is sent: up to router_settings.num_retries + 1 attempts (src/gateway/forward.ts), each up to the
deployment's timeout (its litellm_params.timeout, else router_settings.timeout or litellm_settings.request_timeout,
else 600 s; the last also for models added by API). An idle timeout at or below their product resets a request
tollgate still works on (Envoy's 408, which local_reply_config turns into 504 upstream_timeout). Fallbacks to
other models add as many attempts again per model; they are left to the README, not refused here.
*/ -}}
{{- $idle := float64 (trimSuffix "s" .Values.envoy.streamIdleTimeout) -}}
{{- $router := .Values.config.router_settings | default dict -}}
{{- $settings := .Values.config.litellm_settings | default dict -}}
{{- $routerTimeout := $router.timeout | default $settings.request_timeout -}}
{{- $retries := 2.0 -}}
{{- $retriesFrom := "router_settings.num_retries's default of 2 retries" -}}
{{- if hasKey $settings "num_retries" -}}
{{- $retries = float64 $settings.num_retries -}}
{{- $retriesFrom = printf "litellm_settings.num_retries %v" $retries -}}
{{- end -}}
{{- if hasKey $router "num_retries" -}}
{{- $retries = float64 $router.num_retries -}}
{{- $retriesFrom = printf "router_settings.num_retries %v" $retries -}}
{{- end -}}
{{- $longest := 600.0 -}}
{{- $longestFrom := "the default deployment timeout, 600 s when router_settings.timeout is unset" -}}
{{- if $routerTimeout -}}
{{- $longest = float64 $routerTimeout -}}
{{- $longestFrom = "config.router_settings.timeout (or litellm_settings.request_timeout)" -}}
{{- end -}}
{{- range $i, $m := .Values.config.model_list -}}
{{- $t := index ($m.litellm_params | default dict) "timeout" -}}
{{- if and $t (gt (float64 $t) $longest) -}}
{{- $longest = float64 $t -}}
{{- $longestFrom = printf "config.model_list[%d].litellm_params.timeout" $i -}}
{{- end -}}
{{- end -}}
{{- $silence := mulf $longest (add $retries 1) -}}
{{- if le $idle $silence -}}
{{- fail (printf "envoy.streamIdleTimeout %s must be greater than %v s: the longest deployment timeout, %v s (%s), times %v attempts (the first, and %s). tollgate sends nothing downstream while a non-streamed request waits on its backend or is retried, so Envoy would reset it (504 upstream_timeout) while tollgate still works on it. Raise envoy.streamIdleTimeout above %v s, or lower the timeout or num_retries" .Values.envoy.streamIdleTimeout $silence $longest $longestFrom (add $retries 1) $retriesFrom $silence) -}}
{{- end -}}
{{- /*
ext_authz buffers a whole request body (up to max_request_bytes) before any credential is checked, inside
Envoy's heap cap (overload manager): a limit near the cap lets one body push Envoy into stop_accepting_requests
(503 to everyone) or, above it, an OOM kill. At most half the cap.
*/ -}}
{{- $maxRequestBytes := int (mulf (default 4 $gs.max_request_size_mb) 1048576) -}}
{{- $heap := int (include "tollgate.envoyMaxHeapBytes" .) -}}
{{- if gt (mulf $maxRequestBytes 2) (float64 $heap) -}}
{{- fail (printf "config.general_settings.max_request_size_mb %v (Envoy buffers up to %d bytes of each request body before authorizing it) must be at most half of Envoy's heap cap, %d bytes (envoy.overload.heapPercentOfMemoryLimit of envoy.resources.limits.memory, or envoy.overload.maxHeapSizeBytes): one such body would take Envoy to its overload actions, answering 503 to every request, or past its memory limit. Raise envoy.resources.limits.memory (or envoy.overload.maxHeapSizeBytes) to hold at least two such bodies plus room for your concurrency, or lower max_request_size_mb" (default 4 $gs.max_request_size_mb) $maxRequestBytes $heap) -}}
{{- end -}}
{{- if and (eq .Values.service.type "ClusterIP") (eq (default "Cluster" .Values.service.externalTrafficPolicy) "Local") -}}
{{- fail "service.externalTrafficPolicy Local applies to a NodePort or LoadBalancer Service only: with type ClusterIP clients reach Envoy through whatever proxies to the Service (an Ingress controller), whose address is request.source. Set service.type LoadBalancer (or NodePort), or leave externalTrafficPolicy at Cluster" -}}
{{- end -}}
{{- /*
Shutdown order (values.yaml, "Shutdown"): tollgate serves for preStopSleepSeconds after asking Envoy to drain,
then drains for up to drainSeconds, and flushes spend and exits within 5 s more (one deadline in the code,
whatever the stores do); Envoy, which exits at once on SIGTERM, must outlive the drain, and the kubelet must
wait for both.
*/ -}}
{{- $tollgateDone := add .Values.preStopSleepSeconds .Values.drainSeconds -}}
{{- $envoySleep := int .Values.envoy.preStopSleepSeconds -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- if lt $envoySleep (add $tollgateDone 5) -}}
{{- fail (printf "envoy.preStopSleepSeconds (%d) must be at least preStopSleepSeconds + drainSeconds + 5 (%d): Envoy exits at once on SIGTERM, so it must carry tollgate's draining requests and streams to the end" $envoySleep (add $tollgateDone 5)) -}}
{{- end -}}
{{- /* With the check above this also leaves tollgate preStopSleepSeconds + drainSeconds + 10 s, of which it takes at most + 5. */ -}}
{{- if lt $grace (add $envoySleep 5) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least envoy.preStopSleepSeconds + 5 (%d): the kubelet kills both containers when it runs out, Envoy mid-drain and tollgate before it has flushed spend" $grace (add $envoySleep 5)) -}}
{{- end -}}
{{- end -}}
