"""The chart on the lab: rendered manifests accepted by the API server; `helm install` starts the operator
as a pod run by the lab runner with the chart's ServiceAccount token (so a missing permission fails here);
a ConsumerGroup from examples/ is reconciled, its workers run and records reach the target; `helm
upgrade` with a changed value rolls the operator and leaves the workers alone; `helm uninstall` leaves no
operator object behind. Then the very same e2e suite that runs on kind runs against the lab."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.protocol import GROUP, PLURAL
from lagpilot.testing.chart import CHART, KUBE_VERSION, MONITORED_NAMESPACED, ROOT, helm_template
from lagpilot.testing.e2e_target import serve_in_thread
from lagpilot.testing.labchart import (
    LAB_RESOURCES,
    cg_status,
    diagnose,
    drop_finalizers_and_delete,
    install_chart_crds,
    install_monitoring_crds,
    kget,
    operator_pods,
    ready,
)
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab



@pytest.fixture
def other_namespace(k8s: Any) -> Iterator[str]:
    name = f"t-chart-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    yield name
    k8s.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("variant", ["default", "cluster-wide", "namespaced-monitored"])
def test_rendered_manifests_accepted_by_api_server(k8s: Any, helm_bin: Path, namespace: str,
                                                   other_namespace: str, variant: str) -> None:
    install_chart_crds(k8s)
    sets: tuple[str, ...] = ("clusterWide=true",) if variant == "cluster-wide" else ()
    if variant == "namespaced-monitored":
        install_monitoring_crds(k8s)
        sets = (*(s for s in MONITORED_NAMESPACED if not s.startswith("watchNamespaces")),
                f"watchNamespaces={{{namespace},{other_namespace}}}")
    manifest = helm_template(helm_bin, sets, namespace=namespace, release=f"r{uuid.uuid4().hex[:6]}",
                             extra=["--include-crds"])
    kinds = {d["kind"] for d in yaml.safe_load_all(manifest) if d}
    assert {"Deployment", "ServiceAccount", "CustomResourceDefinition"} <= kinds
    out = k8s.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert out.returncode == 0, out.stderr
    applied = [ln for ln in out.stdout.splitlines() if "(server dry run)" in ln]
    assert len(applied) == sum(1 for d in yaml.safe_load_all(manifest) if d), out.stdout
    if variant == "namespaced-monitored":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Role", "KopfPeering"} <= kinds


def release_objects(k8s: Any, release: str, namespaces: list[str]) -> list[str]:
    """Every object labelled as part of the release, in the given namespaces and cluster-wide."""
    selector = f"app.kubernetes.io/instance={release}"
    found: list[str] = []
    namespaced = "deployments,replicasets,pods,serviceaccounts,services,configmaps,roles,rolebindings," \
                 "kopfpeerings.kopf.dev"
    for ns in namespaces:
        out = k8s.kubectl("get", namespaced, "-l", selector, "-o", "name", namespace=ns)
        found += [f"{ns}/{n}" for n in out.stdout.split()]
    out = k8s.kubectl("get", "clusterroles,clusterrolebindings,clusterkopfpeerings.kopf.dev", "-l", selector,
                      "-o", "name")
    found += out.stdout.split()
    return found


def worker_pods(k8s: Any, namespace: str, cg: str) -> list[dict[str, Any]]:
    pods = kget(k8s, "pods", "-l", f"lagpilot.io/consumergroup={cg}", namespace=namespace)
    return [p for p in (pods or {}).get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def is_ready(status: dict[str, Any], workers: int) -> bool:
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return status.get("readyWorkers") == workers and conds.get("Ready") == "True"


def produce(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, key=f"k{i % 7}".encode(), value=str(i).encode())
    assert p.flush(30) == 0


def test_install_reconcile_upgrade_uninstall(k8s: Any, helm: Any, ports: tuple[int, int], namespace: str,
                                             other_namespace: str, topic_factory: Callable[..., str],
                                             bootstrap: str) -> None:
    op_ns, app_ns = namespace, other_namespace
    release = f"lp{uuid.uuid4().hex[:6]}"
    metrics_port, health_port = ports
    cg_name = None
    server = None
    try:
        try:
            helm("install", release, str(CHART), "-n", op_ns, "--wait", "--timeout", "240s",
                 "--set", f"watchNamespaces={{{app_ns}}}", "--set", f"metrics.port={metrics_port}",
                 "--set", f"health.port={health_port}", "--set", "logFormat=text", *LAB_RESOURCES)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(k8s, op_ns, app_ns)}") from None
        # The operator runs as a pod of the chart's Deployment, with the chart's ServiceAccount.
        (pod,) = wait_for(lambda: [p for p in operator_pods(k8s, release, op_ns) if ready(p)] or None,
                          what="one ready operator pod", timeout=180)
        assert pod["spec"]["serviceAccountName"] == release + "-lagpilot"
        assert pod["spec"]["containers"][0]["command"] == ["lagpilot-operator"]
        first_uid = pod["metadata"]["uid"]

        # A ConsumerGroup from examples/ is reconciled and its workers deliver to a local target.
        server, rec = serve_in_thread("127.0.0.1", 0)
        topic = topic_factory(partitions=3)
        body = copy.deepcopy(yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text()))
        cg_name = body["metadata"]["name"]
        body["metadata"]["namespace"] = app_ns
        body["spec"].update(bootstrapServers=bootstrap, topic=topic, workers=2)
        body["spec"]["target"]["url"] = f"http://127.0.0.1:{server.server_address[1]}/orders"
        k8s.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        status = wait_for(lambda: (s if is_ready(s := cg_status(k8s, app_ns, cg_name), 2) else None), 300,
                          what="the ConsumerGroup Ready with 2 workers", interval=2)
        assert status["partitions"] == 3
        produce(bootstrap, topic, 90)
        wait_for(lambda: len({(r["partition"], r["offset"]) for r in list(rec.records)}) >= 90, 180,
                 what="90 records at the target")
        workers_before = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["restartCount"]
                          for p in worker_pods(k8s, app_ns, cg_name)}
        assert len(workers_before) == 2

        # helm upgrade with a changed value: a new operator pod, the same workers.
        helm("upgrade", release, str(CHART), "-n", op_ns, "--reuse-values", "--set", "logFormat=json",
             "--wait", "--timeout", "240s")
        (new,) = wait_for(lambda: [
            p for p in operator_pods(k8s, release, op_ns)
            if p["metadata"]["uid"] != first_uid and ready(p)] or None, 240,
            what="the new operator pod ready")
        env = {e["name"]: e.get("value") for e in new["spec"]["containers"][0]["env"]}
        assert env["LAGPILOT_LOG_FORMAT"] == "json"
        wait_for(lambda: all(
            p["metadata"]["uid"] != first_uid for p in operator_pods(k8s, release, op_ns)), 120,
            what="the old operator pod gone")
        # The new operator has reconciled (status re-read) and left the workers as they were.
        wait_for(lambda: is_ready(cg_status(k8s, app_ns, cg_name), 2), 120, what="the ConsumerGroup still Ready")
        time.sleep(5)  # a resync window for the new operator to (not) touch the workers
        workers_after = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["restartCount"]
                         for p in worker_pods(k8s, app_ns, cg_name)}
        assert workers_after == workers_before
        produce(bootstrap, topic, 30)
        wait_for(lambda: len(
            {(r["partition"], r["offset"]) for r in list(rec.records)}) >= 120, 180,
            what="the next 30 records delivered by the same workers")

        # helm uninstall: no operator object left (the CRD stays, as Helm does with crds/).
        helm("uninstall", release, "-n", op_ns, "--wait", "--timeout", "240s")
        wait_for(lambda: not release_objects(k8s, release, [op_ns, app_ns]), 180, what="every release object gone")
        assert kget(k8s, "crd", "consumergroups.lagpilot.io") is not None
    finally:
        helm("uninstall", release, "-n", op_ns, check=False)
        if cg_name:
            drop_finalizers_and_delete(k8s, app_ns, cg_name)
        if server is not None:
            server.shutdown()
            server.server_close()


def test_e2e_suite_runs_on_the_lab(k8s: Any, helm: Any, ports: tuple[int, int], namespace: str,
                                   bootstrap: str) -> None:
    """The e2e suite against the lab: cluster-wide install, local target (pods are local). Tests marked
    `kind` (several nodes, real kubelets, the release e2e-kind.sh installed) run on kind only."""
    release = f"lp{uuid.uuid4().hex[:6]}"
    metrics_port, health_port = ports
    helm("install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "240s", "--set", "clusterWide=true",
         "--set", f"metrics.port={metrics_port}", "--set", f"health.port={health_port}", *LAB_RESOURCES)
    try:
        env = {**os.environ, "KUBECONFIG": k8s.kubeconfig, "LAGPILOT_E2E_BOOTSTRAP": bootstrap,
               "LAGPILOT_E2E_TARGET_MODE": "local"}
        out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "e2e and not kind",
                              str(ROOT / "tests" / "e2e")], env=env, capture_output=True, text=True,
                             timeout=1500, cwd=ROOT)
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
        assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-2000:]
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "240s", check=False)
        # CRs the suite left (it deletes its namespaces) keep kopf's finalizer once the operator is gone.
        for item in (kget(k8s, f"{PLURAL}.{GROUP}", "-A") or {}).get("items") or []:
            if item["metadata"]["namespace"].startswith("e2e-"):
                drop_finalizers_and_delete(k8s, item["metadata"]["namespace"], item["metadata"]["name"])


def test_kube_version_matches_lab() -> None:
    """helm template's --kube-version is the lab's Kubernetes release."""
    from lagpilot.paths import K8S_VERSION

    assert KUBE_VERSION == K8S_VERSION
