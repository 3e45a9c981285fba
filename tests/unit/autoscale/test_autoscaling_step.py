"""run_autoscaling_step: the per-poll glue the operator calls (status.lag patch, worker count, Events),
and the metrics it publishes."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from lagpilot_operator.autoscale import metrics as lag_metrics
from lagpilot_operator.autoscale.decide import AutoscaleSpec
from lagpilot_operator.autoscale.offsets import LagSnapshot, build_snapshot
from lagpilot_operator.autoscale.step import GroupLagState, StepResult, run_autoscaling_step

pytestmark = pytest.mark.unit

SPEC = AutoscaleSpec(enabled=True, poll_seconds=10, scale_down_stabilization_seconds=60)


def snap(t: float, ends: list[int], committed: list[int | None], starts: list[int] | None = None) -> LagSnapshot:
    return build_snapshot("g", t, {("t", i): s for i, s in enumerate(starts or [0] * len(ends))},
                          {("t", i): e for i, e in enumerate(ends)}, {("t", i): c for i, c in enumerate(committed)})


def steps(snaps: list[LagSnapshot], spec: AutoscaleSpec = SPEC, workers: int = 1,
          ready: int | None = None) -> list[StepResult]:
    state, out = GroupLagState(), []
    for s in snaps:
        r = run_autoscaling_step(state, s, spec, workers, workers if ready is None else ready)
        state = r.state
        workers = r.workers if r.workers is not None else workers
        out.append(r)
    return out


def test_backlog_scales_up_with_an_event_carrying_the_figures() -> None:
    (r,) = steps([snap(0.0, [5000, 5000, 5000, 5000], [0, 0, 0, 0])], workers=2)
    assert r.workers == 4
    assert r.lag_status["total"] == 20000 and r.lag_status["maxPartition"] == 5000
    assert r.lag_status["status"] == "OK" and r.lag_status["desiredWorkers"] == 4
    (event,) = r.events
    assert event.reason == "ScaledUp"
    assert event.message == ("2 -> 4 workers: lag 20 000 over 2 workers > 1 000 per worker -> 20; "
                             "capped at 4 partitions")


def test_unchanged_count_gives_no_workers_and_no_event() -> None:
    rs = steps([snap(t, [10, 10], [10, 10]) for t in (0.0, 10.0, 20.0)])
    assert [r.workers for r in rs] == [None, None, None]
    assert all(not r.events for r in rs)


def test_stalled_partition_is_excluded_once_the_window_shows_it() -> None:
    """Partition 1 never moves (poison record): first polls count its lag, then it is STALL and excluded."""
    rs = steps([snap(t * 10.0, [100 * t, 3000], [100 * t, 40]) for t in range(19)], workers=2)
    assert rs[0].workers is None  # lag 2 960 over 2 workers -> 3, capped at 2 partitions
    last = rs[-1]
    assert last.lag_status["status"] == "STALL" and last.lag_status["stalledPartitions"] == ["t:1"]
    assert "excluding 2 960 on 1 stalled partition" in last.lag_status["reason"]
    assert any(e.reason == "LagStall" and "t[1]: committed offset 40 unchanged" in e.message
               for r in rs for e in r.events)
    down = [r for r in rs if r.workers is not None]
    assert down and down[-1].workers == 1  # excluded lag lets the scale-down (after 60 s) happen


def test_no_worker_running_and_no_progress_is_stop() -> None:
    rs = steps([snap(t * 10.0, [500], [100]) for t in range(11)], spec=AutoscaleSpec(poll_seconds=10), ready=0)
    assert rs[-1].lag_status["status"] == "STOP"
    assert rs[-1].events[0].type == "Warning" and rs[-1].events[0].reason == "LagStop"
    assert all(r.workers is None for r in rs)  # autoscaling off: the count is not touched


def test_deleted_records_warned_once() -> None:
    rs = steps([snap(t, [100], [10], starts=[50]) for t in (0.0, 10.0, 20.0)])
    warned = [e for r in rs for e in r.events if e.reason == "OffsetsDeleted"]
    assert len(warned) == 1 and "40 records deleted unread" in warned[0].message


def test_state_round_trips() -> None:
    rs = steps([snap(t * 10.0, [100 * t, 3000], [100 * t, 40]) for t in range(5)])
    assert GroupLagState.from_dict(rs[-1].state.to_dict()) == rs[-1].state


def test_worker_rate_learned_from_a_busy_interval_feeds_catch_up() -> None:
    spec = AutoscaleSpec(enabled=True, poll_seconds=10, catch_up_seconds=60, lag_per_worker=10**9,
                         scale_down_stabilization_seconds=0)
    # 1 worker delivers 100/s over 4 partitions; production 300/s; the backlog keeps growing.
    rs = steps([snap(t * 10.0, [1250 + 750 * t] * 4, [250 * t] * 4) for t in range(13)], spec=spec, workers=1)
    assert rs[0].state.worker_rate is None
    learned = [r for r in rs if r.state.worker_rate is not None]
    assert learned and learned[0].state.worker_rate == pytest.approx(100.0)
    assert learned[0].workers is not None and learned[0].workers > 1
    assert "catch-up: 300/s produced" in learned[0].lag_status["reason"]


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_metrics_published_per_partition_and_removed_when_forgotten() -> None:
    ns, cg = "metrics-test", "cg1"
    (r,) = steps([snap(0.0, [300, 50], [0, 50])], workers=1)
    lag_metrics.publish(ns, cg, r.evaluation, r.decision)
    assert _value("lagpilot_consumergroup_lag", namespace=ns, consumergroup=cg, topic="t", partition="0") == 300
    assert _value("lagpilot_consumergroup_lag", namespace=ns, consumergroup=cg, topic="t", partition="1") == 0
    assert _value("lagpilot_consumergroup_lag_total", namespace=ns, consumergroup=cg) == 300
    assert _value("lagpilot_consumergroup_lag_status", namespace=ns, consumergroup=cg) == 0
    assert _value("lagpilot_consumergroup_desired_workers", namespace=ns, consumergroup=cg) == 1
    (up,) = steps([snap(0.0, [3000, 3000], [0, 0])], workers=1)
    lag_metrics.publish(ns, cg, up.evaluation, up.decision)
    assert _value("lagpilot_scale_events_total", namespace=ns, consumergroup=cg, direction="up") == 1
    assert _value("lagpilot_consumergroup_desired_workers", namespace=ns, consumergroup=cg) == 2
    lag_metrics.forget(ns, cg)
    assert _value("lagpilot_consumergroup_lag", namespace=ns, consumergroup=cg, topic="t", partition="0") is None
    # Without autoscaling there is no decision: the desired count is the spec's (the dashboard plots it).
    (fixed,) = steps([snap(0.0, [10, 10], [0, 0])], workers=3)
    lag_metrics.publish(ns, "fixed", fixed.evaluation, None, 3)
    assert _value("lagpilot_consumergroup_desired_workers", namespace=ns, consumergroup="fixed") == 3
    lag_metrics.forget(ns, "fixed")
    assert _value("lagpilot_consumergroup_lag_total", namespace=ns, consumergroup=cg) is None


def test_the_cap_is_the_partitions_of_every_topic_of_the_group() -> None:
    """A group of two topics (3 + 2 partitions): up to 5 workers can be busy, not 3 or 2."""
    keys = [("orders", 0), ("orders", 1), ("orders", 2), ("payments", 0), ("payments", 1)]
    s = build_snapshot("g", 0.0, dict.fromkeys(keys, 0), dict.fromkeys(keys, 5000), dict.fromkeys(keys, 0))
    (r,) = steps([s], workers=1)
    assert r.workers == 5 and r.lag_status["total"] == 25000
    assert r.events[0].message.endswith("capped at 5 partitions")
