"""Fixtures of the consumer's lab tests: a recording HTTP target and lagpilot-consumer subprocesses
(stopped at the end of each test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lagpilot.testing.consumer import ConsumerProcess
from lagpilot.testing.target import RecordingTarget


@pytest.fixture
def target() -> Iterator[RecordingTarget]:
    with RecordingTarget() as t:
        yield t


@pytest.fixture
def run_consumer(tmp_path: Path) -> Iterator[Callable[..., ConsumerProcess]]:
    procs: list[ConsumerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ConsumerProcess:
        cp = ConsumerProcess(list(args), tmp_path / f"consumer-{len(procs)}.log", env)
        procs.append(cp)
        return cp

    yield start
    for cp in procs:
        cp.close()
