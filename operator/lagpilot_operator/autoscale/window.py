"""Burrow-style evaluation of lag over a sliding window of samples, per partition and for the group.

A single lag number says little: 5 000 behind and catching up is fine, 50 behind and not moving is not.
So each poll appends one sample per partition to a `LagWindow` (a plain, serializable dataclass the
operator keeps in memory) and `evaluate` judges the window:

- OK     lag is zero now, or the consumer is moving and lag is not steadily growing;
- WARN   the committed offset moves but lag grew over the whole window (never fell, ended higher);
- STALL  the committed offset did not move for the whole window while lag stayed > 0, workers running;
- STOP   the same, but the group's workers are not running (nobody is there to commit).

Like Burrow, a partition whose lag was zero at any sample of the window cannot be STALL/STOP/WARN: it was
caught up within the window. Until a partition's samples span the whole window it is OK ("collecting").
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from lagpilot.timefmt import rfc3339
from lagpilot_operator.autoscale.snapshot import LagSnapshot, PartitionLag


class LagStatus(IntEnum):
    """Ordered by severity, so the group status is the max of its partitions'."""

    OK = 0
    WARN = 1
    STALL = 2
    STOP = 3


@dataclass(frozen=True)
class Sample:
    """One partition at one poll: the group's committed offset (None: never committed), log end, lag."""

    t: float
    committed: int | None
    log_end: int
    lag: int

    def to_list(self) -> list[Any]:
        return [self.t, self.committed, self.log_end, self.lag]

    @classmethod
    def from_list(cls, v: list[Any]) -> Sample:
        return cls(float(v[0]), None if v[1] is None else int(v[1]), int(v[2]), int(v[3]))


def _key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


