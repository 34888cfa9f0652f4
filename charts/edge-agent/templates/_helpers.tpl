{{/*
Names, labels and the agent config. Every template includes these; none of them
transforms `mesh` (those objects are copied as generated).
*/}}

{{- define "edge-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "edge-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "edge-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change over a release's life: Deployment and Service selectors. */}}
{{- define "edge-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "edge-agent.labels" -}}
helm.sh/chart: {{ include "edge-agent.chart" . }}
{{ include "edge-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: {{ .Values.mode }}
app.kubernetes.io/part-of: llm-edge-agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "edge-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edge-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "edge-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding config.yaml: the injection template's name in sidecar mode. */}}
{{- define "edge-agent.configMapName" -}}
{{- if eq .Values.mode "sidecar" }}
{{- .Values.sidecar.configMapName }}
{{- else }}
{{- include "edge-agent.fullname" . }}
{{- end }}
{{- end }}

{{/* Where the config is mounted: the same path as the injection template's. */}}
{{- define "edge-agent.configDir" -}}/etc/edge-agent{{- end }}
{{- define "edge-agent.configPath" -}}{{ include "edge-agent.configDir" . }}/config.yaml{{- end }}

{{/*
The agent config the pods run: `config` in gateway mode; in sidecar mode `mesh.config`,
the one the Istio objects were generated from, with its ports (`mesh.ports`).
*/}}
{{- define "edge-agent.agentConfig" -}}
{{- if eq .Values.mode "sidecar" }}{{ toJson (.Values.mesh.config | default dict) }}{{ else }}{{ toJson .Values.config }}{{ end }}
{{- end }}
{{- define "edge-agent.ports" -}}
{{- if eq .Values.mode "sidecar" }}
{{- toJson (merge (deepCopy (.Values.mesh.ports | default dict)) .Values.ports) }}
{{- else }}
{{- toJson .Values.ports }}
{{- end }}
{{- end }}

{{/*
The agent config as YAML, with `listen` written from the ports (the chart owns it; the
schema rejects a `listen` in the config) and `workers` when set.
*/}}
{{- define "edge-agent.configYaml" -}}
{{- $ports := include "edge-agent.ports" . | fromJson }}
{{- $seen := dict }}
{{- /* Sidecar mode: the agent listens on grpc and admin only (Envoy is the pod's proxy). */}}
{{- $keys := ternary (list "grpc" "admin") (list "http" "grpc" "admin" "envoyAdmin") (eq .Values.mode "sidecar") }}
{{- range $key := $keys }}
{{- $port := toString (int (get $ports $key)) }}
{{- if hasKey $seen $port }}
{{- fail (printf "ports.%s and ports.%s are both %s: every port must differ" (get $seen $port) $key $port) }}
{{- end }}
{{- $_ := set $seen $port $key }}
{{- end }}
{{- $config := include "edge-agent.agentConfig" . | fromJson }}
{{- $listen := dict
  "envoy" (printf "0.0.0.0:%d" (int $ports.http))
  "grpc" (printf "127.0.0.1:%d" (int $ports.grpc))
  "admin" (printf "0.0.0.0:%d" (int $ports.admin))
  "envoy_admin" (printf "127.0.0.1:%d" (int $ports.envoyAdmin)) }}
{{- $_ := set $config "listen" $listen }}
{{- if not (kindIs "invalid" .Values.workers) }}
{{- $_ := set $config "workers" (int .Values.workers) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The environment variables the config reads credentials from, space-separated: the keys
the Secret in providerKeys.existingSecret must hold (for NOTES.txt).
*/}}
{{- define "edge-agent.credentialVariables" -}}
{{- $vars := list }}
{{- $agent := include "edge-agent.agentConfig" . | fromJson }}
{{- range $provider := $agent.providers }}
{{- range $key := list "api_key_env" "aws_access_key_id_env" "aws_secret_access_key_env" "aws_session_token_env" }}
{{- $var := get $provider $key }}
{{- if $var }}{{ $vars = append $vars $var }}{{ end }}
{{- end }}
{{- end }}
{{- range $section := list (list "admin" "token_env") }}
{{- $block := get $agent (index $section 0) }}
{{- if and (kindIs "map" $block) (get $block (index $section 1)) }}
{{- $vars = append $vars (get $block (index $section 1)) }}
{{- end }}
{{- end }}
{{- $auth := get $agent "auth" }}
{{- if kindIs "map" $auth }}
{{- range $issuer := (get $auth "jwt" | default list) }}
{{- if get $issuer "secret_env" }}{{ $vars = append $vars (get $issuer "secret_env") }}{{ end }}
{{- end }}
{{- end }}
{{- $cache := get $agent "cache" }}
{{- $redis := and (kindIs "map" $cache) (get $cache "redis") }}
{{- if and (kindIs "map" $redis) (get $redis "password_env") }}
{{- $vars = append $vars (get $redis "password_env") }}
{{- end }}
{{- $semantic := and (kindIs "map" $cache) (get $cache "semantic") }}
{{- $openai := and (kindIs "map" $semantic) (get $semantic "openai") }}
{{- if and (kindIs "map" $openai) (get $openai "api_key_env") }}
{{- $vars = append $vars (get $openai "api_key_env") }}
{{- end }}
{{- join " " (uniq $vars) }}
{{- end }}

{{/*
Checks the schema cannot express, with messages that say what to do. Included by
configmap.yaml, which every mode renders.
*/}}
{{- define "edge-agent.validate" -}}
{{- $mesh := .Values.mesh }}
{{- if eq .Values.mode "sidecar" }}
{{- if empty $mesh.envoyFilter.configPatches }}
{{- fail "mode sidecar needs the Istio objects generated from the agent config in mesh.* (Helm cannot run the generator); generate it with: edge-agent mesh --config <file> --format helm-values > mesh-values.yaml, then pass -f mesh-values.yaml" }}
{{- end }}
{{- if or (not $mesh.envoyFilter.name) (empty $mesh.config) (empty $mesh.ports) }}
{{- fail "mesh.envoyFilter.name, mesh.config or mesh.ports is empty: pass the whole output of edge-agent mesh --config <file> --format helm-values" }}
{{- end }}
{{- include "edge-agent.checkExtProcPort" . }}
{{- if .Values.providerKeys.existingSecret }}
{{- fail "providerKeys.existingSecret does not apply in sidecar mode: the injected agent reads the Secret the injection template names (edge-agent injection-template --secret, default llm-edge-agent-keys)" }}
{{- end }}
{{- else }}
{{- if not (empty $mesh.envoyFilter.configPatches) }}
{{- fail "mesh.envoyFilter.configPatches is set but mode is gateway: this chart's gateway is the standalone gateway (Envoy runs inside the agent's container) and needs no EnvoyFilter. For the agent beside each app's Istio proxy, generate values with edge-agent mesh --mode sidecar --format helm-values (they set mode: sidecar); an Istio ingress gateway with the agent beside it is not deployed by this chart (apply the output of edge-agent mesh --mode gateway instead)" }}
{{- end }}
{{- with .Values.podDisruptionBudget }}
{{- if and .enabled (hasKey . "minAvailable") (hasKey . "maxUnavailable") }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- end }}
{{- with .Values.autoscaling }}
{{- if .enabled }}
{{- if not (or .targetCPUUtilizationPercentage .targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "autoscaling.minReplicas (%d) is above maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- $requests := dig "requests" dict $.Values.resources }}
{{- if and .targetCPUUtilizationPercentage (not (hasKey $requests "cpu")) }}
{{- fail "autoscaling.targetCPUUtilizationPercentage needs resources.requests.cpu (utilization is a share of the request)" }}
{{- end }}
{{- if and .targetMemoryUtilizationPercentage (not (hasKey $requests "memory")) }}
{{- fail "autoscaling.targetMemoryUtilizationPercentage needs resources.requests.memory (utilization is a share of the request)" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The generated EnvoyFilter's agent cluster dials 127.0.0.1:<grpc port of the config it was
generated from>; the ConfigMap makes the agent listen on ports.grpc. Read (never change)
the patches and fail when the two disagree.
*/}}
{{- define "edge-agent.checkExtProcPort" -}}
{{- range $patch := .Values.mesh.envoyFilter.configPatches }}
{{- $value := dig "patch" "value" dict $patch }}
{{- if and (eq (toString (get $patch "applyTo")) "CLUSTER") (eq (toString (get $value "name")) "edge_agent_ext_proc") }}
{{- $endpoints := dig "load_assignment" "endpoints" list $value }}
{{- $lbEndpoints := list }}
{{- if and $endpoints (kindIs "map" (first $endpoints)) }}
{{- $lbEndpoints = dig "lb_endpoints" list (first $endpoints) }}
{{- end }}
{{- if and $lbEndpoints (kindIs "map" (first $lbEndpoints)) }}
{{- $port := dig "endpoint" "address" "socket_address" "port_value" 0 (first $lbEndpoints) }}
{{- if and $port (ne (int $port) (int $.Values.mesh.ports.grpc)) }}
{{- fail (printf "mesh.envoyFilter was generated for an agent on port %d but mesh.ports.grpc is %d: regenerate with edge-agent mesh --config <file> --format helm-values instead of editing the output" (int $port) (int $.Values.mesh.ports.grpc)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
