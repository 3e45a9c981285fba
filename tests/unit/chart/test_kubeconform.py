"""Every manifest the chart renders is valid for the pinned Kubernetes (KUBE_VERSION): kubeconform -strict
against schemas generated offline from Kubernetes' own OpenAPI document and the real CRDs (ours, and
prometheus-operator's), see lagpilot.testing.schemas. Each value combination the templates branch on is
rendered; every document must be validated (no error, no skipped or missing schema). The examples'
ConsumerGroups validate against the CRD, and broken manifests are reported invalid."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.chart import CHART, MONITORED_NAMESPACED, ROOT, helm_template, one, render
from lagpilot.testing.schemas import Report, ensure_kubeconform, ensure_schemas, kubeconform

pytestmark = pytest.mark.unit

Doc = dict[str, Any]

# Every value the templates branch on, set (values.yaml's defaults are the other side of each branch).
EVERYTHING: Doc = {
    "fullnameOverride": "lp",
    "image": {"digest": "sha256:" + "ab" * 32},
    "imagePullSecrets": [{"name": "regcred"}],
    "watchNamespaces": ["shop"],
    "allowedBootstrapServers": ["*.kafka.svc:9093", "[fd00::?]:9093"],
    "consumerImage": "reg.example/worker:7",
    "verbose": True,
    "extraArgs": ["--example-arg"],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                 {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "100%"}},
    "metrics": {"service": {"type": "NodePort", "annotations": {"example.com/scrape": "true"}}},
    "serviceAccount": {"name": "lp-operator", "annotations": {"example.com/role": "operator"}},
    "rbac": {"create": True, "secretNames": ["kafka-user", "my-cluster-cluster-ca-cert"], "readAllSecrets": False},
    "resources": {"requests": {"cpu": 1, "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "podAnnotations": {"example.com/owner": "platform"},
    "podLabels": {"team": "platform"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "terminationGracePeriodSeconds": 60,
    "peering": {"name": "lp-peering", "priority": 10},
    "serviceMonitor": {"enabled": True, "workers": True, "labels": {"release": "prom"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "additionalRules": [
        {"alert": "LagpilotTest", "expr": "vector(1)", "for": "5m", "labels": {"severity": "info"},
         "annotations": {"summary": "test"}}]},
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring",
                         "annotations": {"k8s-sidecar-target-directory": "/tmp/dashboards"}},
}


@dataclass(frozen=True)
class Variant:
    id: str
    sets: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    values: Doc | None = None
    # Kinds the variant is there for (it must render at least these).
    kinds: frozenset[str] = field(default_factory=frozenset)


VARIANTS = (
    Variant("default", kinds=frozenset({"Deployment", "KopfPeering", "Role", "RoleBinding", "Service"})),
    Variant("cluster-wide", ("clusterWide=true", "rbac.secretNames={kafka-user}"),
            kinds=frozenset({"ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding"})),
    Variant("namespaced-monitored", (*MONITORED_NAMESPACED, "serviceMonitor.workers=true"),
            kinds=frozenset({"Role", "RoleBinding", "KopfPeering", "ServiceMonitor", "PodMonitor",
                             "PrometheusRule", "ConfigMap"})),
    Variant("cluster-monitored", ("clusterWide=true", "serviceMonitor.enabled=true", "prometheusRule.enabled=true",
                                  "grafanaDashboard.enabled=true"),
            kinds=frozenset({"ClusterRole", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"})),
    Variant("include-crds", extra=("--include-crds",), kinds=frozenset({"CustomResourceDefinition"})),
    Variant("namespaced-standalone", ("watchNamespaces={shop,billing}", "peering.enabled=false"),
            kinds=frozenset({"Role", "RoleBinding"})),
    Variant("bare", ("peering.enabled=false", "rbac.create=false", "serviceAccount.create=false",
                     "serviceAccount.name=ops", "metrics.service.enabled=false", "replicaCount=0",
                     "resources=null"),
            kinds=frozenset({"Deployment"})),
    Variant("everything", values=EVERYTHING, extra=("--include-crds",),
            kinds=frozenset({"Deployment", "Role", "KopfPeering", "ServiceMonitor", "PodMonitor", "PrometheusRule",
                             "ConfigMap", "CustomResourceDefinition", "ValidatingAdmissionPolicy",
                             "ValidatingAdmissionPolicyBinding"})),
)


@pytest.fixture(scope="module")
def kubeconform_bin() -> Path:
    return ensure_kubeconform()


@pytest.fixture(scope="module")
def schemas() -> Path:
    return ensure_schemas()


@pytest.fixture(scope="module")
def rendered(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in VARIANTS:
        extra = v.extra
        if v.values is not None:
            path = tmp_path_factory.mktemp("values") / f"{v.id}.yaml"
            path.write_text(yaml.safe_dump(v.values))
            extra = (*extra, "--values", str(path))
        out[v.id] = helm_template(helm, v.sets, extra=extra)
    return out


def documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def assert_all_valid(report: Report, docs: list[Doc]) -> None:
    assert report.problems() == [], "\n".join(report.problems())
    assert report.summary == {"valid": len(docs), "invalid": 0, "errors": 0, "skipped": 0}, report.summary
    assert sorted(r["kind"] for r in report.resources) == sorted(d["kind"] for d in docs)
    assert report.returncode == 0


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_chart_renders_valid_manifests(variant: Variant, rendered: dict[str, str], kubeconform_bin: Path,
                                       schemas: Path) -> None:
    text = rendered[variant.id]
    docs = documents(text)
    assert variant.kinds <= {d["kind"] for d in docs}, f"{variant.id} no longer renders what it is for"
    assert_all_valid(kubeconform(kubeconform_bin, schemas, text), docs)


def test_variants_cover_every_kind_the_chart_renders(rendered: dict[str, str]) -> None:
    """A new template's kind must be validated by one of the variants above."""
    declared = {"CustomResourceDefinition"}
    for path in (CHART / "templates").glob("*.yaml"):
        declared |= set(re.findall(r"^kind:\s*(\w+)", path.read_text(), re.MULTILINE))
    covered = {d["kind"] for text in rendered.values() for d in documents(text)}
    assert declared <= covered, f"no variant renders {sorted(declared - covered)}"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path, kubeconform_bin: Path, schemas: Path) -> None:
    text = example.read_text()
    docs = documents(text)
    assert "ConsumerGroup" in {d["kind"] for d in docs}
    assert_all_valid(kubeconform(kubeconform_bin, schemas, text), docs)


