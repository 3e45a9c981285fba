"""Diff: a planned object against what the server returns (with defaults added) is "no change"; real
drift is found; stale revisions are deleted only once the new one is settled."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from lagpilot_operator.resource.spec import parse
from lagpilot_operator.workload import plan as p
from lagpilot_operator.workload.diff import DeploymentState, deployment_state, differences, stale_deployments

pytestmark = pytest.mark.unit

OWNER = p.Owner(name="orders", namespace="shop", uid="u")


def planned(**spec: Any) -> dict[str, Any]:
    raw = {"bootstrapServers": "k:9092", "topic": "orders", "target": {"url": "http://t/x"}, **spec}
    s, problems = parse({"metadata": {"name": "orders", "namespace": "shop"}, "spec": raw}, "img:1")
    assert s is not None and not problems
    return p.deployment(s, OWNER, 2)


def as_server_returns(obj: dict[str, Any]) -> dict[str, Any]:
    """What the API server hands back: defaults filled in, server metadata, status, normalised quantities."""
    out = copy.deepcopy(obj)
    out["metadata"].update({"uid": "x", "resourceVersion": "42", "generation": 1,
                            "creationTimestamp": "2025-01-01T00:00:00Z", "managedFields": [{}]})
    out["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "1"}
    spec = out["spec"]
    spec.update({"revisionHistoryLimit": 10, "progressDeadlineSeconds": 600})
    pod = spec["template"]["spec"]
    pod.update({"dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler"})
    c = pod["containers"][0]
    c.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"})
    for e in c["env"]:
        if "fieldRef" in (e.get("valueFrom") or {}):
            e["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    c["livenessProbe"]["successThreshold"] = 1
    if "resources" in c:
        lim = c["resources"].get("limits", {})
        if lim.get("cpu") == "1000m":
            lim["cpu"] = "1"
    pod["volumes"][0]["emptyDir"] = {}
    out["status"] = {"replicas": 2, "readyReplicas": 2}
    return out


def test_planned_equals_server_view_of_itself() -> None:
    dep = planned(template={"resources": {"limits": {"cpu": "1000m"}}, "nodeSelector": {"a": "b"}})
    assert differences(dep, as_server_returns(dep)) == []


def test_missing_empty_collections_are_not_differences() -> None:
    assert differences({"a": {}, "b": [], "c": {"d": {}}}, {}) == []
    assert differences({"spec": {"x": None}}, {"spec": {}}) == []


def test_drift_in_template_is_found() -> None:
    dep = planned()
    server = as_server_returns(dep)
    server["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "edited:9092"
    assert differences(dep, server) == ["spec.template.spec.containers[consumer].env[LAGPILOT_BOOTSTRAP_SERVERS].value"]
    server = as_server_returns(dep)
    server["spec"]["replicas"] = 5
    assert differences(dep, server) == ["spec.replicas"]
    server = as_server_returns(dep)
    del server["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert differences(dep, server) == ["spec.template.spec.containers[consumer].readinessProbe"]


def test_items_added_by_others_are_not_drift_but_order_changes_are() -> None:
    dep = planned()
    server = as_server_returns(dep)
    server["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "INJECTED", "value": "1"})
    server["spec"]["template"]["metadata"]["annotations"]["sidecar"] = "yes"
    server["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    assert differences(dep, server) == []
    env = server["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0], env[1] = env[1], env[0]
    assert any("order" in d for d in differences(dep, server))


def test_quantities_compare_by_value_only_under_resources() -> None:
    assert differences({"spec": {"resources": {"cpu": "500m"}}}, {"spec": {"resources": {"cpu": "0.5"}}}) == []
    assert differences({"a": {"resources": {"memory": "1Gi"}}}, {"a": {"resources": {"memory": "1024Mi"}}}) == []
    assert differences({"spec": {"image": "1000m"}}, {"spec": {"image": "1"}}) == ["spec.image"]
    assert differences({"a": {"resources": {"cpu": "1"}}}, {"a": {"resources": {"cpu": "2"}}}) == ["a.resources.cpu"]


json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-5, 5) | hs.text("ab", max_size=2),
    lambda children: hs.lists(children, max_size=3) | hs.dictionaries(hs.text("xyz", min_size=1, max_size=2),
                                                                       children, max_size=3),
    max_leaves=12)


@given(json_values)
def test_any_value_contains_itself(value: Any) -> None:
    assert differences(value, copy.deepcopy(value)) == []


@given(hs.dictionaries(hs.text("xyz", min_size=1, max_size=2), json_values, max_size=4),
       hs.dictionaries(hs.text("uvw", min_size=1, max_size=2), json_values, max_size=3))
def test_extra_keys_on_server_are_never_differences(want: dict[str, Any], extra: dict[str, Any]) -> None:
    assert differences(want, {**extra, **copy.deepcopy(want)}) == []


def state(name: str, replicas: int = 2, ready: int = 2, updated: int = 2, observed: bool = True) -> DeploymentState:
    return DeploymentState(name=name, revision=name[-3:], replicas=replicas, ready=ready, updated=updated,
                           generation_observed=observed)


def test_stale_revisions_deleted_only_when_new_one_settled() -> None:
    old, new = state("cg-old"), state("cg-new")
    assert stale_deployments("cg-new", [old, new], paused=False) == ["cg-old"]
    assert stale_deployments("cg-new", [old, state("cg-new", ready=1)], paused=False) == []
    assert stale_deployments("cg-new", [old, state("cg-new", updated=0)], paused=False) == []
    assert stale_deployments("cg-new", [old, state("cg-new", observed=False)], paused=False) == []
    assert stale_deployments("cg-new", [old], paused=False) == []
    assert stale_deployments("cg-new", [old, new], paused=True) == []
    assert stale_deployments("cg-new", [new], paused=False) == []
    assert stale_deployments("cg-new", [state("cg-a"), state("cg-new", 0, 0, 0), state("cg-b")], False) == [
        "cg-a", "cg-b"]


def test_deployment_state_from_api_object() -> None:
    obj = {"metadata": {"name": "cg-abc", "generation": 3, "labels": {"lagpilot.io/revision": "abc"}},
           "spec": {"replicas": 3}, "status": {"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 3}}
    s = deployment_state(obj)
    assert (s.name, s.revision, s.replicas, s.ready, s.updated, s.generation_observed) == (
        "cg-abc", "abc", 3, 2, 3, True)
    assert not s.settled
    fresh = deployment_state({"metadata": {"name": "n", "generation": 1}, "spec": {"replicas": 1}})
    assert not fresh.generation_observed and not fresh.settled
