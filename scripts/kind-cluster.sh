#!/usr/bin/env bash
# A kind cluster with Kafka in it: the lab's kind runtime (`lagpilot lab up --runtime kind`) and the base
# of scripts/e2e-kind.sh.
#
#   scripts/kind-cluster.sh up      Docker engine (started if none runs), images (built offline when they
#                                   cannot be pulled), a 3-node cluster from kind-config.yaml, the images
#                                   loaded, single-node Kafka (tests/e2e/kafka.yaml); writes $STATE
#   scripts/kind-cluster.sh down    deletes the cluster; stops the engine if `up` started it
#   scripts/kind-cluster.sh status  prints $STATE with the node containers' state; exit 1 when not running
#
# $STATE (JSON): runtime "kind", kubeconfig, bootstrap_servers (from this host: the NodePort mapped to
# 127.0.0.1), bootstrap_servers_in_cluster (for ConsumerGroups), host_address (how pods reach a server on
# this host: the kind network's gateway), nodes (container names), images, engine ("started"/"running").
# Every step logs to $LOGS/<step>.log; a failed step prints one line naming it and its log.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CLUSTER=${LAGPILOT_KIND_CLUSTER:-lagpilot}
KIND_VERSION=${LAGPILOT_KIND_VERSION:-v0.33.0}
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
DIR=${LAGPILOT_KIND_DIR:-${LAGPILOT_LAB_DIR:-$CACHE/lab}/kind}
STATE=$DIR/state.json
LOGS=$DIR/logs
KUBECONFIG_FILE=$DIR/kubeconfig
mkdir -p "$LOGS"
STEP_PREFIX=kind-cluster
# shellcheck source=lib/steps.sh
source scripts/lib/steps.sh
export PATH=$CACHE/kubernetes-$K8S_VERSION/bin:$PATH
KIND=$CACHE/kind-$KIND_VERSION/bin/kind

tools() {
  run build-kubectl bash scripts/build-k8s.sh kubernetes
  if [ ! -x "$KIND" ]; then
    step "kind $KIND_VERSION: go install sigs.k8s.io/kind@$KIND_VERSION"
    run kind-install env GOBIN="$(dirname "$KIND")" CGO_ENABLED=0 GOFLAGS=-mod=mod go install "sigs.k8s.io/kind@$KIND_VERSION"
  fi
}

up() {
  tools
  local engine t0; t0=$(date +%s)
  step "Docker engine"
  engine=$(bash scripts/docker-engine.sh start)
  echo "$engine" > "$DIR/engine"
  # From here on a failure takes down what this run made: the cluster, and the engine if it started it.
  trap 'rc=$?; [ $rc = 0 ] || { step "cleaning up after the failure"; down >/dev/null 2>&1 || true; }; exit $rc' EXIT
  step "images (built here and cached under $CACHE/images when they cannot be pulled)"
  local images; images=$(bash scripts/images.sh all)
  eval "$images"
  step "  node $NODE_IMAGE, kafka $KAFKA_IMAGE, lagpilot $LAGPILOT_IMAGE"

  step "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
  "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  timed run kind-create timeout "${LAGPILOT_KIND_CREATE_TIMEOUT:-600}" "$KIND" create cluster --name "$CLUSTER" \
    --config kind-config.yaml --image "$NODE_IMAGE" --kubeconfig "$KUBECONFIG_FILE" --wait 300s
  export KUBECONFIG=$KUBECONFIG_FILE
  run nodes-ready kubectl wait --for=condition=Ready nodes --all --timeout=180s
  # CoreDNS off the spare node, which the fault tests freeze (kind-config.yaml).
  run coredns-pin kubectl -n kube-system patch deployment coredns --type merge \
    -p '{"spec":{"template":{"spec":{"nodeSelector":{"lagpilot-e2e-node":"infra"}}}}}'
  timed run coredns-ready kubectl -n kube-system rollout status deployment/coredns --timeout=180s

  step "loading images into the nodes"
  timed run kind-load "$KIND" load docker-image --name "$CLUSTER" "$LAGPILOT_IMAGE" "$KAFKA_IMAGE"

  step "starting Kafka in the cluster"
  sed "s#image: apache/kafka:.*#image: $KAFKA_IMAGE#" tests/e2e/kafka.yaml > "$DIR/kafka.yaml"
  run kafka-apply kubectl apply -f "$DIR/kafka.yaml"
  timed run kafka-ready kubectl -n lagpilot-e2e rollout status deploy/kafka --timeout=300s

  local gateway nodes
  gateway=$(docker network inspect kind -f '{{range .IPAM.Config}}{{if .Gateway}}{{.Gateway}} {{end}}{{end}}' \
            | tr ' ' '\n' | grep -E '^[0-9]+\.' | head -1)
  nodes=$("$KIND" get nodes --name "$CLUSTER" | sort | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().split()))')
  python3 - "$STATE" <<EOF
import json, sys
json.dump({"runtime": "kind", "cluster": "$CLUSTER", "kubeconfig": "$KUBECONFIG_FILE",
           "bootstrap_servers": "localhost:30092",
           "bootstrap_servers_in_cluster": "kafka.lagpilot-e2e.svc.cluster.local:9092",
           "host_address": "$gateway", "nodes": $nodes, "engine": "$engine",
           "images": {"node": "$NODE_IMAGE", "kafka": "$KAFKA_IMAGE", "lagpilot": "$LAGPILOT_IMAGE"}},
          open(sys.argv[1], "w"), indent=2)
EOF
  trap - EXIT
  step "cluster $CLUSTER up in $(( $(date +%s) - t0 ))s: KUBECONFIG=$KUBECONFIG_FILE"
}

down() {
  if [ -x "$KIND" ] && docker info >/dev/null 2>&1; then
    step "deleting cluster $CLUSTER"
    "$KIND" delete cluster --name "$CLUSTER" > "$LOGS/kind-delete.log" 2>&1 || step "kind delete failed (log: $LOGS/kind-delete.log)"
  fi
  if [ "$(cat "$DIR/engine" 2>/dev/null)" = started ]; then bash scripts/docker-engine.sh stop; fi
  rm -f "$STATE" "$DIR/engine"
}

status() {
  [ -f "$STATE" ] || { echo '{"runtime": "kind", "running": false}'; exit 1; }
  python3 - "$STATE" <<'EOF'
import json, subprocess, sys
st = json.load(open(sys.argv[1]))
def running(name: str) -> bool:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    return out.stdout.strip() == "true"
st["node_state"] = {n: ("running" if running(n) else "stopped") for n in st["nodes"]}
st["running"] = all(v == "running" for v in st["node_state"].values())
print(json.dumps(st, indent=2))
sys.exit(0 if st["running"] else 1)
EOF
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
