"""The resync loop's request queue: watch triggers coalesce per group (one queued, one running, one rerun
when a request arrives while it runs), so a burst of events for one group never holds several threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from lagpilot_operator import handlers
from lagpilot_operator.handlers import ResyncLoop

pytestmark = pytest.mark.unit


class _Runs:
    """Stands in for run_reconcile: records each run and blocks until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, _ctx: Any, body: Any) -> str:
        with self.lock:
            self.started.append(body["metadata"]["name"])
        self.release.wait(10)
        return "Idle"

    def count(self, name: str) -> int:
        with self.lock:
            return self.started.count(name)


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> _Runs:
    r = _Runs()
    monkeypatch.setattr(handlers, "run_reconcile", r)
    return r


def test_requests_while_running_coalesce_into_one_rerun(runs: _Runs) -> None:
    loop = ResyncLoop(ctx=None, threads=4)  # type: ignore[arg-type]
    try:
        assert loop.request(("ns", "a"))
        _wait(lambda: runs.count("a") == 1)
        assert loop.request(("ns", "a"))  # while it runs: one rerun is marked...
        for _ in range(5):
            assert not loop.request(("ns", "a"))  # ...and only one
        runs.release.set()
        _wait(lambda: runs.count("a") == 2)
        time.sleep(0.2)
        assert runs.count("a") == 2
    finally:
        runs.release.set()
        loop.stop()


def test_requests_while_queued_are_one_and_groups_do_not_wait_for_each_other(runs: _Runs) -> None:
    loop = ResyncLoop(ctx=None, threads=2)  # type: ignore[arg-type]
    try:
        loop.request(("ns", "busy1"))
        loop.request(("ns", "busy2"))
        _wait(lambda: runs.count("busy1") == 1 and runs.count("busy2") == 1)  # both threads held
        assert loop.request(("ns", "b"))
        assert not loop.request(("ns", "b"))  # already queued
        runs.release.set()
        _wait(lambda: runs.count("b") == 1)
        time.sleep(0.2)
        assert runs.count("b") == 1
    finally:
        runs.release.set()
        loop.stop()


def test_no_request_is_taken_once_stopping(runs: _Runs) -> None:
    loop = ResyncLoop(ctx=None, threads=1)  # type: ignore[arg-type]
    loop.stop()
    assert not loop.request(("ns", "a"))
    assert runs.count("a") == 0
