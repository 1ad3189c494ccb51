{{/* Chart name, truncated to the 63 characters Kubernetes allows in a name or label. */}}
{{- define "lvm-rollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release already contains it. */}}
{{- define "lvm-rollout.fullname" -}}
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

{{/*
Name for cluster-scoped objects (ClusterRole, ClusterRoleBinding, ClusterKopfPeering): the
release namespace is part of it, so the same release name in two namespaces never collides.
*/}}
{{- define "lvm-rollout.clusterName" -}}
{{- printf "%s-%s" (include "lvm-rollout.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lvm-rollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lvm-rollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lvm-rollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lvm-rollout.labels" -}}
helm.sh/chart: {{ include "lvm-rollout.chart" . }}
{{ include "lvm-rollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lvm-rollout
{{- end }}

{{- define "lvm-rollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lvm-rollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lvm-rollout.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The namespace the operator watches and whose RBAC it gets ("" = every namespace). */}}
{{- define "lvm-rollout.clusterwide" -}}
{{- if not .Values.watchNamespace }}true{{ end }}
{{- end }}

{{- define "lvm-rollout.peeringName" -}}
{{- default (include "lvm-rollout.clusterName" .) .Values.peering.name }}
{{- end }}

{{- define "lvm-rollout.peeringKind" -}}
{{- if include "lvm-rollout.clusterwide" . }}ClusterKopfPeering{{ else }}KopfPeering{{ end }}
{{- end }}

{{/*
RBAC rules the operator needs inside the namespace(s) it watches. Shared by the ClusterRole
(cluster-wide mode) and the Role (one namespace).
*/}}
{{- define "lvm-rollout.watchRules" -}}
# Its own resource: watch, record progress (Kopf's annotations, finalizers) and write status.
- apiGroups: [lvm.rollout.io]
  resources: [lvmrollouts, lvmrollouts/status]
  verbs: [get, list, watch, patch, update]
# Every decision is also a Kubernetes Event.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.kuberay.enabled }}
# KubeRay serve backend: the operator writes the serve config into the RayService.
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [get, list, watch, patch]
{{- end }}
{{- end }}
