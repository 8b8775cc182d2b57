{{/* Names and labels shared by every template. */}}

{{- define "orgpipeline-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgpipeline-operator.fullname" -}}
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

{{- define "orgpipeline-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgpipeline-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orgpipeline-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "orgpipeline-operator.labels" -}}
helm.sh/chart: {{ include "orgpipeline-operator.chart" . }}
{{ include "orgpipeline-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: orgpipeline
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "orgpipeline-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orgpipeline-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "orgpipeline-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "orgpipeline-operator.jobImage" -}}
{{- $repo := default .Values.image.repository .Values.jobs.image.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.jobs.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "orgpipeline-operator.connectionsSecret" -}}
{{- default (printf "%s-connections" (include "orgpipeline-operator.fullname" .)) .Values.connections.existingSecret }}
{{- end }}

{{/* A map as k=v,k=v (sorted), the operator's spelling of a selector. */}}
{{- define "orgpipeline-operator.keyValues" -}}
{{- $pairs := list }}
{{- range $k, $v := . }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "orgpipeline-operator.webhookSecret" -}}
{{- default (printf "%s-webhook" (include "orgpipeline-operator.fullname" .)) .Values.fileEvents.token.existingSecret }}
{{- end }}
