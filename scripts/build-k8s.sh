#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager and kubectl of pinned releases from Go modules,
# once per machine, into the lagpilot cache (keyed by version). Later runs return at once.
set -euo pipefail
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
ETCD_VERSION=${LAGPILOT_ETCD_VERSION:-v3.5.21}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0
step() { printf '[build-k8s] %s\n' "$*" >&2; }

build_etcd() {
  local out=$CACHE/etcd-$ETCD_VERSION
  if [ -x "$out/bin/etcd" ]; then step "etcd $ETCD_VERSION cached at $out"; return; fi
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  step "etcd $ETCD_VERSION: resolving Go modules (first run only)"
  (cd "$work" && go mod init lagpilot.local/etcd-build >/dev/null 2>&1 \
     && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1)
  step "etcd $ETCD_VERSION: compiling"
  mkdir -p "$out/bin.tmp"
  (cd "$work" && go build -trimpath -ldflags '-s -w' -o "$out/bin.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
  step "etcd ready: $out/bin/etcd"
}

build_kubernetes() {
  local out=$CACHE/kubernetes-$K8S_VERSION
  if [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] && [ -x "$out/bin/kubectl" ]; then
    step "kubernetes $K8S_VERSION cached at $out"; return
  fi
  local work; work=$(mktemp -d); trap 'rm -rf "$work"' RETURN
  local minor patch major=1
  minor=$(echo "$K8S_VERSION" | cut -d. -f2); patch=$(echo "$K8S_VERSION" | cut -d. -f3)
  step "kubernetes $K8S_VERSION: resolving Go modules (first run only, several minutes)"
  cd "$work"
  go mod init lagpilot.local/k8s-build >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  # Every staging module k8s.io/X v0.0.0 is replaced by its published v0.<minor>.<patch>.
  grep -E '^\s*k8s\.io/[^ ]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u | while read -r mod; do
    go mod edit -replace="$mod=$mod@v0.$minor.$patch"
  done
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  go mod download k8s.io/kubernetes >/dev/null 2>&1 || true
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  mkdir -p "$out/bin.tmp"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    step "kubernetes $K8S_VERSION: compiling $cmd"
    go build -trimpath -ldflags "$ld" -o "$out/bin.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
  rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
  step "kubernetes ready: $out/bin"
}

case "${1:-all}" in
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  all) build_etcd; build_kubernetes ;;
  *) echo "usage: $0 [etcd|kubernetes|all]" >&2; exit 2 ;;
esac
