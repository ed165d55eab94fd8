{{/*
RBAC from one list of grants, so each chart states what its adapter calls in one place and the
README's lists can be compared with it. Call with a dict:
  ctx     the chart's root context
  grants  a list of {scope, apiGroups, resources, verbs, resourceNames?}; scope is "_cluster"
          (a ClusterRole) or a namespace (a Role there). Grants of one scope become the rules of
          one role, bound to the chart's ServiceAccount.
*/}}
{{- define "ib.rbac" -}}
{{- $ := .ctx -}}
{{- if $.Values.rbac.create -}}
{{- $scopes := dict -}}
{{- range .grants -}}
{{- if not .scope -}}
{{- fail (printf "an RBAC grant for %v has no namespace: set the namespace values it depends on" .resources) -}}
{{- end -}}
{{- $rule := dict "apiGroups" .apiGroups "resources" .resources "verbs" .verbs -}}
{{- if .resourceNames -}}
{{- $_ := set $rule "resourceNames" .resourceNames -}}
{{- end -}}
{{- $rules := get $scopes .scope | default (list) -}}
{{- if not (has $rule $rules) -}}
{{- $_ := set $scopes .scope (append $rules $rule) -}}
{{- end -}}
{{- end -}}
{{- $name := include "ib.fullname" $ -}}
{{- range $scope := keys $scopes | sortAlpha }}
{{- $rules := get $scopes $scope }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if eq $scope "_cluster" }}ClusterRole{{ else }}Role{{ end }}
metadata:
  name: {{ if eq $scope "_cluster" }}{{ printf "%s-%s" $.Release.Namespace $name | trunc 253 }}{{ else }}{{ $name }}{{ end }}
  {{- if ne $scope "_cluster" }}
  namespace: {{ $scope }}
  {{- end }}
  labels:
    {{- include "ib.labels" $ | nindent 4 }}
rules:
  {{- toYaml $rules | nindent 2 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ if eq $scope "_cluster" }}ClusterRoleBinding{{ else }}RoleBinding{{ end }}
metadata:
  name: {{ if eq $scope "_cluster" }}{{ printf "%s-%s" $.Release.Namespace $name | trunc 253 }}{{ else }}{{ $name }}{{ end }}
  {{- if ne $scope "_cluster" }}
  namespace: {{ $scope }}
  {{- end }}
  labels:
    {{- include "ib.labels" $ | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ if eq $scope "_cluster" }}ClusterRole{{ else }}Role{{ end }}
  name: {{ if eq $scope "_cluster" }}{{ printf "%s-%s" $.Release.Namespace $name | trunc 253 }}{{ else }}{{ $name }}{{ end }}
subjects:
  - kind: ServiceAccount
    name: {{ include "ib.serviceAccountName" $ }}
    namespace: {{ $.Release.Namespace }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Grants every adapter needs: its leader-election Lease and nothing else. */}}
{{- define "ib.runtimeGrants" -}}
{{- if eq (include "ib.leaderElection" .) "true" }}
- scope: {{ .Release.Namespace }}
  apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create, get, patch]
{{- end }}
{{- end -}}
