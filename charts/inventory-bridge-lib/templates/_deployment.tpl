{{/*
The adapter's Deployment. Call with a dict:
  ctx           the chart's root context
  args          the adapter's own flags (a YAML list rendered by the chart, may be empty)
  volumes       extra pod volumes of the chart (YAML list text, may be empty)
  volumeMounts  their mounts in the adapter container (YAML list text, may be empty)
  checksum      text of a chart-owned ConfigMap the adapter reads at start (may be empty): a
                change restarts the pods
*/}}
{{- define "ib.deployment" -}}
{{- $ := .ctx -}}
{{- $v := $.Values -}}
{{- $leader := eq (include "ib.leaderElection" $) "true" -}}
{{- $lease := int $v.leaderElection.leaseDurationSeconds -}}
{{- if and $leader (le (int $v.terminationGracePeriodSeconds) $lease) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than leaderElection.leaseDurationSeconds (%d): a stopping leader releases its Lease before it is killed" (int $v.terminationGracePeriodSeconds) $lease) -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ib.fullname" $ }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "ib.labels" $ | nindent 4 }}
spec:
  replicas: {{ $v.replicaCount }}
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "ib.selectorLabels" $ | nindent 6 }}
  template:
    metadata:
      {{- $annotations := deepCopy ($v.podAnnotations | default dict) }}
      {{- if include "ib.sink.hasConfig" $ }}
      {{- /* Restart on a new provider file or member rules (the adapter reads them at start). */}}
      {{- $_ := set $annotations "checksum/config" (include "ib.sink.configMap" $ | sha256sum) }}
      {{- end }}
      {{- with .checksum }}
      {{- /* Restart on a new chart-owned file the adapter reads at start. */}}
      {{- $_ := set $annotations "checksum/config" (. | sha256sum) }}
      {{- end }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      labels:
        {{- include "ib.selectorLabels" $ | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "ib.serviceAccountName" $ }}
      automountServiceAccountToken: true
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
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
            - {{ printf "--leader-election=%s" (include "ib.leaderElection" $) | quote }}
            {{- if $leader }}
            - {{ printf "--lease-name=%s" (default (include "ib.fullname" $) $v.leaderElection.leaseName) | quote }}
            - {{ printf "--lease-namespace=%s" $.Release.Namespace | quote }}
            - {{ printf "--lease-duration-seconds=%d" $lease | quote }}
            {{- end }}
            {{- if $v.hubKubeconfig.secretName }}
            - "--kubeconfig=/etc/inventory-bridge/hub/{{ $v.hubKubeconfig.key }}"
            {{- end }}
            {{- with .args }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $v.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            # The replica's identity in the Lease (--identity falls back to POD_NAME).
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
          ports:
            - name: http
              containerPort: {{ $v.http.port }}
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.readinessProbe | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            # The root filesystem is read-only; exec plugins and libraries get a writable /tmp.
            - name: tmp
              mountPath: /tmp
            {{- if $v.hubKubeconfig.secretName }}
            - name: hub-kubeconfig
              mountPath: /etc/inventory-bridge/hub
              readOnly: true
            {{- end }}
            {{- with .volumeMounts }}
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
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
