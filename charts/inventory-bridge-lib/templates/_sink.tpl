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
{{- include "ib.flag" (list "--instance" $c.instance) -}}
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
there. Bootstrap Secrets: get (by name) in each inventory and the allowed extra namespaces, or
in every namespace with rbac.readSecretsClusterWide (OCM token Secrets live in each
ManagedCluster's hub namespace, which a chart cannot list in advance). Its own
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
{{- if $.Values.rbac.readSecretsClusterWide }}
- scope: _cluster
  apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
{{- if $.Values.rbac.readManagedClusters }}
- scope: _cluster
  apiGroups: [cluster.open-cluster-management.io]
  resources: [managedclusters]
  verbs: [get]
{{- end }}
{{ include "ib.runtimeGrants" $ }}
{{- end -}}

{{/* NOTES.txt: what uninstall does. Call with (dict "ctx" . "sink" "<sink name>" "objects" "<what it writes>"). */}}
{{- define "ib.sink.notes" -}}
{{- $ := .ctx -}}
{{- $finalizer := printf "inventory-bridge.io/%s-cleanup" (default .sink $.Values.config.instance) -}}
{{- if include "ib.sink.releaseEnabled" $ }}
On `helm uninstall`, after the Deployment is deleted, the post-delete Job {{ include "ib.fullname" $ }}-release
runs {{ .sink }} --release-finalizers (as ServiceAccount {{ include "ib.sink.releaseServiceAccountName" $ }}, once the
old leader's Lease is released): it revokes the member identities, deletes the {{ .objects }}
and removes the finalizer {{ $finalizer }} from the profiles.
{{- else }}
releaseOnUninstall is off: before `helm uninstall`, release the profiles yourself (run the sink
with --release-finalizers), or their finalizer {{ $finalizer }} blocks their deletion.
{{- end }}
{{- end -}}

{{/*
The uninstall hook (releaseOnUninstall.enabled): Helm post-delete hook resources that run the
sink's image with the Deployment's flags plus --release-finalizers. It revokes every member
identity, deletes every registration and removes our finalizer from every profile of the served
inventories, then exits, so `helm uninstall` leaves no finalizer that would wedge a profile's or
namespace's deletion.

post-delete, not pre-delete: Helm deletes the Deployment first, so no running sink re-adds what
the Job releases. The Job still elects a leader on the Deployment's Lease (same name, namespace
and duration): a stopping leader releases it on SIGTERM, and one that cannot (it lost its RBAC
or was killed) lets it expire, so the Job writes only once the old leader is gone.

The chart's own ServiceAccount, RBAC and ConfigMap are deleted before post-delete hooks run, so
the hook brings its own, as hook resources created before the Job (hook weights: ServiceAccount
and ConfigMap -20, roles -15, bindings -10, Job 0), all deleted once the hooks succeed:
  - ServiceAccount <fullname>-release (serviceAccount.create=false: the Job runs as
    serviceAccount.name, which outlives the release);
  - ConfigMap <fullname>-release-config: the provider file and member rules;
  - with rbac.create, roles and bindings <fullname>-release: the sink's grants (what release
    mode calls is what the sink calls: list and patch profiles, Events, bootstrap Secrets, its
    hub objects) plus its Lease, bound to the Job's ServiceAccount (ib.sink.releaseRbac).
*/}}

{{/* The ServiceAccount the uninstall hook Job runs as. */}}
{{- define "ib.sink.releaseServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-release" (include "ib.fullname" .) -}}
{{- else -}}
{{- include "ib.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{- define "ib.sink.releaseEnabled" -}}
{{- if (.Values.releaseOnUninstall | default dict).enabled -}}true{{- end -}}
{{- end -}}

{{/*
The hook's RBAC: the sink's grants (as ib.sink.grants renders them for the chart's RBAC) plus
the Lease, bound to the hook's ServiceAccount. Call with a dict:
  ctx     the chart's root context
  grants  the sink's grants (a list)
*/}}
{{- define "ib.sink.releaseRbac" -}}
{{- $ := .ctx -}}
{{- if include "ib.sink.releaseEnabled" $ -}}
{{- $lease := dict "scope" $.Release.Namespace "apiGroups" (list "coordination.k8s.io") "resources" (list "leases") "verbs" (list "create" "get" "patch") -}}
{{- $grants := append .grants $lease -}}
{{- include "ib.rbac" (dict "ctx" $ "grants" $grants "suffix" "-release" "serviceAccount" (include "ib.sink.releaseServiceAccountName" $) "hook" "post-delete") -}}
{{- end -}}
{{- end -}}

{{/*
The hook's ServiceAccount, ConfigMap and Job. Call with a dict:
  ctx           the chart's root context
  args          the sink's own flags (as the Deployment gets them)
*/}}
{{- define "ib.sink.releaseJob" -}}
{{- $ := .ctx -}}
{{- $v := $.Values -}}
{{- $r := $v.releaseOnUninstall | default dict -}}
{{- if $r.enabled }}
{{- $name := printf "%s-release" (include "ib.fullname" $) -}}
{{- if $v.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "ib.sink.releaseServiceAccountName" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "ib.labels" $ | nindent 4 }}
    inventory-bridge.io/component: release-finalizers
  annotations:
    {{- include "ib.hookAnnotations" (list "post-delete" -20) | nindent 4 }}
    {{- with $v.serviceAccount.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
---
{{- end }}
{{- with (include "ib.sink.configMap" $ | fromYaml) }}
{{- $_ := set . "metadata" (dict "name" (printf "%s-config" $name) "namespace" $.Release.Namespace "labels" (include "ib.labels" $ | fromYaml) "annotations" (include "ib.hookAnnotations" (list "post-delete" -20) | fromYaml)) }}
{{ toYaml . }}
---
{{- end }}
{{- $lease := int $v.leaderElection.leaseDurationSeconds }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $name | trunc 63 | trimSuffix "-" }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "ib.labels" $ | nindent 4 }}
  annotations:
    {{- include "ib.hookAnnotations" (list "post-delete" 0) | nindent 4 }}
spec:
  backoffLimit: {{ $r.backoffLimit }}
  activeDeadlineSeconds: {{ $r.activeDeadlineSeconds }}
  template:
    metadata:
      labels:
        {{- include "ib.labels" $ | nindent 8 }}
        inventory-bridge.io/component: release-finalizers
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "ib.sink.releaseServiceAccountName" $ }}
      automountServiceAccountToken: true
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $.Chart.Name }}
          image: {{ include "ib.image" $ | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - {{ printf "--http-address=0.0.0.0:%d" (int $v.http.port) | quote }}
            - {{ printf "--log-format=%s" $v.log.format | quote }}
            - {{ printf "--log-filter=%s" $v.log.filter | quote }}
            {{- with $v.http.livenessStallSeconds }}
            - {{ printf "--liveness-stall-seconds=%d" (int .) | quote }}
            {{- end }}
            {{- /* Always: wait for the Deployment's leader to be gone (same Lease). */}}
            - "--leader-election=true"
            - {{ printf "--lease-name=%s" (default (include "ib.fullname" $) $v.leaderElection.leaseName) | quote }}
            - {{ printf "--lease-namespace=%s" $.Release.Namespace | quote }}
            - {{ printf "--lease-duration-seconds=%d" $lease | quote }}
            {{- if $v.hubKubeconfig.secretName }}
            - "--kubeconfig=/etc/inventory-bridge/hub/{{ $v.hubKubeconfig.key }}"
            {{- end }}
            {{- with .args }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $v.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            - "--release-finalizers"
          env:
            # The Job's identity in the Lease (--identity falls back to POD_NAME).
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $v.hubKubeconfig.secretName }}
            - name: hub-kubeconfig
              mountPath: /etc/inventory-bridge/hub
              readOnly: true
            {{- end }}
            {{- with (include "ib.sink.volumeMounts" $ | trim) }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $v.hubKubeconfig.secretName }}
        - name: hub-kubeconfig
          secret:
            secretName: {{ $v.hubKubeconfig.secretName }}
        {{- end }}
        {{- if include "ib.sink.hasConfig" $ }}
        {{- /* The hook's copy: the chart's ConfigMap is gone by now. */}}
        - name: config
          configMap:
            name: {{ $name }}-config
        {{- end }}
        {{- if $v.execPlugins.enabled }}
        - name: exec-plugins
          {{- toYaml $v.execPlugins.volume | nindent 10 }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end -}}