@dataclass(frozen=True)
class LagWindow:
    """Samples per partition ("topic/partition" -> oldest first). Keeps one sample at or before the window
    start as an anchor, so a full window is recognisable (oldest.t <= newest.t - window_seconds)."""

    window_seconds: float = 150.0
    max_samples: int = 200
    partitions: Mapping[str, tuple[Sample, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"windowSeconds": self.window_seconds, "maxSamples": self.max_samples,
                "partitions": {k: [s.to_list() for s in v] for k, v in self.partitions.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LagWindow:
        return cls(float(d.get("windowSeconds", 150.0)), int(d.get("maxSamples", 200)),
                   {k: tuple(Sample.from_list(s) for s in v) for k, v in d.get("partitions", {}).items()})


def prune(samples: tuple[Sample, ...], window_seconds: float, max_samples: int) -> tuple[Sample, ...]:
    """Drop samples older than the newest anchor at or before (newest - window); cap the count."""
    if not samples:
        return samples
    cutoff = samples[-1].t - window_seconds
    anchor = 0
    for i, s in enumerate(samples):
        if s.t <= cutoff:
            anchor = i
    return samples[anchor:][-max_samples:]


def add_snapshot(window: LagWindow, snapshot: LagSnapshot) -> LagWindow:
    """The window with one more sample per partition; partitions gone from the snapshot are dropped,
    new partitions (topic grew) start an empty history."""
    out: dict[str, tuple[Sample, ...]] = {}
    for p in snapshot.partitions:
        k = _key(p.topic, p.partition)
        prev = tuple(s for s in window.partitions.get(k, ()) if s.t < snapshot.taken_at)
        sample = Sample(snapshot.taken_at, p.committed, p.log_end, p.lag)
        out[k] = prune((*prev, sample), window.window_seconds, window.max_samples)
    return replace(window, partitions=out)


@dataclass(frozen=True)
class PartitionEval:
    topic: str
    partition: int
    status: LagStatus
    lag: int
    reason: str
    window_complete: bool

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "status": self.status.name,
                "lag": self.lag, "reason": self.reason, "windowComplete": self.window_complete}


def evaluate_partition(topic: str, partition: int, samples: tuple[Sample, ...], window_seconds: float,
                       workers_running: bool | None = None, min_samples: int = 3) -> PartitionEval:
    """Status of one partition from its samples (oldest first). `workers_running` None = unknown (the
    CLI): a partition that does not move is then STALL, never STOP."""
    if not samples:
        return PartitionEval(topic, partition, LagStatus.OK, 0, "no samples yet", False)
    last, first = samples[-1], samples[0]
    span = last.t - first.t
    complete = span >= window_seconds and len(samples) >= min_samples
    if last.lag == 0:
        return PartitionEval(topic, partition, LagStatus.OK, 0, "caught up", complete)
    if not complete:
        return PartitionEval(topic, partition, LagStatus.OK, last.lag,
                             f"collecting samples ({len(samples)} over {span:.0f}s of {window_seconds:.0f}s)",
                             False)
    if any(s.lag == 0 for s in samples):
        return PartitionEval(topic, partition, LagStatus.OK, last.lag, "caught up within the window", True)
    if first.committed == last.committed and all(s.committed == first.committed for s in samples):
        at = "no committed offset" if last.committed is None else f"committed offset {last.committed}"
        if workers_running is False:
            return PartitionEval(topic, partition, LagStatus.STOP, last.lag,
                                 f"{at} unchanged for {span:.0f}s, lag {last.lag}, no worker running", True)
        return PartitionEval(topic, partition, LagStatus.STALL, last.lag,
                             f"{at} unchanged for {span:.0f}s while lag is {last.lag}", True)
    lags = [s.lag for s in samples]
    if last.lag > first.lag and all(b >= a for a, b in itertools.pairwise(lags)):
        return PartitionEval(topic, partition, LagStatus.WARN, last.lag,
                             f"lag grew from {first.lag} to {last.lag} over {span:.0f}s", True)
    return PartitionEval(topic, partition, LagStatus.OK, last.lag, "consuming", True)


@dataclass(frozen=True)
class GroupEval:
    """The group's verdict and the figures the autoscaler and `status.lag` need."""

    status: LagStatus
    total: int
    max_partition: int
    partitions: tuple[PartitionEval, ...]
    production_rate: float | None  # records/s appended over the window (None: window too short)
    consumption_rate: float | None  # records/s committed over the window
    updated_at: float
    window_complete: bool

    @property
    def stalled(self) -> tuple[PartitionEval, ...]:
        return tuple(p for p in self.partitions if p.status == LagStatus.STALL)

    @property
    def stalled_lag(self) -> int:
        return sum(p.lag for p in self.stalled)

    def status_summary(self) -> dict[str, Any]:
        """`status.lag` of the ConsumerGroup: total, maxPartition, status, updatedAt (+ stalled list)."""
        return {
            "total": self.total,
            "maxPartition": self.max_partition,
            "status": self.status.name,
            "updatedAt": rfc3339(self.updated_at),
            "stalledPartitions": [f"{p.topic}:{p.partition}" for p in self.stalled],  # topic:partition
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.status_summary(), "productionRate": self.production_rate,
                "consumptionRate": self.consumption_rate, "windowComplete": self.window_complete,
                "partitions": [p.to_dict() for p in self.partitions]}


def rates(windows: Iterable[tuple[Sample, ...]]) -> tuple[float | None, float | None]:
    """(production, consumption) in records/s over each partition's window, summed; None if no span.

    Consumption counts committed-offset progress; a partition without commits contributes nothing."""
    produced = consumed = 0.0
    spanned = False
    for samples in windows:
        if len(samples) < 2:
            continue
        first, last = samples[0], samples[-1]
        span = last.t - first.t
        if span <= 0:
            continue
        spanned = True
        produced += max(0, last.log_end - first.log_end) / span
        if first.committed is not None and last.committed is not None:
            consumed += max(0, last.committed - first.committed) / span
    return (produced, consumed) if spanned else (None, None)


def evaluate(window: LagWindow, workers_running: bool | None = None, now: float | None = None,
             min_samples: int = 3) -> GroupEval:
    """Evaluate every partition of the window; the group status is the worst partition status."""
    evals = []
    for k, samples in sorted(window.partitions.items(), key=lambda kv: _split(kv[0])):
        topic, part = _split(k)
        evals.append(evaluate_partition(topic, part, samples, window.window_seconds, workers_running,
                                        min_samples))
    status = max((e.status for e in evals), default=LagStatus.OK)
    newest = max((s[-1].t for s in window.partitions.values() if s), default=now or 0.0)
    prod, cons = rates(window.partitions.values())
    return GroupEval(status, sum(e.lag for e in evals), max((e.lag for e in evals), default=0), tuple(evals),
                     prod, cons, newest if now is None else now,
                     bool(evals) and all(e.window_complete for e in evals))


def _split(key: str) -> tuple[str, int]:
    topic, _, part = key.rpartition("/")
    return topic, int(part)


def snapshot_evals(snapshot: LagSnapshot) -> Mapping[tuple[str, int], PartitionLag]:
    """Index a snapshot's partitions by (topic, partition), for tables that join flags and statuses."""
    return {(p.topic, p.partition): p for p in snapshot.partitions}
