"""The hand-off's pure observation: reading Leases and pods into the observed state, canary figures from
Prometheus text, and the worker side's reading of assignment.json."""

from __future__ import annotations

import pytest

from lagpilot.protocol import Grant, PartitionId, format_owned, lease_duration_for, read_grant
from lagpilot.timefmt import parse_rfc3339 as parse_time
from lagpilot_operator.handoff.observe import (
    DEFAULT_LEASE_SECONDS,
    LeaseClock,
    assignment_status,
    figures_from_metrics,
    lease_released,
    lease_report,
    observe,
)
from lagpilot_operator.handoff.planner import AssignmentDoc, Revocation, WorkerReport, plan_assignment
from lagpilot_operator.handoff.shell import HandoffResult

pytestmark = pytest.mark.unit

NOW = parse_time("2026-01-01T00:01:00Z") or 0.0
T3 = {"t": 3}
T4 = {"t": 4}


def P(n: int, topic: str = "t") -> PartitionId:
    return PartitionId(topic, n)


def F(*numbers: int, topic: str = "t") -> frozenset[PartitionId]:
    return frozenset(P(n, topic) for n in numbers)


def lease(name: str, owned: str | None = "t:0,t:1", epoch: str | None = "3", renew: str | None = "2026-01-01T00:00:55Z",
          duration: int = 10, version: str = "1") -> dict:
    ann = {}
    if owned is not None:
        ann["lagpilot.io/owned"] = owned
    if epoch is not None:
        ann["lagpilot.io/epoch"] = epoch
    spec: dict = {"holderIdentity": name, "leaseDurationSeconds": duration}
    if renew is not None:
        spec["renewTime"] = renew
    return {"metadata": {"name": name, "annotations": ann, "resourceVersion": version}, "spec": spec}


