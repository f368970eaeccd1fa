#!/usr/bin/env bash
# Builds the local Kubernetes control plane from the Go module proxy alone, into $1 (default: the versioned dir
# under the dist dir that `mlp up --k8s` uses; `mlp fetch --k8s` calls this):
#   kube-apiserver and kube-scheduler (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), kwok.
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging/src/...; a
# consumer module must replace each with the published v0.<minor>.<patch> tag. Writes to a temporary dir
# and renames it, so a killed build leaves nothing that looks finished.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.37.2}   # keep in step with mlplatform/stack/k8s.py's K8S_VERSION
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${MLP_DIST_DIR:-$REPO/.mlp/dist}/go/k8s-$K8S_VERSION}
STAGING_VERSION=v0.${K8S_VERSION#v1.}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}   # the etcd k8s.io/kubernetes $K8S_VERSION itself requires
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
NICE=${MLP_BUILD_NICE:-10}
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
mkdir -p "$(dirname "$OUT")"
# one build at a time: a second caller waits for the first, then finds the binaries and stops
exec 9>"${OUT%/}.lock"
flock 9
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-scheduler" ] && [ -x "$OUT/etcd" ] && [ -x "$OUT/kwok" ]; then
  echo "already built: $OUT"; exit 0
fi
WORK=$(mktemp -d "${OUT%/}.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BIN=$WORK/bin; mkdir -p "$BIN"
build() { nice -n "$NICE" go build -trimpath "$@"; }

mkdir -p "$WORK/k8s"; cd "$WORK/k8s"
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n)\n' > tools.go
go mod download -json "k8s.io/kubernetes@$K8S_VERSION" > /dev/null
MOD=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod
{
  printf 'module mlp/k8s\n\ngo 1.26.0\n\ngodebug default=go1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
  awk '$2=="=>" && $3 ~ /^\.\/staging\/src\// && $1!="k8s.io/sample-cli-plugin" && $1!="k8s.io/sample-controller" {print "\t" $1 " => " $1 " '"$STAGING_VERSION"'"}' "$MOD"
  printf ')\n'
} > go.mod
go mod tidy
V=k8s.io/component-base/version
MINOR=${K8S_VERSION#v1.}; MINOR=${MINOR%%.*}
build -ldflags "-s -w -X $V.gitVersion=$K8S_VERSION -X $V.gitMajor=1 -X $V.gitMinor=$MINOR -X $V.gitTreeState=clean" \
  -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler

mkdir -p "$WORK/etcd"; cd "$WORK/etcd"
printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
printf 'module mlp/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
go mod tidy
build -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3

mkdir -p "$WORK/kwok"; cd "$WORK/kwok"
printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kwok/cmd/kwok"\n' > tools.go
printf 'module mlp/kwok\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok %s\n' "$KWOK_VERSION" > go.mod
go mod tidy
build -ldflags "-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok
# kwok's own node and pod stages ship in its module source, not in the binary
cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" "$BIN/kwok-stages"
chmod -R u+w "$BIN/kwok-stages"
rm -rf "$OUT"; mv "$BIN" "$OUT"
ls -la "$OUT"
