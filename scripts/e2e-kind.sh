#!/usr/bin/env bash
# End-to-end on kind: a 3-node cluster (kind-config.yaml) from a node image built here when none can be
# pulled, a single-node Kafka in the cluster (tests/e2e/kafka.yaml), the Helm chart, and
# `pytest tests/e2e` against that kubeconfig. `make test` runs it; it also runs on its own.
# It starts a Docker engine when none runs (scripts/docker-engine.sh) and stops it again afterwards;
# the cluster is deleted at the end.
#   KEEP_CLUSTER=1   leave the cluster (and the engine) running afterwards
#   PYTEST_ARGS=...  extra pytest arguments
# Every step logs to $LOGS/<step>.log; a failed step prints one line naming it and its log.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CLUSTER=${LAGPILOT_KIND_CLUSTER:-lagpilot}
KIND_VERSION=${LAGPILOT_KIND_VERSION:-v0.33.0}
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
LOGS=${LAGPILOT_E2E_LOGS:-$CACHE/logs/e2e-kind}
RELEASE=lagpilot
OPERATOR_NS=lagpilot-system
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$LOGS"
t_start=$(date +%s)
step() { printf '[e2e-kind] %s\n' "$*" >&2; }
fail() { printf '[e2e-kind] FAILED: %s (log: %s)\n' "$1" "$2" >&2; exit 1; }
run() {
  local name=$1; shift
  "$@" > "$LOGS/$name.log" 2>&1 || { tail -n 20 "$LOGS/$name.log" | sed 's/^/    /' >&2; fail "$name" "$LOGS/$name.log"; }
}
timed() { local t0; t0=$(date +%s); "$@"; step "  ($(( $(date +%s) - t0 ))s)"; }

bash scripts/build-k8s.sh kubernetes >/dev/null 2>&1 || fail "build kubectl" "scripts/build-k8s.sh"
export PATH=$CACHE/kubernetes-$K8S_VERSION/bin:$PATH
KIND=$CACHE/kind-$KIND_VERSION/bin/kind
if [ ! -x "$KIND" ]; then
  step "kind $KIND_VERSION: go install sigs.k8s.io/kind@$KIND_VERSION"
  run kind-install env GOBIN="$(dirname "$KIND")" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
HELM=$(scripts/build-helm.sh)

KUBECONFIG_FILE=$(mktemp -t lagpilot-kind-kubeconfig.XXXXXX)
export KUBECONFIG=$KUBECONFIG_FILE
engine=""
cleanup() {
  local rc=$?
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then step "cluster kept: KUBECONFIG=$KUBECONFIG_FILE"; exit $rc; fi
  if [ -n "$engine" ]; then
    step "deleting cluster $CLUSTER"
    "$KIND" delete cluster --name "$CLUSTER" > "$LOGS/kind-delete.log" 2>&1 || step "kind delete failed (log: $LOGS/kind-delete.log)"
  fi
  rm -f "$KUBECONFIG_FILE"
  if [ "$engine" = started ]; then bash scripts/docker-engine.sh stop; fi
  step "done in $(( $(date +%s) - t_start ))s"
  exit $rc
}
trap cleanup EXIT

step "Docker engine"
engine=$(bash scripts/docker-engine.sh start)

step "images (built here and cached under $CACHE/images when they cannot be pulled)"
images=$(bash scripts/images.sh all)
eval "$images"
step "  node $NODE_IMAGE, kafka $KAFKA_IMAGE, lagpilot $LAGPILOT_IMAGE"

step "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
timed run kind-create timeout 600 "$KIND" create cluster --name "$CLUSTER" --config kind-config.yaml \
  --image "$NODE_IMAGE" --kubeconfig "$KUBECONFIG_FILE" --wait 300s
run nodes-ready kubectl wait --for=condition=Ready nodes --all --timeout=180s

step "loading images into the nodes"
timed run kind-load "$KIND" load docker-image --name "$CLUSTER" "$LAGPILOT_IMAGE" "$KAFKA_IMAGE"

step "starting Kafka in the cluster"
sed "s#image: apache/kafka:.*#image: $KAFKA_IMAGE#" tests/e2e/kafka.yaml > "$LOGS/kafka.yaml"
run kafka-apply kubectl apply -f "$LOGS/kafka.yaml"
timed run kafka-ready kubectl -n lagpilot-e2e rollout status deploy/kafka --timeout=300s

step "installing the chart (release $RELEASE in $OPERATOR_NS)"
HELM_INSTALL="--create-namespace --set image.repository=${LAGPILOT_IMAGE%:*} --set image.tag=${LAGPILOT_IMAGE##*:} --set image.pullPolicy=Never --set logFormat=text"
# shellcheck disable=SC2086
timed run helm-install "$HELM" upgrade --install "$RELEASE" charts/lagpilot --namespace "$OPERATOR_NS" $HELM_INSTALL \
  --wait --timeout 300s
kubectl -n "$OPERATOR_NS" get pods -o wide >&2

step "running pytest tests/e2e"
export LAGPILOT_E2E_BOOTSTRAP=kafka.lagpilot-e2e.svc.cluster.local:9092
export LAGPILOT_E2E_TEST_BOOTSTRAP=localhost:30092
export LAGPILOT_E2E_TARGET_MODE=incluster
export LAGPILOT_E2E_TARGET_IMAGE=$LAGPILOT_IMAGE
export LAGPILOT_E2E_REQUIRED=1
export LAGPILOT_E2E_HELM=$HELM LAGPILOT_E2E_HELM_INSTALL=$HELM_INSTALL LAGPILOT_E2E_HELM_RELEASE=$RELEASE
export LAGPILOT_E2E_OPERATOR_NAMESPACE=$OPERATOR_NS
status=0
# shellcheck disable=SC2086
"$PY" -m pytest -p no:cacheprovider tests/e2e -m e2e -v ${PYTEST_ARGS:-} || status=$?
if [ "$status" != 0 ]; then
  step "e2e failed (exit $status): operator logs in $LOGS/operator.log"
  kubectl -n "$OPERATOR_NS" logs deploy/"$RELEASE" --tail=500 > "$LOGS/operator.log" 2>&1 || true
  kubectl get consumergroups -A -o yaml > "$LOGS/consumergroups.yaml" 2>&1 || true
fi
exit "$status"