def pod(name: str, rev: str = "r1", ready: bool = True, deleting: bool = False) -> dict:
    meta: dict = {"name": name, "labels": {"lagpilot.io/revision": rev}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:50Z"
    return {"metadata": meta, "status": {"phase": "Running",
                                          "conditions": [{"type": "Ready", "status": str(ready)}]}}


def test_lease_report_and_release() -> None:
    assert lease_report(lease("a")) == WorkerReport(F(0, 1), 3)
    assert lease_report(lease("a", owned="")) == WorkerReport(frozenset(), 3)
    assert lease_report(lease("a", owned="x")) is None
    assert lease_report(lease("a", owned="orders:2,payments:0")) == WorkerReport(
        frozenset({P(2, "orders"), P(0, "payments")}), 3)
    # A worker of the previous version reports bare numbers: its group's single topic is understood...
    assert lease_report(lease("a", owned="0,3"), "orders") == WorkerReport(F(0, 3, topic="orders"), 3)
    # ...and with several topics (no default) such a report is unreadable, never guessed.
    assert lease_report(lease("a", owned="0,3")) is None
    assert lease_report(lease("a", epoch=None)) is None
    released = lease("a")
    released["spec"]["holderIdentity"] = ""
    assert lease_released(released) and not lease_released(lease("a"))


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_observe_classifies_workers() -> None:
    clock = Clock(NOW)
    lc = LeaseClock(clock)
    leases = [lease("a"), lease("b"), lease("forced")]
    pods = [pod("a"), pod("b"), pod("c"), pod("d", deleting=True)]
    observe(None, pods, leases, T4, lc, 10)
    clock.t += 11  # "b" has not changed since (the others renew: a new resourceVersion each time)
    leases = [lease("a", version="2"), lease("b"), lease("forced", version="2")]
    o = observe(None, pods, leases, T4, lc, 10)
    a, b, c, d, forced = (o.workers[n] for n in ("a", "b", "c", "d", "forced"))
    assert a.eligible and a.revision == "r1" and a.ready
    assert b.gone  # Lease not renewed for a Lease duration of the operator's clock
    assert c.gone and c.report is None and not c.eligible  # a pod without a Lease for a whole duration
    assert d.terminating and not d.eligible
    # Pod object gone but the Lease still renewed: still alive (it may be processing), never eligible.
    assert not forced.gone and forced.terminating
    assert o.is_gone("never-seen")


def test_observe_then_plan_releases_on_gone() -> None:
    doc = AssignmentDoc(5, {"a": F(2)}, T3, {P(0): Revocation("b", 4), P(1): Revocation("x", 4)})
    want = {P(0): "a", P(1): "a", P(2): "a"}
    released = lease("b")
    released["spec"]["holderIdentity"] = ""  # "b" stopped cleanly
    clock = Clock(NOW)
    lc = LeaseClock(clock)
    o = observe(doc, [pod("a"), pod("b")], [lease("a", "t:2", "5"), released], T3, lc)
    new = plan_assignment(o, want)
    # "b" released cleanly: its partition moves at once. "x" (no pod, no Lease) may be a force-deleted pod
    # still running: its partition waits a Lease duration of the operator's clock.
    assert new.grants == {"a": F(0, 2)}
    clock.t += DEFAULT_LEASE_SECONDS + 1
    o = observe(new, [pod("a")], [lease("a", "t:0,t:2", str(new.epoch), version="2")], T3, lc)  # "a" renewed
    assert plan_assignment(o, want).grants == {"a": F(0, 1, 2)}


def test_a_previous_version_worker_reporting_bare_numbers_is_understood_during_an_upgrade() -> None:
    """A format-1 Lease ("0,3") of a group whose single topic is "orders": its release is seen, so the
    hand-off goes on across the upgrade; without the default topic it would read as no report at all."""
    orders = {"orders": 4}
    doc = AssignmentDoc(6, {"new": F(0, topic="orders"), "old": F(1, topic="orders")}, orders,
                        {P(3, "orders"): Revocation("old", 6)})
    leases = [lease("old", owned="1", epoch="6"), lease("new", owned="orders:0", epoch="6")]
    want = {P(0, "orders"): "new", P(1, "orders"): "old", P(3, "orders"): "new"}
    o = observe(doc, [pod("old"), pod("new")], leases, orders, LeaseClock(Clock(NOW)), default_topic="orders")
    assert o.workers["old"].report == WorkerReport(F(1, topic="orders"), 6)
    step = plan_assignment(o, want)
    assert step.grant_of("new") == F(0, 3, topic="orders")  # "old" applied epoch 6 without 3: released
    blind = observe(doc, [pod("old"), pod("new")], leases, orders, LeaseClock(Clock(NOW)))
    assert blind.workers["old"].report is None
    assert P(3, "orders") not in plan_assignment(blind, want).grant_of("new")


METRICS = """
# HELP lagpilot_deliveries_total x
lagpilot_deliveries_total{outcome="success",topic="orders",partition="0"} 90.0
lagpilot_deliveries_total{outcome="retry",topic="orders",partition="0"} 10.0
lagpilot_deliveries_total{outcome="success",topic="orders",partition="5"} 1000.0
lagpilot_deliveries_total{outcome="error",topic="payments",partition="0"} 400.0
lagpilot_delivery_seconds_bucket{le="0.01",partition="0",status_class="2xx",topic="orders"} 50.0
lagpilot_delivery_seconds_bucket{le="0.05",partition="0",status_class="2xx",topic="orders"} 95.0
lagpilot_delivery_seconds_bucket{le="0.1",partition="0",status_class="2xx",topic="orders"} 100.0
lagpilot_delivery_seconds_bucket{le="+Inf",partition="0",status_class="2xx",topic="orders"} 100.0
lagpilot_delivery_seconds_bucket{le="5",partition="0",status_class="5xx",topic="payments"} 400.0
lagpilot_delivery_seconds_bucket{le="+Inf",partition="0",status_class="5xx",topic="payments"} 400.0
"""


def test_figures_from_metrics_match_topic_and_partition() -> None:
    f = figures_from_metrics([METRICS], [P(0, "orders")])
    assert f is not None  # payments:0 (all errors, slow) is another partition: not counted
    assert f.deliveries == 100 and f.error_rate == pytest.approx(0.1) and f.p99_ms == pytest.approx(100.0)
    assert figures_from_metrics([METRICS], [P(3, "orders"), P(5, "payments")]) is None  # nothing delivered there
    both = figures_from_metrics([METRICS], [P(0, "orders"), P(0, "payments")])
    assert both is not None and both.deliveries == 500 and both.error_rate == pytest.approx(410 / 500)
    assert figures_from_metrics(['lagpilot_deliveries_total{outcome="success",partition="0"} 9'], [P(0, "orders")]) \
        is None  # a sample without a topic label names no partition of ours


def test_read_grant_and_lease_duration() -> None:
    doc = AssignmentDoc(7, {"p1": F(1, 4)}, {"t": 6}).to_json()
    assert read_grant(doc, "p1") == Grant("", 7, F(1, 4))
    assert read_grant(doc, "p2") == Grant("", 7, frozenset())
    assert read_grant('{"epoch": 0, "grants": {}}', "p", "t") == Grant("", 0, frozenset())
    assert read_grant('{"epoch": 3, "grants": {}, "incarnation": "i9"}', "p", "t") == Grant("i9", 3, frozenset())
    assert read_grant('{"epoch": 3, "grants": {"p": [0, 3]}}', "p", "orders") == Grant("", 3, F(0, 3, topic="orders"))
    assert read_grant('{"epoch": 3, "grants": {"p": [0, 3]}}', "p") is None  # format 1 without a topic
    assert read_grant("garbage", "p") is None and read_grant(None, "p") is None
    assert format_owned(frozenset({P(3), P(1), P(0, "a")})) == "a:0,t:1,t:3"
    assert lease_duration_for(20, 5) > 20 + 5
    # a fenced worker's last HTTP request may still be on the wire for the target timeout
    assert lease_duration_for(20, 5, 10) >= lease_duration_for(20, 5) + 10


def test_status_patch_nulls_removed_keys_and_assignment_summary() -> None:
    doc = AssignmentDoc(5, {"a": F(0, 2) | F(0, topic="u")}, {"t": 3, "u": 1}, {P(1): Revocation("b", 5)})
    o = observe(doc, [pod("a")], [lease("a", "t:0", "5")], {"t": 3, "u": 1}, LeaseClock(Clock(NOW)))
    summary = assignment_status(o, doc)
    assert summary == {"epoch": 5, "owners": {"t:0": "a", "t:2": "a", "u:0": "a"}, "confirmed": 1,
                       "moving": ["t:1"], "unowned": ["t:1", "t:2", "u:0"]}
    r = HandoffResult(rollout={"phase": "Stable", "stableRevision": "x"}, assignment=summary)
    patch = r.status_patch({"rollout": {"phase": "Canary", "analysisSince": 3.0}, "lag": {"total": 1}})
    assert patch["rollout"] == {"phase": "Stable", "stableRevision": "x", "analysisSince": None}
    assert patch["assignment"] == summary and "lag" not in patch
    # a partition no longer granted (revoked, or its topic gone) is removed from owners by the merge-patch
    moved = HandoffResult(rollout={}, assignment={**summary, "owners": {"t:0": "a"}})
    assert moved.status_patch({"assignment": summary})["assignment"]["owners"] == {
        "t:0": "a", "t:2": None, "u:0": None}
