#!/usr/bin/env bash
# Consumer throughput beside the raw HTTP ceiling and the one-record-at-a-time baseline, and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python bench/consumer/run.py "$@"
