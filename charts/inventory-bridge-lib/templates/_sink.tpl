{{/* What the sink charts share: the flags of SinkArgs, the provider-file ConfigMap, RBAC. */}}

{{/* The namespaces whose ClusterProfiles the sink serves: each inventory, or "_cluster". */}}
{{- define "ib.sink.profileScopes" -}}
{{- $c := .Values.config -}}
{{- if $c.allNamespaces -}}
{{- list "_cluster" | toJson -}}
{{- else if $c.inventoryNamespaces -}}
{{- $c.inventoryNamespaces | toJson -}}
{{- else -}}
{{- fail "set config.inventoryNamespaces (the inventories this sink serves), or config.allNamespaces" -}}
{{- end -}}
{{- end -}}

{{- define "ib.sink.args" -}}
{{- $c := .Values.config -}}
{{- $_ := include "ib.sink.profileScopes" . -}}
{{- include "ib.flag" (list "--inventory-namespace" $c.inventoryNamespaces) -}}
{{- include "ib.switch" (list "--all-namespaces" $c.allNamespaces) -}}
{{- include "ib.flag" (list "--bootstrap-secret-namespace" $c.bootstrapSecretNamespaces) -}}
{{- include "ib.flag" (list "--profile-selector" $c.profileSelector) -}}
{{- if .Values.providerFile }}
- "--clusterprofile-provider-file=/etc/inventory-bridge/config/providers.json"
{{- end -}}
{{- include "ib.flag" (list "--credentials-namespace" $c.credentialsNamespace) -}}
{{- if not (kindIs "invalid" $c.memberRules) }}
- "--member-rules=/etc/inventory-bridge/config/member-rules.json"
{{- end -}}
{{- include "ib.flag" (list "--member-namespace" $c.memberNamespace) -}}
{{- include "ib.flag" (list "--member-service-account" $c.memberServiceAccount) -}}
{{- include "ib.flag" (list "--token-ttl" $c.tokenTTL) -}}
{{- if not (kindIs "invalid" $c.keepMemberIdentity) -}}
{{- include "ib.flag" (list "--keep-member-identity" $c.keepMemberIdentity) -}}
{{- end -}}
{{- include "ib.flag" (list "--cleanup-timeout" $c.cleanupTimeout) -}}
{{- include "ib.flag" (list "--exec-timeout" $c.execTimeout) -}}
{{- include "ib.flag" (list "--member-timeout" $c.memberTimeout) -}}
{{- include "ib.flag" (list "--concurrency" $c.concurrency) -}}
{{- include "ib.flag" (list "--resync" $c.resync) -}}
{{- end -}}

{{- define "ib.sink.hasConfig" -}}
{{- if or .Values.providerFile (not (kindIs "invalid" .Values.config.memberRules)) -}}true{{- end -}}
{{- end -}}

{{/* The provider file (values -> JSON) and the member rules, mounted read-only. */}}
{{- define "ib.sink.configMap" -}}
{{- if include "ib.sink.hasConfig" . }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "ib.fullname" . }}-config
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
data:
  {{- if .Values.providerFile }}
  providers.json: {{ toPrettyJson .Values.providerFile | quote }}
  {{- end }}
  {{- if not (kindIs "invalid" .Values.config.memberRules) }}
  member-rules.json: {{ toPrettyJson .Values.config.memberRules | quote }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "ib.sink.volumes" -}}
{{- if include "ib.sink.hasConfig" . }}
- name: config
  configMap:
    name: {{ include "ib.fullname" . }}-config
{{- end }}
{{- if .Values.execPlugins.enabled }}
- name: exec-plugins
  {{- toYaml (required "execPlugins.volume is required when execPlugins.enabled" .Values.execPlugins.volume) | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ib.sink.volumeMounts" -}}
{{- if include "ib.sink.hasConfig" . }}
- name: config
  mountPath: /etc/inventory-bridge/config
  readOnly: true
{{- end }}
{{- if .Values.execPlugins.enabled }}
- name: exec-plugins
  mountPath: {{ .Values.execPlugins.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
What every sink calls on the hub. Call with a dict:
  ctx      the chart's root context
  targets  namespaces (or "_cluster") where the sink writes its objects
  kinds    the sink's own kinds besides Secrets: a list of {apiGroup, resources, verbs}
Profiles: watched/listed and patched (the cleanup finalizer) in each inventory; Events on them
there. Bootstrap Secrets: get (by name) in each inventory and the allowed extra namespaces. Its own
Secrets (selected by label): get/list/watch/create/patch/delete where it writes. OCM
ManagedClusters: get, to check where an OCM token may be sent.
*/}}
{{- define "ib.sink.grants" -}}
{{- $kinds := .kinds -}}
{{- $targets := .targets -}}
{{- $ := .ctx -}}
{{- $c := $.Values.config -}}
{{- range $scope := include "ib.sink.profileScopes" $ | fromJsonArray }}
- scope: {{ $scope }}
  apiGroups: [multicluster.x-k8s.io]
  resources: [clusterprofiles]
  verbs: [list, patch, watch]
- scope: {{ $scope }}
  apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- scope: {{ $scope }}
  apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- range $c.bootstrapSecretNamespaces }}
- scope: {{ . }}
  apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- with $c.credentialsNamespace }}
- scope: {{ . }}
  apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- range $target := $targets }}
- scope: {{ $target }}
  apiGroups: [""]
  resources: [secrets]
  verbs: [create, delete, get, list, patch, watch]
{{- range $kind := $kinds }}
- scope: {{ $target }}
  apiGroups: [{{ $kind.apiGroup | quote }}]
  resources: {{ toJson $kind.resources }}
  verbs: {{ toJson $kind.verbs }}
{{- end }}
{{- end }}
{{- if $.Values.rbac.readManagedClusters }}
- scope: _cluster
  apiGroups: [cluster.open-cluster-management.io]
  resources: [managedclusters]
  verbs: [get]
{{- end }}
{{ include "ib.runtimeGrants" $ }}
{{- end -}}

{{- define "ib.sink.notes" -}}
{{- end -}}
