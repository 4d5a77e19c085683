{{/* Chart name, possibly overridden. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name alone when it already contains the chart
name. Object names add "-operator" / "-agent", so this stays within 52 characters.
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sluice.operator.name" -}}
{{- printf "%s-operator" (include "sluice.fullname" .) }}
{{- end }}

{{- define "sluice.agent.name" -}}
{{- printf "%s-agent" (include "sluice.fullname" .) }}
{{- end }}

{{/*
Name of a cluster-scoped object (ClusterRole, ClusterRoleBinding): it carries the namespace too,
so releases of the same name in two namespaces do not overwrite each other's.
*/}}
{{- define "sluice.clusterName" -}}
{{- printf "%s-%s-%s" (include "sluice.fullname" .ctx) .ctx.Release.Namespace .component }}
{{- end }}

{{- define "sluice.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "sluice.operator.name" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "sluice.agent.name" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease the operator replicas compete for (its name is also the only one RBAC allows). */}}
{{- define "sluice.operator.leaseName" -}}
{{- include "sluice.operator.name" . }}
{{- end }}

{{/* The URL agents download artifacts from. */}}
{{- define "sluice.operator.advertiseUrl" -}}
{{- if .Values.operator.advertiseUrl }}
{{- .Values.operator.advertiseUrl }}
{{- else if .Values.operator.service.clusterIP }}
{{- $ip := .Values.operator.service.clusterIP }}
{{- printf "http://%s:%d" (ternary (printf "[%s]" $ip) $ip (contains ":" $ip)) (int .Values.operator.port) }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "sluice.operator.name" .) .Release.Namespace (int .Values.operator.port) }}
{{- end }}
{{- end }}

{{/* "repository:tag" with the appVersion as the default tag; call with (dict "ctx" $ "image" .Values.x.image). */}}
{{- define "sluice.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
