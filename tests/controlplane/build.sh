#!/usr/bin/env bash
# Builds the control-plane binary (etcd + kube-apiserver + kube-controller-manager from the pinned
# Kubernetes release in go.mod) once per content hash of this module, and prints its path on stdout.
# Progress goes to stderr: the first build takes 5-20 minutes on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/go.mod")
hash=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh" | sha256sum | cut -c1-16)
cache="${IB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inventory-bridge}"
bin="$cache/controlplane-$hash/controlplane"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
# Several test binaries may ask at once: one builds, the others wait for it.
exec 9>"$cache/controlplane.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
start=$SECONDS
echo "control plane: building Kubernetes $k8s_version (etcd, kube-apiserver, kube-controller-manager) into $bin" >&2
echo "control plane: downloading Go modules..." >&2
(cd "$here" && go mod download)
echo "control plane: modules ready after $((SECONDS - start))s; compiling (first build: 5-20 minutes)..." >&2

minor=${k8s_version#v1.}
minor=${minor%%.*}
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=$k8s_version"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$minor"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

tmp="$cache/controlplane-$hash.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# `go build -v` names each package as it compiles: print a running count instead of ~2000 lines.
(cd "$here" && go build -v -trimpath -ldflags "$ldflags" -o "$tmp/controlplane" . 2>&1) |
  awk -v start="$(date +%s)" '
    /^[a-zA-Z0-9_.\/-]+$/ { n++; if (n % 100 == 0) { printf "control plane: %d packages compiled (%ds)\n", n, systime() - start > "/dev/stderr"; fflush("/dev/stderr") } next }
    { print > "/dev/stderr" }
  '
[ -x "$tmp/controlplane" ] || { echo "control plane: build failed" >&2; exit 1; }
mkdir -p "$(dirname "$bin")"
mv "$tmp/controlplane" "$bin"
echo "control plane: built in $((SECONDS - start))s" >&2
echo "$bin"
