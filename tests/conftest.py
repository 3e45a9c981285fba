"""Shared fixtures: the lab's real Kafka broker and Kubernetes control plane, started once per test session
in a private directory (so tests never touch a lab a person started with `lagpilot lab up`)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from lagpilot.lab.cluster import ControlPlane, start_control_plane, stop_control_plane
from lagpilot.lab.kafka import KafkaBroker, create_topic, start_kafka, stop_kafka
from lagpilot.lab.manager import start_runner, wait_node_ready
from lagpilot.lab.proc import stop_pid
from lagpilot.paths import kubernetes_bin

# Property tests: no per-example deadline (the machine may be busy with the lab), and in CI the same
# examples every run, so a red CI is reproducible; locally, fresh random examples every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def kafka(lab_root: Path) -> Iterator[KafkaBroker]:
    """A real single-node KRaft broker for the whole session (or the one named by LAGPILOT_TEST_BOOTSTRAP)."""
    external = os.environ.get("LAGPILOT_TEST_BOOTSTRAP")
    if external:
        _host, port = external.rsplit(":", 1)
        yield KafkaBroker(workdir="", port=int(port), controller_port=0, pid=-1)
        return
    broker = start_kafka(lab_root / "kafka")
    yield broker
    stop_kafka(broker, remove=True)


@pytest.fixture
def bootstrap(kafka: KafkaBroker) -> str:
    return kafka.bootstrap_servers


@pytest.fixture
def topic_factory(kafka: KafkaBroker) -> Callable[..., str]:
    """make_topic(partitions=N, prefix="t") -> a fresh topic name, created and with leaders elected."""

    def make(partitions: int = 1, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topic(kafka.bootstrap_servers, name, partitions, config)
        return name

    return make


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    return topic_factory(partitions=6)


# --- Kubernetes -------------------------------------------------------------------------------------

class K8s:
    """The lab's control plane + runner as tests see it: a kubeconfig, clients, and kubectl."""

    def __init__(self, control_plane: ControlPlane, runner_pid: int, runner_dir: Path) -> None:
        self.control_plane = control_plane
        self.kubeconfig = control_plane.kubeconfig
        self.server = control_plane.server
        self.runner_pid = runner_pid
        self.runner_dir = runner_dir
        self.kubectl_bin = str(kubernetes_bin() / "kubectl")

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        ns = ["-n", namespace] if namespace else []
        return subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *ns, *args], check=check,
                              capture_output=True, text=True, input=input)


@pytest.fixture(scope="session")
def k8s(lab_root: Path) -> Iterator[K8s]:
    """A real control plane (etcd, kube-apiserver, kube-controller-manager) and the lab runner, for the
    session; or an existing cluster when LAGPILOT_TEST_KUBECONFIG names one (no runner is started then)."""
    external = os.environ.get("LAGPILOT_TEST_KUBECONFIG")
    if external:
        cp = ControlPlane(workdir="", server="", kubeconfig=external, etcd_pid=-1, apiserver_pid=-1,
                          controller_manager_pid=-1)
        yield K8s(cp, -1, lab_root)
        return
    cp = start_control_plane(lab_root / "k8s")
    runner_pid = start_runner(lab_root, cp.kubeconfig)
    try:
        wait_node_ready(cp, runner_pid, lab_root / "runner" / "runner.log")
        yield K8s(cp, runner_pid, lab_root / "runner")
    finally:
        stop_pid(runner_pid, grace=20)
        stop_control_plane(cp)


@pytest.fixture
def namespace(k8s: K8s, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for finalization)."""
    from kubernetes import client

    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    name = "".join(ch for ch in name if ch.isalnum() or ch == "-").strip("-")
    api = k8s.api_client()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except Exception:
            pass
        api.close()
