"""kubectl-level helpers the operator's lab suites share: apply documents, read objects as JSON, build
Secrets and ConfigMaps, and read a ConsumerGroup's conditions and Events."""

from __future__ import annotations

import base64
import json
from typing import Any

import yaml


def apply(k8s: Any, ns: str, *docs: dict[str, Any], check: bool = True) -> Any:
    return k8s.kubectl("apply", "-f", "-", namespace=ns, input=yaml.safe_dump_all(docs), check=check)


def get(k8s: Any, ns: str, kind: str, name: str | None = None, selector: str | None = None) -> Any:
    """The object (or the list's items), None when kubectl cannot get it."""
    args = ["get", kind, *([name] if name else []), "-o", "json", *(["-l", selector] if selector else [])]
    out = k8s.kubectl(*args, namespace=ns, check=False)
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout)
    return data.get("items") if name is None else data


def condition(cg: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (cg.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def deployments(k8s: Any, ns: str, cg: str) -> list[dict[str, Any]]:
    return get(k8s, ns, "deployments", selector=f"lagpilot.io/consumergroup={cg}") or []


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)}


def ready(k8s: Any, ns: str, name: str) -> Any:
    """The ConsumerGroup when its Ready condition is True, else None."""
    cg = get(k8s, ns, "consumergroup", name)
    return cg if cg and condition(cg, "Ready").get("status") == "True" else None


def degraded_with(k8s: Any, ns: str, name: str, reason: str) -> Any:
    """The ConsumerGroup when it is Degraded for `reason`, else None."""
    cg = get(k8s, ns, "consumergroup", name)
    c = condition(cg or {}, "Degraded")
    return cg if c.get("status") == "True" and c.get("reason") == reason else None


def event_with(k8s: Any, ns: str, name: str, reason: str) -> bool:
    return any(e["reason"] == reason and e["involvedObject"]["name"] == name
               for e in get(k8s, ns, "events") or [])
