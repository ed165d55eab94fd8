{{/* The objects every adapter chart has besides its Deployment and RBAC. */}}

{{- define "ib.serviceAccount" -}}
{{- if .Values.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "ib.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Metrics Service: /metrics (and the probes) on the adapter's --http-address port. */}}
{{- define "ib.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ib.fullname" . }}-metrics
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type }}
  selector:
    {{- include "ib.selectorLabels" . | nindent 4 }}
  ports:
    - name: http-metrics
      port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
{{- end -}}

{{- define "ib.serviceMonitor" -}}
{{- if .Values.serviceMonitor.enabled }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "ib.fullname" . }}
  namespace: {{ default .Release.Namespace .Values.serviceMonitor.namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
    {{- with .Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames: [{{ .Release.Namespace }}]
  selector:
    matchLabels:
      {{- include "ib.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: http-metrics
      path: /metrics
      interval: {{ .Values.serviceMonitor.interval }}
      scrapeTimeout: {{ .Values.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- end -}}

{{- define "ib.podDisruptionBudget" -}}
{{- if .Values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
  maxUnavailable: {{ .Values.podDisruptionBudget.maxUnavailable }}
  {{- else }}
  minAvailable: {{ .Values.podDisruptionBudget.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ib.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy: nothing may connect to the pod except the given peers, on the metrics port (the
kubelet's probes are not subject to it). Egress stays open unless rules are given: the adapter
reaches the hub apiserver and, for sinks and capi-source, member apiservers anywhere.
*/}}
{{- define "ib.networkPolicy" -}}
{{- if .Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "ib.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "ib.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "ib.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if .Values.networkPolicy.egress }}
    - Egress
    {{- end }}
  ingress:
    {{- if .Values.networkPolicy.metricsFrom }}
    - from:
        {{- toYaml .Values.networkPolicy.metricsFrom | nindent 8 }}
      ports:
        - port: http
          protocol: TCP
    {{- end }}
  {{- with .Values.networkPolicy.egress }}
  egress:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The ClusterProfile CRD (every served version), read from files/clusterprofiles-crd.yaml, a
symbolic link to the generated charts/crds/multicluster.x-k8s.io_clusterprofiles.yaml (Helm
follows it; a test checks the rendered CRD equals the generated file). Kept on uninstall: deleting
a CRD deletes every ClusterProfile.
*/}}
{{- define "ib.crd" -}}
{{- if .Values.crds.install }}
{{- $crd := .Files.Get "files/clusterprofiles-crd.yaml" | fromYaml }}
{{- if not $crd.spec }}
{{- fail "files/clusterprofiles-crd.yaml is missing or empty (it links to charts/crds/multicluster.x-k8s.io_clusterprofiles.yaml)" }}
{{- end }}
{{- $annotations := merge (dict "helm.sh/resource-policy" "keep") ($crd.metadata.annotations | default dict) }}
{{- $_ := set $crd.metadata "annotations" $annotations }}
{{- $labels := merge (dict "app.kubernetes.io/part-of" "inventory-bridge" "app.kubernetes.io/managed-by" .Release.Service) ($crd.metadata.labels | default dict) }}
{{- $_ := set $crd.metadata "labels" $labels }}
{{- toYaml $crd }}
{{- end }}
{{- end -}}
