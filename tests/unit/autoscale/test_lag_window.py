"""Burrow-style window evaluation: each case is a partition's history (committed, log end) per poll."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.autoscale.offsets import build_snapshot
from lagpilot_operator.autoscale.window import (
    LagStatus,
    LagWindow,
    Sample,
    add_snapshot,
    evaluate,
    evaluate_partition,
    prune,
    rates,
)

pytestmark = pytest.mark.unit

WINDOW = 100.0


def history(points: list[tuple[int | None, int]], step: float = 10.0) -> tuple[Sample, ...]:
    """(committed, log_end) per poll, `step` seconds apart; lag with the earliest reset from 0."""
    return tuple(Sample(i * step, c, e, e - (c if c is not None else 0)) for i, (c, e) in enumerate(points))


def steady(n: int, committed: int | None, end: int) -> list[tuple[int | None, int]]:
    return [(committed, end)] * n


@pytest.mark.parametrize(
    ("points", "workers_running", "status"),
    [
        pytest.param([(i * 10, i * 10) for i in range(11)], True, LagStatus.OK, id="caught-up-every-poll-is-ok"),
        pytest.param([(i * 10, i * 10 + 50) for i in range(11)], True, LagStatus.OK,
                     id="constant-lag-while-moving-is-ok"),
        pytest.param([(i * 10, 1000 - i) for i in range(11)], True, LagStatus.OK, id="draining-is-ok"),
        pytest.param(steady(11, 40, 100), True, LagStatus.STALL, id="not-moving-with-lag-and-workers-is-stall"),
        pytest.param(steady(11, 40, 100), False, LagStatus.STOP, id="not-moving-with-lag-no-workers-is-stop"),
        pytest.param(steady(11, 40, 100), None, LagStatus.STALL, id="workers-unknown-is-stall-never-stop"),
        pytest.param(steady(11, None, 100), True, LagStatus.STALL, id="never-committed-with-records-is-stall"),
        pytest.param([(40, 100 + i * 10) for i in range(11)], True, LagStatus.STALL,
                     id="not-moving-while-producing-is-stall"),
        pytest.param(steady(11, 100, 100), True, LagStatus.OK, id="idle-topic-caught-up-is-ok"),
        pytest.param([(i, 100 + i * 10) for i in range(11)], True, LagStatus.WARN,
                     id="moving-but-lag-growing-whole-window-is-warn"),
        pytest.param([(i, 100 + i * 10) for i in range(10)] + [(195, 200)], True, LagStatus.OK,
                     id="lag-fell-at-last-poll-is-ok"),
        pytest.param([(0, 0), *steady(10, 0, 100)], True, LagStatus.OK,
                     id="zero-lag-within-window-is-never-stall"),
        pytest.param(steady(5, 40, 100), True, LagStatus.OK, id="window-not-yet-spanned-is-ok-collecting"),
        pytest.param([(40, 100)] * 10 + [(100, 100)], True, LagStatus.OK, id="caught-up-now-is-ok-whatever-before"),
    ],
)
def test_partition_status(points: list[tuple[int | None, int]], workers_running: bool | None,
                          status: LagStatus) -> None:
    ev = evaluate_partition("t", 0, history(points), WINDOW, workers_running)
    assert ev.status == status, ev.reason


def test_stall_reason_names_the_offset_and_duration() -> None:
    ev = evaluate_partition("t", 3, history(steady(11, 40, 100)), WINDOW, True)
    assert ev.reason == "committed offset 40 unchanged for 100s while lag is 60"


def test_group_status_is_the_worst_partition() -> None:
    window = LagWindow(WINDOW)
    for i in range(11):
        t = i * 10.0
        window = add_snapshot(window, build_snapshot(
            "g", t, {}, {("t", 0): i * 10, ("t", 1): 100, ("t", 2): 100 + i},
            {("t", 0): i * 10, ("t", 1): 40, ("t", 2): i}))
    ev = evaluate(window, workers_running=True)
    assert [p.status for p in ev.partitions] == [LagStatus.OK, LagStatus.STALL, LagStatus.OK]
    assert ev.status == LagStatus.STALL
    assert ev.total == 0 + 60 + 100 and ev.max_partition == 100
    assert ev.stalled_lag == 60 and [p.partition for p in ev.stalled] == [1]
    summary = ev.status_summary()
    assert summary["status"] == "STALL" and summary["total"] == 160 and summary["maxPartition"] == 100
    assert summary["updatedAt"] == "1970-01-01T00:01:40Z" and summary["stalledPartitions"] == ["t:1"]


def test_partition_added_starts_collecting_while_others_are_judged() -> None:
    window = LagWindow(WINDOW)
    for i in range(11):
        ends = {("t", 0): 100}
        if i >= 8:
            ends[("t", 1)] = 50  # the topic grew a partition at t=80
        window = add_snapshot(window, build_snapshot("g", i * 10.0, {}, ends, {("t", 0): 40}))
    ev = evaluate(window, workers_running=True)
    assert [(p.partition, p.status) for p in ev.partitions] == [(0, LagStatus.STALL), (1, LagStatus.OK)]
    assert ev.partitions[1].reason.startswith("collecting") and not ev.window_complete


def test_partition_gone_from_snapshot_is_dropped() -> None:
    window = add_snapshot(LagWindow(WINDOW), build_snapshot("g", 0.0, {}, {("t", 0): 1, ("t", 1): 1}, {}))
    window = add_snapshot(window, build_snapshot("g", 10.0, {}, {("t", 0): 1}, {}))
    assert list(window.partitions) == ["t/0"]


def test_prune_keeps_one_anchor_at_or_before_the_window_start() -> None:
    samples = history(steady(30, 0, 0))  # t = 0..290
    kept = prune(samples, WINDOW, 1000)
    assert kept[0].t == 190.0 and kept[-1].t == 290.0


def test_prune_caps_sample_count() -> None:
    assert len(prune(history(steady(30, 0, 0), step=1.0), 1000.0, 5)) == 5


def test_window_round_trips_through_dict() -> None:
    window = LagWindow(WINDOW)
    for i in range(3):
        window = add_snapshot(window, build_snapshot("g", float(i), {}, {("a/b", 0): i}, {("a/b", 0): None}))
    again = LagWindow.from_dict(window.to_dict())
    assert again == window
    assert evaluate(again).partitions[0].topic == "a/b"  # keys split on the last '/'


def test_rates_sum_production_and_commit_progress() -> None:
    a = history([(0, 0), (50, 100)])  # over 10 s: 10/s produced, 5/s consumed
    b = history([(None, 0), (None, 30)])  # no commits: produces 3/s, consumes nothing
    assert rates([a, b]) == (13.0, 5.0)
    assert rates([history([(0, 0)])]) == (None, None)


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=30),
       st.sampled_from([True, False, None]))
def test_zero_lag_now_is_always_ok(points: list[tuple[int, int]], running: bool | None) -> None:
    pts: list[tuple[int | None, int]] = [(min(c, e), e) for c, e in points]
    pts[-1] = (pts[-1][1], pts[-1][1])
    assert evaluate_partition("t", 0, history(pts), WINDOW, running).status == LagStatus.OK


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=30))
def test_stop_only_without_workers(points: list[tuple[int, int]]) -> None:
    pts: list[tuple[int | None, int]] = [(min(c, e), e) for c, e in points]
    assert evaluate_partition("t", 0, history(pts), WINDOW, True).status != LagStatus.STOP
    assert evaluate_partition("t", 0, history(pts), WINDOW, None).status != LagStatus.STOP
