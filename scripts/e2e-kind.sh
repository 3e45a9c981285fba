#!/usr/bin/env bash
# End-to-end on kind: scripts/kind-cluster.sh up (Docker engine, offline-built images, a 3-node cluster
# named lagpilot-e2e, Kafka in it), the Helm chart, and `pytest tests/e2e` against that kubeconfig.
# `make test` runs it; it also runs on its own. At the end the cluster is deleted and the Docker engine
# stopped if this run started it.
#   KEEP_CLUSTER=1   leave the cluster (and the engine) running afterwards
#   PYTEST_ARGS=...  extra pytest arguments
# Every step logs to $LOGS/<step>.log; a failed step prints one line naming it and its log.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
LOGS=${LAGPILOT_E2E_LOGS:-$CACHE/logs/e2e-kind}
RELEASE=lagpilot
OPERATOR_NS=lagpilot-system
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$LOGS"
t_start=$(date +%s)
STEP_PREFIX=e2e-kind
# shellcheck source=lib/steps.sh
source scripts/lib/steps.sh

export LAGPILOT_KIND_CLUSTER=${LAGPILOT_KIND_CLUSTER:-lagpilot-e2e}
export LAGPILOT_KIND_DIR=$CACHE/e2e-kind
KUBECONFIG_FILE=$LAGPILOT_KIND_DIR/kubeconfig
export PATH=$CACHE/kubernetes-$K8S_VERSION/bin:$PATH
cleanup() {
  local rc=$?
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then step "cluster kept: KUBECONFIG=$KUBECONFIG_FILE"; exit $rc; fi
  bash scripts/kind-cluster.sh down || true
  step "done in $(( $(date +%s) - t_start ))s"
  exit $rc
}
trap cleanup EXIT
bash scripts/kind-cluster.sh up
eval "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("LAGPILOT_IMAGE=" + d["images"]["lagpilot"]); print("KAFKA_IMAGE=" + d["images"]["kafka"])' "$LAGPILOT_KIND_DIR/state.json")"
export KUBECONFIG=$KUBECONFIG_FILE
HELM=$(scripts/build-helm.sh)

step "test image for the clock-skew fault"
CLOCKSKEW_IMAGE=$(bash scripts/images.sh clockskew "$LAGPILOT_IMAGE")
timed run kind-load-clockskew "$CACHE/kind-${LAGPILOT_KIND_VERSION:-v0.33.0}/bin/kind" load docker-image \
  --name "$LAGPILOT_KIND_CLUSTER" "$CLOCKSKEW_IMAGE"

step "installing the chart (release $RELEASE in $OPERATOR_NS)"
HELM_INSTALL="--create-namespace --set clusterWide=true --set image.repository=${LAGPILOT_IMAGE%:*} --set image.tag=${LAGPILOT_IMAGE##*:} --set image.pullPolicy=Never --set logFormat=text --set nodeSelector.lagpilot-e2e-node=infra"
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
export LAGPILOT_E2E_INFRA_NODE=lagpilot-e2e-node=infra LAGPILOT_E2E_SPARE_NODE=lagpilot-e2e-node=spare
export LAGPILOT_E2E_CLOCKSKEW_IMAGE=$CLOCKSKEW_IMAGE LAGPILOT_E2E_KAFKA_IMAGE=$KAFKA_IMAGE
# One run of each fault scenario in `make test`; LAGPILOT_E2E_FAULT_RUNS=3 for the three-in-a-row check.
export LAGPILOT_E2E_FAULT_RUNS=${LAGPILOT_E2E_FAULT_RUNS:-1}
export LAGPILOT_E2E_HELM=$HELM LAGPILOT_E2E_HELM_INSTALL=$HELM_INSTALL LAGPILOT_E2E_HELM_RELEASE=$RELEASE
export LAGPILOT_E2E_OPERATOR_NAMESPACE=$OPERATOR_NS
# Each fault run's verdict line (lost, out of order, duplicates, overlap) is shown at the end, passing or not.
export LAGPILOT_E2E_VERDICTS=$LOGS/fault-verdicts.txt
rm -f "$LAGPILOT_E2E_VERDICTS"
status=0
# shellcheck disable=SC2086
# The kind fault suite (marker `faults`: frozen node, API black-hole, clock skew, broker failover, rollouts
# under them) runs in every `make test`, one run of each scenario. LAGPILOT_E2E_FAULTS=0 leaves it out on
# purpose (about 13 minutes), and says so.
markers=e2e
if [ "${LAGPILOT_E2E_FAULTS:-1}" = 0 ]; then
  markers="e2e and not faults"
  step "LAGPILOT_E2E_FAULTS=0: the kind fault suite is NOT run"
fi
"$PY" -m pytest -p no:cacheprovider tests/e2e -m "$markers" -v ${PYTEST_ARGS:-} || status=$?
if [ -s "$LAGPILOT_E2E_VERDICTS" ]; then
  step "fault verdicts ($LAGPILOT_E2E_VERDICTS):"
  sed 's/^/  /' "$LAGPILOT_E2E_VERDICTS" >&2 || true
fi
if [ "$status" != 0 ]; then
  step "e2e failed (exit $status): operator logs in $LOGS/operator.log"
  kubectl -n "$OPERATOR_NS" logs deploy/"$RELEASE" --tail=500 > "$LOGS/operator.log" 2>&1 || true
  kubectl get consumergroups -A -o yaml > "$LOGS/consumergroups.yaml" 2>&1 || true
fi
exit "$status"
