"""Issue 17: an operator serving many idle ConsumerGroups writes nothing and posts no Event while nothing
changes, reconciles them only when something may have changed, reads their lag in one round per period
(not one read per group), and still acts on a spec change at once."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.request import urlopen

import pytest

from lagpilot.testing.apiserver import watch_changes
from lagpilot.testing.operator import Operator
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab
GROUPS = 30


def metric(op: Operator, name: str) -> list[float]:
    text = urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5).read().decode()
    return [float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)]


def test_idle_groups_cause_no_writes_no_events_and_one_lag_round_per_period(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Any) -> None:
    from kubernetes import client

    topic = topic_factory(partitions=6)
    api = k8s.api_client()
    custom = client.CustomObjectsApi(api)
    for i in range(GROUPS):
        custom.create_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups", {
            "apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": f"idle-{i:02d}"},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "workers": 0, "autoscaling": {"pollSeconds": 5},
                     "target": {"url": "http://127.0.0.1:9/none"}}})

    def settled() -> bool:
        items = custom.list_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups")["items"]
        return len(items) == GROUPS and all((it.get("status") or {}).get("phase") == "Idle"
                                            and (it.get("status") or {}).get("lag") for it in items)
    wait_for(settled, timeout=180, what=f"{GROUPS} groups Idle with lag reported")
    time.sleep(8)  # the last writes of the start (status after the first lag reads) land and are reconciled

    reconciles0 = sum(metric(operator, "lagpilot_reconcile_total"))
    rounds0 = sum(metric(operator, "lagpilot_lag_rounds_total"))
    polls0 = metric(operator, "lagpilot_lag_polls_total")
    window = 21.0  # 7 resync periods (LAGPILOT_RESYNC_SECONDS=3), 4 lag periods
    changes = watch_changes(api, namespace, window)
    reconciles = sum(metric(operator, "lagpilot_reconcile_total")) - reconciles0
    rounds = sum(metric(operator, "lagpilot_lag_rounds_total")) - rounds0
    polls = sum(metric(operator, "lagpilot_lag_polls_total")) - sum(polls0)
    print(f"in {window:g} s: changes {changes}, reconciles {reconciles}, lag rounds {rounds}, polls {polls}")

    assert {kind: seen for kind, seen in changes.items() if seen} == {}  # no write, no Event
    assert reconciles < GROUPS  # the resync does not reconcile every idle group every period (7 x 30 = 210)
    assert polls >= GROUPS * 3  # ... while every group's lag is still read every period
    assert rounds <= 6  # in one round per period for all of them (a read per group would be 120)

    # And a spec change still reaches its Deployment at once.
    custom.patch_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups", "idle-07",
                                          {"spec": {"workers": 1}})
    apps = client.AppsV1Api(api)
    wait_for(lambda: [d for d in apps.list_namespaced_deployment(
        namespace, label_selector="lagpilot.io/consumergroup=idle-07").items if d.spec.replicas == 1],
        timeout=30, what="idle-07's Deployment at 1 replica")
    api.close()
