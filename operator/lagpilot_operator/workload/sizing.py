"""How many workers a ConsumerGroup runs, and whether the autoscaler may change that number. Pure.

`spec.workers` stays the user's (the scale subresource points at it, so `kubectl scale`, an HPA or KEDA
drive it). With `spec.autoscaling.enabled` the operator's own count lives in `status.workers`, written by
the lag handler; the planner sizes the worker Deployment(s) from `effective_workers`, so a reconcile never
undoes an autoscaler decision and an autoscaler decision never edits the user's spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lagpilot.protocol import ANNOTATION_PAUSE, flag_set
from lagpilot_operator.resource.spec import ConsumerGroupSpec, Problem


def _bounded(spec: ConsumerGroupSpec, count: int) -> int:
    a = spec.autoscaling
    count = max(count, a.min_workers)
    return count if a.max_workers is None else min(count, a.max_workers)


def effective_workers(spec: ConsumerGroupSpec, status: Mapping[str, Any] | None) -> int:
    """The worker count to run now.

    Autoscaling off: spec.workers. Autoscaling on: the autoscaler's last count (status.workers), or, before
    its first decision, spec.workers as the starting point; either way within min/maxWorkers, so a bounds
    change in the spec applies at the next reconcile, not only at the next poll. (The partition cap is the
    autoscaler's to apply: the planner does not know the partition count.)
    """
    if not spec.autoscaling.enabled:
        return spec.workers
    current = (status or {}).get("workers")
    if isinstance(current, bool) or not isinstance(current, int) or current < 0:
        current = spec.workers
    return _bounded(spec, current)


def pause_requested(annotations: Mapping[str, str] | None) -> bool:
    """`lagpilot.io/pause` is set (the rule of every annotation command)."""
    return flag_set(annotations, ANNOTATION_PAUSE)


@dataclass(frozen=True)
class ScalingMode:
    """Whether this poll may decide a worker count; `note` says why not when autoscaling is on but held."""

    decide: bool
    note: str | None = None


def scaling_mode(spec: ConsumerGroupSpec, problems: list[Problem] | tuple[Problem, ...],
                 annotations: Mapping[str, str] | None) -> ScalingMode:
    """Lag is read and reported in every mode; only this decides whether the count may change.

    Held while paused (spec.paused freezes the Deployment; the annotation freezes scaling and rollouts) and
    while the spec is invalid (the reconcile then leaves the workers alone and reports the count it finds,
    so a decision would only fight it)."""
    if not spec.autoscaling.enabled:
        return ScalingMode(False)
    if spec.paused:
        return ScalingMode(False, "autoscaling held: spec.paused is true")
    if pause_requested(annotations):
        return ScalingMode(False, f"autoscaling held: annotation {ANNOTATION_PAUSE} is set")
    if problems:
        return ScalingMode(False, "autoscaling held: the spec is invalid (see the Degraded condition)")
    return ScalingMode(True)
