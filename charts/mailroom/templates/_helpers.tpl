{{- define "mailroom.fullname" -}}
{{- printf "%s-mailroom" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "mailroom.labels" -}}
app.kubernetes.io/name: mailroom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "mailroom.selector" -}}
app.kubernetes.io/name: mailroom
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: manager
{{- end -}}
