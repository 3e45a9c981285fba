"""Every `lagpilot` command against the lab, including its error paths: one clear line, meaningful exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[3]
LAGPILOT = str(Path(sys.executable).parent / "lagpilot")
GROUP, VERSION, PLURAL = "lagpilot.io", "v1alpha1", "consumergroups"


def run(*args: str, kubeconfig: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KUBECONFIG", None)
    if kubeconfig:
        full_env["KUBECONFIG"] = kubeconfig
    return subprocess.run([LAGPILOT, *args], capture_output=True, text=True, env=full_env, timeout=120)


@pytest.fixture(scope="module")
def crd(k8s: Any) -> None:
    k8s.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/consumergroups.lagpilot.io")


def make_group(k8s: Any, namespace: str, bootstrap: str, topic: str, status: dict[str, Any]) -> None:
    custom = client.CustomObjectsApi(k8s.api_client())
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConsumerGroup", "metadata": {"name": "cg1"},
        "spec": {"bootstrapServers": bootstrap, "topic": topic, "target": {"url": "http://127.0.0.1:9/x"}}})
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "cg1", {"status": status})


READY = [{"type": "Ready", "status": "True", "reason": "AllWorkersReady", "message": "ok",
          "lastTransitionTime": "2026-01-01T00:00:00Z"},
         {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
          "lastTransitionTime": "2026-01-01T00:00:00Z"}]


def test_status_table_and_json(k8s: Any, crd: None, namespace: str, bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(partitions=3)
    make_group(k8s, namespace, bootstrap, topic, {"partitions": 3, "workers": 1, "readyWorkers": 1,
                                                  "conditions": READY})
    core = client.CoreV1Api(k8s.api_client())
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cg1-assignment"}, "data": {
        "assignment.json": json.dumps({"epoch": 4, "grants": {"w-0": [0, 1, 2]}, "partitions": 3})}})

    out = run("status", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig)
    assert out.returncode == 0, out.stderr
    assert "partitions" in out.stdout and "LAG" in out.stdout and "w-0" in out.stdout

    js = run("status", "-n", namespace, "cg1", "-o", "json", kubeconfig=k8s.kubeconfig)
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["assignment_epoch"] == 4
    assert [r["granted_to"] for r in doc["partition_rows"]] == ["w-0", "w-0", "w-0"]
    assert [r["lag"] for r in doc["partition_rows"]] == [0, 0, 0]  # empty topic, read from the broker


def test_status_exit_1_when_not_ready(k8s: Any, crd: None, namespace: str, bootstrap: str) -> None:
    make_group(k8s, namespace, bootstrap, "t", {"conditions": [
        {"type": "Ready", "status": "False", "reason": "WorkersNotReady", "message": "0/1",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    out = run("status", "-n", namespace, "cg1", "--no-lag", kubeconfig=k8s.kubeconfig)
    assert out.returncode == 1 and "WorkersNotReady" in out.stdout


def test_status_unknown_resource_exit_3(k8s: Any, crd: None, namespace: str) -> None:
    out = run("status", "-n", namespace, "nope", kubeconfig=k8s.kubeconfig)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines() == [f'error: consumergroup "nope" not found in namespace "{namespace}"']


def test_unreachable_cluster_exit_4(tmp_path: Path, k8s: Any) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text(Path(k8s.kubeconfig).read_text().replace(k8s.server, "https://127.0.0.1:1")
                  if k8s.server else "")
    for args in (("status", "x"), ("promote", "x"), ("pause", "x")):
        out = run(*args, kubeconfig=str(kc))
        assert out.returncode == 4, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "cluster unreachable" in lines[0]
    missing = run("status", "x", "--kubeconfig", str(tmp_path / "missing"))
    assert missing.returncode == 4 and "does not exist" in missing.stderr


def test_promote_abort_need_a_rollout_and_set_annotations(k8s: Any, crd: None, namespace: str,
                                                          bootstrap: str) -> None:
    make_group(k8s, namespace, bootstrap, "t", {"rollout": {"phase": "Stable"}})
    out = run("promote", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig)
    assert out.returncode == 1 and "no rollout in progress" in out.stderr
    custom = client.CustomObjectsApi(k8s.api_client())
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "cg1",
                                                 {"status": {"rollout": {"phase": "Canary"}}})
    assert run("promote", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig).returncode == 0
    ann = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cg1")["metadata"]["annotations"]
    assert "lagpilot.io/promote" in ann
    assert run("abort", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig).returncode == 0
    ann = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cg1")["metadata"]["annotations"]
    assert "lagpilot.io/abort" in ann and "lagpilot.io/promote" not in ann
    assert run("abort", "-n", namespace, "missing", kubeconfig=k8s.kubeconfig).returncode == 3


def test_pause_and_resume(k8s: Any, crd: None, namespace: str, bootstrap: str) -> None:
    make_group(k8s, namespace, bootstrap, "t", {})
    custom = client.CustomObjectsApi(k8s.api_client())
    assert run("pause", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig).returncode == 0
    meta = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cg1")["metadata"]
    assert meta["annotations"]["lagpilot.io/pause"] == "true"
    assert run("resume", "-n", namespace, "cg1", kubeconfig=k8s.kubeconfig).returncode == 0
    meta = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "cg1")["metadata"]
    assert "lagpilot.io/pause" not in (meta.get("annotations") or {})


def test_lab_status_when_no_lab(tmp_path: Path) -> None:
    out = run("lab", "status", "-o", "json", env={"LAGPILOT_LAB_DIR": str(tmp_path / "nolab")})
    assert out.returncode == 1 and json.loads(out.stdout) == {"running": False}


def test_usage_error_exit_2() -> None:
    out = run("status", "--output", "yaml")
    assert out.returncode == 2


def two_context_kubeconfig(k8s: Any, path: Path, namespace: str) -> str:
    """A kubeconfig whose current context points at a dead port and whose "lab" context is the lab with
    `namespace` as its default: only a CLI that honours --context and the context's namespace works."""
    import yaml

    doc = yaml.safe_load(Path(k8s.kubeconfig).read_text())
    good_cluster, user = doc["clusters"][0], doc["users"][0]
    dead = {"name": "dead", "cluster": {**good_cluster["cluster"], "server": "https://127.0.0.1:1"}}
    doc["clusters"] = [good_cluster, dead]
    doc["contexts"] = [{"name": "broken", "context": {"cluster": "dead", "user": user["name"]}},
                       {"name": "lab", "context": {"cluster": good_cluster["name"], "user": user["name"],
                                                   "namespace": namespace}}]
    doc["current-context"] = "broken"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_kubectl_plugin_honours_kubeconfig_context_and_namespace(k8s: Any, crd: None, namespace: str,
                                                                 bootstrap: str, topic_factory: Any,
                                                                 tmp_path: Path) -> None:
    from lagpilot import paths

    topic = topic_factory(partitions=2)
    make_group(k8s, namespace, bootstrap, topic, {"partitions": 2, "workers": 1, "readyWorkers": 1,
                                                  "conditions": READY})
    kc = two_context_kubeconfig(k8s, tmp_path / "kubeconfig", namespace)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("KUBECONFIG", None)
    kubectl = str(paths.kubernetes_bin() / "kubectl")

    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, "lagpilot", *args], capture_output=True, text=True, env=env, timeout=120)

    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert "kubectl-lagpilot" in listed.stdout, listed.stdout + listed.stderr

    # No -n: the "lab" context's namespace. The current context ("broken") would not answer.
    ok = plugin("status", "cg1", "--kubeconfig", kc, "--context", "lab", "--no-lag", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["name"] == "cg1"
    dead = plugin("status", "cg1", "--kubeconfig", kc, "--no-lag")
    assert dead.returncode == 4 and "127.0.0.1:1" in dead.stderr, dead
    other_ns = plugin("status", "cg1", "--kubeconfig", kc, "--context", "lab", "-n", "default", "--no-lag")
    assert other_ns.returncode == 3 and 'namespace "default"' in other_ns.stderr, other_ns

    # lag by ConsumerGroup name: brokers, group id and topic come from the resource.
    lag = plugin("lag", "cg1", "--kubeconfig", kc, "--context", "lab", "-o", "json")
    assert lag.returncode == 0, lag.stderr
    doc = json.loads(lag.stdout)
    assert doc["group"] == f"{namespace}.cg1"
    assert sorted(p["partition"] for p in doc["partitions"]) == [0, 1]
    assert {p["topic"] for p in doc["partitions"]} == {topic}

    abort = plugin("abort", "cg1", "--kubeconfig", kc, "--context", "lab")
    assert abort.returncode == 1 and "no rollout in progress" in abort.stderr, abort
