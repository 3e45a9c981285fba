"""Kubebuilder-style status conditions: lastTransitionTime moves only when a condition's status flips."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str = ""


def merge(previous: Iterable[Mapping[str, Any]], new: Iterable[Condition], now: str,
          generation: int) -> list[dict[str, Any]]:
    """The condition list after setting `new`: our types in the order given, then any other types that were
    present (written by other controllers) unchanged."""
    old = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    out: list[dict[str, Any]] = []
    ours = set()
    for cond in new:
        ours.add(cond.type)
        prior = old.get(cond.type)
        same = prior is not None and prior.get("status") == cond.status and prior.get("lastTransitionTime")
        out.append({
            "type": cond.type,
            "status": cond.status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": prior["lastTransitionTime"] if same and prior else now,
            "observedGeneration": generation,
        })
    out += [dict(c) for t, c in old.items() if t not in ours]
    return out


def find(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def transitions(previous: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
                ) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed (what deserves an Event)."""
    old = {c.get("type"): c for c in previous}
    return [c for c in current
            if (o := old.get(c.get("type"))) is None
            or (o.get("status"), o.get("reason")) != (c.get("status"), c.get("reason"))]
