"""The chart renders what the operator needs, with least privilege, for default values and for the
namespaced + monitored variant; values.schema.json rejects bad values."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lagpilot import protocol
from lagpilot.testing.chart import CHART, MONITORED_NAMESPACED, HelmError, by_kind, one, render

pytestmark = pytest.mark.unit

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    dep = one(docs, "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_helm_lint_default_and_namespaced_monitored(helm: Path) -> None:
    for sets in ((), MONITORED_NAMESPACED):
        args = [str(helm), "lint", "--strict", str(CHART)]
        for s in sets:
            args += ["--set", s]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr


def test_default_render_objects(helm: Path) -> None:
    """Least privilege by default: the release's own namespace, a Role there, only read-only discovery
    cluster-wide, and no Secret readable at all."""
    docs = render(helm)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
                            "Service", "Deployment", "KopfPeering"])
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == "lagpilot-system"
        assert d["metadata"]["labels"]["app.kubernetes.io/instance"] == "lagpilot"
    assert env_of(container(docs))["LAGPILOT_WATCH_NAMESPACES"] == "lagpilot-system"
    (role,) = by_kind(docs, "Role")
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]


@pytest.mark.parametrize(("sets", "rule"), [
    ([], None),
    (["rbac.secretNames={kafka-user,my-cluster-cluster-ca-cert}"],
     {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kafka-user", "my-cluster-cluster-ca-cert"],
      "verbs": ["get"]}),
    (["rbac.readAllSecrets=true"], {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
    (["clusterWide=true", "rbac.secretNames={kafka-user}"],
     {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["kafka-user"], "verbs": ["get"]}),
])
def test_secrets_the_operator_may_read(helm: Path, sets: list[str], rule: dict[str, Any] | None) -> None:
    docs = render(helm, sets)
    (roles,) = [[r for r in by_kind(docs, kind) if not r["metadata"]["name"].endswith("-discovery")]
                for kind in (("ClusterRole",) if "clusterWide=true" in sets else ("Role",))]
    (role,) = roles
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rules == ([rule] if rule else [])
    for r in role["rules"]:
        if "secrets" in r["resources"]:
            assert set(r["verbs"]) == {"get"}, "never list or watch: that would read every Secret"


def test_cluster_wide_and_a_namespace_list_exclude_each_other(helm: Path) -> None:
    with pytest.raises(HelmError, match="not both"):
        render(helm, ["clusterWide=true", "watchNamespaces={shop}"])


def test_operator_deployment_security_and_command(helm: Path) -> None:
    docs = render(helm)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(docs)
    assert c["command"] == ["lagpilot-operator"], "the lab runner and the image need an explicit command"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc.get("privileged") is False
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp"}
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_operator_env_probes_and_ports(helm: Path) -> None:
    c = container(render(helm, ["logFormat=text", "consumerImage=reg.example/worker:7",
                                "metrics.port=9100", "health.port=9101"]))
    env = env_of(c)
    assert env["LAGPILOT_WATCH_NAMESPACES"] == "lagpilot-system"  # the default: the release namespace
    assert env_of(container(render(helm, ["clusterWide=true"])))["LAGPILOT_WATCH_NAMESPACES"] == ""
    assert env["LAGPILOT_CONSUMER_IMAGE"] == "reg.example/worker:7"
    assert env["LAGPILOT_LOG_FORMAT"] == "text"
    assert env["LAGPILOT_METRICS_PORT"] == "9100"
    assert env["LAGPILOT_ASSIGNMENT_MODE"] == "k8s"
    assert env_of(container(render(helm, ["assignmentMode=kafka"])))["LAGPILOT_ASSIGNMENT_MODE"] == "kafka"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "--liveness=http://$(POD_IP):9101/healthz" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9100, "health": 9101}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_consumer_image_defaults_to_operator_image(helm: Path) -> None:
    c = container(render(helm, ["image.repository=reg.example/lagpilot", "image.tag=1.2.3"]))
    assert c["image"] == "reg.example/lagpilot:1.2.3"
    assert env_of(c)["LAGPILOT_CONSUMER_IMAGE"] == "reg.example/lagpilot:1.2.3"
    digest = "sha256:" + "a" * 64
    c = container(render(helm, ["image.repository=reg.example/lagpilot", f"image.digest={digest}"]))
    assert c["image"] == f"reg.example/lagpilot@{digest}"


def test_chart_default_tag_is_app_version(helm: Path) -> None:
    import yaml

    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(render(helm))["image"].endswith(f":{app_version}")


def test_namespaced_mode_has_no_cluster_wide_writes(helm: Path) -> None:
    docs = render(helm, MONITORED_NAMESPACED)
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["billing", "shop"]
    bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["billing", "shop"]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "lagpilot", "namespace": "lagpilot-system"}]
    for cr in by_kind(docs, "ClusterRole"):
        for rule in cr["rules"]:
            assert not set(rule["verbs"]) & WRITE_VERBS, f"cluster-wide write in namespaced mode: {rule}"
    (cr,) = by_kind(docs, "ClusterRole")
    assert {r for rule in cr["rules"] for r in rule["resources"]} == {"customresourcedefinitions", "namespaces"}
    env = env_of(container(docs))
    assert env["LAGPILOT_WATCH_NAMESPACES"] == "shop,billing"
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["billing", "shop"]
    assert not by_kind(docs, "ClusterKopfPeering")
    for role in roles:
        assert any(r["apiGroups"] == ["kopf.dev"] and r["resources"] == ["kopfpeerings"] for r in role["rules"])


def test_peering_object_and_flags(helm: Path) -> None:
    docs = render(helm, ["peering.priority=5", "clusterWide=true"])
    (peering,) = by_kind(docs, "ClusterKopfPeering")
    args = container(docs)["args"]
    assert f"--peering={peering['metadata']['name']}" in args and "--priority=5" in args
    (cr,) = [c for c in by_kind(docs, "ClusterRole") if not c["metadata"]["name"].endswith("-discovery")]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
            "verbs": ["list", "watch", "patch"]} in cr["rules"]
    off = render(helm, ["peering.enabled=false", "clusterWide=true"])
    assert "--standalone" in container(off)["args"]
    assert not [d for d in off if "Peering" in d["kind"]]
    (cr,) = [c for c in by_kind(off, "ClusterRole") if not c["metadata"]["name"].endswith("-discovery")]
    assert not [r for r in cr["rules"] if r["apiGroups"] == ["kopf.dev"]]


def test_cluster_mode_binds_cluster_role(helm: Path) -> None:
    docs = render(helm, ["clusterWide=true"])
    assert not by_kind(docs, "Role")
    names = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")}
    assert names == {cr["metadata"]["name"] for cr in by_kind(docs, "ClusterRole")}


def test_rbac_off_and_existing_service_account(helm: Path) -> None:
    docs = render(helm, ["rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops"])
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
                                                 "ServiceAccount")]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    with pytest.raises(HelmError, match=r"serviceAccount\.name is required"):
        render(helm, ["serviceAccount.create=false"])


def test_monitoring_objects(helm: Path) -> None:
    docs = render(helm, MONITORED_NAMESPACED)
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["shop", "billing"]}
    alerts = {r["alert"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert {"LagpilotLagGrowing", "LagpilotPartitionsStalled", "LagpilotRolloutAborted",
            "LagpilotWorkersCrashLooping"} <= alerts
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["lagpilot.json"])
    titles = {p["title"] for p in dash["panels"]}
    assert {"Lag per partition", "Workers", "Deliveries by outcome", "Rollout phase"} <= titles
    # Off by default: no CRDs of prometheus-operator needed for a plain install.
    assert not [d for d in render(helm) if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]


def test_worker_pod_monitor_matches_operator_labels(helm: Path) -> None:
    """The PodMonitor selects the labels the operator really puts on worker pods, and their port name."""
    from lagpilot_operator.workload import plan

    pm = one(render(helm, ["serviceMonitor.enabled=true", "clusterWide=true"]), "PodMonitor")
    labels = plan.group_labels("orders")
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"][0]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_" + protocol.LABEL_CG.replace(".", "_")
                                       .replace("/", "_")]


@pytest.mark.parametrize("bad", [
    "logFormat=xml",
    "assignmentMode=zookeeper",
    "watchNamespaces={Not_A_Namespace}",
    "image.pullPolicy=Sometimes",
    "metrics.port=70000",
    "unknownKey=1",
    "replicaCount=2",
    "prometheusRule.stalledFor=five minutes",
])
def test_schema_rejects_bad_values(helm: Path, bad: str) -> None:
    with pytest.raises(HelmError, match="schema"):
        render(helm, [bad])


def test_values_file_matches_schema_keys() -> None:
    """Every top-level value is described by the schema (and so documented and type-checked)."""
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(values) <= set(schema["properties"])


def test_allowed_bootstrap_servers_reach_the_operator_and_an_admission_policy(helm: Path) -> None:
    assert not by_kind(render(helm), "ValidatingAdmissionPolicy")
    docs = render(helm, ["allowedBootstrapServers={*.kafka.svc:9093}"])
    assert env_of(container(docs))["LAGPILOT_ALLOWED_BOOTSTRAP_SERVERS"] == "*.kafka.svc:9093"
    policy = one(docs, "ValidatingAdmissionPolicy")
    assert r"matches(r'^(?:.*\.kafka\.svc:9093)$')" in policy["spec"]["validations"][0]["expression"]
    assert one(docs, "ValidatingAdmissionPolicyBinding")["spec"]["policyName"] == policy["metadata"]["name"]
    off = render(helm, ["allowedBootstrapServers={*.kafka.svc:9093}", "bootstrapAdmissionPolicy=false"])
    assert not by_kind(off, "ValidatingAdmissionPolicy")
