"""Pod addresses are claimed machine-wide, so two labs (parallel test sessions, a person's lab beside the
tests) never give two pods the same 127.0.0.N."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lagpilot.lab import runner

pytestmark = pytest.mark.unit


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(runner, "ADDRESS_CLAIMS", tmp_path / "claims")
    return tmp_path / "claims"


def test_an_address_is_claimed_once_until_released(claims: Path) -> None:
    assert runner.claim_address("127.0.0.2")
    assert not runner.claim_address("127.0.0.2")
    runner.release_address("127.0.0.2")
    assert runner.claim_address("127.0.0.2")


def test_a_live_runners_claim_is_respected_and_a_dead_ones_taken_over(claims: Path) -> None:
    claims.mkdir()
    other = subprocess.Popen(["sleep", "30"])
    try:
        (claims / "127.0.0.3").write_text(str(other.pid))
        assert not runner.claim_address("127.0.0.3")
    finally:
        other.kill()
        other.wait()
    assert runner.claim_address("127.0.0.3")


def test_allocation_skips_addresses_claimed_by_another_lab(claims: Path) -> None:
    claims.mkdir()
    holder = subprocess.Popen(["sleep", "30"])
    try:
        (claims / "127.0.0.2").write_text(str(holder.pid))
        r = runner.Runner.__new__(runner.Runner)
        r.ips = {}
        assert r.allocate_ip("pod-a") == "127.0.0.3"
        assert r.allocate_ip("pod-b") == "127.0.0.4"
        assert r.allocate_ip("pod-a") == "127.0.0.3"
    finally:
        holder.kill()
        holder.wait()
