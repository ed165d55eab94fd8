#!/usr/bin/env bash
# Builds Helm from the helm.sh/helm/v4 Go module pinned in go.mod (nothing is downloaded from a
# release page) once per content hash of this module, and prints its path on stdout. Progress goes
# to stderr. Same cache and locking as tests/controlplane/build.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helm_version=$(awk '$1 == "helm.sh/helm/v4" { print $2 }' "$here/go.mod")
hash=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh" | sha256sum | cut -c1-16)
cache="${IB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/inventory-bridge}"
bin="$cache/helm-$hash/helm"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
# Several test binaries may ask at once: one builds, the others wait for it.
exec 9>"$cache/helm.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is required (https://go.dev/dl)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
start=$SECONDS
echo "helm: building Helm $helm_version from its Go module into $bin" >&2
echo "helm: downloading Go modules..." >&2
(cd "$here" && go mod download)
echo "helm: modules ready after $((SECONDS - start))s; compiling (first build: 2-8 minutes)..." >&2

# `helm version` reports the pinned release, as an upstream build does.
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v4/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

tmp="$cache/helm-$hash.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# `go build -v` names each package as it compiles: print a running count instead of ~800 lines.
(cd "$here" && go build -v -trimpath -ldflags "$ldflags" -o "$tmp/helm" . 2>&1) |
  awk -v start="$(date +%s)" '
    /^[a-zA-Z0-9_.\/-]+$/ { n++; if (n % 100 == 0) { printf "helm: %d packages compiled (%ds)\n", n, systime() - start > "/dev/stderr"; fflush("/dev/stderr") } next }
    { print > "/dev/stderr" }
  '
[ -x "$tmp/helm" ] || { echo "helm: build failed" >&2; exit 1; }
mkdir -p "$(dirname "$bin")"
mv "$tmp/helm" "$bin"
echo "helm: built in $((SECONDS - start))s" >&2
echo "$bin"
