{{/* Shared by the monitoring objects (servicemonitor, podmonitor, prometheusrule, dashboard). */}}

{{/* The standard labels plus monitoring.labels (what a Prometheus selects its monitors by). */}}
{{- define "tauon.monitoringLabels" -}}
{{ include "tauon.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A duration of the values ("30m", "2h", "90s") in seconds, for PromQL arithmetic. */}}
{{- define "tauon.seconds" -}}
{{- $d := toString . -}}
{{- $n := regexFind "^[0-9]+" $d | int -}}
{{- $unit := regexFind "[smh]$" $d -}}
{{- if eq $unit "h" }}{{ mul $n 3600 }}{{ else if eq $unit "m" }}{{ mul $n 60 }}{{ else }}{{ $n }}{{ end -}}
{{- end }}
