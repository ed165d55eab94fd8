{{/* NOTES.txt: what was installed and how to check it. Call with a dict: ctx, what, check. */}}
{{- define "ib.notes" -}}
{{- $ := .ctx -}}
{{- $name := include "ib.fullname" $ -}}
{{ $.Chart.Name }} {{ $.Chart.AppVersion }} is installed in namespace {{ $.Release.Namespace }} as {{ $name }}:
{{ .what }}

Installed: Deployment {{ $name }} ({{ $.Values.replicaCount }} replica(s), leader election {{ include "ib.leaderElection" $ }}),
ServiceAccount {{ include "ib.serviceAccountName" $ }}{{ if $.Values.rbac.create }} with the RBAC listed in the README ("Hub RBAC it needs"){{ end }},
Service {{ $name }}-metrics{{ if $.Values.crds.install }}, and the ClusterProfile CRD (kept on uninstall){{ end }}.

Check it:
  kubectl -n {{ $.Release.Namespace }} rollout status deployment/{{ $name }}
{{ .check }}
  # Warning Events the adapter reported (per-object problems; reason = problem category):
  kubectl get events -A --field-selector reportingComponent={{ $.Chart.Name }}
  # Its metrics (inventory_bridge_*: reconciles, problems by category, leader, ready):
  kubectl -n {{ $.Release.Namespace }} port-forward service/{{ $name }}-metrics {{ $.Values.service.port }} &
  curl -s localhost:{{ $.Values.service.port }}/metrics | grep ^inventory_bridge_
{{- end -}}
