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

{{/*
A duration like "30s", "1m30s" or "500ms" in milliseconds (the schema already checked its form).
*/}}
{{- define "lvm-rollout.milliseconds" -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 "y" 31536000000 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" . -1 -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $total = add $total (mul (atoi $n) (get $units (trimPrefix $n .))) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{/*
Rules between values that a JSON schema cannot state; each failure says what to change.
*/}}
{{- define "lvm-rollout.validate" -}}
{{- $op := .Values.operator -}}
{{- if eq (int $op.metricsPort) (int $op.livenessPort) -}}
{{- fail (printf "operator.metricsPort and operator.livenessPort are both %v: the metrics server and Kopf's health endpoint need ports of their own; change one of them" $op.metricsPort) -}}
{{- end -}}
{{- $volumes := list "tmp" -}}
{{- range .Values.extraVolumes -}}
{{- if has .name $volumes -}}
{{- fail (printf "extraVolumes: volume name %q is used twice (the chart's own scratch volume is \"tmp\"): rename one" .name) -}}
{{- end -}}
{{- $volumes = append $volumes .name -}}
{{- end -}}
{{- range $i, $m := .Values.extraVolumeMounts -}}
{{- if not (has $m.name $volumes) -}}
{{- fail (printf "extraVolumeMounts[%d].name %q names no volume: add a volume of that name to extraVolumes or fix the name (volumes: %s)" $i $m.name (join ", " $volumes)) -}}
{{- end -}}
{{- end -}}
{{- $sm := .Values.monitoring.serviceMonitor -}}
{{- if $sm.enabled -}}
{{- if gt (int64 (include "lvm-rollout.milliseconds" $sm.scrapeTimeout)) (int64 (include "lvm-rollout.milliseconds" $sm.interval)) -}}
{{- fail (printf "monitoring.serviceMonitor.scrapeTimeout (%s) is longer than its interval (%s): Prometheus refuses such a scrape config; make the timeout at most the interval" $sm.scrapeTimeout $sm.interval) -}}
{{- end -}}
{{- end -}}
{{- end }}
