"""Lag arithmetic: what one partition's offsets mean, including the corner cases users trip over."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.autoscale.offsets import build_snapshot, compute_lag

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("start", "end", "committed", "reset", "lag", "flags"),
    [
        pytest.param(0, 100, 40, "earliest", 60, set(), id="lag-is-end-minus-committed"),
        pytest.param(0, 100, 100, "earliest", 0, set(), id="caught-up-is-zero"),
        pytest.param(0, 100, None, "earliest", 100, {"no_commit"}, id="no-commit-earliest-counts-whole-log"),
        pytest.param(30, 100, None, "earliest", 70, {"no_commit"},
                     id="no-commit-earliest-counts-from-log-start-not-zero"),
        pytest.param(0, 100, None, "latest", 0, {"no_commit"}, id="no-commit-latest-is-zero"),
        pytest.param(0, 100, -1001, "earliest", 100, {"no_commit"}, id="invalid-offset-sentinel-is-no-commit"),
        pytest.param(50, 100, 20, "earliest", 50, {"behind_log_start"},
                     id="retention-deleted-counts-from-log-start-and-warns"),
        pytest.param(50, 100, 50, "earliest", 50, set(), id="committed-at-log-start-is-not-a-warning"),
        pytest.param(0, 0, None, "earliest", 0, {"no_commit"}, id="empty-topic-no-commit-is-zero"),
        pytest.param(0, 0, 0, "earliest", 0, set(), id="empty-topic-committed-zero"),
        pytest.param(100, 100, None, "earliest", 0, {"no_commit"}, id="fully-deleted-log-no-commit-is-zero"),
        pytest.param(100, 100, 10, "earliest", 0, {"behind_log_start"},
                     id="fully-deleted-log-behind-start-warns-with-zero-lag"),
        pytest.param(0, 100, 150, "earliest", 0, {"ahead_of_log_end"}, id="committed-past-log-end-clamps-to-zero"),
    ],
)
def test_compute_lag(start: int, end: int, committed: int | None, reset: str, lag: int, flags: set[str]) -> None:
    p = compute_lag("t", 0, start, end, committed, reset)  # type: ignore[arg-type]
    assert p.lag == lag
    assert {f for f in ("no_commit", "behind_log_start", "ahead_of_log_end") if getattr(p, f)} == flags
    assert p.committed == (committed if committed is not None and committed >= 0 else None)


def test_invalid_log_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        compute_lag("t", 0, 10, 5, None)


@given(start=st.integers(0, 10**9), size=st.integers(0, 10**9),
       committed=st.one_of(st.none(), st.integers(-2000, 3 * 10**9)), reset=st.sampled_from(["earliest", "latest"]))
def test_lag_never_negative_nor_more_than_the_log(start: int, size: int, committed: int | None, reset: str) -> None:
    p = compute_lag("t", 0, start, start + size, committed, reset)  # type: ignore[arg-type]
    assert 0 <= p.lag <= size
    assert start <= p.position <= start + size


def test_snapshot_sorts_partitions_and_sums() -> None:
    snap = build_snapshot("g", 1.0, starts={("t", 1): 0, ("t", 0): 0}, ends={("t", 1): 10, ("t", 0): 30},
                          committed={("t", 0): 5, ("t", 1): 10})
    assert [p.partition for p in snap.partitions] == [0, 1]
    assert (snap.total, snap.max_partition) == (25, 25)
    assert snap.warnings == []


def test_snapshot_partition_added_without_commit_follows_reset_policy() -> None:
    """A partition added to the topic has no commit yet: earliest counts its records, latest does not."""
    ends = {("t", 0): 10, ("t", 1): 10, ("t", 2): 7}
    committed = {("t", 0): 10, ("t", 1): 10}  # partition 2 is new
    earliest = build_snapshot("g", 1.0, {}, ends, committed, "earliest")
    latest = build_snapshot("g", 1.0, {}, ends, committed, "latest")
    assert [p.lag for p in earliest.partitions] == [0, 0, 7]
    assert [p.lag for p in latest.partitions] == [0, 0, 0]
    assert earliest.partitions[2].no_commit and latest.partitions[2].no_commit


def test_snapshot_of_empty_topic_is_zero() -> None:
    snap = build_snapshot("g", 1.0, {("t", 0): 0}, {("t", 0): 0}, {})
    assert (snap.total, snap.max_partition, snap.warnings) == (0, 0, [])


def test_snapshot_warns_about_deleted_records() -> None:
    snap = build_snapshot("g", 1.0, {("t", 0): 50}, {("t", 0): 80}, {("t", 0): 20})
    assert snap.total == 30
    assert snap.warnings == ["t[0]: committed offset 20 is below log-start 50: 30 records deleted unread"]
