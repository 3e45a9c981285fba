#!/usr/bin/env bash
# Build the Go tools the observability tests use, of pinned releases from their Go modules, once per
# machine, into the lagpilot cache (keyed by version). Later runs return at once.
#   kubeconform          validates every manifest the chart renders against Kubernetes' own schemas
#   kube-state-metrics   turns pod status into the kube_pod_* series the crash-loop alert reads
# Usage: build-go-tools.sh [kubeconform|kube-state-metrics|all]   (prints each binary's path on stdout)
set -euo pipefail
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
KUBECONFORM_VERSION=${LAGPILOT_KUBECONFORM_VERSION:-v0.8.0}
KSM_VERSION=${LAGPILOT_KSM_VERSION:-v2.15.0}
step() { printf '[build-go-tools] %s\n' "$*" >&2; }

# build NAME VERSION PACKAGE [LDFLAGS]: go install into a temporary GOBIN, then move into place, so an
# interrupted build never looks cached. PACKAGE "module:" builds the module's main package from the
# module's own directory with its go.sum (for modules whose version list the proxy refuses, which
# `go install pkg@version` reads to check deprecation).
build() {
  local name=$1 version=$2 pkg=$3 ld=${4:-}
  local out=$CACHE/$name-$version
  if [ -x "$out/bin/$name" ]; then
    step "$name $version cached at $out/bin/$name"
    echo "$out/bin/$name"
    return
  fi
  command -v go >/dev/null || { step "go not found on PATH (needed to build $name)"; exit 1; }
  step "$name $version: building ${pkg#module:}@$version (first run only, a few minutes)"
  mkdir -p "$out"
  local tmp; tmp=$(mktemp -d "$out/bin.tmp.XXXXXX")
  local ok=1
  if [ "${pkg#module:}" != "$pkg" ]; then
    local dir; dir=$(go mod download -json "${pkg#module:}@$version" |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("Dir", ""))')
    [ -n "$dir" ] && (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$tmp/$name" .) >&2 || ok=0
  else
    CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w $ld" "$pkg@$version" >&2 || ok=0
  fi
  if [ $ok = 0 ]; then
    rm -rf "$tmp"; step "FAILED: go install $pkg@$version"; exit 1
  fi
  rm -rf "$out/bin"; mv "$tmp" "$out/bin"
  step "$name ready: $out/bin/$name"
  echo "$out/bin/$name"
}

kubeconform() { build kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform; }
kube_state_metrics() {
  build kube-state-metrics "$KSM_VERSION" module:k8s.io/kube-state-metrics/v2 \
    "-X github.com/prometheus/common/version.Version=${KSM_VERSION#v}"
}

case "${1:-all}" in
  kubeconform) kubeconform ;;
  kube-state-metrics) kube_state_metrics ;;
  all) kubeconform; kube_state_metrics ;;
  *) step "unknown tool: $1 (kubeconform, kube-state-metrics, all)"; exit 2 ;;
esac
