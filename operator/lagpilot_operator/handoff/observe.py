"""What the hand-off sees, from raw API objects (pure): each worker's view from its pod and Lease, the
status.assignment summary, and canary figures from the canary workers' /metrics pages."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lagpilot.protocol import (
    ANNOTATION_EPOCH,
    ANNOTATION_OWNED,
    LABEL_REVISION,
    REVOKED_FROM_ALL,
    PartitionId,
    lease_duration_for,
    parse_epoch,
    parse_owned,
)
from lagpilot_operator.handoff.planner import AssignmentDoc, Observed, WorkerReport, WorkerView, confirmed_owners
from lagpilot_operator.handoff.rollout import CanaryFigures

# The workers' Lease duration with the defaults (15 s fence, 5 s renewal, 10 s target timeout); the shell
# passes the figure for each group's own settings.
DEFAULT_LEASE_SECONDS = float(lease_duration_for(15.0, 5.0, 10.0))


class LeaseClock:
    """When this operator last saw each worker's Lease change (client-go leader election's observedTime):
    a Lease expires a Lease duration after that, measured on the operator's own clock, so a worker whose
    clock runs ahead or behind (its renewTime) never makes its Lease look older or younger than it is.
    Only the operator's clock *rate* matters, against the worker's fence timer. Kept in memory: after an
    operator restart every Lease counts as just renewed (the first expiry waits a full duration)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self._seen: dict[str, tuple[str | None, float]] = {}
        self._released: set[str] = set()

    def last_change(self, name: str, version: str | None) -> float:
        """When ``name``'s Lease was first seen as ``version`` (None: no readable Lease), now if new."""
        prev = self._seen.get(name)
        if prev is not None and prev[0] == version:
            return prev[1]
        at = self.now()
        self._seen[name] = (version, at)
        return at

    def note_released(self, name: str, released: bool) -> None:
        """Remember a Lease last seen released, so that its deletion afterwards (garbage collection of a
        finished pod's Lease) still reads as released rather than as a worker that went silent."""
        if released:
            self._released.add(name)
        else:
            self._released.discard(name)

    def was_released(self, name: str) -> bool:
        return name in self._released

    def forget_except(self, names: set[str]) -> None:
        for name in list(self._seen):
            if name not in names:
                del self._seen[name]
        self._released &= names

    def known(self) -> set[str]:
        return set(self._seen)


def lease_report(lease: Mapping[str, Any], default_topic: str | None = None) -> WorkerReport | None:
    """What a Lease reports; None when its annotations are missing or unreadable (never a guess, so it never
    confirms a release). ``default_topic``: the group's only topic, for a worker of the previous version
    that reports bare partition numbers (during an upgrade); without one such a report is unreadable."""
    ann = (lease.get("metadata") or {}).get("annotations") or {}
    owned = parse_owned(ann.get(ANNOTATION_OWNED), default_topic)
    epoch = parse_epoch(ann.get(ANNOTATION_EPOCH))
    return WorkerReport(owned, epoch) if owned is not None and epoch is not None else None


def lease_version(lease: Mapping[str, Any]) -> str:
    """What changes with every write of the Lease: its resourceVersion (else its content)."""
    meta = lease.get("metadata") or {}
    rv = meta.get("resourceVersion")
    if rv:
        return str(rv)
    spec = lease.get("spec") or {}
    return repr((sorted((meta.get("annotations") or {}).items()), spec.get("renewTime"), spec.get("holderIdentity")))


