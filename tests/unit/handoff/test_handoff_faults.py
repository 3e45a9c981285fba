"""Hand-off under deleted, garbled and skewed Leases (issue "Hand-off and operator correctness", items 2
and 3): a worker without a readable report still owns what it owned until its pod is gone or the Lease
duration has passed on the *operator's* clock since it last saw the Lease change; the worker's own clock
(renewTime) never decides."""

from __future__ import annotations

import pytest

from lagpilot.protocol import AssignmentDoc, PartitionId, Revocation
from lagpilot_operator.handoff.observe import LeaseClock, observe
from lagpilot_operator.handoff.planner import plan_assignment

pytestmark = pytest.mark.unit

T = 1_800_000_000.0  # the operator's clock in these tests (any origin)
DURATION = 37


def lease(name: str, owned: str = "t:0", epoch: str = "5", renew: str = "2027-01-15T08:00:00Z",
          version: str = "1", holder: str | None = None) -> dict:
    return {"metadata": {"name": name, "resourceVersion": version,
                         "annotations": {"lagpilot.io/owned": owned, "lagpilot.io/epoch": epoch}},
            "spec": {"holderIdentity": name if holder is None else holder, "leaseDurationSeconds": DURATION,
                     "renewTime": renew}}


def pod(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"lagpilot.io/revision": "r"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


# Partition 0 was revoked from "a" at epoch 6 (a move to "b"); "a" has not reported the release yet.
P0, P1 = PartitionId("t", 0), PartitionId("t", 1)
TOPICS = {"t": 2}
MOVING = AssignmentDoc(6, {}, TOPICS, {P0: Revocation("a", 6)})
TO_B = {P0: "b", P1: "b"}


class Clock:
    def __init__(self) -> None:
        self.t = T

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("a_lease", [
    pytest.param(None, id="lease-deleted"),
    pytest.param(lease("a", owned="garbage"), id="lease-garbled"),
    pytest.param(lease("a", epoch="not-a-number"), id="epoch-garbled"),
])
def test_no_readable_report_is_not_a_release(a_lease: dict | None) -> None:
    leases = [lease("b", owned="", epoch="6")] + ([a_lease] if a_lease else [])
    doc = plan_assignment(observe(MOVING, [pod("a"), pod("b")], leases, TOPICS, LeaseClock()), TO_B)
    assert P0 not in doc.grants.get("b", frozenset()), "granted while its old owner may still deliver it"
    assert P0 in doc.revoked


def test_a_deleted_lease_releases_once_the_duration_has_passed_on_the_operators_clock() -> None:
    clock = Clock()
    lc = LeaseClock(clock)
    b = [lease("b", owned="", epoch="6")]
    assert observe(MOVING, [pod("a"), pod("b")], b, TOPICS, lc, DURATION).workers["a"].gone is False
    clock.t += DURATION - 1
    assert observe(MOVING, [pod("a"), pod("b")], b, TOPICS, lc, DURATION).workers["a"].gone is False
    clock.t += 2
    assert observe(MOVING, [pod("a"), pod("b")], b, TOPICS, lc, DURATION).workers["a"].gone is True



def test_a_force_deleted_pod_whose_lease_was_collected_is_not_gone_before_the_duration() -> None:
    """`kubectl delete pod --grace-period=0` removes the pod object at once while its container may still
    run, and the Lease (owned by the pod) goes by garbage collection: a worker the document still names with
    neither pod nor Lease keeps its partitions for a full Lease duration of the operator's clock. (Seen on
    kind: treating it as gone at once let the new owner deliver while the killed pod still did.)"""
    clock = Clock()
    lc = LeaseClock(clock)
    b = [lease("b", owned="", epoch="6")]
    assert observe(MOVING, [pod("a"), pod("b")], [*b, lease("a", owned="t:0", epoch="6")], TOPICS, lc,
                   DURATION).workers["a"].gone is False
    clock.t += 1
    observed = observe(MOVING, [pod("b")], b, TOPICS, lc, DURATION)
    assert not observed.is_gone("a")
    doc = plan_assignment(observed, TO_B)
    assert P0 not in doc.grants.get("b", frozenset()), "granted while the force-deleted pod may still deliver"
    clock.t += DURATION + 1
    assert observe(MOVING, [pod("b")], b, TOPICS, lc, DURATION).is_gone("a")
    # A fresh operator (restarted, empty clock) waits a full duration too.
    fresh = LeaseClock(clock)
    assert not observe(MOVING, [pod("b")], b, TOPICS, fresh, DURATION).is_gone("a")


def test_a_lease_seen_released_stays_released_after_it_is_deleted() -> None:
    """A pod that drained and released its Lease, then finished: the Lease is garbage-collected with the
    pod; the release seen before is not forgotten (the hand-off need not wait a Lease duration)."""
    clock = Clock()
    lc = LeaseClock(clock)
    b = [lease("b", owned="", epoch="6")]
    released = lease("a", owned="", epoch="6")
    released["spec"]["holderIdentity"] = ""  # a clean stop empties the holder
    assert observe(MOVING, [pod("a"), pod("b")], [*b, released], TOPICS, lc, DURATION).is_gone("a")
    clock.t += 1
    assert observe(MOVING, [pod("b")], b, TOPICS, lc, DURATION).is_gone("a")


@pytest.mark.parametrize("skew", [-15.0, 15.0, -3600.0, 3600.0])
def test_expiry_is_measured_from_the_operators_observation_not_the_workers_renew_time(skew: float) -> None:
    """A worker whose clock is off by `skew` writes renewTime = its now. Only a change of the Lease counts
    as a renewal; it expires DURATION seconds of the operator's clock after the last change seen."""
    from lagpilot.timefmt import rfc3339

    clock = Clock()
    lc = LeaseClock(clock)
    written = rfc3339(T + skew)
    a = lease("a", renew=written, version="41")
    seen = observe(MOVING, [pod("a")], [a], TOPICS, lc, DURATION).workers["a"]
    assert not seen.gone
    clock.t += DURATION - 1  # silent since (cut off): not expired yet, whatever renewTime says
    assert not observe(MOVING, [pod("a")], [a], TOPICS, lc, DURATION).workers["a"].gone
    clock.t += 2
    assert observe(MOVING, [pod("a")], [a], TOPICS, lc, DURATION).workers["a"].gone
    # A renewal (a new resourceVersion) restarts the count.
    renewed = lease("a", renew=rfc3339(clock.t + skew), version="42")
    assert not observe(MOVING, [pod("a")], [renewed], TOPICS, lc, DURATION).workers["a"].gone


def test_a_lease_claiming_a_short_duration_is_held_to_the_operators_duration() -> None:
    """A forged or mis-configured Lease cannot shorten the wait below what the operator computed."""
    clock = Clock()
    lc = LeaseClock(clock)
    a = lease("a")
    a["spec"]["leaseDurationSeconds"] = 1
    observe(MOVING, [pod("a")], [a], TOPICS, lc, DURATION)
    clock.t += 5
    assert not observe(MOVING, [pod("a")], [a], TOPICS, lc, DURATION).workers["a"].gone


def test_a_released_lease_is_gone_at_once() -> None:
    """A clean stop writes an empty holder (client-go's release): no clock involved."""
    a = lease("a", owned="", holder="")
    assert observe(MOVING, [pod("a")], [a], TOPICS, LeaseClock(), DURATION).workers["a"].gone


def test_the_clock_forgets_workers_no_longer_seen() -> None:
    clock = Clock()
    lc = LeaseClock(clock)
    observe(MOVING, [pod("a")], [lease("a")], TOPICS, lc, DURATION)
    # While the document names "a" (partition 0 is revoked from it) the clock keeps timing it...
    observe(MOVING, [], [], TOPICS, lc, DURATION)
    assert lc.known() == {"a"}
    # ...and forgets it once nothing names it any more.
    observe(None, [], [], TOPICS, lc, DURATION)
    assert lc.known() == set()
