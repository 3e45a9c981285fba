#!/usr/bin/env bash
# Container images for kind runs, built here when they cannot be pulled, and cached as `docker save`
# archives under ${LAGPILOT_CACHE_DIR:-~/.cache/lagpilot}/images keyed by version and a hash of their
# inputs, so a fresh clone on the same machine loads them in seconds instead of rebuilding.
#
#   scripts/images.sh all        node, kafka, python and lagpilot images; prints NAME=IMAGE lines
#   scripts/images.sh NAME       one of: debian node kafka python lagpilot clockskew (a test image;
#                                `clockskew IMAGE` builds it on an existing lagpilot image)
#
# With a registry in reach (a laptop, a hosted runner) the official images are used: kindest/node,
# apache/kafka, python. Here nothing can be pulled, so each is built from Debian packages, the jars and
# Go-built binaries in the cache. LAGPILOT_OFFLINE_IMAGES=1 builds offline even where pulls work.
# Needs a running Docker engine (scripts/docker-engine.sh start). Each step logs to $LOGS/<step>.log;
# a failed step prints one line naming the step and that log.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
IMAGES=$CACHE/images
LOGS=${LAGPILOT_IMAGE_LOGS:-$CACHE/logs/images}
K8S_VERSION=${LAGPILOT_K8S_VERSION:-v1.34.4}
KAFKA_VERSION=${LAGPILOT_KAFKA_VERSION:-3.9.1}
KIND_VERSION=${LAGPILOT_KIND_VERSION:-v0.33.0}
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${LAGPILOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
OFFLINE=${LAGPILOT_OFFLINE_IMAGES:-0}
mkdir -p "$IMAGES" "$LOGS"
STEP_PREFIX=images
# shellcheck source=lib/steps.sh
source scripts/lib/steps.sh

hash_of() { cat "$@" | sha256sum | cut -c1-10; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# cached NAME TAG BUILD_FN: TAG present, else loaded from its archive, else built and archived.
cached() {
  local name=$1 tag=$2 build=$3
  local archive=$IMAGES/${tag//[\/:]/_}.tar
  if have_image "$tag"; then return; fi
  if [ -f "$archive" ]; then
    step "$name: loading $tag from $archive"
    run "$name-load" docker load -i "$archive"; return
  fi
  local t0; t0=$(date +%s)
  step "$name: building $tag (first run on this machine)"
  "$build" "$tag"
  run "$name-save" docker save -o "$archive.tmp" "$tag"
  mv "$archive.tmp" "$archive"
  # Older builds of the same image (other input hashes) are of no further use.
  local repo=${tag%%:*} old
  for old in "$IMAGES/${repo//[\/:]/_}_"*.tar; do [ "$old" = "$archive" ] || rm -f "$old"; done
  step "$name: built in $(( $(date +%s) - t0 ))s, archived as $archive"
}

# pulled IMAGE: the official image where a registry answers (and offline builds are not forced).
pulled() {
  [ "$OFFLINE" = 1 ] && return 1
  have_image "$1" && return 0
  timeout 300 docker pull -q "$1" >/dev/null 2>&1
}

context() { local d; d=$(mktemp -d "${TMPDIR:-/tmp}/lagpilot-image.XXXXXX"); echo "$d"; }

# --- Debian base: debootstrap'd minbase rootfs, imported --------------------------------------------
DEBIAN_TAG=lagpilot-local/debian:$DEBIAN_SUITE-$(echo "minbase $DEBIAN_SUITE v1" | sha256sum | cut -c1-10)
build_debian() {
  command -v debootstrap >/dev/null || fail "debian: debootstrap is not installed" "scripts/docker-engine.sh"
  local dir; dir=$(context)
  run debian-debootstrap debootstrap --variant=minbase "$DEBIAN_SUITE" "$dir/rootfs" "$DEBIAN_MIRROR"
  rm -rf "$dir/rootfs/var/lib/apt/lists/"* "$dir/rootfs/var/cache/apt/archives/"*.deb
  run debian-import bash -c "tar -C '$dir/rootfs' -c . | docker import -c 'CMD [\"bash\"]' - '$1'"
  rm -rf "$dir"
}
image_debian() { cached debian "$DEBIAN_TAG" build_debian; echo "$DEBIAN_TAG"; }

# --- Python base: stands in for python:3.11-slim-bookworm ------------------------------------------
image_python() {
  if pulled python:3.11-slim-bookworm; then echo python:3.11-slim-bookworm; return; fi
  image_debian >/dev/null
  local ca_dir=${LAGPILOT_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
  local tag=lagpilot-local/python:3.11-$(hash_of scripts/images/python/Dockerfile <(echo "$DEBIAN_TAG"; cat "$ca_dir"/*.crt 2>/dev/null))
  build_python() {
    local dir; dir=$(context)
    cp scripts/images/python/Dockerfile "$dir/"; mkdir -p "$dir/ca"
    cp "$ca_dir"/*.crt "$dir/ca/" 2>/dev/null || true
    run python-build docker build --force-rm --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" -t "$1" "$dir"
    rm -rf "$dir"
  }
  cached python "$tag" build_python; echo "$tag"
}

# --- Kafka: the cached broker jars on Debian's JRE ---------------------------------------------------
image_kafka() {
  if pulled "apache/kafka:$KAFKA_VERSION"; then echo "apache/kafka:$KAFKA_VERSION"; return; fi
  image_debian >/dev/null
  bash scripts/fetch-kafka.sh >&2
  local libs=$CACHE/kafka-$KAFKA_VERSION/libs
  local tag=lagpilot-local/kafka:$KAFKA_VERSION-$(hash_of scripts/images/kafka/Dockerfile scripts/images/kafka/run <(echo "$DEBIAN_TAG"; ls "$libs"))
  build_kafka() {
    local dir; dir=$(context)
    cp -r scripts/images/kafka/. "$dir/"; cp -r "$libs" "$dir/libs"
    run kafka-build docker build --force-rm --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" -t "$1" "$dir"
    rm -rf "$dir"
  }
  cached kafka "$tag" build_kafka; echo "$tag"
}

# --- kind node image --------------------------------------------------------------------------------
kind_module_dir() {
  GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

# One control-plane image: a static binary on scratch (or on Debian with the tools it runs).
component_image() {
  local ref=$1 bin=$2 dir; dir=$(context)
  local base=scratch extra=""
  case "$ref" in
    */kube-proxy:*)  # kube-proxy runs iptables and conntrack
      base=$DEBIAN_TAG
      extra='RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables conntrack nftables ipset && rm -rf /var/lib/apt/lists/*' ;;
  esac
  cp "$bin" "$dir/"
  local name; name=$(basename "$bin")
  local entry="/usr/local/bin/$name"
  case "$name" in coredns) entry=/coredns ;; pause) entry=/pause ;; esac
  cat > "$dir/Dockerfile" <<EOF
FROM $base
$extra
COPY $name $entry
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["$entry"]
EOF
  run "node-component-$name" docker build --force-rm -t "$ref" "$dir"
  rm -rf "$dir"
}

image_node() {
  if [ -n "${LAGPILOT_KIND_NODE_IMAGE:-}" ]; then echo "$LAGPILOT_KIND_NODE_IMAGE"; return; fi
  if pulled "kindest/node:$K8S_VERSION"; then echo "kindest/node:$K8S_VERSION"; return; fi
  image_debian >/dev/null
  run node-binaries bash scripts/build-k8s.sh node
  local kbin=$CACHE/kubernetes-$K8S_VERSION/bin
  local kind_files; kind_files=$(kind_module_dir)/images/base/files
  [ -d "$kind_files" ] || fail "node: kind $KIND_VERSION module files not found" "$LOGS/node-binaries.log"
  local inputs=(scripts/images/kind-node/Dockerfile scripts/images/kind-node/manifests/*
                scripts/images/kind-cni/* scripts/docker/runc-capfilter scripts/build-k8s.sh scripts/images.sh)
  local key; key=$(hash_of "${inputs[@]}" <(echo "$DEBIAN_TAG $KIND_VERSION"))
  local tag=lagpilot-local/kind-node:$K8S_VERSION-$key
  local cni_tag=lagpilot-local/kind-cni:$key
  build_node() {
    local final=$1 dir; dir=$(context)
    # The pod network image, imported into the node below.
    mkdir -p "$dir/cni"; cp scripts/images/kind-cni/* "$dir/cni/"; cp "$kbin/kubectl" "$dir/cni/"
    run node-cni-build docker build --force-rm --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" -t "$cni_tag" "$dir/cni"
    # Every image kubeadm asks for, under the exact names it prints.
    local -a refs; mapfile -t refs < <("$kbin/kubeadm" config images list --kubernetes-version "$K8S_VERSION" 2>/dev/null)
    [ ${#refs[@]} -gt 0 ] || fail "node: kubeadm config images list printed nothing" "$LOGS/node-binaries.log"
    local pause_ref="" ref
    for ref in "${refs[@]}"; do
      case "$ref" in
        */kube-apiserver:*|*/kube-controller-manager:*|*/kube-scheduler:*|*/kube-proxy:*)
          local n=${ref##*/}; component_image "$ref" "$kbin/${n%%:*}" ;;
        */etcd:*) local v=${ref##*:}; component_image "$ref" "$CACHE/etcd-v${v%-*}/bin/etcd" ;;
        */coredns:*) component_image "$ref" "$CACHE/coredns-${ref##*:}/bin/coredns" ;;
        */pause:*) pause_ref=$ref; component_image "$ref" "$CACHE/pause-${ref##*:}/bin/pause" ;;
        *) fail "node: no offline build for $ref" "$LOGS/node-binaries.log" ;;
      esac
    done
    # The node filesystem.
    mkdir -p "$dir/node/kind" "$dir/node/bin" "$dir/node/manifests"
    cp -r "$kind_files/." "$dir/node/kind/"; chmod -R u+w "$dir/node/kind"
    cp scripts/images/kind-node/Dockerfile "$dir/node/"
    cp scripts/docker/runc-capfilter "$dir/node/"
    cp "$kbin/kubelet" "$kbin/kubeadm" "$kbin/kubectl" "$CACHE/crictl-${LAGPILOT_CRICTL_VERSION:-v1.34.0}/bin/crictl" "$dir/node/bin/"
    sed "s#LAGPILOT_KIND_CNI_IMAGE#$cni_tag#" scripts/images/kind-node/manifests/default-cni.yaml > "$dir/node/manifests/default-cni.yaml"
    cp scripts/images/kind-node/manifests/default-storage.yaml "$dir/node/manifests/"
    run node-build docker build --force-rm --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" --build-arg K8S_VERSION="$K8S_VERSION" \
      --build-arg PAUSE_IMAGE="$pause_ref" -t "$final-stage" "$dir/node"
    # Import the images into the node's containerd (as `kind build node-image` does), then commit.
    local cid
    cid=$(docker run -d --privileged --entrypoint /bin/sleep "$final-stage" infinity)
    # A failed step below exits this (sub)shell: the build container goes with it.
    trap "docker rm -f '$cid' >/dev/null 2>&1" EXIT
    run node-containerd docker exec "$cid" bash -c 'nohup containerd >/tmp/containerd.log 2>&1 &
      for i in $(seq 100); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done
      cat /tmp/containerd.log; exit 1'
    for ref in "${refs[@]}" "$cni_tag"; do
      run "node-import" bash -c "docker save '$ref' | docker exec -i '$cid' ctr --namespace=k8s.io images import \
        --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests -"
    done
    run node-import-list docker exec "$cid" ctr --namespace=k8s.io images ls -q
    docker exec "$cid" bash -c 'pkill containerd; for i in $(seq 50); do pgrep containerd >/dev/null || exit 0; sleep 0.2; done' || true
    run node-commit docker commit \
      --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' --change 'CMD []' \
      "$cid" "$final"
    docker rm -f "$cid" >/dev/null; trap - EXIT
    docker rmi "$final-stage" "$cni_tag" "${refs[@]}" >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  cached node "$tag" build_node; echo "$tag"
}

# --- lagpilot: the project's own Dockerfile on the Python base (rebuilt each run; layers are cached) --
image_lagpilot() {
  local py; py=$(image_python)
  local tag=${LAGPILOT_IMAGE:-lagpilot:e2e}
  step "lagpilot: docker build --force-rm $tag (PYTHON_IMAGE=$py)"
  run lagpilot-build docker build --force-rm --build-arg PYTHON_IMAGE="$py" -t "$tag" .
  echo "$tag"
}

# The lagpilot image plus a wall-clock skew hook, for the clock-skew fault test; rebuilt on each lagpilot build
# (Docker's layer cache keeps it to seconds when the lagpilot image did not change).
image_clockskew() {
  local base=${1:-}; [ -n "$base" ] || base=$(image_lagpilot)
  local tag=${LAGPILOT_CLOCKSKEW_IMAGE:-lagpilot-clockskew:e2e}
  step "clockskew: docker build --force-rm $tag (on $base)"
  run clockskew-build docker build --force-rm --build-arg LAGPILOT_IMAGE="$base" -t "$tag" scripts/images/clockskew
  echo "$tag"
}

case "${1:-all}" in
  debian) image_debian ;;
  python) image_python ;;
  kafka) image_kafka ;;
  node) image_node ;;
  lagpilot) image_lagpilot ;;
  clockskew) image_clockskew "${2:-}" ;;  # [LAGPILOT_IMAGE already built]
  all)
    node=$(image_node); kafka=$(image_kafka); lagpilot=$(image_lagpilot)
    printf 'NODE_IMAGE=%s\nKAFKA_IMAGE=%s\nLAGPILOT_IMAGE=%s\n' "$node" "$kafka" "$lagpilot" ;;
  *) echo "usage: $0 [all|debian|python|kafka|node|lagpilot|clockskew]" >&2; exit 2 ;;
esac
