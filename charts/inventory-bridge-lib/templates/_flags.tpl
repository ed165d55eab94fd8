{{/*
Command-line flags. Each adapter chart lists its flags explicitly in its Deployment, one line per
flag, so `helm template` shows exactly what the adapter gets and a test can check that every flag
of the binary's --help is reachable.

ib.flag (list "--name" value): `--name=value`; nothing when value is null or ""; one
`--name=item` per item of a list; booleans and numbers are written as they are.
ib.switch (list "--name" bool): `--name` when true (flags that take no value).
*/}}
{{- define "ib.flag" -}}
{{- $name := index . 0 -}}
{{- $value := index . 1 -}}
{{- if kindIs "slice" $value -}}
{{- range $value }}
- {{ printf "%s=%v" $name . | quote }}
{{- end -}}
{{- else if kindIs "bool" $value }}
- {{ printf "%s=%t" $name $value | quote }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) }}
- {{ printf "%s=%d" $name (int64 $value) | quote }}
{{- else if false }}
- {{ printf "%s=%t" $name $value | quote }}
{{- else if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- {{ printf "%s=%v" $name $value | quote }}
{{- end -}}
{{- end -}}

{{- define "ib.switch" -}}
{{- if index . 1 }}
- {{ index . 0 | quote }}
{{- end -}}
{{- end -}}
