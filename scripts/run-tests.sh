#!/usr/bin/env bash
# Run every test (unit, then lab); fail on any failure, and also when no test ran (pytest exit 5).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "run-tests: pytest collected no tests" >&2; exit 1; fi
exit $rc
