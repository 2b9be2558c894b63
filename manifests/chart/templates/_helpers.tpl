{{/*
Names, labels, images and the TLS mode, shared by every template.
*/}}

{{- define "strongroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "strongroom.fullname" -}}
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

{{/* Name of every webhook object (Deployment, Service, MutatingWebhookConfiguration, …). */}}
{{- define "strongroom.webhook.fullname" -}}
{{- printf "%s-webhook" (include "strongroom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strongroom.guard.fullname" -}}
{{- printf "%s-guard" (include "strongroom.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strongroom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strongroom.labels" -}}
helm.sh/chart: {{ include "strongroom.chart" . }}
app.kubernetes.io/name: {{ include "strongroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strongroom
{{- with .Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "strongroom.webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strongroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "strongroom.webhook.labels" -}}
{{ include "strongroom.labels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "strongroom.guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strongroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: guard
{{- end }}

{{- define "strongroom.guard.labels" -}}
{{ include "strongroom.labels" . }}
app.kubernetes.io/component: guard
{{- end }}

{{- define "strongroom.webhook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "strongroom.webhook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strongroom.guard.serviceAccountName" -}}
{{- if .Values.guard.serviceAccount.create }}
{{- default (include "strongroom.guard.fullname" .) .Values.guard.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.guard.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag" or "repository@digest"; call with (dict "image" <values> "root" $). */}}
{{- define "strongroom.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
The TLS mode: cert-manager | helm | self-managed | external (see certificate.* in values.yaml).
*/}}
{{- define "strongroom.tlsMode" -}}
{{- if .Values.certificate.useCertManager }}cert-manager
{{- else if .Values.certificate.generate }}helm
{{- else if .Values.certificate.selfManaged }}self-managed
{{- else if .Values.certificate.servingCertificate }}external
{{- else }}{{ fail "certificate: enable one of useCertManager, generate or selfManaged, or name an existing cert-manager Certificate in servingCertificate" }}
{{- end }}
{{- end }}

{{/* The Secret holding tls.crt / tls.key (and ca.crt). */}}
{{- define "strongroom.tlsSecretName" -}}
{{- if eq (include "strongroom.tlsMode" .) "external" }}
{{- .Values.certificate.servingCertificate }}
{{- else }}
{{- printf "%s-tls" (include "strongroom.webhook.fullname" .) }}
{{- end }}
{{- end }}

{{/* DNS names the serving certificate must carry (the Service, every form the API server may use). */}}
{{- define "strongroom.dnsNames" -}}
{{- $svc := include "strongroom.webhook.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) }}
{{- concat $names .Values.certificate.extraAltNames | toJson }}
{{- end }}

{{/*
The CEL pre-filter. `object` is the Pod being created. Each clause uses only `has`, `in`, `exists`,
`startsWith` and `contains`, so the runtime cost stays linear in the number of env entries, far below
the API server's per-expression limit.
*/}}
{{- define "strongroom.preFilterExpression" -}}
{{- $ref := "(e.value.startsWith('vault:') || e.value.startsWith('>>vault:') || e.value.contains('${vault:') || e.value.contains('${>>vault:'))" }}
{{- $envClause := printf "has(e.value) && %s" $ref }}
{{- if .Values.preFilter.valueFromRefs }}
{{- $envClause = printf "(%s) || (has(e.valueFrom) && (has(e.valueFrom.secretKeyRef) || has(e.valueFrom.configMapKeyRef)))" $envClause }}
{{- end }}
{{- $container := printf "has(c.env) && c.env.exists(e, %s)" $envClause }}
{{- if .Values.preFilter.valueFromRefs }}
{{- $container = printf "(%s) || (has(c.envFrom) && size(c.envFrom) > 0)" $container }}
{{- end -}}
(has(object.metadata.annotations) && ('vault.security.banzaicloud.io/vault-env-from-path' in object.metadata.annotations || 'secrets-webhook.security.bank-vaults.io/vault-env-from-path' in object.metadata.annotations))
|| object.spec.containers.exists(c, {{ $container }})
|| (has(object.spec.initContainers) && object.spec.initContainers.exists(c, {{ $container }}))
{{- end }}

{{/* REGISTRY_TIMEOUT ("3s", "1500ms") in milliseconds, or "" when it has another form. */}}
{{- define "strongroom.registryTimeoutMillis" -}}
{{- $t := toString (index .Values.env "REGISTRY_TIMEOUT" | default "3s") }}
{{- if regexMatch "^[0-9]+ms$" $t }}{{ trimSuffix "ms" $t }}
{{- else if regexMatch "^[0-9]+s$" $t }}{{ mul (atoi (trimSuffix "s" $t)) 1000 }}
{{- end }}
{{- end }}

{{/* Fails the render on values that would produce a broken or unsafe install. */}}
{{- define "strongroom.validate" -}}
{{- if not (has .Values.podsFailurePolicy (list "Ignore" "Fail")) }}
{{- fail (printf "podsFailurePolicy must be Ignore or Fail, not %q" (toString .Values.podsFailurePolicy)) }}
{{- end }}
{{- if not (has .Values.reinvocationPolicy (list "Never" "IfNeeded")) }}
{{- fail (printf "reinvocationPolicy must be Never or IfNeeded, not %q" (toString .Values.reinvocationPolicy)) }}
{{- end }}
{{- $timeout := int .Values.timeoutSeconds }}
{{- if or (lt $timeout 1) (gt $timeout 30) }}
{{- fail "timeoutSeconds must be between 1 and 30" }}
{{- end }}
{{- $registry := include "strongroom.registryTimeoutMillis" . }}
{{- if and $registry (ge (atoi $registry) (mul $timeout 1000)) }}
{{- fail (printf "env.REGISTRY_TIMEOUT (%s) must be below timeoutSeconds (%ds), or the API server times out before the webhook decides" (index .Values.env "REGISTRY_TIMEOUT") $timeout) }}
{{- end }}
{{- if not (has .Values.guard.mode (list "enforce" "audit")) }}
{{- fail (printf "guard.mode must be enforce or audit, not %q" (toString .Values.guard.mode)) }}
{{- end }}
{{- range $key, $value := .Values.env }}
{{- if has $key (list "LISTEN_ADDRESS" "TELEMETRY_LISTEN_ADDRESS" "TLS_CERT_FILE" "TLS_PRIVATE_KEY_FILE" "VAULT_ENV_IMAGE" "TLS_SELF_MANAGED" "TLS_SECRET_NAME" "TLS_SECRET_NAMESPACE" "TLS_DNS_NAMES" "WEBHOOK_CONFIGURATION_NAME") }}
{{- fail (printf "env.%s is set by the chart; use the matching chart value instead" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
certificate.generate: the Helm-generated CA and serving certificate as JSON {"ca","crt","key"}
(base64). Generated once per render and cached in the values tree, so the Secret and the caBundle
agree; an existing Secret (upgrade) is reused so the caBundle does not change.
*/}}
{{- define "strongroom.helmTls" -}}
{{- if not (hasKey .Values "__strongroomTls") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "strongroom.tlsSecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "ca.crt") }}
{{- $_ := set .Values "__strongroomTls" (dict "ca" (index $existing.data "ca.crt") "crt" (index $existing.data "tls.crt") "key" (index $existing.data "tls.key")) }}
{{- else }}
{{- $name := include "strongroom.webhook.fullname" . }}
{{- $ca := genCA (printf "%s-ca" $name) (int .Values.certificate.caLifespan) }}
{{- $cn := printf "%s.%s.svc" $name .Release.Namespace }}
{{- $cert := genSignedCert $cn nil (include "strongroom.dnsNames" . | fromJsonArray) (int .Values.certificate.certLifespan) $ca }}
{{- $_ := set .Values "__strongroomTls" (dict "ca" (b64enc $ca.Cert) "crt" (b64enc $cert.Cert) "key" (b64enc $cert.Key)) }}
{{- end }}
{{- end }}
{{- toJson (index .Values "__strongroomTls") }}
{{- end }}
