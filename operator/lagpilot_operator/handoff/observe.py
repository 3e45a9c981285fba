"""What the hand-off sees, from raw API objects (pure): each worker's view from its pod and Lease, the
status.assignment summary, and canary figures from the canary workers' /metrics pages."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lagpilot.protocol import ANNOTATION_EPOCH, ANNOTATION_OWNED, LABEL_REVISION, parse_epoch, parse_owned
from lagpilot.timefmt import parse_rfc3339
from lagpilot_operator.handoff.planner import AssignmentDoc, Observed, WorkerReport, WorkerView, confirmed_owners
from lagpilot_operator.handoff.rollout import CanaryFigures


def lease_state(lease: Mapping[str, Any], now: float) -> tuple[WorkerReport | None, bool]:
    """(report, expired) from a Lease as a dict. A Lease with unreadable annotations gives no report (so it
    never confirms a release); one without renewTime counts as expired."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    ann = meta.get("annotations") or {}
    owned = parse_owned(ann.get(ANNOTATION_OWNED))
    epoch = parse_epoch(ann.get(ANNOTATION_EPOCH))
    report = WorkerReport(owned, epoch) if owned is not None and epoch is not None else None
    renewed = parse_rfc3339(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    expired = renewed is None or renewed + duration < now
    return report, expired


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def observe(doc: AssignmentDoc | None, pods: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]],
            partitions: int, now: float) -> Observed:
    """Observed state from raw objects. A name known only from the document (no pod, no Lease) is gone."""
    by_pod = {p["metadata"]["name"]: p for p in pods}
    by_lease = {lease["metadata"]["name"]: lease for lease in leases}
    views: dict[str, WorkerView] = {}
    for name in sorted(set(by_pod) | set(by_lease)):
        pod = by_pod.get(name)
        lease = by_lease.get(name)
        report, expired = lease_state(lease, now) if lease is not None else (None, False)
        gone = expired if lease is not None else pod is None
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
    return Observed(doc, views, partitions)


def assignment_status(observed: Observed, doc: AssignmentDoc) -> dict[str, Any]:
    confirmed = confirmed_owners(Observed(doc, observed.workers, observed.partitions))
    owners = doc.owner_of()
    return {
        "epoch": doc.epoch,
        "owners": [owners.get(p) for p in range(observed.partitions)],  # by partition; null = ungranted
        "confirmed": len(confirmed),
        "moving": sorted(doc.revoked),
        "unowned": sorted(p for p in range(observed.partitions) if p not in confirmed),
    }


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def figures_from_metrics(texts: list[str], partitions: list[int]) -> CanaryFigures | None:
    """Canary figures from the canary workers' /metrics pages, restricted to the canary partitions:
    failure rate of delivery attempts (retry + dead_letter + error over all), p99 attempt latency from the
    histogram, lag growth 0 (not measured here). The canary workers are new pods that have only ever held
    canary partitions, so their counters cover the canary window."""
    wanted = {str(p) for p in partitions}
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for text in texts:
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group("labels") or ""))
            if labels.get("partition") not in wanted:
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
