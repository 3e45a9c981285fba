"""The chart's RBAC covers what the operator's planner creates: Kubernetes refuses to let the operator
create a Role granting anything it does not hold itself, and the operator applies every planned object.
Checked against the real planner (lagpilot_operator.workload.plan), so a new worker permission fails here first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lagpilot import protocol
from lagpilot.testing.chart import MONITORED_NAMESPACED, by_kind, render
from lagpilot_operator.resource import spec
from lagpilot_operator.workload import plan

pytestmark = pytest.mark.unit

BODY = {
    "apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup",
    "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
    "spec": {"bootstrapServers": "kafka.shop.svc:9092", "topic": "orders",
             "target": {"url": "http://billing.shop.svc/api/orders"}, "workers": 2, "threads": 4},
}
APPLY_VERBS = {"get", "create", "patch"}


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    """Whether a rule set grants verb on every object of group/resource (no resourceNames limit)."""
    for r in rules:
        if (group in r["apiGroups"] or "*" in r["apiGroups"]) and \
                (resource in r["resources"] or "*" in r["resources"]) and \
                (verb in r["verbs"] or "*" in r["verbs"]) and not r.get("resourceNames"):
            return True
    return False


def planned() -> plan.Plan:
    cg, problems = spec.parse(BODY, "lagpilot:test")
    assert cg is not None and not problems, problems
    owner = plan.Owner(name="orders", namespace="shop", uid="u-1")
    return plan.plan(cg, owner, replicas=2)


def plural(kind: str) -> str:
    return {"Deployment": "deployments", "ServiceAccount": "serviceaccounts", "Role": "roles",
            "RoleBinding": "rolebindings", "Service": "services", "ConfigMap": "configmaps"}[kind]


def operator_rule_sets(helm: Path) -> list[list[dict[str, Any]]]:
    """Rules the operator holds in namespace shop: the ClusterRole (all namespaces), or shop's Role."""
    cluster = [cr for cr in by_kind(render(helm, ("clusterWide=true",)), "ClusterRole")
               if not cr["metadata"]["name"].endswith("-discovery")]
    namespaced = [r for r in by_kind(render(helm, MONITORED_NAMESPACED), "Role")
                  if r["metadata"]["namespace"] == "shop"]
    assert len(cluster) == 1 and len(namespaced) == 1
    return [cluster[0]["rules"], namespaced[0]["rules"]]


def test_operator_may_apply_every_planned_object(helm: Path) -> None:
    p = planned()
    cg, _ = spec.parse(BODY, "lagpilot:test")
    assert cg is not None
    cm = plan.assignment_configmap(cg, plan.Owner(name="orders", namespace="shop", uid="u-1"))
    objects = [p.deployment, *p.applied, cm]
    for rules in operator_rule_sets(helm):
        for obj in objects:
            group = obj["apiVersion"].rpartition("/")[0]
            for verb in APPLY_VERBS:
                assert allowed(rules, group, plural(obj["kind"]), verb), (obj["kind"], verb)


def test_operator_holds_every_permission_it_grants_workers(helm: Path) -> None:
    worker_roles = [o for o in planned().applied if o["kind"] == "Role"]
    assert worker_roles, "the planner no longer makes a worker Role"
    for rules in operator_rule_sets(helm):
        for role in worker_roles:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            assert allowed(rules, group, resource, verb), (group, resource, verb)


def test_operator_watches_consumergroups_and_writes_status(helm: Path) -> None:
    for rules in operator_rule_sets(helm):
        for verb in ("list", "watch", "patch"):
            assert allowed(rules, protocol.GROUP, "consumergroups", verb)
        assert allowed(rules, protocol.GROUP, "consumergroups/status", "patch")
        for verb in ("list", "watch"):
            assert allowed(rules, "", "pods", verb)
            assert allowed(rules, "coordination.k8s.io", "leases", verb)
        assert allowed(rules, "", "events", "create")


def test_operator_may_run_the_handoff(helm: Path) -> None:
    """operator/coordinator.py: the assignment ConfigMap (create, PUT with resourceVersion), worker Leases
    (list, delete when expired and unreferenced; watched as a trigger), pods (deletion-cost patch),
    per-revision Deployments (scale by patch, delete)."""
    for rules in operator_rule_sets(helm):
        for verb in ("get", "create", "update"):
            assert allowed(rules, "", "configmaps", verb), verb
        for verb in ("list", "watch", "delete"):
            assert allowed(rules, "coordination.k8s.io", "leases", verb), verb
        assert allowed(rules, "", "pods", "patch")
        for verb in ("list", "patch", "delete"):
            assert allowed(rules, "apps", "deployments", verb), verb
