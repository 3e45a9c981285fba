"""The README's first command, non-interactively: `lagpilot demo --once --stop-lab` on a private lab brings
up everything, delivers records in per-key order, prints the lag table, and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def test_demo_once_delivers_in_order_and_prints_lag_table(tmp_path: Path) -> None:
    env = {**os.environ, "LAGPILOT_LAB_DIR": str(tmp_path / "lab")}
    env.pop("KUBECONFIG", None)
    out = subprocess.run([str(Path(sys.executable).parent / "lagpilot"), "demo", "--once", "--stop-lab",
                          "--rate", "20", "--burst", "300"], capture_output=True, text=True, env=env,
                         timeout=900, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "COMMITTED" in out.stdout and "LAG" in out.stdout and "partitions" in out.stdout
    assert "per-key order: OK" in out.stdout
    summary = next(line for line in out.stdout.splitlines() if line.startswith("demo summary"))
    delivered = int(summary.split("delivered ")[1].split()[0])
    assert delivered > 0 and "violations 0" in summary
    assert not (tmp_path / "lab" / "lab.json").exists()  # --stop-lab cleaned up
