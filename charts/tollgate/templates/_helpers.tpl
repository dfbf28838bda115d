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
Refuses values that would deploy something broken, with the reason. Rendered (as nothing) by the
Deployment, so `helm template` and `helm install` both stop on it.
*/}}
{{- define "tollgate.validate" -}}
{{- $gs := .Values.config.general_settings | default dict -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}
{{- if not (and $gs.database_url $gs.redis_url) -}}
{{- fail "several replicas share keys, budgets and rate limits only through PostgreSQL and Redis: set config.general_settings.database_url and redis_url (e.g. os.environ/DATABASE_URL and os.environ/REDIS_URL), or run one replica without autoscaling" -}}
{{- end -}}
{{- if not (or $gs.master_key $gs.context_signing_key) -}}
{{- fail "several replicas need one shared secret (it signs x-tollgate-context and seals backend api keys added by API): set config.general_settings.master_key or context_signing_key" -}}
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
{{- if not (lt (int .Values.preStopSleepSeconds) (int .Values.envoy.preStopSleepSeconds)) -}}
{{- fail "envoy.preStopSleepSeconds must exceed preStopSleepSeconds: Envoy must outlive tollgate's drain" -}}
{{- end -}}
{{- if not (lt (int .Values.envoy.preStopSleepSeconds) (int .Values.terminationGracePeriodSeconds)) -}}
{{- fail "terminationGracePeriodSeconds must exceed envoy.preStopSleepSeconds, or the kubelet kills Envoy mid-drain" -}}
{{- end -}}
{{- end -}}
