{{/* Name prefix of the chart's own objects. */}}
{{- define "mlsteps.fullname" -}}
{{- if contains "mlsteps" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-mlsteps" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlsteps.labels" -}}
app.kubernetes.io/part-of: mlsteps
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "mlsteps.stepImage" -}}
{{- if .Values.stepImage.digest -}}
{{- printf "%s@%s" .Values.stepImage.repository .Values.stepImage.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.stepImage.repository .Values.stepImage.tag -}}
{{- end -}}
{{- end -}}

{{/* ML_STEP_SECRETS: the Secret names, comma-separated, empty names left out. */}}
{{- define "mlsteps.stepSecrets" -}}
{{- $names := list .Values.secrets.s3 .Values.secrets.mlflow .Values.secrets.feast -}}
{{- $names = concat $names .Values.secrets.extra -}}
{{- without $names "" | join "," -}}
{{- end -}}

{{/* The official Airflow chart's "airflow.fullname", seen from this parent chart. */}}
{{- define "mlsteps.airflowFullname" -}}
{{- if .Values.airflow.fullnameOverride -}}
{{- .Values.airflow.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "airflow" .Values.airflow.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Subjects of the launcher RoleBinding: rbac.launcherServiceAccounts, or else the Airflow chart's
service accounts of the components that run tasks (workers; the scheduler with a LocalExecutor)
and triggers (the triggerer, which watches deferred pods).
*/}}
{{- define "mlsteps.launcherSubjects" -}}
{{- if .Values.rbac.launcherServiceAccounts }}
{{- range .Values.rbac.launcherServiceAccounts }}
- kind: ServiceAccount
  name: {{ .name }}
  namespace: {{ .namespace | default $.Release.Namespace }}
{{- end }}
{{- else }}
{{- $airflow := include "mlsteps.airflowFullname" . }}
{{- $components := list "worker" "triggerer" }}
{{- if contains "LocalExecutor" (toString .Values.airflow.executor) }}
{{- $components = append $components "scheduler" }}
{{- end }}
{{- range $components }}
- kind: ServiceAccount
  name: {{ printf "%s-%s" $airflow . }}
  namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end }}
{{- end -}}
