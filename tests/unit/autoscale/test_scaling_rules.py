"""Scaling rules: bounds, activation and scale to zero, stabilization, stalled partitions, catch-up."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot_operator.autoscale.decide import (
    AutoscaleSpec,
    ScaleInputs,
    ScaleState,
    decide_workers,
    estimate_worker_rate,
    rate_workers,
)

pytestmark = pytest.mark.unit

ON = AutoscaleSpec(enabled=True, scale_down_stabilization_seconds=0)


def inputs(lag: int, cur: int = 1, partitions: int = 12, **kw: object) -> ScaleInputs:
    return ScaleInputs(now=kw.pop("now", 0.0), current_workers=cur, partitions=partitions,  # type: ignore[arg-type]
                       total_lag=lag, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "given_inputs", "desired", "in_reason"),
    [
        pytest.param(ON, inputs(12_400, cur=3), 12,
                     ["lag 12 400 over 3 workers > 1 000 per worker -> 13", "capped at 12 partitions"],
                     id="lag-need-capped-at-partition-count"),
        pytest.param(ON, inputs(3_500, cur=1), 4, ["lag 3 500 over 1 worker > 1 000 per worker -> 4"],
                     id="ceil-of-lag-over-lag-per-worker"),
        pytest.param(replace(ON, max_workers=4), inputs(12_400), 4, ["capped at maxWorkers 4"],
                     id="capped-at-max-workers"),
        pytest.param(replace(ON, max_workers=40), inputs(50_000, partitions=6), 6, ["capped at 6 partitions"],
                     id="max-workers-above-partitions-capped-at-partitions"),
        pytest.param(replace(ON, min_workers=2), inputs(0, cur=5), 2, ["raised to minWorkers 2"],
                     id="idle-stays-at-min-workers"),
        pytest.param(replace(ON, min_workers=5), inputs(0, partitions=3), 3, [],
                     id="min-workers-above-partitions-capped-at-partitions"),
        pytest.param(replace(ON, min_workers=0, activation_lag=100), inputs(50, cur=1), 0,
                     ["lag 50 <= activationLag 100: idle -> 0"], id="below-activation-scales-to-zero"),
        pytest.param(replace(ON, min_workers=0, activation_lag=100), inputs(150, cur=0), 1,
                     ["lag 150 over 0 workers > 1 000 per worker -> 1"], id="above-activation-wakes-from-zero"),
        pytest.param(replace(ON, min_workers=0), inputs(0, cur=2), 0, ["idle -> 0"],
                     id="no-lag-scales-to-zero-with-min-zero"),
        pytest.param(replace(ON, min_workers=0), inputs(1, cur=0), 1, [], id="any-lag-wakes-with-activation-zero"),
        pytest.param(replace(ON, min_workers=1, activation_lag=100), inputs(50, cur=3), 1, [],
                     id="activation-ignored-when-min-workers-positive"),
        pytest.param(ON, inputs(10_000, cur=1, stalled_lag=9_000, stalled_partitions=1), 1,
                     ["lag 1 000 over 1 worker <= 1 000 per worker -> 1", "excluding 9 000 on 1 stalled partition"],
                     id="stalled-partition-lag-does-not-add-workers"),
        pytest.param(replace(ON, exclude_stalled_partitions=False),
                     inputs(10_000, cur=1, stalled_lag=9_000, stalled_partitions=1), 10, ["lag 10 000"],
                     id="stalled-lag-counts-when-not-excluded"),
        pytest.param(replace(ON, min_workers=0), inputs(5_000, cur=2, stalled_lag=5_000, stalled_partitions=2), 0,
                     ["excluding 5 000 on 2 stalled partitions", "idle -> 0"],
                     id="only-stalled-lag-is-idle"),
        pytest.param(replace(ON, lag_per_worker=100_000, catch_up_seconds=60),
                     inputs(30_000, production_rate=500.0, worker_rate=250.0), 4,
                     ["catch-up: 500/s produced + 30 000 in 60s over 250/s per worker -> 4"],
                     id="catch-up-sizes-from-rates"),
        pytest.param(replace(ON, lag_per_worker=100_000, catch_up_seconds=60),
                     inputs(0, cur=3, production_rate=1_000.0, worker_rate=250.0), 4, [],
                     id="catch-up-keeps-up-with-production-at-zero-lag"),
        pytest.param(replace(ON, lag_per_worker=100_000, catch_up_seconds=60), inputs(30_000), 1,
                     ["catch-up: no per-worker rate measured yet"], id="catch-up-without-measured-rate-uses-lag"),
        pytest.param(replace(ON, catch_up_seconds=60), inputs(9_000, production_rate=0.0, worker_rate=1000.0), 9,
                     [], id="lag-need-wins-when-larger-than-rate-need"),
        pytest.param(AutoscaleSpec(enabled=False), inputs(99_999, cur=3), 3, ["autoscaling disabled"],
                     id="disabled-keeps-current-count"),
    ],
)
def test_decision(spec: AutoscaleSpec, given_inputs: ScaleInputs, desired: int, in_reason: list[str]) -> None:
    d = decide_workers(spec, given_inputs)
    assert d.desired == desired, d.reason
    for fragment in in_reason:
        assert fragment in d.reason


def run(spec: AutoscaleSpec, lags: list[tuple[float, int]], cur: int = 1,
        partitions: int = 12) -> list[tuple[float, int, str]]:
    """Apply decisions in sequence (the operator sets the count it decided); returns (t, desired, reason)."""
    state = ScaleState()
    out = []
    for t, lag in lags:
        d = decide_workers(spec, inputs(lag, cur=cur, partitions=partitions, now=t), state)
        state, cur = d.state, d.desired
        out.append((t, cur, d.reason))
    return out


def test_scale_down_waits_for_the_stabilization_window() -> None:
    spec = replace(ON, scale_down_stabilization_seconds=300)
    steps = run(spec, [(0.0, 10_000)] + [(t, 0) for t in range(15, 331, 15)])
    by_t = {t: n for t, n, _ in steps}
    assert by_t[0.0] == 10 and by_t[285] == 10 and by_t[300] == 10
    assert by_t[315] == 1
    assert "held at 10 by scale-down stabilization (max over 300s = 10)" in steps[1][2]


def test_scale_down_goes_to_the_max_recommendation_in_the_window() -> None:
    spec = replace(ON, scale_down_stabilization_seconds=300)
    steps = run(spec, [(0.0, 10_000), (100.0, 6_000), (200.0, 2_000), (310.0, 2_000), (410.0, 2_000)])
    assert [n for _, n, _ in steps] == [10, 10, 10, 6, 2]


def test_scale_up_is_immediate_with_zero_up_window() -> None:
    assert [n for _, n, _ in run(ON, [(0.0, 0), (15.0, 8_000)])] == [1, 8]


def test_scale_up_stabilization_ignores_a_one_poll_spike() -> None:
    spec = replace(ON, scale_up_stabilization_seconds=60)
    steps = run(spec, [(0.0, 1_000), (15.0, 10_000), (30.0, 1_000), (45.0, 10_000), (60.0, 10_000),
                       (75.0, 10_000), (90.0, 10_000), (105.0, 10_000)])
    assert [n for _, n, _ in steps] == [1, 1, 1, 1, 1, 1, 1, 10]  # 10s only from t=45 on
    assert "held at 1 by scale-up stabilization (min over 60s = 1)" in steps[1][2]


def test_changed_bounds_apply_at_once_despite_history() -> None:
    spec = replace(ON, scale_down_stabilization_seconds=300)
    d = decide_workers(spec, inputs(10_000, now=0.0))
    assert d.desired == 10
    d2 = decide_workers(replace(spec, max_workers=4), inputs(10_000, cur=10, now=15.0), d.state)
    assert d2.desired == 4 and d2.direction == "down"


def test_history_is_pruned_to_the_longest_window() -> None:
    spec = replace(ON, scale_down_stabilization_seconds=60)
    steps_state = ScaleState()
    for t in range(0, 600, 15):
        steps_state = decide_workers(spec, inputs(1_000, now=float(t)), steps_state).state
    assert all(t >= 585 - 60 for t, _ in steps_state.recommendations)
    assert ScaleState.from_dict(steps_state.to_dict()) == steps_state


def test_defaults_match_the_issue() -> None:
    s = AutoscaleSpec(enabled=True)
    assert (s.min_workers, s.lag_per_worker, s.activation_lag, s.poll_seconds, s.scale_up_stabilization_seconds,
            s.scale_down_stabilization_seconds, s.exclude_stalled_partitions, s.catch_up_seconds) == \
        (1, 1000, 0, 15, 0, 300, True, 0)
    assert s.cap(12) == 12 and s.cap(3) == 3  # maxWorkers unset: the partition count


@pytest.mark.parametrize(
    ("prev", "rate", "workers", "saturated", "expected"),
    [
        pytest.param(None, 900.0, 3, True, 300.0, id="first-busy-measurement"),
        pytest.param(200.0, 900.0, 3, True, 250.0, id="smoothed-with-previous"),
        pytest.param(200.0, 90.0, 3, False, 200.0, id="idle-workers-teach-nothing"),
        pytest.param(None, 900.0, 0, True, None, id="no-workers-no-rate"),
    ],
)
def test_worker_rate_learned_only_when_busy(prev: float | None, rate: float, workers: int, saturated: bool,
                                            expected: float | None) -> None:
    assert estimate_worker_rate(prev, rate, workers, saturated) == expected


specs = st.builds(
    AutoscaleSpec, enabled=st.just(True), min_workers=st.integers(0, 5),
    max_workers=st.one_of(st.none(), st.integers(5, 30)), lag_per_worker=st.integers(1, 5000),
    activation_lag=st.integers(0, 1000), poll_seconds=st.just(15.0),
    scale_up_stabilization_seconds=st.sampled_from([0.0, 30.0, 60.0]),
    scale_down_stabilization_seconds=st.sampled_from([0.0, 60.0, 300.0]),
    exclude_stalled_partitions=st.booleans(), catch_up_seconds=st.sampled_from([0.0, 60.0]))
lag_series = st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 100_000)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(spec=specs, series=lag_series, partitions=st.integers(1, 40), start=st.integers(0, 40),
       prod=st.one_of(st.none(), st.floats(0, 10_000)), wrate=st.one_of(st.none(), st.floats(1, 5_000)))
def test_desired_always_within_bounds(spec: AutoscaleSpec, series: list[tuple[int, int]], partitions: int,
                                      start: int, prod: float | None, wrate: float | None) -> None:
    state, cur = ScaleState(), start
    floor = min(spec.min_workers, spec.cap(partitions))
    for i, (lag, stalled) in enumerate(series):
        d = decide_workers(spec, ScaleInputs(i * 15.0, cur, partitions, lag + stalled, stalled, 1 if stalled else 0,
                                             prod, wrate), state)
        assert floor <= d.desired <= spec.cap(partitions)
        assert d.reason
        state, cur = d.state, d.desired


@settings(max_examples=200, deadline=None)
@given(spec=specs, series=lag_series, partitions=st.integers(1, 40))
def test_no_scale_down_within_the_window_after_a_scale_up(spec: AutoscaleSpec, series: list[tuple[int, int]],
                                                          partitions: int) -> None:
    """No flapping: once scaled up, the count does not go down before scaleDownStabilizationSeconds."""
    state, cur = ScaleState(), 1
    last_up: float | None = None
    for i, (lag, stalled) in enumerate(series):
        now = i * 15.0
        d = decide_workers(spec, ScaleInputs(now, cur, partitions, lag + stalled, stalled, 1), state)
        if d.direction == "down" and last_up is not None:
            assert now - last_up > spec.scale_down_stabilization_seconds
        if d.direction == "up":
            last_up = now
        state, cur = d.state, d.desired


@pytest.mark.parametrize(
    ("needed", "worker_rate", "partitions", "workers"),
    [
        pytest.param(1750.0, 200.0, 12, 12, id="146-per-partition-needs-one-worker-each-not-9"),
        pytest.param(1000.0, 250.0, 12, 4, id="three-partitions-per-worker"),
        pytest.param(1000.0, 400.0, 12, 3, id="four-partitions-per-worker"),
        pytest.param(1000.0, 250.0, 10, 5, id="naive-4-would-give-3-partitions-to-a-250-per-s-worker"),
        pytest.param(100.0, 10_000.0, 12, 1, id="one-worker-carries-all"),
        pytest.param(5000.0, 200.0, 12, 12, id="more-than-one-worker-per-partition-capped-at-partitions"),
        pytest.param(0.0, 200.0, 12, 0, id="nothing-to-deliver"),
    ],
)
def test_rate_need_counts_partitions_per_worker(needed: float, worker_rate: float, partitions: int,
                                                workers: int) -> None:
    assert rate_workers(needed, worker_rate, partitions)[0] == workers


def test_rate_need_with_vanishing_rates_does_not_overflow() -> None:
    from lagpilot_operator.autoscale.decide import rate_workers

    assert rate_workers(2.225073858507203e-309, 1.0, 1) == (1, "1 partition")
    assert rate_workers(1e-320, 1.0, 12)[0] == 1
