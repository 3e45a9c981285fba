"""The lab's kind runtime: a thin shell around scripts/kind-cluster.sh, which owns the Docker engine,
the offline image builds, the cluster and Kafka in it. State lives in <lab dir>/kind/state.json."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lagpilot import paths


def kind_dir() -> Path:
    return paths.lab_dir() / "kind"


def _script(action: str, on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAGPILOT_KIND_DIR": str(kind_dir())}
    script = paths.project_root() / "scripts" / "kind-cluster.sh"
    if on_line is None:
        return subprocess.run(["bash", str(script), action], capture_output=True, text=True, env=env)
    proc = subprocess.Popen(["bash", str(script), action], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        on_line(line.rstrip())
    return subprocess.CompletedProcess(proc.args, proc.wait(), "".join(lines), "")


def kind_up(progress: Callable[[str], None]) -> dict[str, Any]:
    """Bring the kind lab up (idempotent: a running one is kept) and return its status."""
    current = kind_status()
    if current and current.get("running"):
        return current
    done = _script("up", progress)
    if done.returncode != 0:
        raise RuntimeError("kind lab did not come up (see the FAILED line above)")
    return kind_status() or {}


def kind_down() -> None:
    _script("down")


def kind_status() -> dict[str, Any] | None:
    """The state scripts/kind-cluster.sh wrote, with the node containers' state; None when never started."""
    if not (kind_dir() / "state.json").exists():
        return None
    out = _script("status")
    try:
        return dict(json.loads(out.stdout))
    except ValueError:
        return {"runtime": "kind", "running": False, "error": out.stderr.strip()}
