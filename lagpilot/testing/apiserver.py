"""What the API server itself counts: write requests per resource, from its own /metrics
(`apiserver_request_total`), so tests and benchmarks count the operator's writes where they land rather
than trusting the operator's own bookkeeping."""

from __future__ import annotations

import functools
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "CREATE", "UPDATE"})
# What the operator writes (kopf included: finalizers, annotations, Events). Leases are the workers'.
OPERATOR_RESOURCES = ("consumergroups", "consumergroups/status", "deployments", "configmaps", "events")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def write_counts(metrics_text: str) -> Counter[str]:
    """Write requests so far per resource (`resource` or `resource/subresource`), summed over codes."""
    counts: Counter[str] = Counter()  # values are floats in the exposition format
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_part, _, value = line.rpartition("} ")
        labels = dict(_LABEL.findall(labels_part))
        if labels.get("verb", "").upper() not in WRITE_VERBS:
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[resource] += int(float(value))
    return counts


def writes_between(before: Counter[str], after: Counter[str], resources: Iterable[str] = OPERATOR_RESOURCES
                   ) -> dict[str, int]:
    return {r: int(after.get(r, 0) - before.get(r, 0)) for r in resources}


def read_write_counts(kubectl: Callable[..., object]) -> Counter[str]:
    """`kubectl get --raw /metrics` through the given kubectl runner (returns a CompletedProcess)."""
    out = kubectl("get", "--raw", "/metrics")
    return write_counts(str(getattr(out, "stdout", "")))


def watch_changes(api: Any, namespace: str, seconds: float) -> dict[str, list[str]]:
    """Every change (ADDED/MODIFIED/DELETED) to what the operator writes in `namespace` during `seconds`,
    seen on watches started at the current resourceVersion: `kind -> ["TYPE name", ...]`. Events are
    counted only when posted by the operator (source component `kopf`)."""
    import threading

    from kubernetes import client, watch

    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    lists: dict[str, Callable[..., Any]] = {
        "ConsumerGroup": functools.partial(custom.list_namespaced_custom_object, "lagpilot.io", "v1alpha1",
                                           namespace, "consumergroups"),
        "Deployment": functools.partial(apps.list_namespaced_deployment, namespace),
        "ConfigMap": functools.partial(core.list_namespaced_config_map, namespace),
        "Service": functools.partial(core.list_namespaced_service, namespace),
        "Event": functools.partial(core.list_namespaced_event, namespace),
    }
    changes: dict[str, list[str]] = {kind: [] for kind in lists}
    deadline = time.monotonic() + seconds

    def follow(kind: str, list_fn: Callable[..., Any]) -> None:
        first = list_fn()
        rv = first["metadata"]["resourceVersion"] if isinstance(first, dict) else first.metadata.resource_version
        w = watch.Watch()
        while (left := deadline - time.monotonic()) > 0:
            for ev in w.stream(list_fn, resource_version=rv, timeout_seconds=max(1, int(left)),
                               allow_watch_bookmarks=False):
                obj = ev["object"]
                meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
                rv = meta["resourceVersion"] if isinstance(meta, dict) else meta.resource_version
                if time.monotonic() > deadline:
                    break
                if kind == "Event" and (getattr(obj.source, "component", None) or obj.reporting_component) != "kopf":
                    continue
                name = meta["name"] if isinstance(meta, dict) else meta.name
                reason = f" {obj.reason}" if kind == "Event" else ""
                changes[kind].append(f"{ev['type']} {name}{reason}")

    threads = [threading.Thread(target=follow, args=item, daemon=True) for item in lists.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    return changes
