#!/usr/bin/env bash
# A Docker engine for kind runs: install it from Debian when missing, start it when it is not running,
# and stop it afterwards only if this script started it (by the pid it recorded).
#
#   scripts/docker-engine.sh start   prints "started" or "running" (an engine that was already there)
#   scripts/docker-engine.sh stop    stops the engine this script started; leaves any other alone
#
# Where the capability bounding set lacks capabilities that `docker run --privileged` asks for (this CI
# sandbox lacks CAP_SYS_RESOURCE, so runc fails with "unable to apply caps"), dockerd's default runtime
# becomes scripts/docker/runc-capfilter, which drops them from each container's spec before runc runs.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${LAGPILOT_CACHE_DIR:-$HOME/.cache/lagpilot}
RUN=$CACHE/run
LOG=$CACHE/logs/dockerd.log
PIDFILE=$RUN/dockerd.pid
WRAPPER=/usr/local/lib/lagpilot/runc-capfilter
mkdir -p "$RUN" "$(dirname "$LOG")"
say() { printf '[docker-engine] %s\n' "$*" >&2; }
fail() { printf '[docker-engine] FAILED: %s (log: %s)\n' "$1" "$2" >&2; exit 1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

engine_up() { docker info >/dev/null 2>&1; }

install_packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  [ ${#need[@]} = 0 ] && return
  say "installing Debian packages: ${need[*]}"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${need[@]}"; } > "$CACHE/logs/docker-apt.log" 2>&1 \
    || fail "apt-get install ${need[*]}" "$CACHE/logs/docker-apt.log"
}

# 0 when the bounding set holds every capability runc knows (bits 0-40).
full_bounding_set() {
  local bnd; bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  (( (16#$bnd & 16#1ffffffffff) == 16#1ffffffffff ))
}

configure_runtime() {
  if full_bounding_set; then return; fi
  say "capability bounding set $(awk '/^CapBnd:/ {print $2}' /proc/self/status) lacks capabilities privileged containers ask for: installing the runc wrapper $WRAPPER as dockerd's default runtime"
  $SUDO install -D -m 0755 scripts/docker/runc-capfilter "$WRAPPER"
  local conf=/etc/docker/daemon.json
  if [ -f "$conf" ] && ! grep -q lagpilot-runc "$conf"; then
    say "note: $conf exists and is not ours; leaving it as is (privileged containers may fail)"; return
  fi
  $SUDO mkdir -p /etc/docker
  printf '{"runtimes": {"lagpilot-runc": {"path": "%s"}}, "default-runtime": "lagpilot-runc"}\n' "$WRAPPER" \
    | $SUDO tee "$conf" >/dev/null
}

start() {
  if engine_up; then echo running; return; fi
  install_packages
  configure_runtime
  say "starting dockerd (log: $LOG)"
  setsid $SUDO dockerd > "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 120); do
    if engine_up; then say "dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null) is up (pid $(cat "$PIDFILE"))"; echo started; return; fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then rm -f "$PIDFILE"; fail "dockerd exited while starting" "$LOG"; fi
    sleep 0.5
  done
  stop >/dev/null 2>&1 || true
  fail "dockerd did not answer within 60s" "$LOG"
}

stop() {
  [ -f "$PIDFILE" ] || { say "no engine started by this script"; return; }
  local pid; pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { say "dockerd did not stop in 30s: killing it"; kill -9 "$pid"; }
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
