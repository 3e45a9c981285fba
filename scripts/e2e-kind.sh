#!/usr/bin/env bash
# End-to-end on kind: create a 3-node cluster (kind-config.yaml), build the lagpilot image and load it
# into the nodes, run a single-node Kafka in the cluster (tests/e2e/kafka.yaml), install the Helm chart,
# and run `pytest tests/e2e` against that kubeconfig. Needs docker; kind and helm are installed from the
# Go module proxy into the lagpilot cache when missing.
#   KEEP_CLUSTER=1   leave the cluster running afterwards (default: delete it)
#   PYTEST_ARGS=...  extra pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${LAGPILOT_KIND_CLUSTER:-lagpilot}
IMAGE=${LAGPILOT_IMAGE:-lagpilot:e2e}
KIND_VERSION=${LAGPILOT_KIND_VERSION:-v0.25.0}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
RELEASE=lagpilot
OPERATOR_NS=lagpilot-system
PY=${PYTHON:-.venv/bin/python}
step() { printf '[e2e-kind] %s\n' "$*" >&2; }

command -v docker >/dev/null || { step "docker is required"; exit 1; }
command -v kubectl >/dev/null || { step "kubectl is required"; exit 1; }
if command -v kind >/dev/null; then KIND=$(command -v kind); else
  KIND=$CACHE/kind-$KIND_VERSION/bin/kind
  if [ ! -x "$KIND" ]; then
    step "kind $KIND_VERSION: go install sigs.k8s.io/kind@$KIND_VERSION"
    GOBIN=$(dirname "$KIND") CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
fi
HELM=$(scripts/build-helm.sh)

KUBECONFIG_FILE=$(mktemp -t lagpilot-kind-kubeconfig.XXXXXX)
export KUBECONFIG=$KUBECONFIG_FILE
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then step "cluster kept: KUBECONFIG=$KUBECONFIG_FILE"; return; fi
  step "deleting cluster $CLUSTER"; "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  rm -f "$KUBECONFIG_FILE"
}
trap cleanup EXIT

step "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
"$KIND" create cluster --name "$CLUSTER" --config kind-config.yaml --kubeconfig "$KUBECONFIG_FILE" --wait 180s

step "building image $IMAGE"
docker build -t "$IMAGE" .
step "loading $IMAGE into the nodes"
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

step "starting Kafka in the cluster"
kubectl apply -f tests/e2e/kafka.yaml
kubectl -n lagpilot-e2e rollout status deploy/kafka --timeout=300s

step "installing the chart (release $RELEASE in $OPERATOR_NS)"
"$HELM" upgrade --install "$RELEASE" charts/lagpilot --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set logFormat=text --wait --timeout 300s
kubectl -n "$OPERATOR_NS" get pods -o wide

step "running pytest tests/e2e"
export LAGPILOT_E2E_BOOTSTRAP=kafka.lagpilot-e2e.svc.cluster.local:9092
export LAGPILOT_E2E_TEST_BOOTSTRAP=localhost:30092
export LAGPILOT_E2E_TARGET_MODE=incluster
export LAGPILOT_E2E_TARGET_IMAGE=$IMAGE
status=0
# shellcheck disable=SC2086
"$PY" -m pytest tests/e2e -m e2e -v ${PYTEST_ARGS:-} || status=$?
if [ "$status" != 0 ]; then
  step "e2e failed (exit $status): operator logs follow"
  kubectl -n "$OPERATOR_NS" logs deploy/"$RELEASE" --tail=200 || true
  kubectl get consumergroups -A -o yaml || true
fi
exit "$status"
