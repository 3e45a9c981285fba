"""What the API server itself counts: write requests per resource, from its own /metrics
(`apiserver_request_total`), so tests and benchmarks count the operator's writes where they land rather
than trusting the operator's own bookkeeping."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable

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
