"""When the periodic resync reconciles a group (`resync_due`): table-driven, and as properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.workload.resync import Settled, full_resync_seconds, resync_due

pytestmark = pytest.mark.unit
QUIET = Settled("100", True, "conn", "orders", 6, at=1000.0)


@pytest.mark.parametrize(("settled", "rv", "partitions", "now", "due"), [
    (None, "100", None, 0.0, True),  # never reconciled here, served since ever
    (QUIET, "100", 6, 1010.0, False),  # within the interval: no
    (QUIET, "100", 6, 1031.0, False),  # quiet and unchanged: waits for the full resync
    (QUIET, "101", 6, 1031.0, True),  # the CR changed
    (QUIET, "100", 8, 1031.0, True),  # the brokers report more partitions
    (QUIET, "100", None, 1031.0, False),  # the lag rounds have no count (yet): nothing new
    (Settled("100", False, "conn", "orders", 6, 1000.0), "100", 6, 1031.0, True),  # it wrote or is Degraded
    (Settled("100", False, "conn", "orders", 6, 1000.0), "100", 6, 1020.0, False),  # ... but not sooner
    (QUIET, "100", 6, 1600.0, True),  # the safety net
    (QUIET, "101", 6, 1020.0, False),  # a reconcile 20 s ago saw it: within the interval anyway
])
def test_resync_due(settled: Settled | None, rv: str, partitions: int | None, now: float, due: bool) -> None:
    assert resync_due(settled, rv, partitions, now, interval=30.0, full_every=600.0) is due


@given(st.floats(0, 10_000), st.text(max_size=3), st.none() | st.integers(1, 20), st.booleans())
def test_never_more_often_than_the_interval_and_never_rarer_than_the_full_period(
        age: float, rv: str, partitions: int | None, quiet: bool) -> None:
    settled = Settled("1", quiet, "c", "t", 6, at=0.0)
    due = resync_due(settled, rv, partitions, age, interval=30.0, full_every=600.0)
    if age < 30.0:
        assert not due
    if age >= 600.0:
        assert due


@pytest.mark.parametrize(("served_at", "now", "due"), [
    (1000.0, 1000.0, False),  # just served: kopf's resume/create handler is reconciling it
    (1000.0, 1029.0, False),
    (1000.0, 1030.0, True),  # no reconcile within the interval (the handler keeps failing): the resync steps in
])
def test_a_group_never_reconciled_waits_for_kopfs_first_reconcile(served_at: float, now: float, due: bool) -> None:
    assert resync_due(None, "1", 6, now, interval=30.0, full_every=600.0, served_at=served_at) is due


def test_full_resync_is_spread_over_a_stable_band() -> None:
    values = [full_resync_seconds(600.0, ("ns", f"g{i}")) for i in range(1000)]
    assert all(450.0 <= v < 750.0 for v in values)
    assert max(values) - min(values) > 250.0  # spread, not all in one second
    assert full_resync_seconds(600.0, ("ns", "g1")) == values[1]  # stable per group
