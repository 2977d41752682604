{{/* Name of every object: fixed, because the RBAC's Lease rule names it (resourceNames). */}}
{{- define "wgo.name" -}}wardengate-operator{{- end -}}

{{- define "wgo.labels" -}}
app.kubernetes.io/name: wardengate-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "wgo.selector" -}}
app.kubernetes.io/name: wardengate-operator
{{- end -}}

{{- define "wgo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
The operator's rules, identical to config/rbac/role.yaml and config/rbac-namespaced/role.yaml (a
test keeps them equal): least privilege, exactly the requests the controller makes.
*/}}
{{- define "wgo.rules" -}}
# The custom resources: read, and write only their status.
- apiGroups: ["wardengate.io"]
  resources: ["wardengateclusters", "gatewaypools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["wardengate.io"]
  resources: ["wardengateclusters/status", "gatewaypools/status"]
  verbs: ["patch"]
# Owned objects: server-side apply (patch, create when missing), pruning (delete), watches.
- apiGroups: [""]
  resources: ["serviceaccounts", "configmaps", "services", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The fleet: list the control-plane pods (their status is then read from each pod over
# HTTPS), and patch only their controller.kubernetes.io/pod-deletion-cost annotation.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Events for every action and failure.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
