#!/usr/bin/env bash
# Build Kubernetes binaries of pinned releases from Go modules, once per machine, into the lagpilot cache
# (keyed by version). Later runs return at once.
#   all    etcd, kube-apiserver, kube-controller-manager and kubectl: what the lab runs
#   node   what a kind node image holds beyond that: kubelet, kubeadm, kube-scheduler, kube-proxy, the
#          etcd and CoreDNS versions kubeadm asks for, crictl (kind uses it) and the pause binary
set -euo pipefail
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
ETCD_VERSION=${LAGPILOT_ETCD_VERSION:-v3.5.21}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
export GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0
step() { printf '[build-k8s] %s\n' "$*" >&2; }

build_etcd() {
  local ETCD_VERSION=${1:-$ETCD_VERSION}
  local out=$CACHE/etcd-$ETCD_VERSION
  if [ -x "$out/bin/etcd" ]; then step "etcd $ETCD_VERSION cached at $out"; return; fi
  local work; work=$(mktemp -d); trap 'rm -rf "${work:-}"; trap - RETURN' RETURN
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
  local out=$CACHE/kubernetes-$K8S_VERSION cmds=("$@") missing=()
  [ ${#cmds[@]} -gt 0 ] || cmds=(kube-apiserver kube-controller-manager kubectl)
  for cmd in "${cmds[@]}"; do [ -x "$out/bin/$cmd" ] || missing+=("$cmd"); done
  if [ ${#missing[@]} = 0 ]; then step "kubernetes $K8S_VERSION (${cmds[*]}) cached at $out"; return; fi
  local work; work=$(mktemp -d); trap 'rm -rf "${work:-}"; trap - RETURN' RETURN
  local minor patch major=1
  minor=$(echo "$K8S_VERSION" | cut -d. -f2); patch=$(echo "$K8S_VERSION" | cut -d. -f3)
  step "kubernetes $K8S_VERSION: resolving Go modules (first run only, several minutes)"
  OLDPWD_BUILD=$PWD; cd "$work"
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
  mkdir -p "$out/bin"
  for cmd in "${missing[@]}"; do
    step "kubernetes $K8S_VERSION: compiling $cmd"
    go build -trimpath -ldflags "$ld" -o "$out/bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/bin/$cmd.tmp" "$out/bin/$cmd"
  done
  cd "$OLDPWD_BUILD"
  step "kubernetes ready: $out/bin"
}

# A Go main package of one module version, built once into $CACHE/<name>-<version>/bin/<binary>.
build_go_tool() {
  local name=$1 version=$2 module=$3 pkg=$4 binary=$5
  local out=$CACHE/$name-$version
  if [ -x "$out/bin/$binary" ]; then step "$name $version cached at $out"; return; fi
  local work; work=$(mktemp -d); trap 'rm -rf "${work:-}"; trap - RETURN' RETURN
  step "$name $version: resolving Go modules and compiling (first run only)"
  (cd "$work" && go mod init lagpilot.local/build >/dev/null 2>&1 && go get "$module@$version" >/dev/null 2>&1 \
     && mkdir -p "$out/bin" && go build -trimpath -ldflags '-s -w' -o "$out/bin/$binary.tmp" "$pkg")
  mv "$out/bin/$binary.tmp" "$out/bin/$binary"
  step "$name ready: $out/bin/$binary"
}

# The pause container's process, from the kubernetes module's own C source, linked static.
build_pause() {
  local out=$CACHE/pause-$PAUSE_VERSION
  if [ -x "$out/bin/pause" ]; then step "pause $PAUSE_VERSION cached at $out"; return; fi
  local src
  src=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$out/bin"
  gcc -Os -static -Wall -DVERSION="v$PAUSE_VERSION-lagpilot" -o "$out/bin/pause.tmp" "$src/build/pause/linux/pause.c"
  strip "$out/bin/pause.tmp"; mv "$out/bin/pause.tmp" "$out/bin/pause"
  step "pause ready: $out/bin/pause"
}

# Versions a kind node of $K8S_VERSION needs: what `kubeadm config images list` prints for it.
NODE_ETCD_VERSION=${LAGPILOT_NODE_ETCD_VERSION:-v3.6.5}
COREDNS_VERSION=${LAGPILOT_COREDNS_VERSION:-v1.12.1}
PAUSE_VERSION=${LAGPILOT_PAUSE_VERSION:-3.10.1}
CRICTL_VERSION=${LAGPILOT_CRICTL_VERSION:-v1.34.0}

build_node() {
  build_kubernetes kubelet kubeadm kube-scheduler kube-proxy kube-apiserver kube-controller-manager kubectl
  build_etcd "$NODE_ETCD_VERSION"
  build_go_tool coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns coredns
  build_go_tool crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl crictl
  build_pause
}

case "${1:-all}" in
  etcd) build_etcd ;;
  kubernetes) build_kubernetes ;;
  all) build_etcd; build_kubernetes ;;
  node) build_node ;;
  *) echo "usage: $0 [etcd|kubernetes|all|node]" >&2; exit 2 ;;
esac
