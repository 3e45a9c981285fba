"""End-to-end fixtures: the cluster comes from KUBECONFIG, Kafka from LAGPILOT_E2E_BOOTSTRAP, so the same
tests run on kind (scripts/e2e-kind.sh) and on the lab (tests/lab/chart runs them after `helm install`).

Environment:
  KUBECONFIG                   the cluster, with the lagpilot chart (operator + CRD) already installed
  LAGPILOT_E2E_BOOTSTRAP       Kafka as the worker pods reach it (written into spec.bootstrapServers)
  LAGPILOT_E2E_TEST_BOOTSTRAP  Kafka as this test process reaches it (default: LAGPILOT_E2E_BOOTSTRAP)
  LAGPILOT_E2E_TARGET_MODE     local: an HTTP target in this process on LAGPILOT_E2E_TARGET_HOST
                               (default 127.0.0.1), for clusters whose pods are local processes (the
                               lab); incluster: a target pod + Service in the test namespace, read
                               back through the API server's service proxy (kind, real clusters)
  LAGPILOT_E2E_TARGET_IMAGE    incluster mode: an image with python3 (the lagpilot image has it)
  LAGPILOT_E2E_INFRA_NODE      incluster mode: label=value of the node(s) the target pod runs on, never
                               the one the fault tests freeze (kind: lagpilot-e2e-node=infra)
  LAGPILOT_E2E_SPARE_NODE      label=value of the node the fault tests may freeze or cut off; without it
                               tests/e2e/test_e2e_faults.py is skipped
  LAGPILOT_E2E_REQUIRED=1      a missing variable is an error, not a skip (scripts/e2e-kind.sh sets it)
Without KUBECONFIG and LAGPILOT_E2E_BOOTSTRAP every test here is skipped."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing import e2e_target
from lagpilot.testing.e2e_cluster import GROUP, NAME, PLURAL, VERSION, Cluster
from lagpilot.testing.e2e_target import Target
from lagpilot.testing.wait import wait_for

HERE = Path(__file__).resolve().parent
REQUIRED = ("KUBECONFIG", "LAGPILOT_E2E_BOOTSTRAP")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [v for v in REQUIRED if not os.environ.get(v)]
    if not missing:
        return
    if os.environ.get("LAGPILOT_E2E_REQUIRED") == "1":
        raise pytest.UsageError(f"LAGPILOT_E2E_REQUIRED=1 but {', '.join(missing)} not set")
    skip = pytest.mark.skip(reason=f"e2e needs {', '.join(missing)} (see tests/e2e/conftest.py)")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def api() -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    yield client
    client.close()


@pytest.fixture(scope="session")
def worker_bootstrap() -> str:
    return os.environ["LAGPILOT_E2E_BOOTSTRAP"]


@pytest.fixture(scope="session")
def test_bootstrap() -> str:
    return os.environ.get("LAGPILOT_E2E_TEST_BOOTSTRAP") or os.environ["LAGPILOT_E2E_BOOTSTRAP"]


@pytest.fixture
def e2e_namespace(api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    from kubernetes import client

    name = f"e2e-{request.node.name[:20].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-").strip("-")
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"lagpilot.io/e2e": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except Exception:
        pass


@pytest.fixture
def topic_factory(test_bootstrap: str) -> Callable[[int], str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    def make(partitions: int) -> str:
        name = f"e2e-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": test_bootstrap})
        for fut in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            fut.result(60)
        wait_for(lambda: all(
            p.leader >= 0 for p in admin.list_topics(name, timeout=10).topics[name].partitions.values())
            and len(admin.list_topics(name, timeout=10).topics[name].partitions) == partitions, 60,
            what=f"leaders of {name}")
        return name

    return make


class LocalTarget:
    """In this process: reachable by worker pods only when they run on this host (the lab)."""

    def __init__(self, host: str) -> None:
        from lagpilot.testing.e2e_target import serve_in_thread

        self.server, self.rec = serve_in_thread(host, 0)
        self.url = f"http://{host}:{self.server.server_address[1]}/deliver"

    def records(self) -> list[dict[str, Any]]:
        with self.rec.lock:
            return list(self.rec.records)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def infra_node_selector() -> dict[str, str]:
    """LAGPILOT_E2E_INFRA_NODE as a nodeSelector ({} when unset)."""
    raw = os.environ.get("LAGPILOT_E2E_INFRA_NODE", "")
    if not raw:
        return {}
    key, _, value = raw.partition("=")
    return {key: value}


class InClusterTarget:
    """A pod + Service running target.py; read back through the API server's service proxy."""

    NAME = "e2e-target"
    PORT = 8080

    def __init__(self, api: Any, namespace: str, image: str) -> None:
        from kubernetes import client

        self.api, self.namespace = api, namespace
        labels = {"app": self.NAME}
        script = Path(e2e_target.__file__).read_text()
        client.AppsV1Api(api).create_namespaced_deployment(namespace, {
            "metadata": {"name": self.NAME, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"nodeSelector": infra_node_selector(), "containers": [{
                    "name": "target", "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", script, str(self.PORT)],
                    "ports": [{"containerPort": self.PORT, "name": "http"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}}}]}}}})
        client.CoreV1Api(api).create_namespaced_service(namespace, {
            "metadata": {"name": self.NAME},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": self.PORT, "targetPort": "http"}]}})
        self.url = f"http://{self.NAME}.{namespace}.svc.cluster.local:{self.PORT}/deliver"
        apps = client.AppsV1Api(api)
        wait_for(lambda: (
            apps.read_namespaced_deployment(self.NAME, namespace).status.ready_replicas or 0) >= 1, 180,
            what="the in-cluster target to be ready")

    def records(self) -> list[dict[str, Any]]:
        from kubernetes import client

        resp = client.CoreV1Api(self.api).connect_get_namespaced_service_proxy_with_path(
            f"{self.NAME}:{self.PORT}", self.namespace, "records", _preload_content=False)
        return list(json.loads(resp.data))

    def close(self) -> None:
        pass  # deleted with the namespace


@pytest.fixture
def target(api: Any, e2e_namespace: str) -> Iterator[Target]:
    mode = os.environ.get("LAGPILOT_E2E_TARGET_MODE", "local")
    t: LocalTarget | InClusterTarget
    if mode == "local":
        t = LocalTarget(os.environ.get("LAGPILOT_E2E_TARGET_HOST", "127.0.0.1"))
    elif mode == "incluster":
        image = os.environ.get("LAGPILOT_E2E_TARGET_IMAGE")
        if not image:
            pytest.fail("LAGPILOT_E2E_TARGET_MODE=incluster needs LAGPILOT_E2E_TARGET_IMAGE")
        t = InClusterTarget(api, e2e_namespace, image)
    else:
        pytest.fail(f"LAGPILOT_E2E_TARGET_MODE must be local or incluster, got {mode!r}")
    yield t
    t.close()


@pytest.fixture
def cluster(api: Any, e2e_namespace: str) -> Iterator[Cluster]:
    """The test namespace's one ConsumerGroup and its objects; the group is deleted first at the end so the
    operator cleans up before the namespace goes."""
    c = Cluster(api, e2e_namespace)
    yield c
    try:
        c.custom.delete_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL, NAME)
    except Exception:
        pass
