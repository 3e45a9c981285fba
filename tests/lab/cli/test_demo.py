"""The README's first command, non-interactively: `lagpilot demo --once --stop-lab` on a private lab brings
up everything, delivers records in per-key order, prints the lag table, and cleans up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab


def run_demo(env: dict[str, str], *args: str) -> tuple[str, int, int]:
    out = subprocess.run([str(Path(sys.executable).parent / "lagpilot"), "demo", "--once", *args,
                          "--rate", "20", "--burst", "300"], capture_output=True, text=True, env=env,
                         timeout=900, stdin=subprocess.DEVNULL)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "COMMITTED" in out.stdout and "LAG" in out.stdout and "partitions" in out.stdout
    assert "per-key order: OK" in out.stdout
    summary = next(line for line in out.stdout.splitlines() if line.startswith("demo summary"))
    produced = int(summary.split("produced ")[1].split()[0])
    delivered = int(summary.split("delivered ")[1].split()[0])
    assert 0 < delivered <= produced and "violations 0" in summary, summary
    return summary, produced, delivered


def test_demo_once_delivers_in_order_and_prints_lag_table(tmp_path: Path) -> None:
    """Run twice on the same lab: the second run counts only what it produced and delivered, and says that
    the topic already held the first run's records (issue 14 item 11)."""
    env = {**os.environ, "LAGPILOT_LAB_DIR": str(tmp_path / "lab")}
    env.pop("KUBECONFIG", None)
    try:
        first, produced, _ = run_demo(env, "--keep-lab")
        assert "already held" not in first
        second, _, _ = run_demo(env, "--stop-lab")
    finally:  # a failed run must not leave its lab running
        subprocess.run([str(Path(sys.executable).parent / "lagpilot"), "lab", "down"], env=env,
                       capture_output=True, timeout=120, check=False)
    assert "already held" in second, second
    held = int(second.split("already held ")[1].split()[0])
    assert held >= produced  # at least everything the first run produced
    assert not (tmp_path / "lab" / "lab.json").exists()  # --stop-lab cleaned up
