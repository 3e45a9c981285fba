#!/usr/bin/env bash
# One operator, 100/300/1000 ConsumerGroups on the lab: CPU, RSS, threads, API writes and Events per minute
# while nothing changes, lag polls, broker requests per lag round, spec change -> Deployment p50/p99.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python bench/operator/run.py "$@"
