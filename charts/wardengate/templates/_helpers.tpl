{{/*
Names and labels as the operator renders them for a WardengateCluster named like the release
(operator/src/labels.rs); only `managed-by` differs (Helm instead of wardengate-operator).
*/}}
{{- define "wg.selector" -}}
app.kubernetes.io/component: control-plane
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/name: wardengate
{{- end -}}

{{- define "wg.labels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/name: wardengate
{{- end -}}

{{- define "wg.tlsSecret" -}}
{{ .Values.tls.secretName | default (printf "%s-tls" .Release.Name) }}
{{- end -}}

{{- define "wg.internalSecret" -}}
{{ .Values.internalSecretName | default (printf "%s-internal" .Release.Name) }}
{{- end -}}

{{- define "wg.sshSecret" -}}
{{ printf "%s-ssh" .Release.Name }}
{{- end -}}

{{- define "wg.drain" -}}
{{ .Values.drain.timeoutSeconds | int }}s
{{- end -}}

{{/* The operator's GRACE_MARGIN_SECONDS: endpoint propagation plus shutdown. */}}
{{- define "wg.grace" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{ add (.Values.drain.timeoutSeconds | int) 30 }}
{{- else -}}
{{- if lt (.Values.terminationGracePeriodSeconds | int) (.Values.drain.timeoutSeconds | int) -}}
{{- fail "terminationGracePeriodSeconds must not be shorter than drain.timeoutSeconds: pods would be killed mid-drain" -}}
{{- end -}}
{{ .Values.terminationGracePeriodSeconds | int }}
{{- end -}}
{{- end -}}
