{{/*
RBAC from one list of grants, so each chart states what its adapter calls in one place and the
README's lists can be compared with it. Call with a dict:
  ctx     the chart's root context
  grants  a list of {scope, apiGroups, resources, verbs, resourceNames?}; scope is "_cluster"
          (a ClusterRole) or a namespace (a Role there). Grants of one scope become the rules of
          one role, bound to the chart's ServiceAccount.
  suffix          (optional) appended to the roles' and bindings' names (e.g. "-release")
  serviceAccount  (optional) the subject instead of the chart's ServiceAccount
  hook            (optional) a Helm hook event (e.g. "post-delete"): every object becomes a hook
                  resource of that event, roles before bindings (hook weights -15 and -10, so
                  they exist before a hook Job of weight 0), deleted when the hooks succeed
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
{{- $name := printf "%s%s" (include "ib.fullname" $) (.suffix | default "") -}}
{{- $subject := .serviceAccount | default (include "ib.serviceAccountName" $) -}}
{{- $hook := .hook | default "" -}}
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
  {{- with $hook }}
  annotations:
    {{- include "ib.hookAnnotations" (list . -15) | nindent 4 }}
  {{- end }}
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
  {{- with $hook }}
  annotations:
    {{- include "ib.hookAnnotations" (list . -10) | nindent 4 }}
  {{- end }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ if eq $scope "_cluster" }}ClusterRole{{ else }}Role{{ end }}
  name: {{ if eq $scope "_cluster" }}{{ printf "%s-%s" $.Release.Namespace $name | trunc 253 }}{{ else }}{{ $name }}{{ end }}
subjects:
  - kind: ServiceAccount
    name: {{ $subject }}
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

{{/*
Annotations of a Helm hook resource: (list event weight). Deleted before the hook runs again and
once every hook of the event has succeeded; a failed hook Job stays for its logs.
*/}}
{{- define "ib.hookAnnotations" -}}
helm.sh/hook: {{ index . 0 }}
helm.sh/hook-weight: {{ index . 1 | toString | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end -}}
