#!/usr/bin/env bash
# mypy over the installed package layout: operator/ and consumer/ are lagpilot.operator/lagpilot.consumer,
# which mypy cannot see through the editable-install finder, so check a shadow tree of symlinks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shadow=build/typecheck
rm -rf "$shadow"; mkdir -p "$shadow/lagpilot"
for entry in lagpilot/*; do
  name=$(basename "$entry"); [ "$name" = "__pycache__" ] && continue
  ln -s "$root/$entry" "$shadow/lagpilot/$name"
done
ln -s "$root/operator" "$shadow/lagpilot/operator"
ln -s "$root/consumer" "$shadow/lagpilot/consumer"
cd "$shadow" && "$root/.venv/bin/mypy" --config-file "$root/pyproject.toml" -p lagpilot
