"""One autoscaling step per poll, kopf-independent, so that the operator's timer handler stays tiny:

    monitor = LagMonitor()                                   # one per operator process
    step = monitor.poll(namespace, name, bootstrap_servers=..., group=..., topic=...,
                        autoscaling=spec_dict_or_parsed, current_workers=status.workers,
                        ready_workers=status.readyWorkers)
    patch.status["lag"] = step.lag_status                     # status.lag
    if step.workers is not None: patch.status["workers"] = step.workers   # and scale the Deployment
    for e in step.events: kopf.event(body, type=e.type, reason=e.reason, message=e.message)

`run_autoscaling_step` is the pure part (snapshot in, decision out); `LagMonitor` adds the reader, the
per-group in-memory state, and the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lagpilot_operator.autoscale import metrics as lag_metrics
from lagpilot_operator.autoscale.decide import (
    AutoscaleSpec,
    ScaleDecision,
    ScaleInputs,
    ScaleState,
    decide_workers,
    estimate_worker_rate,
)
from lagpilot_operator.autoscale.offsets import LagReader, LagSnapshot, ResetPolicy
from lagpilot_operator.autoscale.window import GroupEval, LagStatus, LagWindow, add_snapshot, evaluate

WINDOW_POLLS = 10  # Burrow's default window: 10 offsets


@dataclass(frozen=True)
class GroupLagState:
    """What one ConsumerGroup's autoscaler remembers between polls (serializable via to_dict)."""

    window: LagWindow = field(default_factory=LagWindow)
    scale: ScaleState = field(default_factory=ScaleState)
    worker_rate: float | None = None  # learned records/s per busy worker
    workers: int | None = None  # worker count at the last step
    workers_since: float = 0.0  # when that count was set (rates are learned only at steady counts)
    status: LagStatus = LagStatus.OK
    warned: frozenset[str] = frozenset()  # partitions already reported as behind log-start
    ready: int = 0  # ready workers at the last step

    def to_dict(self) -> dict[str, Any]:
        return {"window": self.window.to_dict(), "scale": self.scale.to_dict(),
                "workerRate": self.worker_rate, "workers": self.workers, "workersSince": self.workers_since,
                "status": self.status.name, "warned": sorted(self.warned), "ready": self.ready}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GroupLagState:
        return cls(LagWindow.from_dict(d.get("window", {})), ScaleState.from_dict(d.get("scale")),
                   d.get("workerRate"), d.get("workers"), float(d.get("workersSince", 0.0)),
                   LagStatus[d.get("status", "OK")], frozenset(d.get("warned", ())), int(d.get("ready", 0)))


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StepResult:
    lag_status: dict[str, Any]  # the status.lag patch
    workers: int | None  # new worker count to apply, None = leave as is
    events: tuple[Event, ...]
    evaluation: GroupEval
    decision: ScaleDecision | None
    state: GroupLagState

    @property
    def event_text(self) -> str | None:
        return "; ".join(e.message for e in self.events) or None


@dataclass(frozen=True)
class Interval:
    """The last poll interval, stalled partitions aside."""

    produced_rate: float  # records/s appended
    committed_rate: float  # records/s committed
    busy: bool  # every partition had a backlog at both polls: the workers never ran out of work
    started_at: float


def last_interval(window: LagWindow, stalled: set[str]) -> Interval | None:
    """Rates between the last two polls. Only a busy interval measures what the workers can deliver: one
    partition with lag does not keep every worker busy."""
    produced = committed = 0
    start = end = None
    busy = True
    for key, samples in window.partitions.items():
        if key in stalled or len(samples) < 2:
            continue
        a, b = samples[-2], samples[-1]
        start, end = a.t, b.t
        busy = busy and a.lag > 0 and b.lag > 0
        produced += max(0, b.log_end - a.log_end)
        if a.committed is not None and b.committed is not None:
            committed += max(0, b.committed - a.committed)
    if start is None or end is None or end <= start:
        return None
    return Interval(produced / (end - start), committed / (end - start), busy, start)