def lease_released(lease: Mapping[str, Any]) -> bool:
    """A clean stop empties the holder (as client-go does on release): the worker processes nothing."""
    return not (lease.get("spec") or {}).get("holderIdentity")


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def observe(doc: AssignmentDoc | None, pods: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]],
            topics: Mapping[str, int], clock: LeaseClock, lease_duration: float = DEFAULT_LEASE_SECONDS,
            published_epoch: int | None = None, default_topic: str | None = None) -> Observed:
    """Observed state from raw objects. A worker is gone when its Lease was released (or was last seen
    released before it was deleted), or when for ``lease_duration`` seconds of the operator's clock (at
    least; a Lease may declare longer) nothing about its Lease changed: not renewed, missing, or
    unreadable. That holds for a name the document still names with neither pod nor Lease: a pod deleted
    with grace 0 vanishes from the API while its container still runs, and its Lease goes with it by
    garbage collection, so absence proves nothing until a Lease duration has passed. ``topics``: every
    topic the group reads now with its partition count; ``default_topic`` reads bare numbers in Leases
    (see :func:`lease_report`)."""
    by_pod = {p["metadata"]["name"]: p for p in pods}
    by_lease = {lease["metadata"]["name"]: lease for lease in leases}
    in_doc: set[str] = set()
    if doc is not None:
        in_doc = set(doc.grants) | {r.worker for r in doc.revoked.values() if r.worker != REVOKED_FROM_ALL}
    names = set(by_pod) | set(by_lease) | in_doc
    clock.forget_except(names)
    now = clock.now()
    views: dict[str, WorkerView] = {}
    for name in sorted(names):
        pod = by_pod.get(name)
        lease = by_lease.get(name)
        report = lease_report(lease, default_topic) if lease is not None else None
        declared = float(((lease or {}).get("spec") or {}).get("leaseDurationSeconds") or 0)
        changed = clock.last_change(name, lease_version(lease) if lease is not None else None)
        silent = now - changed > max(declared, lease_duration)
        if lease is not None:
            clock.note_released(name, lease_released(lease))
        released = clock.was_released(name)
        gone = released or silent
        revision = ""
        ready = terminating = False
        if pod is not None:
            meta = pod.get("metadata") or {}
            revision = (meta.get("labels") or {}).get(LABEL_REVISION, "")
            ready = pod_ready(pod)
            phase = (pod.get("status") or {}).get("phase")
            terminating = bool(meta.get("deletionTimestamp")) or phase in ("Succeeded", "Failed")
        else:
            terminating = True  # a running process without a pod object: let it drain, give it nothing
        views[name] = WorkerView(name, gone=gone, report=report, revision=revision, ready=ready,
                                 terminating=terminating)
    return Observed(doc, views, dict(topics), published_epoch)


def assignment_status(observed: Observed, doc: AssignmentDoc) -> dict[str, Any]:
    """status.assignment, partitions written ``topic:partition``. ``owners`` names the granted ones only
    (an ungranted partition is absent: a merge-patch null would delete the key anyway); ``unowned`` lists
    every existing partition no worker is confirmed to own."""
    confirmed = confirmed_owners(Observed(doc, observed.workers, observed.topics))
    owners = doc.owner_of()
    return {
        "epoch": doc.epoch,
        "owners": {str(p): owners[p] for p in observed.partitions if p in owners},
        "confirmed": len(confirmed),
        "moving": [str(p) for p in sorted(doc.revoked)],
        "unowned": [str(p) for p in observed.partitions if p not in confirmed],
    }


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def figures_from_metrics(texts: list[str], partitions: list[PartitionId]) -> CanaryFigures | None:
    """Canary figures from the canary workers' /metrics pages, restricted to the canary partitions (a
    sample matches on its ``topic`` and ``partition`` labels both: partition 0 of another topic is not a
    canary partition): failure rate of delivery attempts (retry + dead_letter + error over all), p99
    attempt latency from the histogram, lag growth 0 (not measured here). The canary workers are new pods
    that have only ever held canary partitions, so their counters cover the canary window."""
    wanted = {(p.topic, str(p.partition)) for p in partitions}
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for text in texts:
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group("labels") or ""))
            if (labels.get("topic"), labels.get("partition")) not in wanted:
                continue
            try:
                value = float(m.group("value"))
            except ValueError:
                continue
            if m.group("name") == "lagpilot_deliveries_total":
                outcomes[labels.get("outcome", "")] = outcomes.get(labels.get("outcome", ""), 0.0) + value
            elif m.group("name") == "lagpilot_delivery_seconds_bucket":
                le = labels.get("le", "+Inf")
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    total = sum(outcomes.values())
    if total <= 0:
        return None
    failed = sum(v for k, v in outcomes.items() if k in ("retry", "dead_letter", "error"))
    p99 = 0.0
    if buckets:
        count = max(buckets.values())
        for bound in sorted(buckets):
            if buckets[bound] >= 0.99 * count:
                p99 = bound * 1000.0 if bound != float("inf") else max(
                    (b for b in buckets if b != float("inf")), default=0.0) * 1000.0
                break
    return CanaryFigures(deliveries=int(total), error_rate=failed / total, p99_ms=p99, lag_growth=0.0)