# -- it can fail --------------------------------------------------------------------------------------

def set_replicas(docs: list[Doc]) -> Doc:
    dep = one(docs, "Deployment")
    dep["spec"]["replicas"] = "three"
    return dep


def unknown_pod_field(docs: list[Doc]) -> Doc:
    dep = one(docs, "Deployment")
    dep["spec"]["template"]["spec"]["hostnames"] = ["operator"]
    return dep


def misplaced_tolerations(docs: list[Doc]) -> Doc:
    dep = one(docs, "Deployment")
    dep["spec"]["template"]["tolerations"] = [{"operator": "Exists"}]
    return dep


def bad_port(docs: list[Doc]) -> Doc:
    svc = one(docs, "Service")
    svc["spec"]["ports"][0]["port"] = "metrics"
    return svc


def unknown_endpoint_field(docs: list[Doc]) -> Doc:
    sm = one(docs, "ServiceMonitor")
    sm["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    return sm


def bad_interval(docs: list[Doc]) -> Doc:
    pm = one(docs, "PodMonitor")
    pm["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    return pm


def unknown_rule_field(docs: list[Doc]) -> Doc:
    rule = one(docs, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["severity"] = "critical"
    return rule


def peering_spec(docs: list[Doc]) -> Doc:
    peering = docs[[d["kind"] for d in docs].index("KopfPeering")]
    peering["spec"] = {"priority": 1}
    return peering


def unknown_consumergroup_field(_: list[Doc]) -> Doc:
    cg = documents((ROOT / "examples" / "minimal.yaml").read_text())[0]
    cg["spec"]["target"]["timeout"] = 10
    return cg


def unknown_metadata_field(_: list[Doc]) -> Doc:
    cg = documents((ROOT / "examples" / "minimal.yaml").read_text())[0]
    cg["metadata"]["label"] = {"team": "billing"}
    return cg


# Each breaker and where kubeconform must report it (the instance path, and the start of the message).
BROKEN: list[tuple[Callable[[list[Doc]], Doc], str]] = [
    (set_replicas, "at '/spec/replicas': got string, want null or integer"),
    (unknown_pod_field, "at '/spec/template/spec': additional properties 'hostnames'"),
    (misplaced_tolerations, "at '/spec/template': additional properties 'tolerations'"),
    (bad_port, "at '/spec/ports/0/port': got string, want integer"),
    (unknown_endpoint_field, "at '/spec/endpoints/0': additional properties 'scrapeInterval'"),
    (bad_interval, "at '/spec/podMetricsEndpoints/0/interval': '30 seconds' does not match pattern"),
    (unknown_rule_field, "at '/spec/groups/0/rules/0': additional properties 'severity'"),
    (peering_spec, "at '': additional properties 'spec'"),
    (unknown_consumergroup_field, "at '/spec/target': additional properties 'timeout'"),
    (unknown_metadata_field, "at '/metadata': additional properties 'label'"),
]


@pytest.mark.parametrize(("breaker", "where"), BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_broken_manifest_is_invalid(breaker: Callable[[list[Doc]], Doc], where: str, helm: Path,
                                    kubeconform_bin: Path, schemas: Path) -> None:
    docs = copy.deepcopy(render(helm, MONITORED_NAMESPACED))
    report = kubeconform(kubeconform_bin, schemas, yaml.safe_dump(breaker(docs)))
    assert report.summary == {"valid": 0, "invalid": 1, "errors": 0, "skipped": 0}, report.summary
    (result,) = report.resources
    assert result["status"] == "statusInvalid" and where in result["msg"], result["msg"]
    assert report.returncode != 0


def test_unknown_kind_is_an_error_not_a_download(kubeconform_bin: Path, schemas: Path) -> None:
    """A kind without a local schema fails (kubeconform never looks anywhere else)."""
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    report = kubeconform(kubeconform_bin, schemas, yaml.safe_dump(widget))
    assert report.summary == {"valid": 0, "invalid": 0, "errors": 1, "skipped": 0}, report.summary
    assert "could not find schema for Widget" in report.resources[0]["msg"]
