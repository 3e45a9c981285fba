#!/usr/bin/env bash
# Build Helm of a pinned release from its Go module (go install works: Helm has no replace directives),
# once per machine, into the lagpilot cache. Later runs return at once. Prints the helm path on stdout.
set -euo pipefail
HELM_VERSION=${LAGPILOT_HELM_VERSION:-v3.16.4}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
OUT=$CACHE/helm-$HELM_VERSION
step() { printf '[build-helm] %s\n' "$*" >&2; }

if [ -x "$OUT/bin/helm" ]; then
  step "helm $HELM_VERSION cached at $OUT/bin/helm"
  echo "$OUT/bin/helm"
  exit 0
fi
command -v go >/dev/null || { step "go not found on PATH (needed to build helm)"; exit 1; }
step "helm $HELM_VERSION: go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (first run only, a few minutes)"
mkdir -p "$OUT"
# Install into a temporary GOBIN and move into place, so an interrupted build never looks cached.
tmp=$(mktemp -d "$OUT/bin.tmp.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
# Stamp the version and the default Kubernetes version (1.31: Helm 3.16 is built with client-go v0.31)
# as Helm's Makefile does; otherwise `helm version` says v3.16 and offline templating assumes v1.20.
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=31"
done
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
rm -rf "$OUT/bin"; mv "$tmp" "$OUT/bin"; trap - EXIT
step "helm ready: $OUT/bin/helm ($("$OUT/bin/helm" version --short 2>/dev/null || echo '?'))"
echo "$OUT/bin/helm"
