"""When the operator should run a hand-off round sooner than the periodic resync. Pure.

A partition hand-off takes two epochs (revoke, then grant after the release is seen), and each step waits
on a worker's Lease; the 30 s resync would make every move take up to a minute. So the operator reacts to
Lease *reports* (not to plain renewals, which carry nothing new) and polls fast, without API calls, only
while something is in motion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lagpilot.protocol import ANNOTATION_EPOCH, ANNOTATION_OWNED
from lagpilot_operator.handoff.rollout import ABORTED, STABLE

FAST_INTERVAL_SECONDS = 1.5

LeaseKey = tuple[str | None, str | None, str | None, int | None]


def lease_report(body: Mapping[str, Any]) -> LeaseKey:
    """What in a worker's Lease can change a hand-off decision: the owned partitions and applied epoch
    (annotations), the holder, and the lease duration (a clean stop writes the Lease already expired).
    The renewTime alone is left out, so a plain renewal is no reason to reconcile."""
    meta = body.get("metadata") or {}
    ann = meta.get("annotations") or {}
    spec = body.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    return (ann.get(ANNOTATION_OWNED), ann.get(ANNOTATION_EPOCH), spec.get("holderIdentity"),
            int(duration) if isinstance(duration, int) else None)


def lease_changed(seen: dict[tuple[str, str], LeaseKey], event_type: str | None, body: Mapping[str, Any]
                  ) -> bool:
    """Whether this Lease event carries news (and remember it). A deletion always does; so does the first
    sight of a Lease (a new worker, or after an operator restart)."""
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    if event_type == "DELETED":
        seen.pop(key, None)
        return True
    report = lease_report(body)
    if seen.get(key) == report:
        return False
    seen[key] = report
    return True


def in_motion(status: Mapping[str, Any] | None) -> bool:
    """Whether the hand-off has work in progress: a rollout that is not Stable (Aborted counts as settled
    once nothing moves), partitions revoked and not yet granted, or partitions nobody is confirmed to own
    (while workers run).
    Without status.assignment (kafka mode, invalid spec, before the first round) nothing is in motion: the
    create handler and the first workers' Lease events start the hand-off."""
    st = status or {}
    assignment = st.get("assignment")
    if not isinstance(assignment, Mapping):
        return False
    if assignment.get("moving"):
        return True
    if assignment.get("unowned") and st.get("workers") != 0:  # with no workers, unowned is the steady state
        return True
    phase = (st.get("rollout") or {}).get("phase")
    return phase not in (STABLE, ABORTED, None)
