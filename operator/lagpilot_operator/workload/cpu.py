"""Worker pods sized from the CPU a worker is given. Pure.

One worker process uses one core at most: one poll loop and one event loop under Python's GIL (librdkafka's
own threads add a little beside it). A worker pod given two cores would leave one idle, and partitions
spread over two one-core pods deliver as much as two processes would in one pod (bench/consumer, "two
processes" row). So a worker that asks for two cores or more runs as `floor(cores)` pods, each with an even
share of the CPU (never less than one core), and every pod keeps the memory given to a worker: each process
needs its own. Below two cores a worker stays one pod (the part above one core serves librdkafka's fetch and
decompression threads).

The user's unit stays the worker: `spec.workers`, the autoscaler's count and `status.workers` (what the scale
subresource reports to an HPA or KEDA) count workers; only Deployments count pods. Splitting never makes more
pods than partitions, since a pod without a partition would idle.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lagpilot_operator.resource.spec import ConsumerGroupSpec

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(m?)\s*$")


def parse_cpu(quantity: object) -> int | None:
    """A Kubernetes CPU quantity (``2``, ``"1.5"``, ``"1500m"``) in millicores; None when absent or not a
    plain CPU quantity (the API server then judges it when the Deployment is written)."""
    if isinstance(quantity, bool) or quantity is None:
        return None
    if isinstance(quantity, (int, float)):
        return math.ceil(quantity * 1000) if quantity >= 0 else None
    m = _QUANTITY.match(str(quantity))
    if m is None:
        return None
    number = float(m.group(1))
    return math.ceil(number) if m.group(2) else math.ceil(number * 1000)


def format_cpu(millicores: int) -> str:
    return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"


def cpu_per_worker(resources: Mapping[str, Any]) -> int | None:
    """The CPU a worker may use, in millicores: its limit, else its request."""
    for kind in ("limits", "requests"):
        cpu = parse_cpu((resources.get(kind) or {}).get("cpu"))
        if cpu is not None:
            return cpu
    return None


def pods_per_worker(resources: Mapping[str, Any]) -> int:
    """Whole cores a worker is given, at least 1: the pods one worker runs as."""
    cpu = cpu_per_worker(resources)
    return 1 if cpu is None else max(1, cpu // 1000)


def split_resources(resources: Mapping[str, Any], pods: int) -> dict[str, Any]:
    """A worker's resources for one of its `pods` pods: CPU limit and request divided (rounded up to a
    millicore), everything else as given."""
    out: dict[str, Any] = {kind: dict(values) if isinstance(values, Mapping) else values
                           for kind, values in resources.items()}
    if pods <= 1:
        return out
    for kind in ("limits", "requests"):
        values = out.get(kind)
        cpu = parse_cpu(values.get("cpu")) if isinstance(values, Mapping) else None
        if isinstance(values, dict) and cpu is not None:
            values["cpu"] = format_cpu(math.ceil(cpu / pods))
    return out


def split_count(workers: int, per_worker: int, partitions: int | None) -> int:
    """Pods for `workers` workers of `per_worker` pods each; the split adds no pod past the partition count
    (a user's own `workers` beyond it stay as asked)."""
    pods = workers * per_worker
    if partitions is None or per_worker <= 1:
        return pods
    return max(workers, min(pods, partitions))


@dataclass(frozen=True)
class PodSizing:
    """What the Deployments run for a group: `spec` with per-pod resources and canary pod count, and
    `pods` for its workers."""

    spec: ConsumerGroupSpec
    workers: int
    pods: int
    pods_per_worker: int

    def status(self) -> dict[str, Any] | None:
        """`status.sizing`, only when a worker runs as several pods."""
        if self.pods_per_worker <= 1:
            return None
        per_pod = cpu_per_worker(self.spec.template.resources)
        return {"podsPerWorker": self.pods_per_worker, "pods": self.pods,
                "cpuPerPod": format_cpu(per_pod) if per_pod is not None else None}

    def ready_workers(self, ready_pods: int) -> int:
        """Ready pods in workers, for `status.readyWorkers` (the autoscaler compares it with `workers`)."""
        if self.pods <= 0:
            return 0
        return self.workers if ready_pods >= self.pods else ready_pods * self.workers // self.pods


def size_pods(spec: ConsumerGroupSpec, workers: int, partitions: int | None) -> PodSizing:
    """`workers` workers of `spec` as pods of at most the CPU one process can use."""
    per_worker = pods_per_worker(spec.template.resources)
    if per_worker <= 1:
        return PodSizing(spec, workers, workers, 1)
    canary = spec.rollout.canary
    named = len(canary.partitions) if isinstance(canary.partitions, tuple) else canary.partitions
    sized = dataclasses.replace(
        spec,
        template=dataclasses.replace(spec.template,
                                     resources=split_resources(spec.template.resources, per_worker)),
        rollout=dataclasses.replace(spec.rollout, canary=dataclasses.replace(
            canary, workers=split_count(canary.workers, per_worker, named))))
    return PodSizing(sized, workers, split_count(workers, per_worker, partitions), per_worker)
