"""Workers sized from CPU (workload.cpu): a worker given two cores or more runs as one pod per whole core,
each with an even share of the CPU and all of the memory, never more pods than partitions; the worker stays
the unit of spec, status and the scale subresource."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.resource.spec import ConsumerGroupSpec, parse
from lagpilot_operator.workload import plan as planner
from lagpilot_operator.workload.cpu import (
    format_cpu,
    parse_cpu,
    pods_per_worker,
    size_pods,
    split_count,
    split_resources,
)
from lagpilot_operator.workload.diff import DeploymentState
from lagpilot_operator.workload.status import Observation, TopicInfo, compute

pytestmark = pytest.mark.unit


def spec(resources: dict[str, Any] | None = None, **extra: Any) -> ConsumerGroupSpec:
    raw: dict[str, Any] = {"bootstrapServers": "k:9092", "topic": "orders", "target": {"url": "http://t/x"},
                           **extra}
    if resources is not None:
        raw["template"] = {"resources": resources}
    parsed, problems = parse({"metadata": {"name": "cg", "namespace": "shop"}, "spec": raw}, "img")
    assert parsed is not None and not problems, problems
    return parsed


@pytest.mark.parametrize("quantity, millicores", [
    (2, 2000), ("2", 2000), ("1.5", 1500), ("1500m", 1500), ("250m", 250), (0.5, 500), (".5", 500),
    ("3.", 3000), ("0.0001", 1), (" 2 ", 2000),
    (None, None), (True, None), ("", None), ("2Gi", None), ("-1", None), ("1e3", None), ("two", None), (-2, None),
])
def test_cpu_quantities(quantity: object, millicores: int | None) -> None:
    assert parse_cpu(quantity) == millicores


@pytest.mark.parametrize("millicores, text", [(1000, "1"), (3000, "3"), (750, "750m"), (1334, "1334m")])
def test_cpu_format(millicores: int, text: str) -> None:
    assert format_cpu(millicores) == text


@pytest.mark.parametrize("resources, pods", [
    ({}, 1),
    ({"limits": {"memory": "256Mi"}}, 1),
    ({"limits": {"cpu": "500m"}}, 1),
    ({"limits": {"cpu": "1"}}, 1),
    ({"limits": {"cpu": "1500m"}}, 1),   # below two cores: the extra serves librdkafka's threads
    ({"limits": {"cpu": "2"}}, 2),
    ({"limits": {"cpu": "3500m"}}, 3),
    ({"requests": {"cpu": "4"}}, 4),      # no limit: the request
    ({"limits": {"cpu": "1"}, "requests": {"cpu": "4"}}, 1),  # the limit wins: the most it may use
    ({"limits": {"cpu": "lots"}}, 1),     # not a quantity: left to the API server
])
def test_pods_per_worker(resources: dict[str, Any], pods: int) -> None:
    assert pods_per_worker(resources) == pods


def test_split_resources_divides_cpu_only_and_copies() -> None:
    given_ = {"limits": {"cpu": "3500m", "memory": "512Mi"}, "requests": {"cpu": "3", "memory": "256Mi"}}
    out = split_resources(given_, 3)
    assert out == {"limits": {"cpu": "1167m", "memory": "512Mi"}, "requests": {"cpu": "1", "memory": "256Mi"}}
    assert given_["limits"]["cpu"] == "3500m"  # the spec is not changed in place
    assert split_resources(given_, 1) == given_


@pytest.mark.parametrize("workers, per_worker, partitions, pods", [
    (3, 1, 12, 3), (3, 2, 12, 6), (3, 2, None, 6), (3, 2, 4, 4), (3, 4, 2, 3), (5, 2, 3, 5), (0, 2, 12, 0),
])
def test_split_count_never_adds_pods_past_the_partitions(workers: int, per_worker: int, partitions: int | None,
                                                         pods: int) -> None:
    assert split_count(workers, per_worker, partitions) == pods


@given(workers=st.integers(0, 50), per_worker=st.integers(1, 16), partitions=st.none() | st.integers(1, 200))
def test_split_count_properties(workers: int, per_worker: int, partitions: int | None) -> None:
    pods = split_count(workers, per_worker, partitions)
    assert workers <= pods <= workers * per_worker  # never fewer pods than the user's workers
    if partitions is not None and pods > workers:
        assert pods <= partitions  # what the split adds never idles


@given(cpu=st.integers(1, 64_000))
def test_every_pod_gets_at_least_one_core_of_a_split_worker_and_the_total_is_kept(cpu: int) -> None:
    resources = {"limits": {"cpu": f"{cpu}m"}}
    k = pods_per_worker(resources)
    per_pod = parse_cpu(split_resources(resources, k)["limits"]["cpu"])
    assert per_pod is not None
    if k > 1:
        assert per_pod >= 1000
        assert cpu <= per_pod * k < cpu + k  # rounded up to a millicore per pod, no more
    else:
        assert per_pod == cpu


def test_a_two_core_worker_runs_as_two_one_core_pods_in_the_deployment() -> None:
    s = spec({"limits": {"cpu": "2", "memory": "300Mi"}}, workers=3)
    sizing = size_pods(s, 3, partitions=12)
    assert (sizing.workers, sizing.pods, sizing.pods_per_worker) == (3, 6, 2)
    plan = planner.plan(sizing.spec, planner.Owner("cg", "shop", "u"), sizing.pods)
    assert plan.deployment["spec"]["replicas"] == 6
    [c] = plan.deployment["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"cpu": "1", "memory": "300Mi"}}
    assert sizing.status() == {"podsPerWorker": 2, "pods": 6, "cpuPerPod": "1"}


def test_one_core_workers_are_left_as_they_are() -> None:
    s = spec({"limits": {"cpu": "1"}}, workers=3)
    sizing = size_pods(s, 3, partitions=12)
    assert sizing.spec is s and sizing.pods == 3 and sizing.status() is None


def test_a_canary_worker_is_split_too_but_not_past_its_named_partitions() -> None:
    s = spec({"limits": {"cpu": "4"}}, rollout={"strategy": "Canary", "canary": {"partitions": [0, 5], "workers": 1}})
    assert size_pods(s, 2, partitions=12).spec.rollout.canary.workers == 2
    s = spec({"limits": {"cpu": "4"}}, rollout={"strategy": "Canary", "canary": {"partitions": 3, "workers": 1}})
    assert size_pods(s, 2, partitions=12).spec.rollout.canary.workers == 3


@pytest.mark.parametrize("ready_pods, ready_workers", [(0, 0), (1, 0), (2, 1), (5, 2), (6, 3), (7, 3)])
def test_ready_pods_are_reported_in_workers(ready_pods: int, ready_workers: int) -> None:
    sizing = size_pods(spec({"limits": {"cpu": "2"}}), 3, partitions=12)
    assert sizing.ready_workers(ready_pods) == ready_workers


def test_status_counts_workers_for_the_scale_subresource_and_pods_for_readiness() -> None:
    sizing = size_pods(spec({"limits": {"cpu": "2"}}), 3, partitions=4)  # capped: 4 pods, not 6
    obs = Observation(generation=1, name="cg", desired_workers=sizing.pods, revision="r",
                      deployment_name="cg-r", deployments=[DeploymentState("cg-r", "r", 4, 4, 4, True)],
                      topic=TopicInfo({"orders": 4}), sizing=sizing)
    out = compute(obs, {}, "2026-12-07T10:00:00Z")
    assert (out["workers"], out["readyWorkers"]) == (3, 3)
    assert out["sizing"] == {"podsPerWorker": 2, "pods": 4, "cpuPerPod": "1"}
    ready = next(c for c in out["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["message"]) == ("True", "4/4 worker pods ready")
    # Back to one pod per worker: the field is removed (status is written as a merge patch).
    plain = Observation(generation=2, name="cg", desired_workers=3, revision="r2", deployment_name="cg-r2",
                        deployments=[DeploymentState("cg-r2", "r2", 3, 3, 3, True)])
    out2 = compute(plain, out, "2026-12-07T10:01:00Z")
    assert out2["sizing"] is None and out2["workers"] == 3
