#!/usr/bin/env bash
# Lag read time and requests per poll for 1/100/1000 partitions; scaling trace vs a KEDA-style rule.
set -euo pipefail
cd "$(dirname "$0")/../.."
.venv/bin/python bench/lag/bench_read.py
.venv/bin/python bench/lag/bench_scaling.py
