#!/usr/bin/env bash
# mypy over the three package roots as they are in the tree (mypy_path and packages in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mypy --config-file pyproject.toml
