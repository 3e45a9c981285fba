#!/usr/bin/env bash
# Blue/green cut-over of 12 partitions through the hand-off protocol vs a plain Kafka rebalance, one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python bench/handoff/run.py "$@"
