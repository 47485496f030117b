{{/*
The chart name, cut to 63 characters (a DNS label).
*/}}
{{- define "erasure-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: `<release>-<name>` (or the release name when it already contains the name),
cut to 63 characters.
*/}}
{{- define "erasure-worker.fullname" -}}
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
`chart-version` for the helm.sh/chart label.
*/}}
{{- define "erasure-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "erasure-worker.labels" -}}
helm.sh/chart: {{ include "erasure-worker.chart" . }}
{{ include "erasure-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Selector labels (never change them: a Deployment's selector is immutable).
*/}}
{{- define "erasure-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "erasure-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "erasure-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "erasure-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository plus the digest, or the tag (default: appVersion).
*/}}
{{- define "erasure-worker.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
True (non-empty) for a SQLite ledger.
*/}}
{{- define "erasure-worker.sqlite" -}}
{{- if eq .Values.ledger.type "sqlite" }}true{{ end }}
{{- end }}

{{/*
Replicas: a SQLite ledger has exactly one writer, so it forces 1.
*/}}
{{- define "erasure-worker.replicas" -}}
{{- if include "erasure-worker.sqlite" . }}1{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
The name of the claim holding the SQLite ledger.
*/}}
{{- define "erasure-worker.claimName" -}}
{{- default (printf "%s-ledger" (include "erasure-worker.fullname" .)) .Values.ledger.sqlite.persistence.existingClaim }}
{{- end }}

{{/*
The ledger URL written to the config.
*/}}
{{- define "erasure-worker.ledgerUrl" -}}
{{- if include "erasure-worker.sqlite" . }}
{{- printf "sqlite:///%s/ledger.db" (trimSuffix "/" .Values.ledger.sqlite.mountPath) }}
{{- else }}
{{- required "ledger.postgresql.url is required with ledger.type=postgresql" .Values.ledger.postgresql.url }}
{{- end }}
{{- end }}

{{/*
The Secret whose keys become environment variables ("" when there is none).
*/}}
{{- define "erasure-worker.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.values }}
{{- include "erasure-worker.fullname" . }}
{{- end }}
{{- end }}

{{/*
The worker's configuration file (contract §4): `config` plus the ledger URL and the HTTP
port (and bind address, when `httpHost` is set).
Fails when a `${NAME}` reference has no source among the inline secrets and `extraEnv`
(unchecked when the variables may come from `existingSecret` or `extraEnvFrom`).
*/}}
{{- define "erasure-worker.config" -}}
{{- $http := dict "port" .Values.httpPort }}
{{- with .Values.httpHost }}
{{- $_ := set $http "host" . }}
{{- end }}
{{- $config := dict "kafka" .Values.config.kafka "ledger" (dict "url" (include "erasure-worker.ledgerUrl" .)) "http" $http "vendors" (.Values.config.vendors | default dict) "deadlines" .Values.config.deadlines "retention" .Values.config.retention }}
{{- $rendered := toYaml $config }}
{{- if not (or .Values.secrets.existingSecret .Values.extraEnvFrom) }}
{{- $defined := keys (.Values.secrets.values | default dict) }}
{{- range .Values.extraEnv }}
{{- $defined = append $defined .name }}
{{- end }}
{{- range $reference := regexFindAll "\\$\\{[A-Za-z_][A-Za-z0-9_]*\\}" $rendered -1 | uniq }}
{{- $name := trimSuffix "}" (trimPrefix "${" $reference) }}
{{- if not (has $name $defined) }}
{{- fail (printf "config references ${%s}: define it in secrets.values or extraEnv, or use secrets.existingSecret" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- $rendered }}
{{- end }}
