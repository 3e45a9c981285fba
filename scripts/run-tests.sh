#!/usr/bin/env bash
# Every test: unit and lab tests (pytest over tests/, without tests/e2e), then the end-to-end suite on a
# kind cluster (scripts/e2e-kind.sh: Docker engine, offline-built images, 3 nodes, Kafka, the chart).
# Fails on any failure, and also when no test ran (pytest exit 5). With pytest arguments (a path, -k)
# only pytest runs; LAGPILOT_KIND=0 skips the kind stage on purpose (it then says so).
set -uo pipefail
cd "$(dirname "$0")/.."
# Figures of passing tests (e.g. the retry park's soak: RSS and commits over a 10-minute outage), shown after
# pytest, since pytest keeps the output of passing tests.
export LAGPILOT_TEST_FIGURES=${LAGPILOT_TEST_FIGURES:-$PWD/build/test-figures.txt}
mkdir -p "$(dirname "$LAGPILOT_TEST_FIGURES")" && rm -f "$LAGPILOT_TEST_FIGURES"
.venv/bin/pytest -p no:cacheprovider --ignore=tests/e2e "$@"
rc=$?
if [ -s "$LAGPILOT_TEST_FIGURES" ]; then
  echo "run-tests: figures of passing tests ($LAGPILOT_TEST_FIGURES):" >&2
  sed 's/^/  /' "$LAGPILOT_TEST_FIGURES" >&2 || true
fi
if [ $rc -eq 5 ]; then echo "run-tests: pytest collected no tests" >&2; exit 1; fi
[ $rc -eq 0 ] || exit $rc
if [ $# -gt 0 ]; then exit 0; fi
if [ "${LAGPILOT_KIND:-1}" = 0 ]; then echo "run-tests: LAGPILOT_KIND=0: the kind e2e suite was NOT run" >&2; exit 0; fi
bash scripts/e2e-kind.sh
