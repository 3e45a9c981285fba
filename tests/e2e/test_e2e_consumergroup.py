"""A ConsumerGroup from examples/ on a cluster with the chart installed: reconciled into owned objects,
its workers run and deliver every record in per-key order, the scale subresource resizes it, and
deleting it removes what the operator made."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.e2e_target import Target
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "lagpilot.io", "v1alpha1", "consumergroups"
RECORDS, KEYS = 300, 20


def consumergroup(namespace: str, bootstrap: str, topic: str, url: str, workers: int) -> dict[str, Any]:
    """examples/minimal.yaml with this cluster's Kafka, a fresh topic and the test's target."""
    body = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text()))
    body["metadata"]["namespace"] = namespace
    body["spec"].update(bootstrapServers=bootstrap, topic=topic, workers=workers)
    body["spec"]["target"]["url"] = url
    return body


def get_cg(api: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client

    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                          name))


def owned(api: Any, namespace: str, uid: str) -> dict[str, list[str]]:
    """Names of the objects in namespace whose controller is the ConsumerGroup with this uid."""
    from kubernetes import client

    core, apps, rbac = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    found: dict[str, list[str]] = {}
    for kind, items in (("Deployment", apps.list_namespaced_deployment(namespace).items),
                        ("ServiceAccount", core.list_namespaced_service_account(namespace).items),
                        ("Role", rbac.list_namespaced_role(namespace).items),
                        ("RoleBinding", rbac.list_namespaced_role_binding(namespace).items),
                        ("Service", core.list_namespaced_service(namespace).items)):
        for obj in items:
            if any(ref.uid == uid and ref.controller for ref in obj.metadata.owner_references or []):
                found.setdefault(kind, []).append(obj.metadata.name)
    return found


def produce(bootstrap: str, topic: str, n: int, keys: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, key=f"k{i % keys}".encode(), value=f'{{"n": {i}}}'.encode())
    assert p.flush(60) == 0


def assert_complete_and_ordered(records: list[dict[str, Any]], n: int) -> None:
    """Every record delivered at least once; per key, first deliveries come in offset order."""
    delivered = {(r["partition"], r["offset"]) for r in records}
    assert len(delivered) == n, f"{len(delivered)} distinct records delivered, expected {n}"
    seen: set[tuple[int, int]] = set()
    per_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in records:
        ident = (r["partition"], r["offset"])
        if ident not in seen:
            seen.add(ident)
            per_key[r["key"]].append(ident)
    for key, idents in per_key.items():
        assert len({p for p, _ in idents}) == 1, f"key {key} spread over partitions"
        assert idents == sorted(idents), f"key {key} delivered out of offset order"


def distinct_at_least(target: Target, n: int) -> list[dict[str, Any]] | None:
    records = target.records()
    return records if len({(r["partition"], r["offset"]) for r in records}) >= n else None


@pytest.fixture
def running_group(api: Any, e2e_namespace: str, worker_bootstrap: str, topic_factory: Callable[[int], str],
                  target: Target) -> tuple[str, str, str]:
    """(namespace, name, topic) of a ConsumerGroup with 2 workers, Ready."""
    from kubernetes import client

    topic = topic_factory(4)
    body = consumergroup(e2e_namespace, worker_bootstrap, topic, target.url, workers=2)
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, body)
    name = body["metadata"]["name"]

    def ready() -> bool:
        status = get_cg(api, e2e_namespace, name).get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return status.get("readyWorkers") == 2 and conds.get("Ready") == "True"

    wait_for(ready, what=f"ConsumerGroup {name} to be Ready with 2 workers", timeout=300, interval=2)
    return e2e_namespace, name, topic


def test_reconciled_into_owned_objects(api: Any, running_group: tuple[str, str, str]) -> None:
    namespace, name, _ = running_group
    cg = get_cg(api, namespace, name)
    objs = owned(api, namespace, cg["metadata"]["uid"])
    assert {"Deployment", "ServiceAccount", "Role", "RoleBinding", "Service"} <= set(objs), objs
    status = cg["status"]
    assert status["observedGeneration"] == cg["metadata"]["generation"]
    assert status["partitions"] == 4


def test_records_reach_the_target_in_order(running_group: tuple[str, str, str], test_bootstrap: str,
                                           target: Target) -> None:
    _, _, topic = running_group
    produce(test_bootstrap, topic, RECORDS, KEYS)
    records = wait_for(lambda: distinct_at_least(target, RECORDS), what=f"{RECORDS} deliveries", timeout=240,
                       interval=2)
    assert_complete_and_ordered(records, RECORDS)
    assert {r["key"] for r in records} == {f"k{i}" for i in range(KEYS)}
    assert len({r["worker"] for r in records}) >= 1


def test_scale_subresource_resizes_workers(api: Any, running_group: tuple[str, str, str]) -> None:
    from kubernetes import client

    namespace, name, _ = running_group
    client.CustomObjectsApi(api).patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 3}})
    wait_for(lambda: (
        (get_cg(api, namespace, name).get("status") or {}).get("readyWorkers") == 3),
        what="3 ready workers after scaling", timeout=240, interval=2)
    scale = client.CustomObjectsApi(api).get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL,
                                                                           name)
    assert scale["spec"]["replicas"] == 3


def test_delete_removes_owned_objects(api: Any, running_group: tuple[str, str, str]) -> None:
    from kubernetes import client

    namespace, name, _ = running_group
    uid = get_cg(api, namespace, name)["metadata"]["uid"]
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_for(lambda: not owned(api, namespace, uid), what="owned objects to be garbage-collected", timeout=240,
             interval=2)
    wait_for(lambda: not client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"lagpilot.io/consumergroup={name}").items,
        what="worker pods to be gone", timeout=240, interval=2)


SECRET_TOKEN = "Bearer e2e-header-secret-7d41"


def test_a_secret_reaches_the_workers_as_files_the_operator_never_reads(
        api: Any, e2e_namespace: str, worker_bootstrap: str, test_bootstrap: str,
        topic_factory: Callable[[int], str], target: Target) -> None:
    """headersFromSecret on real kubelets: the Secret is mounted (mode 0440, group 65532 by fsGroup) and
    read by the non-root worker; the chart's default RBAC gives the operator no Secret read, so it never
    checks it (no SecretNotFound, no 403 in a reconcile); the value is in no pod spec or env."""
    import json

    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    core.create_namespaced_secret(e2e_namespace, {
        "metadata": {"name": "target-auth"}, "stringData": {"Authorization": SECRET_TOKEN + "\n"}})
    topic = topic_factory(2)
    body = consumergroup(e2e_namespace, worker_bootstrap, topic, target.url, workers=1)
    body["spec"]["target"]["headersFromSecret"] = "target-auth"
    custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, body)
    name = body["metadata"]["name"]

    def ready() -> dict[str, Any] | None:
        status = get_cg(api, e2e_namespace, name).get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        return conds if conds.get("Ready", {}).get("status") == "True" else None

    conds = wait_for(ready, what=f"ConsumerGroup {name} Ready", timeout=300, interval=2)
    assert conds["Degraded"]["status"] == "False", conds["Degraded"]
    produce(test_bootstrap, topic, 40, 5)
    records = wait_for(lambda: distinct_at_least(target, 40), what="40 deliveries", timeout=240, interval=2)
    assert {r["authorization"] for r in records} == {SECRET_TOKEN}
    pods = core.list_namespaced_pod(e2e_namespace, label_selector=f"lagpilot.io/consumergroup={name}").items
    dump = json.dumps([api.sanitize_for_serialization(p) for p in pods])
    assert "e2e-header-secret" not in dump
    assert all(not c.env_from for p in pods for c in p.spec.containers)
