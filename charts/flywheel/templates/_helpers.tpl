{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "flywheel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: the release name, with the chart name unless it already holds it. */}}
{{- define "flywheel.fullname" -}}
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

{{- define "flywheel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flywheel.labels" -}}
helm.sh/chart: {{ include "flywheel.chart" . }}
{{ include "flywheel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flywheel
{{- end }}

{{- define "flywheel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flywheel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "flywheel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flywheel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest wins, the tag defaults to appVersion. */}}
{{- define "flywheel.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace studies run in when the operator watches one; empty means all. */}}
{{- define "flywheel.studyNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{/* The Lease the operator replicas elect a leader with. */}}
{{- define "flywheel.leaseName" -}}
{{- include "flywheel.fullname" . }}
{{- end }}


{{/*
What the operator does to objects in the namespaces it watches; least privilege, no wildcards and
no Secrets (pods read the artifact Secret through secretKeyRef, the operator never does).
*/}}
{{- define "flywheel.rules" -}}
# Studies: watched and read, their status written; a retraining study is server-side applied
# when a ModelDeployment's retraining policy fires (an apply that creates needs create too).
- apiGroups: ["flywheel.dev"]
  resources: ["studies"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Trials: server-side applied by the Study controller (an apply that creates needs create too).
# Never deleted by the operator: the garbage collector follows the owner references.
- apiGroups: ["flywheel.dev"]
  resources: ["trials"]
  verbs: ["get", "list", "watch", "create", "patch"]
# ModelDeployments: promotion applies a new version, creating the target when it is missing;
# the shadow gate patches spec.model and spec.shadow.
- apiGroups: ["flywheel.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["flywheel.dev"]
  resources: ["studies/status", "trials/status", "modeldeployments/status"]
  verbs: ["get", "patch", "update"]
# Trial Jobs: applied once, deleted when the study stops the trial.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Trial pods: scheduling failures, and the report lines of the trial protocol from the log.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Online metrics of prediction servers (`/v1/models/{name}/stats` of each replica, through the
# API server's pod proxy) for ModelDeployments with a retraining policy.
- apiGroups: [""]
  resources: ["pods/proxy"]
  verbs: ["get"]
# Prediction servers.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Scrape targets for prediction servers, when the Prometheus Operator is installed (read and
# applied by name, never listed).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch"]
# Events on Studies, Trials and ModelDeployments (a repeated event is patched into a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