def run_autoscaling_step(state: GroupLagState, snapshot: LagSnapshot, autoscaling: AutoscaleSpec,
                         current_workers: int, ready_workers: int, now: float | None = None) -> StepResult:
    """Fold one snapshot into the window, evaluate it, and decide the worker count (pure)."""
    now = snapshot.taken_at if now is None else now
    window_seconds = WINDOW_POLLS * autoscaling.poll_seconds
    window = state.window
    if window.window_seconds != window_seconds:
        window = replace(window, window_seconds=window_seconds)
    window = add_snapshot(window, snapshot)
    ev = evaluate(window, workers_running=ready_workers > 0, now=now)

    workers_since = state.workers_since if state.workers == current_workers else now
    # Learn the per-worker rate from the last interval if the same workers, all ready at both polls (and
    # the count set before the interval began), had work all along.
    stalled_keys = {f"{p.topic}/{p.partition}" for p in ev.stalled}
    last = last_interval(window, stalled_keys)
    steady = (last is not None and state.workers == current_workers and workers_since < last.started_at
              and state.ready >= current_workers and ready_workers >= current_workers)
    worker_rate = estimate_worker_rate(state.worker_rate, last.committed_rate if last else None,
                                       current_workers, steady and last is not None and last.busy)

    events: list[Event] = []
    decision: ScaleDecision | None = None
    new_workers: int | None = None
    scale = state.scale
    if autoscaling.enabled:
        decision = decide_workers(autoscaling, ScaleInputs(
            now=now, current_workers=current_workers, partitions=len(snapshot.partitions),
            total_lag=ev.total, stalled_lag=ev.stalled_lag, stalled_partitions=len(ev.stalled),
            production_rate=last.produced_rate if last else None, worker_rate=worker_rate), state.scale)
        scale = decision.state
        if decision.changed:
            new_workers = decision.desired
            events.append(Event("Normal", "ScaledUp" if decision.direction == "up" else "ScaledDown",
                                f"{current_workers} -> {decision.desired} workers: {decision.reason}"))
    if ev.status != state.status:
        worst = [p for p in ev.partitions if p.status == ev.status][:3]
        detail = "; ".join(f"{p.topic}[{p.partition}]: {p.reason}" for p in worst)
        kind = "Normal" if ev.status == LagStatus.OK else "Warning"
        message = f"lag status {state.status.name} -> {ev.status.name}" + (f": {detail}" if detail else "")
        events.append(Event(kind, f"Lag{ev.status.name.title()}", message))
    behind = {f"{p.topic}/{p.partition}": p for p in snapshot.partitions if p.behind_log_start}
    for key in sorted(set(behind) - state.warned):
        p = behind[key]
        events.append(Event("Warning", "OffsetsDeleted",
                            f"{p.topic}[{p.partition}]: committed offset {p.committed} is below log-start "
                            f"{p.log_start}: {p.log_start - (p.committed or 0)} records deleted unread"))

    summary = ev.status_summary()
    if decision is not None:
        summary["desiredWorkers"] = decision.desired
        summary["reason"] = decision.reason
    new_state = GroupLagState(window, scale, worker_rate,
                              current_workers if new_workers is None else new_workers,
                              workers_since if new_workers is None else now, ev.status, frozenset(behind),
                              ready_workers)
    return StepResult(summary, new_workers, tuple(events), ev, decision, new_state)


class LagMonitor:
    """Per-operator registry of group states; `poll` = read lag, step, publish metrics."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._states: dict[tuple[str, str], GroupLagState] = {}
        self._lock = threading.Lock()
        self.timeout = timeout

    def reader(self, bootstrap_servers: str, security: Mapping[str, str] | None = None) -> LagReader:
        """A reader on the operator's shared clients for this connection (readers hold no client)."""
        return LagReader(bootstrap_servers, dict(security or {}), timeout=self.timeout)

    def poll(self, namespace: str, name: str, *, bootstrap_servers: str, group: str, topic: str,
             autoscaling: AutoscaleSpec, current_workers: int, ready_workers: int,
             security: Mapping[str, str] | None = None, reset: ResetPolicy = "earliest",
             now: float | None = None) -> StepResult:
        """Raises offsets.KafkaUnavailable / offsets.TopicNotFound (report as Degraded); ``autoscaling`` comes
        from the parsed spec, already checked."""
        snapshot = self.reader(bootstrap_servers, security).read(group, [topic], reset)
        return self.step(namespace, name, snapshot, autoscaling, current_workers, ready_workers, now)

    def step(self, namespace: str, name: str, snapshot: LagSnapshot, autoscaling: AutoscaleSpec,
             current_workers: int, ready_workers: int, now: float | None = None) -> StepResult:
        """Fold a snapshot read elsewhere (a batched lag round) into the group's state, publish metrics."""
        spec = autoscaling
        with self._lock:
            state = self._states.get((namespace, name), GroupLagState())
        step = run_autoscaling_step(state, snapshot, spec, current_workers, ready_workers,
                                    time.time() if now is None else now)
        with self._lock:
            self._states[(namespace, name)] = step.state
        lag_metrics.publish(namespace, name, step.evaluation, step.decision, current_workers)
        return step

    def state(self, namespace: str, name: str) -> GroupLagState | None:
        with self._lock:
            return self._states.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """Call when the ConsumerGroup is deleted."""
        with self._lock:
            self._states.pop((namespace, name), None)
        lag_metrics.forget(namespace, name)
