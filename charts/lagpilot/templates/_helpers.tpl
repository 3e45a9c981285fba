{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "lagpilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, unless it already contains the chart name. */}}
{{- define "lagpilot.fullname" -}}
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

{{- define "lagpilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "lagpilot.labels" -}}
helm.sh/chart: {{ include "lagpilot.chart" . }}
{{ include "lagpilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lagpilot
{{- end }}

{{/* Selector labels of the operator pods (immutable once installed). */}}
{{- define "lagpilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lagpilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lagpilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lagpilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest of the operator image. */}}
{{- define "lagpilot.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "lagpilot.consumerImage" -}}
{{- default (include "lagpilot.image" .) .Values.consumerImage }}
{{- end }}

{{/* The namespaces the operator watches, as a JSON list: watchNamespaces, or the release's own
namespace when that is empty; [] (all namespaces) only with clusterWide. */}}
{{- define "lagpilot.watched" -}}
{{- if .Values.clusterWide }}
{{- if .Values.watchNamespaces }}
{{- fail "set clusterWide (all namespaces, a ClusterRole) or watchNamespaces (Roles in those), not both" }}
{{- end }}
{{- toJson (list) }}
{{- else }}
{{- toJson (default (list .Release.Namespace) .Values.watchNamespaces) }}
{{- end }}
{{- end }}

{{/* True ("true") when the operator watches a fixed list of namespaces (the default). */}}
{{- define "lagpilot.namespaced" -}}
{{- if not .Values.clusterWide }}true{{ end }}
{{- end }}

{{- define "lagpilot.peeringName" -}}
{{- default (include "lagpilot.fullname" .) .Values.peering.name }}
{{- end }}
