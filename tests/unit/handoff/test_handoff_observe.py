"""The hand-off's pure observation: reading Leases and pods into the observed state, canary figures from
Prometheus text, and the worker side's reading of assignment.json."""

from __future__ import annotations

import pytest

from lagpilot.protocol import Grant, format_owned, lease_duration_for, read_grant
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
from lagpilot_operator.handoff.planner import AssignmentDoc, Revocation, WorkerReport
from lagpilot_operator.handoff.shell import HandoffResult

pytestmark = pytest.mark.unit

NOW = parse_time("2026-01-01T00:01:00Z") or 0.0


def lease(name: str, owned: str | None = "0,1", epoch: str | None = "3", renew: str | None = "2026-01-01T00:00:55Z",
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
    assert lease_report(lease("a")) == WorkerReport(frozenset({0, 1}), 3)
    assert lease_report(lease("a", owned="")) == WorkerReport(frozenset(), 3)
    assert lease_report(lease("a", owned="x")) is None
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
    observe(None, pods, leases, 4, lc, 10)
    clock.t += 11  # "b" has not changed since (the others renew: a new resourceVersion each time)
    leases = [lease("a", version="2"), lease("b"), lease("forced", version="2")]
    o = observe(None, pods, leases, 4, lc, 10)
    a, b, c, d, forced = (o.workers[n] for n in ("a", "b", "c", "d", "forced"))
    assert a.eligible and a.revision == "r1" and a.ready
    assert b.gone  # Lease not renewed for a Lease duration of the operator's clock
    assert c.gone and c.report is None and not c.eligible  # a pod without a Lease for a whole duration
    assert d.terminating and not d.eligible
    # Pod object gone but the Lease still renewed: still alive (it may be processing), never eligible.
    assert not forced.gone and forced.terminating
    assert o.is_gone("never-seen")


def test_observe_then_plan_releases_on_gone() -> None:
    from lagpilot_operator.handoff.planner import plan_assignment

    doc = AssignmentDoc(5, {"a": frozenset({2})}, 3, {0: Revocation("b", 4), 1: Revocation("x", 4)})
    released = lease("b")
    released["spec"]["holderIdentity"] = ""  # "b" stopped cleanly
    clock = Clock(NOW)
    lc = LeaseClock(clock)
    o = observe(doc, [pod("a"), pod("b")], [lease("a", "2", "5"), released], 3, lc)
    new = plan_assignment(o, {0: "a", 1: "a", 2: "a"})
    # "b" released cleanly: its partition moves at once. "x" (no pod, no Lease) may be a force-deleted pod
    # still running: its partition waits a Lease duration of the operator's clock.
    assert new.grants == {"a": frozenset({0, 2})}
    clock.t += DEFAULT_LEASE_SECONDS + 1
    o = observe(new, [pod("a")], [lease("a", "0,2", str(new.epoch), version="2")], 3, lc)  # "a" renewed
    assert plan_assignment(o, {0: "a", 1: "a", 2: "a"}).grants == {"a": frozenset({0, 1, 2})}


METRICS = """
# HELP lagpilot_deliveries_total x
lagpilot_deliveries_total{outcome="success",partition="0"} 90.0
lagpilot_deliveries_total{outcome="retry",partition="0"} 10.0
lagpilot_deliveries_total{outcome="success",partition="5"} 1000.0
lagpilot_delivery_seconds_bucket{le="0.01",partition="0",status_class="2xx"} 50.0
lagpilot_delivery_seconds_bucket{le="0.05",partition="0",status_class="2xx"} 95.0
lagpilot_delivery_seconds_bucket{le="0.1",partition="0",status_class="2xx"} 100.0
lagpilot_delivery_seconds_bucket{le="+Inf",partition="0",status_class="2xx"} 100.0
"""


def test_figures_from_metrics() -> None:
    f = figures_from_metrics([METRICS], [0])
    assert f is not None
    assert f.deliveries == 100 and f.error_rate == pytest.approx(0.1) and f.p99_ms == pytest.approx(100.0)
    assert figures_from_metrics([METRICS], [3]) is None  # no deliveries on those partitions


def test_read_grant_and_lease_duration() -> None:
    doc = AssignmentDoc(7, {"p1": frozenset({1, 4})}, 6).to_json()
    assert read_grant(doc, "p1") == Grant("", 7, frozenset({1, 4}))
    assert read_grant(doc, "p2") == Grant("", 7, frozenset())
    assert read_grant('{"epoch": 0, "grants": {}}', "p") == Grant("", 0, frozenset())
    assert read_grant('{"epoch": 3, "grants": {}, "incarnation": "i9"}', "p") == Grant("i9", 3, frozenset())
    assert read_grant("garbage", "p") is None and read_grant(None, "p") is None
    assert format_owned(frozenset({3, 1})) == "1,3"
    assert lease_duration_for(20, 5) > 20 + 5
    # a fenced worker's last HTTP request may still be on the wire for the target timeout
    assert lease_duration_for(20, 5, 10) >= lease_duration_for(20, 5) + 10


def test_status_patch_nulls_removed_keys_and_assignment_summary() -> None:
    doc = AssignmentDoc(5, {"a": frozenset({0, 2})}, 3, {1: Revocation("b", 5)})
    o = observe(doc, [pod("a")], [lease("a", "0", "5")], 3, LeaseClock(Clock(NOW)))
    summary = assignment_status(o, doc)
    assert summary == {"epoch": 5, "owners": ["a", None, "a"], "confirmed": 1, "moving": [1],
                       "unowned": [1, 2]}
    r = HandoffResult(rollout={"phase": "Stable", "stableRevision": "x"}, assignment=summary)
    patch = r.status_patch({"rollout": {"phase": "Canary", "analysisSince": 3.0}, "lag": {"total": 1}})
    assert patch["rollout"] == {"phase": "Stable", "stableRevision": "x", "analysisSince": None}
    assert patch["assignment"] == summary and "lag" not in patch
