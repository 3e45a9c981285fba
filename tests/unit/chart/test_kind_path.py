"""The kind end-to-end path fits together: cluster shape, the Kafka manifest's listeners and the port
mapping, the script's references, and the CI workflow running the script."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from lagpilot.testing.chart import ROOT

pytestmark = pytest.mark.unit


def kafka_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "tests" / "e2e" / "kafka.yaml").read_text()) if d]


def test_kind_config_one_control_plane_two_workers() -> None:
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster"
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]


def test_kafka_external_listener_is_reachable_through_kind_mapping() -> None:
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    host_ports = {m["hostPort"]: m["containerPort"] for n in cfg["nodes"] for m in n.get("extraPortMappings", [])}
    svc = next(d for d in kafka_docs() if d["kind"] == "Service" and d["spec"].get("type") == "NodePort")
    node_port = svc["spec"]["ports"][0]["nodePort"]
    assert node_port in host_ports.values()
    dep = next(d for d in kafka_docs() if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False, "service links inject KAFKA_PORT and break the image's config"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    host_port = next(h for h, c in host_ports.items() if c == node_port)
    assert advertised["EXTERNAL"] == f"localhost:{host_port}"
    inner = next(d for d in kafka_docs() if d["kind"] == "Service" and d["metadata"]["name"] == "kafka")
    assert advertised["PLAINTEXT"] == f"kafka.{inner['metadata']['namespace']}.svc.cluster.local:9092"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


KIND_SCRIPTS = ("e2e-kind.sh", "kind-cluster.sh", "images.sh", "docker-engine.sh", "build-k8s.sh",
                "images/kafka/run", "images/kind-cni/pod-network", "lib/steps.sh")


@pytest.mark.parametrize("name", KIND_SCRIPTS)
def test_kind_scripts_parse(name: str) -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], check=True)


def test_e2e_script_is_valid_and_matches_the_manifests() -> None:
    text = (ROOT / "scripts" / "e2e-kind.sh").read_text()
    cluster = (ROOT / "scripts" / "kind-cluster.sh").read_text()
    for ref in ("charts/lagpilot", "scripts/build-helm.sh", "scripts/kind-cluster.sh"):
        assert ref in text and (ROOT / ref).exists(), ref
    for ref in ("kind-config.yaml", "tests/e2e/kafka.yaml", "scripts/docker-engine.sh", "scripts/images.sh"):
        assert ref in cluster and (ROOT / ref).exists(), ref
    assert "LAGPILOT_E2E_BOOTSTRAP=kafka.lagpilot-e2e.svc.cluster.local:9092" in text
    assert "LAGPILOT_E2E_TEST_BOOTSTRAP=localhost:30092" in text
    assert "pytest tests/e2e" in text


def test_ci_workflow_runs_the_script() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e-kind.yml").read_text())
    steps = wf["jobs"]["e2e-kind"]["steps"]
    assert any(s.get("run", "").strip() == "scripts/e2e-kind.sh" for s in steps)
    assert wf["jobs"]["e2e-kind"]["runs-on"].startswith("ubuntu")


def test_build_helm_script_prints_the_path_tests_use() -> None:
    from lagpilot.testing.chart import helm_path

    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "build-helm.sh")], check=True)
    if helm_path().exists():  # cached: the script returns at once and prints the same path
        out = subprocess.run(["bash", str(ROOT / "scripts" / "build-helm.sh")], capture_output=True,
                             text=True, check=True, timeout=60)
        assert out.stdout.strip() == str(helm_path())
        assert "cached" in out.stderr
