"""Lag-driven worker count: a pure decision from observed lag and rates to the desired number of workers.

The rule users know from KEDA's Kafka scaler (workers = ceil(lag / lagPerWorker), at most one worker per
partition, activation threshold and scale to zero) with the HPA's stabilization windows (recommendation
history: scale up to the *minimum* recommendation over the scale-up window, down to the *maximum* over
the scale-down window), plus what a pure lag rule cannot do:

- `excludeStalledPartitions`: lag on a partition whose committed offset is stuck (a poison record, a
  failing key) is not a reason to add workers; more workers would not move it;
- `catchUpSeconds` > 0: size from measured rates too, so that the backlog clears within that time:
  ceil((production rate + lag / catchUpSeconds) / per-worker delivery rate);
- no scale-up rate limit: one decision goes straight to the need (bounded by the partition count).

Every decision carries a `reason` with the figures, used as the Event message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lagpilot_operator.resource.spec import AutoscaleSpec

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class ScaleInputs:
    """What the operator observed this poll."""

    now: float
    current_workers: int  # the count the operator set last (status), not the ready count
    partitions: int
    total_lag: int
    stalled_lag: int = 0  # lag on STALL partitions (see lag_eval)
    stalled_partitions: int = 0
    production_rate: float | None = None  # records/s appended to the topic (window average)
    worker_rate: float | None = None  # records/s one busy worker delivers (see estimate_worker_rate)


@dataclass(frozen=True)
class ScaleState:
    """Recommendation history for the stabilization windows: ((time, recommendation), ...)."""

    recommendations: tuple[tuple[float, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"recommendations": [list(r) for r in self.recommendations]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ScaleState:
        return cls(tuple((float(t), int(n)) for t, n in (d or {}).get("recommendations", [])))


@dataclass(frozen=True)
class ScaleDecision:
    desired: int  # the worker count to run now
    current: int
    recommendation: int  # before stabilization
    lag_need: int
    rate_need: int | None
    reason: str
    state: ScaleState = field(default_factory=ScaleState)

    @property
    def direction(self) -> Direction | None:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return None

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def fmt(n: float) -> str:
    """12400 -> '12 400' (the thin-space-free, locale-free grouping used in Events)."""
    return f"{round(n):,}".replace(",", " ")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def decide_workers(spec: AutoscaleSpec, inputs: ScaleInputs,
                   state: ScaleState | None = None) -> ScaleDecision:
    """Desired workers for this poll, with the new recommendation history and the reason in words."""
    state = state or ScaleState()
    cur = inputs.current_workers
    if not spec.enabled:
        return ScaleDecision(cur, cur, cur, 0, None, "autoscaling disabled", state)

    cap = spec.cap(inputs.partitions)
    floor = min(spec.min_workers, cap)
    excluded = spec.exclude_stalled_partitions and inputs.stalled_lag > 0
    lag = max(0, inputs.total_lag - inputs.stalled_lag) if excluded else inputs.total_lag
    lag_need = math.ceil(lag / spec.lag_per_worker)

    parts = [f"lag {fmt(lag)} over {_plural(cur, 'worker')} "
             f"{'>' if lag > cur * spec.lag_per_worker else '<='} {fmt(spec.lag_per_worker)} per worker "
             f"-> {lag_need}"]
    if excluded:
        parts[0] += (f" (excluding {fmt(inputs.stalled_lag)} on "
                     f"{_plural(inputs.stalled_partitions, 'stalled partition')})")

    rate_need: int | None = None
    if spec.catch_up_seconds > 0:
        if inputs.production_rate is not None and inputs.worker_rate and inputs.worker_rate > 0:
            needed_rate = inputs.production_rate + lag / spec.catch_up_seconds
            rate_need, per_worker = rate_workers(needed_rate, inputs.worker_rate, inputs.partitions)
            parts.append(f"catch-up: {fmt(inputs.production_rate)}/s produced + {fmt(lag)} in "
                         f"{spec.catch_up_seconds:g}s over {fmt(inputs.worker_rate)}/s per worker "
                         f"-> {rate_need} ({per_worker} per worker)")
        else:
            parts.append("catch-up: no per-worker rate measured yet")

    need = max(lag_need, rate_need or 0)
    active = lag > spec.activation_lag
    if spec.min_workers == 0 and not active:
        rec = 0
        parts.append(f"lag {fmt(lag)} <= activationLag {fmt(spec.activation_lag)}: idle -> 0")
    else:
        rec = need
        if need > cap:
            rec = cap
            limit = (f"maxWorkers {spec.max_workers}"
                     if spec.max_workers is not None and spec.max_workers < inputs.partitions
                     else _plural(inputs.partitions, "partition"))
            parts.append(f"capped at {limit}")
        if rec < floor:
            rec = floor
            parts.append(f"raised to minWorkers {spec.min_workers}")

    # HPA stabilization: the history includes this recommendation.
    history = (*state.recommendations, (inputs.now, rec))
    up_cut = inputs.now - spec.scale_up_stabilization_seconds
    down_cut = inputs.now - spec.scale_down_stabilization_seconds
    up_rec = min(n for t, n in history if t >= up_cut)
    down_rec = max(n for t, n in history if t >= down_cut)
    desired = cur
    if desired < up_rec:
        desired = up_rec
    if desired > down_rec:
        desired = down_rec
    if desired != rec and rec > cur:
        parts.append(f"held at {desired} by scale-up stabilization (min over "
                     f"{spec.scale_up_stabilization_seconds:g}s = {up_rec})")
    elif desired != rec and rec < cur:
        parts.append(f"held at {desired} by scale-down stabilization (max over "
                     f"{spec.scale_down_stabilization_seconds:g}s = {down_rec})")
    # Bounds changed by the user apply at once (the HPA applies min/max after stabilization too).
    bounded = min(max(desired, floor), cap)
    if bounded != desired:
        parts.append(f"bounded to {bounded}")
        desired = bounded

    keep = max(spec.scale_up_stabilization_seconds, spec.scale_down_stabilization_seconds)
    new_state = replace(state, recommendations=tuple((t, n) for t, n in history if t >= inputs.now - keep))
    return ScaleDecision(desired, cur, rec, lag_need, rate_need, "; ".join(parts), new_state)


def rate_workers(needed_rate: float, worker_rate: float, partitions: int) -> tuple[int, str]:
    """Workers needed to deliver `needed_rate` records/s when a partition is the unit of work.

    A worker owning k partitions must carry k x (needed_rate / partitions) on its own, so the count is
    set by how many partitions one worker can carry, not by needed_rate / worker_rate: 12 partitions at
    146/s each need 12 workers of 200/s, not 9 (with 9, three workers own two partitions and fall
    behind). Assumes the need is spread evenly over the partitions. Returns (workers, "k partitions")."""
    if needed_rate <= 0 or partitions <= 0:
        return 0, "nothing to deliver"
    per_partition = needed_rate / partitions
    capacity = worker_rate / per_partition
    if not math.isfinite(capacity):  # a vanishing need (denormal rates): one worker carries everything
        return 1, _plural(partitions, "partition")
    carry = math.floor(capacity + 1e-9)
    if carry < 1:
        return partitions, f"{fmt(per_partition)}/s per partition exceeds one worker"
    carry = min(carry, partitions)
    return math.ceil(partitions / carry), _plural(carry, "partition")


def estimate_worker_rate(previous: float | None, consumption_rate: float | None, workers: int,
                         saturated: bool, smoothing: float = 0.5) -> float | None:
    """Per-worker delivery rate, learned only while workers were busy (lag > 0 all window): an idle
    worker's throughput says nothing about its capacity. Exponentially smoothed."""
    if not saturated or consumption_rate is None or workers <= 0 or consumption_rate <= 0:
        return previous
    sample = consumption_rate / workers
    return sample if previous is None else smoothing * sample + (1 - smoothing) * previous
