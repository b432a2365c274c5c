{{/* Names, labels, images and the operator's RBAC rules: defined once, used by every template. */}}

{{- define "tauon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tauon.fullname" -}}
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

{{- define "tauon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tauon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tauon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tauon.labels" -}}
helm.sh/chart: {{ include "tauon.chart" . }}
{{ include "tauon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tauon
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tauon.consoleLabels" -}}
helm.sh/chart: {{ include "tauon.chart" . }}
app.kubernetes.io/name: {{ include "tauon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tauon
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tauon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tauon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. Call with (list $image $root). */}}
{{- define "tauon.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's rules in the namespaces it watches: exactly the API calls it makes, no more.
Each rule is a separate, commented entry; tests/integration/test_chart.py shows every one of
them is needed (remove one and a request the operator makes is denied).
*/}}
{{- define "tauon.rules.namespaced" -}}
# Watch our custom resources (kopf lists and watches them).
- apiGroups: ["tauon.dev"]
  resources: ["datasets", "trainingjobs", "modeldeployments"]
  verbs: ["get", "list", "watch"]
# Write their status (merge patch). Also lets the operator grant the runtime get/patch on one
# object's status: RBAC only lets a subject create a Role with permissions it holds itself.
- apiGroups: ["tauon.dev"]
  resources: ["datasets/status", "trainingjobs/status", "modeldeployments/status"]
  verbs: ["get", "patch"]
# A ModelDeployment's retraining rounds: its Dataset and challenger TrainingJob, server-side
# applied (create, then patch) and deleted past the policy's historyLimit.
- apiGroups: ["tauon.dev"]
  resources: ["datasets", "trainingjobs"]
  verbs: ["create", "patch", "delete"]
# Prepare and training Jobs: watched, server-side applied (a PATCH that may create),
# suspended/resumed (patch), deleted to restart a failed attempt.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Pods are only read: their state becomes status (scheduling, image pulls, exit codes).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Inference Deployments (stable and canary): watched, applied, the canary deleted when dropped.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Every other child is watched too (drift is seen, pruning finds what is no longer wanted)
# and server-side applied (create, then patch).
- apiGroups: [""]
  resources: ["services", "serviceaccounts", "persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch"]
# Run configs, and the autoscaler: pruned when the spec drops them (a canary's config, the
# HPA when spec.autoscaling goes).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The runtime's per-object identity (builders/access.py): a Role and a RoleBinding each.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["list", "watch", "create", "patch"]
# Kueue's Workloads, read only (when Kueue is installed): what Kueue decided about a queued
# TrainingJob (queued, admitted, preempted, and why) becomes its status.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list", "watch"]
# Events on our resources (kopf posts them; it never updates one).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The console's rules: read only, and only what its pages show. */}}
{{- define "tauon.rules.console" -}}
# The pages: Tauon's objects, their pods and their Events, read only.
- apiGroups: ["tauon.dev"]
  resources: ["datasets", "trainingjobs", "modeldeployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods", "events"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* Cluster-scoped reads kopf needs in every mode: it discovers and follows our CRDs. */}}
{{- define "tauon.rules.crds" -}}
# kopf discovers our resources and follows their CRDs (cluster-scoped reads).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# Nodes, listed only when a worker cannot be placed for a taint: the condition names the taints
# it does not tolerate (the scheduler's message only counts them).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list"]
{{- end }}

{{/* Only when watching a list of namespaces: kopf observes namespaces coming and going. */}}
{{- define "tauon.rules.namespaces" -}}
# kopf follows the watched namespaces coming and going.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
