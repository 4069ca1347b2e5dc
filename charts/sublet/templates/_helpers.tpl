{{/* The chart name, overridable. */}}
{{- define "sublet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, with the chart name unless it already has it. */}}
{{- define "sublet.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "sublet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sublet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sublet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the controller's pods. */}}
{{- define "sublet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sublet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the controller runs as. */}}
{{- define "sublet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sublet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The controller image: a digest wins over a tag; the tag defaults to the chart's appVersion. */}}
{{- define "sublet.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* CEL that is true when the admission request's namespace carries every admission.tenantNamespaceLabels. */}}
{{- define "sublet.tenantNamespaceCEL" -}}
{{- $tenant := list "namespaceObject != null" "has(namespaceObject.metadata.labels)" }}
{{- range $key, $value := .Values.admission.tenantNamespaceLabels }}
{{- $tenant = append $tenant (printf "'%s' in namespaceObject.metadata.labels && namespaceObject.metadata.labels['%s'] == '%s'" $key $key $value) }}
{{- end }}
{{- join " && " $tenant }}
{{- end }}
