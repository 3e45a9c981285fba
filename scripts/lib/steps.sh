# Step helpers shared by the kind scripts (source it after setting STEP_PREFIX and LOGS): one line per
# step on stderr, each command's output in $LOGS/<step>.log, and a failed step reported in one line that
# names it, says how it failed and where its log is.
step() { printf '[%s] %s\n' "$STEP_PREFIX" "$*" >&2; }
fail() { printf '[%s] FAILED: %s (log: %s)\n' "$STEP_PREFIX" "$1" "$2" >&2; exit 1; }
run() {
  local name=$1; shift
  local log=$LOGS/$name.log rc=0
  "$@" > "$log" 2>&1 || rc=$?
  [ $rc = 0 ] && return
  tail -n 20 "$log" | sed 's/^/    /' >&2
  [ $rc = 124 ] && fail "$name timed out" "$log"
  fail "$name exited with $rc" "$log"
}
timed() { local t0; t0=$(date +%s); "$@"; step "  ($(( $(date +%s) - t0 ))s)"; }
