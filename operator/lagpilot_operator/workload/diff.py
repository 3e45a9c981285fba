"""What to write: only real differences between the planned objects and what the API server holds.

The API server adds defaults (imagePullPolicy, dnsPolicy, ...), normalises quantities ("1000m" -> "1")
and drops empty collections, so equality is "everything we ask for is there": a recursive subset test.
Lists of named items (containers, env, ports, volumes) are matched by name so that an item added by
someone else does not make us write forever; other lists must match element by element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from lagpilot.protocol import LABEL_REVISION

# Metadata the server owns or other tools add; never compared.
IGNORED_METADATA = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields",
                    "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "finalizers")


def _empty(value: Any) -> bool:
    """Absent on the server is the same as empty (the API drops empty maps/lists/strings)."""
    if isinstance(value, Mapping):
        return all(_empty(v) for v in value.values())
    return value is None or value == [] or value == ""


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        return None


def _scalar_equal(want: Any, have: Any, path: str) -> bool:
    if want == have:
        return True
    if ".resources." in path:
        qw, qh = _quantity(want), _quantity(have)
        return qw is not None and qw == qh
    return False


def differences(want: Any, have: Any, path: str = "") -> list[str]:
    """Paths where `have` does not contain `want` (empty list = nothing to write)."""
    if isinstance(want, Mapping):
        if have is None and _empty(want):
            return []
        if not isinstance(have, Mapping):
            return [path or "."]
        out: list[str] = []
        for key, value in want.items():
            if path == "metadata" and key in IGNORED_METADATA:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if key not in have or have[key] is None:
                if not _empty(value):
                    out.append(sub)
                continue
            out += differences(value, have[key], sub)
        return out
    if isinstance(want, list):
        if have is None and not want:
            return []
        if not isinstance(have, list):
            return [path]
        if _named(want) and _named(have):
            by_name = {item["name"]: item for item in have}
            out = []
            for item in want:
                other = by_name.get(item["name"])
                sub = f"{path}[{item['name']}]"
                if other is None:
                    out.append(sub)
                else:
                    out += differences(item, other, sub)
            if [i["name"] for i in want] != [i["name"] for i in have if i["name"] in {w["name"] for w in want}]:
                out.append(f"{path}(order)")
            return out
        if len(want) != len(have):
            return [path]
        out = []
        for i, (w, h) in enumerate(zip(want, have, strict=True)):
            out += differences(w, h, f"{path}[{i}]")
        return out
    return [] if _scalar_equal(want, have, path) else [path]


def _named(items: Iterable[Any]) -> bool:
    items = list(items)
    return bool(items) and all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items)


@dataclass(frozen=True)
class DeploymentState:
    """What matters about one existing worker Deployment for deciding what to delete."""

    name: str
    revision: str | None
    replicas: int
    ready: int
    updated: int
    generation_observed: bool

    @property
    def settled(self) -> bool:
        """All its pods run the current template and are ready."""
        return self.generation_observed and self.ready >= self.replicas and self.updated >= self.replicas


def deployment_state(obj: Mapping[str, Any]) -> DeploymentState:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return DeploymentState(
        name=str(meta.get("name")),
        revision=(meta.get("labels") or {}).get(LABEL_REVISION),
        replicas=int(spec.get("replicas", 1) or 0),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        generation_observed=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
    )


def stale_deployments(desired: str, existing: Iterable[DeploymentState], paused: bool) -> list[str]:
    """Deployments of older revisions to delete now: once the desired revision is settled (rolling
    replacement: the old workers keep running until the new ones are ready). Nothing while paused."""
    existing = list(existing)
    if paused:
        return []
    current = next((d for d in existing if d.name == desired), None)
    if current is None or not current.settled:
        return []
    return sorted(d.name for d in existing if d.name != desired)
