"""Rollout planner: table tests of each strategy's decisions, and a simulated cluster
(lagpilot.testing.rollout_sim: Deployments that create/delete pods honouring the deletion cost, workers that
apply and report with random delays, the real hand-off planner in between) driven to completion under
hypothesis."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.protocol import PartitionId, partitions_of
from lagpilot.testing.rollout_sim import Cluster
from lagpilot_operator.handoff.planner import (
    Observed,
    plan_assignment,
)
from lagpilot_operator.handoff.rollout import (
    ABORTED,
    CANARY,
    CANARY_GRACE_SECONDS,
    PROGRESSING,
    PROMOTING,
    STABLE,
    CanaryFigures,
    Commands,
    RolloutInput,
    canary_partitions,
    judge,
    lag_growth,
    next_rollout_step,
)
from lagpilot_operator.resource.spec import BlueGreenSpec, CanarySpec, RolloutSpec

pytestmark = pytest.mark.unit


def P(n: int, topic: str = "t") -> PartitionId:
    return PartitionId(topic, n)


def ps(*numbers: int, topic: str = "t") -> set[PartitionId]:
    return {P(n, topic) for n in numbers}


def run(cluster: Cluster, spec: RolloutSpec, target: str, workers: int, *, data: st.DataObject | None = None,
        steps: int = 200, figures: CanaryFigures | None = None, start: float = 0.0,
        until: str = STABLE) -> float:
    now = start
    for _ in range(steps):
        cluster.reconcile(spec, target, workers, now, figures)
        cluster.workers_act(data)
        now += 1.0
        if cluster.status.get("phase") == until and (until != STABLE or cluster.status["stableRevision"] == target) \
                and len(cluster.owners()) == len(cluster.partitions):
            return now
    raise AssertionError(f"did not reach {until}: {cluster.status}")


def settled_cluster(partitions: int | dict[str, int], workers: int, rev: str = "a") -> Cluster:
    c = Cluster(partitions if isinstance(partitions, dict) else {"t": partitions})
    run(c, RolloutSpec(), rev, workers)
    assert set(c.owners().values()) == {rev}
    return c


def test_initial_start_owns_everything_balanced() -> None:
    c = settled_cluster(12, 3)
    per_pod = [len(p.owned) for p in c.pods.values()]
    assert sorted(per_pod) == [4, 4, 4]
    assert c.status["phase"] == STABLE and c.status["stableRevision"] == "a"


def test_rolling_moves_one_worker_share_at_a_time() -> None:
    c = settled_cluster(12, 3)
    spec = RolloutSpec(strategy="Rolling")
    in_flight_max = 0
    now = 100.0
    for _ in range(200):
        step = c.reconcile(spec, "b", 3, now)
        assert step.deployments is not None
        assert sum(step.deployments.values()) <= 4  # never more than one extra worker
        moving = sum(1 for part, w in step.desired.items() if c.doc and c.doc.owner_of().get(part) != w)
        in_flight_max = max(in_flight_max, moving)
        c.workers_act(None)
        now += 1
        if c.status["phase"] == STABLE and c.status["stableRevision"] == "b":
            break
    assert c.status["phase"] == STABLE and c.status["stableRevision"] == "b"
    assert set(c.owners().values()) == {"b"} and len(c.owners()) == 12
    assert {p.revision for p in c.pods.values()} == {"b"}
    assert in_flight_max <= 4
    reasons = [e[1] for e in c.events]
    assert "RolloutStarted" in reasons and "RolloutCompleted" in reasons


def test_rolling_max_partitions_in_flight() -> None:
    c = settled_cluster(12, 3)
    spec = RolloutSpec(strategy="Rolling", max_partitions_in_flight=1)
    now = 100.0
    for _ in range(300):
        c.reconcile(spec, "b", 3, now)
        assert c.doc is not None
        # At most one partition is between owners (revoked and not yet re-granted) at any time.
        assert len(c.doc.revoked) <= 1
        c.workers_act(None)
        now += 1
        if c.status["phase"] == STABLE and c.status["stableRevision"] == "b":
            break
    assert c.status["stableRevision"] == "b" and set(c.owners().values()) == {"b"}


def test_blue_green_waits_for_ready_idle_workers_then_moves_all_and_keeps_old() -> None:
    c = settled_cluster(12, 3)
    spec = RolloutSpec(strategy="BlueGreen", blue_green=BlueGreenSpec(scale_down_delay_seconds=30))
    step = c.reconcile(spec, "b", 3, 100.0)
    assert step.deployments == {"a": 3, "b": 3}
    assert set(step.desired.values()) <= {p.name for p in c.pods.values() if p.revision == "a"}
    c.workers_act(None)  # new pods come up ready, idle
    step = c.reconcile(spec, "b", 3, 101.0)
    assert c.status["phase"] == PROMOTING
    assert {c.pods[w].revision for w in step.desired.values() if w} == {"b"}
    now = 102.0
    while set(c.owners().values()) != {"b"} or len(c.owners()) != 12:
        c.workers_act(None)
        c.reconcile(spec, "b", 3, now)
        now += 1
        assert now < 150
    assert c.status["phase"] == PROMOTING and "kept" in c.status["message"]
    assert {p.revision for p in c.pods.values()} == {"a", "b"}
    end = run(c, spec, "b", 3, start=now)
    assert end - now >= 25  # old revision kept for the delay
    assert {p.revision for p in c.pods.values()} == {"b"}


def test_blue_green_manual_promotion_and_abort_moves_back() -> None:
    c = settled_cluster(6, 2)
    spec = RolloutSpec(strategy="BlueGreen", blue_green=BlueGreenSpec(auto_promote=False))
    for t in range(5):
        c.reconcile(spec, "b", 2, 100.0 + t)
        c.workers_act(None)
    assert c.status["phase"] == PROGRESSING and "waiting for lagpilot.io/promote" in c.status["message"]
    assert set(c.owners().values()) == {"a"}
    for t in range(10):
        c.reconcile(spec, "b", 2, 110.0 + t, commands=Commands(promote=True))
        c.workers_act(None)
    assert set(c.owners().values()) == {"b"} and c.status["phase"] == PROMOTING
    for t in range(10):
        step = c.reconcile(spec, "b", 2, 120.0 + t, commands=Commands(abort=True))
        c.workers_act(None)
    assert c.status["phase"] == ABORTED and step.degraded is not None
    assert set(c.owners().values()) == {"a"} and len(c.owners()) == 6
    assert {p.revision for p in c.pods.values()} == {"a"}
    # Aborted stays aborted for this revision (no retry loop) ...
    for t in range(3):
        c.reconcile(spec, "b", 2, 130.0 + t)
        c.workers_act(None)
    assert c.status["phase"] == ABORTED
    # ... and a spec change back to "a" clears it.
    step = c.reconcile(spec, "a", 2, 140.0)
    assert c.status["phase"] == STABLE and step.degraded is None


def make_canary(partitions: int | tuple[PartitionId | int, ...] = 2, analysis: int = 60, then: str = "Rolling",
                auto: bool = True, **kw: object) -> RolloutSpec:
    return RolloutSpec(strategy="Canary", canary=CanarySpec(partitions=partitions, analysis_seconds=analysis,
                                                            then=then, auto_promote=auto, **kw))  # type: ignore[arg-type]


GOOD = CanaryFigures(deliveries=500, error_rate=0.0, p99_ms=20, lag_growth=0)
BAD = CanaryFigures(deliveries=500, error_rate=0.2, p99_ms=20, lag_growth=0)


@pytest.mark.parametrize("then", ["Rolling", "BlueGreen"])
def test_canary_passes_then_completes(then: str) -> None:
    c = settled_cluster(8, 2)
    spec = make_canary(partitions=(1, 6), then=then)
    end = run(c, spec, "b", 2, until=CANARY, figures=None, start=100.0, steps=5)
    # the chosen partitions, exactly, run on the canary revision
    for _ in range(5):
        c.reconcile(spec, "b", 2, end, figures=None)
        c.workers_act(None)
    assert {p for p, rev in c.owners().items() if rev == "b"} == ps(1, 6)
    assert c.status["phase"] == CANARY and c.status["canaryPartitions"] == ["t:1", "t:6"]
    assert "analysis" in c.status["message"]
    run(c, spec, "b", 2, figures=GOOD, start=end + 61)
    assert set(c.owners().values()) == {"b"}
    assert "CanaryPassed" in [e[1] for e in c.events]


def test_canary_failure_aborts_and_returns_partitions() -> None:
    c = settled_cluster(8, 2)
    spec = make_canary(partitions=3)
    now = 100.0
    for _ in range(10):
        c.reconcile(spec, "b", 2, now, figures=None)
        c.workers_act(None)
        now += 1
    assert {p for p, rev in c.owners().items() if rev == "b"} == ps(0, 1, 2)
    step = c.reconcile(spec, "b", 2, now, figures=BAD)
    assert c.status["phase"] == ABORTED
    assert step.degraded is not None and step.degraded[0] == "RolloutAborted"
    assert "error rate" in step.degraded[1]
    warnings = [e for e in step.events if e[0] == "Warning"]
    assert warnings and warnings[0][1] == "RolloutAborted" and "maxErrorRate" in warnings[0][2]
    for _ in range(10):
        c.workers_act(None)
        c.reconcile(spec, "b", 2, now)
        now += 1
    assert set(c.owners().values()) == {"a"} and len(c.owners()) == 8
    assert {p.revision for p in c.pods.values()} == {"a"}


def test_canary_without_auto_promote_waits() -> None:
    c = settled_cluster(4, 2)
    spec = make_canary(partitions=1, analysis=10, auto=False)
    now = 100.0
    for _ in range(30):
        c.reconcile(spec, "b", 2, now, figures=GOOD)
        c.workers_act(None)
        now += 1
    assert c.status["phase"] == CANARY and "waiting for lagpilot.io/promote" in c.status["message"]
    c.reconcile(spec, "b", 2, now, figures=GOOD, commands=Commands(promote=True))
    assert c.status["phase"] == PROGRESSING and c.status["strategy"] == "Rolling"


def test_pause_freezes_moves_and_deployments() -> None:
    c = settled_cluster(6, 2)
    before = dict(c.doc.grants) if c.doc else {}
    step = next_rollout_step(RolloutInput(RolloutSpec(), "b", 2, c.observed(), c.status, paused=True, now=1))
    assert step.deployments is None
    assert plan_assignment(c.observed(), step.desired).grants == before
    assert step.status["message"] == "paused"
    step = next_rollout_step(RolloutInput(RolloutSpec(), "b", 2, c.observed(), c.status,
                                          commands=Commands(pause=True), now=1))
    assert step.deployments is None


def test_commands_from_annotations() -> None:
    cmd = Commands.from_annotations({"lagpilot.io/promote": "true", "lagpilot.io/pause": "false"})
    assert (cmd.promote, cmd.abort, cmd.pause) == (True, False, False)
    assert Commands.from_annotations(None) == Commands()
    # One-shot: a stamp already acted on does not count again.
    ann = {"lagpilot.io/promote": "2026-01-01T00:00:00Z"}
    assert Commands.from_annotations(ann).promote
    assert not Commands.from_annotations(ann, {"handled": {"lagpilot.io/promote": "2026-01-01T00:00:00Z"}}).promote
    step = next_rollout_step(RolloutInput(RolloutSpec(), "a", 1, Observed(None, {}, {"t": 1}), {},
                                          commands=Commands.from_annotations(ann)))
    assert step.status["handled"] == ann


def test_judge_names_the_figure() -> None:
    spec = make_canary(max_p99_latency_ms=100, max_lag_growth=50)
    assert judge(spec, None) is None
    assert judge(spec, CanaryFigures(0, 1.0, 0, 0)) is None  # no data, no verdict
    assert "p99" in (judge(spec, CanaryFigures(10, 0, 250, 0)) or "")
    assert "lag growth" in (judge(spec, CanaryFigures(10, 0, 10, 80)) or "")
    assert judge(spec, GOOD) is None


def test_judge_lag_growth_needs_no_deliveries() -> None:
    """A canary that delivers nothing at all is caught by its lag, not waited on forever."""
    spec = make_canary(max_lag_growth=50)
    assert "maxLagGrowth 50" in (judge(spec, CanaryFigures(0, 0.0, 0, 51)) or "")
    assert judge(spec, CanaryFigures(0, 0.0, 0, 50)) is None
    assert judge(make_canary(), CanaryFigures(0, 0.0, 0, 10_000)) is None  # 0 = not checked


def L(table: dict[int | PartitionId, int]) -> dict[PartitionId, int]:
    return {p if isinstance(p, PartitionId) else P(p): v for p, v in table.items()}


def test_lag_growth_is_canary_growth_beyond_stable() -> None:
    base = L({0: 10, 1: 10, 2: 10, 3: 10})
    canary = [P(1), P(3)]
    # canary partitions 1 and 3 grew by 100 and 300, stable ones by 20: 200 - 20
    assert lag_growth(base, L({0: 30, 1: 110, 2: 30, 3: 310}), canary) == 180
    # stable draining a backlog does not count against the canary
    assert lag_growth(base, L({0: 0, 1: 10, 2: 0, 3: 10}), canary) == 0
    # canary keeping up while stable falls behind: negative (never fails the canary)
    assert lag_growth(base, L({0: 60, 1: 10, 2: 60, 3: 10}), canary) == -50
    # partitions without a baseline (added to the topic mid-analysis, or a new topic) are left out
    assert lag_growth(base, L({0: 10, 1: 60, 4: 999, P(0, "new"): 999}), [P(1), P(4), P(0, "new")]) == 50
    # partition 1 of another topic is not the canary's partition 1: u:1 falling behind is the stable side's
    two = L({0: 10, 1: 10, P(1, "u"): 10})
    assert lag_growth(two, L({0: 10, 1: 10, P(1, "u"): 500}), [P(1)]) == -245
    assert lag_growth(two, L({0: 10, 1: 10, P(1, "u"): 500}), [P(1, "u")]) == 490


pids = st.builds(PartitionId, st.sampled_from(["a", "b"]), st.integers(0, 10))


@given(st.dictionaries(pids, st.integers(0, 10_000), min_size=2), st.integers(-500, 500), st.sets(pids))
def test_lag_growth_uniform_growth_is_zero(base: dict[PartitionId, int], shift: int,
                                           canary: set[PartitionId]) -> None:
    """Every partition falling behind (or catching up) by the same amount is the load, not the canary."""
    canary &= set(base)
    if not canary or canary == set(base):
        canary = {min(base)}
    growth = lag_growth(base, {p: v + shift for p, v in base.items()}, canary)
    assert growth == (shift if shift < 0 else 0)


@pytest.mark.parametrize("strategy", ["Rolling", "BlueGreen", "Canary"])
def test_rollout_of_a_group_scaled_to_zero_completes_at_once(strategy: str) -> None:
    """No workers wanted: nothing moves to anyone, so a new revision does not wait for workers that will
    never come."""
    c = Cluster({"t": 2, "u": 2})
    c.reconcile(RolloutSpec(), "a", 0, 1.0)
    assert c.status["phase"] == STABLE
    step = c.reconcile(RolloutSpec(strategy=strategy), "b", 0, 2.0)
    assert c.status["phase"] == STABLE and c.status["stableRevision"] == "b"
    assert step.deployments == {"b": 0}
    assert "RolloutCompleted" in [e[1] for e in step.events]


def test_new_revision_scaled_to_zero_stops_the_old_workers() -> None:
    c = settled_cluster(4, 2)
    step = c.reconcile(RolloutSpec(), "b", 0, 500.0)
    assert c.status["phase"] == STABLE and step.deployments == {"b": 0}
    assert c.doc is not None and not any(c.doc.grants.values())  # revoked: the old workers drain and stop


ORDERS_4 = partitions_of({"orders": 4})
TWO_TOPICS = partitions_of({"orders": 4, "payments": 2})


@pytest.mark.parametrize(("picks", "partitions", "want"), [
    pytest.param(2, partitions_of({"t": 8}), ["t:0", "t:1"], id="count-one-topic"),
    pytest.param((7, 3, 99), partitions_of({"t": 8}), ["t:3", "t:7"], id="numbers-that-exist"),
    pytest.param(10, ORDERS_4, ["orders:0", "orders:1", "orders:2"], id="count-never-all"),
    pytest.param(1, partitions_of({"t": 1}), ["t:0"], id="a-single-partition"),
    pytest.param(2, TWO_TOPICS, ["orders:0", "payments:0"], id="count-spreads-over-topics"),
    pytest.param(3, TWO_TOPICS, ["orders:0", "orders:1", "payments:0"], id="count-by-number-then-topic"),
    pytest.param(99, TWO_TOPICS, [str(p) for p in TWO_TOPICS if p != PartitionId("orders", 3)],
                 id="count-over-topics-never-all"),
    pytest.param((1,), TWO_TOPICS, ["orders:1", "payments:1"], id="bare-number-of-every-topic"),
    pytest.param((3,), TWO_TOPICS, ["orders:3"], id="bare-number-where-it-exists"),
    pytest.param((PartitionId("payments", 1), PartitionId("orders", 0)), TWO_TOPICS, ["orders:0", "payments:1"],
                 id="topic-partition-picks"),
    pytest.param((PartitionId("payments", 5), PartitionId("refunds", 0)), TWO_TOPICS, [], id="picks-that-do-not-exist"),
    pytest.param((PartitionId("orders", 2), 1), TWO_TOPICS, ["orders:1", "orders:2", "payments:1"], id="mixed"),
])
def test_canary_partition_choice(picks: int | tuple[PartitionId | int, ...], partitions: tuple[PartitionId, ...],
                                 want: list[str]) -> None:
    assert [str(p) for p in canary_partitions(make_canary(partitions=picks), partitions)] == want


def test_a_canary_over_two_topics_runs_exactly_its_picks_then_completes() -> None:
    c = settled_cluster({"orders": 3, "payments": 3}, 2)
    spec = make_canary(partitions=(PartitionId("payments", 2), 0), analysis=5)
    now = 100.0
    for _ in range(10):
        c.reconcile(spec, "b", 2, now, figures=None)
        c.workers_act(None)
        now += 1
    assert c.status["canaryPartitions"] == ["orders:0", "payments:0", "payments:2"]
    assert {p for p, rev in c.owners().items() if rev == "b"} == {P(0, "orders"), P(0, "payments"), P(2, "payments")}
    run(c, spec, "b", 2, figures=GOOD, start=now + 10)
    assert set(c.owners().values()) == {"b"} and len(c.owners()) == 6


def test_operator_restart_mid_rollout_resumes_from_status() -> None:
    """The step is a function of the persisted status only: same input, same output."""
    c = settled_cluster(6, 3)
    spec = RolloutSpec(strategy="Rolling")
    for t in range(4):
        c.reconcile(spec, "b", 3, 100.0 + t)
        c.workers_act(None)
    inp = RolloutInput(spec, "b", 3, c.observed(), dict(c.status), now=200.0)
    first, again = next_rollout_step(inp), next_rollout_step(replace(inp))
    assert first.desired == again.desired and first.deployments == again.deployments
    assert first.status == again.status


@settings(max_examples=100, deadline=None, database=None)
@given(strategy=st.sampled_from(["Rolling", "BlueGreen", "Canary"]),
       topics=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 6), min_size=1, max_size=3),
       workers=st.integers(1, 4), in_flight=st.integers(0, 3), data=st.data())
def test_any_rollout_completes_with_one_owner_per_partition(
        strategy: str, topics: dict[str, int], workers: int, in_flight: int, data: st.DataObject) -> None:
    c = settled_cluster(topics, workers)
    partitions = len(c.partitions)
    spec = RolloutSpec(strategy=strategy, max_partitions_in_flight=in_flight,
                       blue_green=BlueGreenSpec(scale_down_delay_seconds=3),
                       canary=CanarySpec(partitions=1, analysis_seconds=2, then=data.draw(
                           st.sampled_from(["Rolling", "BlueGreen"]))))
    run(c, spec, "b", workers, data=data, figures=GOOD, start=100.0, steps=400)
    assert set(c.owners().values()) == {"b"} and len(c.owners()) == partitions
    assert {p.revision for p in c.pods.values()} == {"b"}
    assert len(c.pods) == workers


# ---- issue 14 item 5: a canary that delivers nothing, or never takes its partitions, is judged ------------

SILENT = CanaryFigures(deliveries=0, error_rate=0.0, p99_ms=0.0, lag_growth=0.0, backlog=40)
IDLE = CanaryFigures(deliveries=0, error_rate=0.0, p99_ms=0.0, lag_growth=0.0, backlog=0)


def canary_on_its_partitions(analysis: int = 30) -> tuple[Cluster, RolloutSpec, float]:
    c = settled_cluster(6, 2)
    spec = make_canary(partitions=2, analysis=analysis)
    now = 100.0
    for _ in range(10):
        c.reconcile(spec, "b", 2, now, figures=None)
        c.workers_act(None)
        now += 1
    assert c.status["phase"] == CANARY and "analysisSince" in c.status
    return c, spec, now


def test_a_canary_that_delivers_nothing_while_records_wait_is_aborted_after_analysis_and_grace() -> None:
    c, spec, _ = canary_on_its_partitions(analysis=30)
    since = float(c.status["analysisSince"])
    c.reconcile(spec, "b", 2, since + 30 + CANARY_GRACE_SECONDS - 1, figures=SILENT)
    assert c.status["phase"] == CANARY  # within the stated grace: still waiting for data
    step = c.reconcile(spec, "b", 2, since + 30 + CANARY_GRACE_SECONDS + 1, figures=SILENT)
    assert c.status["phase"] == ABORTED
    assert step.degraded is not None and "delivered nothing" in step.degraded[1] and "40 records" in step.degraded[1]
    c.reconcile(spec, "b", 2, since + 999, figures=None)  # unknown figures later: stays aborted
    assert c.status["phase"] == ABORTED


def test_a_canary_with_unknown_figures_is_aborted_too() -> None:
    c, spec, _ = canary_on_its_partitions(analysis=30)
    since = float(c.status["analysisSince"])
    step = c.reconcile(spec, "b", 2, since + 30 + CANARY_GRACE_SECONDS + 1, figures=None)
    assert c.status["phase"] == ABORTED and step.degraded is not None
    assert "delivered nothing" in step.degraded[1]


def test_an_idle_canary_is_not_aborted_and_says_why_it_waits() -> None:
    c, spec, _ = canary_on_its_partitions(analysis=30)
    since = float(c.status["analysisSince"])
    c.reconcile(spec, "b", 2, since + 30 + CANARY_GRACE_SECONDS + 100, figures=IDLE)
    assert c.status["phase"] == CANARY and "no records" in c.status["message"]


def test_a_canary_that_never_takes_its_partitions_is_aborted() -> None:
    """Its workers crash-loop (never Ready, never a Lease): after analysisSeconds + grace, aborted."""
    c = settled_cluster(6, 2)
    spec = make_canary(partitions=2, analysis=30)
    now = 100.0
    for _ in range(30):
        c.reconcile(spec, "b", 2, now, figures=None)
        c.workers_act(None)
        for pod in c.pods.values():  # the canary's pods never come up: no Lease, never Ready
            if pod.revision == "b":
                pod.report, pod.ready, pod.owned = None, False, frozenset()
        now += 1
    assert c.status["phase"] == CANARY
    step = c.reconcile(spec, "b", 2, 100.0 + 30 + CANARY_GRACE_SECONDS + 1, figures=None)
    assert c.status["phase"] == ABORTED and step.degraded is not None
    assert "did not take its partitions" in step.degraded[1]
