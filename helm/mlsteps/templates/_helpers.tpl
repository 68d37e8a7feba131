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

{{/*
Egress rules of networkPolicy.egress, the enabled ones of those named, in that order:
  include "mlsteps.egressRules" (dict "root" $ "names" (list "dns" "s3"))
*/}}
{{- define "mlsteps.egressRules" -}}
{{- range $name := .names }}
{{- $rule := index $.root.Values.networkPolicy.egress $name }}
{{- if $rule.enabled }}
# {{ $name }}
- to:
    {{- toYaml $rule.to | nindent 4 }}
  ports:
    {{- toYaml $rule.ports | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The label of the Dask scheduler and worker pods: the train step sets it on its DaskCluster, and the
operator puts it on the pods it creates.
*/}}
{{- define "mlsteps.daskPodSelector" -}}
app.kubernetes.io/name: mlsteps-dask
{{- end -}}

{{/* The Dask scheduler's ports: client comm and dashboard. */}}
{{- define "mlsteps.daskSchedulerPorts" -}}
- protocol: TCP
  port: 8786
- protocol: TCP
  port: 8787
{{- end -}}

{{/*
The step pods that create a Dask cluster and are its client: the factory's train and reproduce pods
(DASK_STEPS in plugins/step_tasks/pod.py; the tests keep the two lists equal). The list is written
here only: the launcher policy selects these pods, and the Dask pods accept clients from them alone.
*/}}
{{- define "mlsteps.daskLauncherPodSelector" -}}
matchLabels:
  app.kubernetes.io/name: mlsteps
matchExpressions:
  - key: app.kubernetes.io/component
    operator: In
    values:
      - train
      - reproduce
{{- end -}}
