"""Planner: every spec field lands in the generated objects, least-privilege RBAC, labels, revisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.protocol import AssignmentDoc
from lagpilot_operator.resource.spec import ConsumerGroupSpec, parse
from lagpilot_operator.workload import plan as p

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
OWNER = p.Owner(name="orders-to-billing", namespace="shop", uid="uid-1")


def full_spec() -> ConsumerGroupSpec:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "full.yaml").read_text()))
    cg = next(d for d in docs if d["kind"] == "ConsumerGroup")
    cg["metadata"]["namespace"] = "shop"
    spec, problems = parse(cg, "default:image")
    assert spec is not None and not problems
    return spec


def minimal_spec(**spec: Any) -> ConsumerGroupSpec:
    raw = {"bootstrapServers": "k:9092", "topic": "orders", "target": {"url": "http://t/x"}, **spec}
    parsed, problems = parse({"metadata": {"name": "orders-to-billing", "namespace": "shop"}, "spec": raw},
                             "default:image")
    assert parsed is not None and not problems, problems
    return parsed


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(dep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in container(dep)["env"]:
        assert e["name"] not in out, f"duplicate env {e['name']}"
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def test_full_spec_every_field_lands_in_worker_env() -> None:
    dep = p.deployment(full_spec(), OWNER, replicas=3, fence_timeout_seconds=20)
    env = env_of(dep)
    assert env["LAGPILOT_BOOTSTRAP_SERVERS"] == "kafka-0.kafka.shop.svc:9093,kafka-1.kafka.shop.svc:9093"
    assert env["LAGPILOT_TOPIC"] == "orders"
    assert env["LAGPILOT_GROUP_ID"] == "shop.orders-to-billing"
    assert env["LAGPILOT_TARGET_URL"] == "https://billing.shop.svc/api/orders"
    assert env["LAGPILOT_METHOD"] == "POST"
    assert json.loads(env["LAGPILOT_HEADERS"]) == {"X-Source": "lagpilot", "Content-Type": "application/json"}
    assert env["LAGPILOT_TIMEOUT_SECONDS"] == "10"
    assert env["LAGPILOT_CONNECTION"] == "pooled"
    assert env["LAGPILOT_THREADS"] == "8"
    assert env["LAGPILOT_ORDERING"] == "key"
    assert env["LAGPILOT_ASSIGNMENT"] == "k8s"
    assert env["LAGPILOT_ASSIGNMENT_CONFIGMAP"] == "orders-to-billing-assignment"
    assert env["LAGPILOT_FENCE_TIMEOUT_SECONDS"] == "20"
    assert (env["LAGPILOT_MAX_ATTEMPTS"], env["LAGPILOT_INITIAL_BACKOFF_MS"], env["LAGPILOT_MAX_BACKOFF_MS"]) == (
        "5", "200", "30000")
    assert env["LAGPILOT_DEAD_LETTER_TOPIC"] == "orders.dlq"
    assert env["LAGPILOT_HTTP_PORT"] == "8080"
    assert env["LAGPILOT_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["LAGPILOT_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    # credentials as mounted files: only their paths are in the env
    assert env["LAGPILOT_KAFKA_SASL_USERNAME_FILE"] == "/etc/lagpilot/kafka/kafka-sasl/username"
    assert env["LAGPILOT_KAFKA_SASL_PASSWORD_FILE"] == "/etc/lagpilot/kafka/kafka-sasl/password"
    assert "LAGPILOT_KAFKA_SASL_PASSWORD" not in env and "LAGPILOT_KAFKA_SASL_USERNAME" not in env
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-sasl"]["secret"] == {"secretName": "kafka-creds", "defaultMode": 0o440, "items": [
        {"key": "username", "path": "username"}, {"key": "password", "path": "password"}]}
    assert {"name": "kafka-sasl", "mountPath": "/etc/lagpilot/kafka/kafka-sasl", "readOnly": True} in container(
        dep)["volumeMounts"]
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["TZ"] == "UTC"
    # headersFromSecret: files in a read-only volume, never envFrom (values would be in the environment)
    assert "envFrom" not in container(dep)
    assert env["LAGPILOT_HEADERS_DIR"] == "/etc/lagpilot/target-headers"
    assert volumes["target-headers"]["secret"] == {"secretName": "billing-auth", "defaultMode": 0o440}
    assert {"name": "target-headers", "mountPath": "/etc/lagpilot/target-headers", "readOnly": True} in container(
        dep)["volumeMounts"]


def test_no_credential_literal_anywhere_in_planned_objects() -> None:
    dump = json.dumps([p.deployment(full_spec(), OWNER, 3), *p.plan(full_spec(), OWNER, 3).applied])
    assert "change-me" not in dump and "orders-consumer" not in dump
    # secrets are only referenced: every env var naming SASL data holds a mounted file's path
    for e in container(p.deployment(full_spec(), OWNER, 3))["env"]:
        if "SASL_USERNAME" in e["name"] or "SASL_PASSWORD" in e["name"]:
            assert e["name"].endswith("_FILE") and e["value"].startswith("/etc/lagpilot/kafka/")


def test_full_spec_template_fields_land_in_pod_spec() -> None:
    dep = p.deployment(full_spec(), OWNER, replicas=3)
    pod = dep["spec"]["template"]
    c = container(dep)
    assert c["image"] == "lagpilot/lagpilot:0.1.0"
    assert c["command"] == ["lagpilot-consumer"]
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "1", "memory": "256Mi"}}
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "consumers",
                                           "effect": "NoSchedule"}]
    assert "podAntiAffinity" in pod["spec"]["affinity"]
    assert pod["metadata"]["labels"]["team"] == "billing"
    assert pod["metadata"]["annotations"]["example.com/owner"] == "billing-team"
    assert pod["spec"]["serviceAccountName"] == "orders-to-billing-worker"
    assert dep["spec"]["replicas"] == 3


def test_the_retry_park_reaches_the_worker_as_its_flags_read_them() -> None:
    env = env_of(p.deployment(minimal_spec(retry={"park": {"topic": "orders.park", "after": "1h30m"}}), OWNER,
                              replicas=1))
    assert (env["LAGPILOT_PARK_TOPIC"], env["LAGPILOT_PARK_AFTER_SECONDS"]) == ("orders.park", "5400")
    env = env_of(p.deployment(minimal_spec(retry={"park": {"topic": "orders.park"}}), OWNER, replicas=1))
    assert env["LAGPILOT_PARK_AFTER_SECONDS"] == "60"
    assert "LAGPILOT_PARK_TOPIC" not in env_of(p.deployment(minimal_spec(), OWNER, replicas=1))


def test_minimal_spec_defaults_in_env_and_no_optional_entries() -> None:
    dep = p.deployment(minimal_spec(), OWNER, replicas=1)
    env = env_of(dep)
    assert env["LAGPILOT_GROUP_ID"] == "shop.orders-to-billing"
    assert env["LAGPILOT_THREADS"] == "4" and env["LAGPILOT_ORDERING"] == "key"
    assert env["LAGPILOT_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert env["LAGPILOT_METHOD"] == "POST"
    for absent in ("LAGPILOT_HEADERS", "LAGPILOT_DEAD_LETTER_TOPIC", "LAGPILOT_KAFKA_SASL_MECHANISM",
                   "LAGPILOT_SUCCESS_CODES", "LAGPILOT_RETRY_CODES", "LAGPILOT_UNAVAILABLE_CODES",
                   "LAGPILOT_MAX_REQUESTS_PER_SECOND", "LAGPILOT_FORMAT", "LAGPILOT_HEADER_MAPPING",
                   "LAGPILOT_IDEMPOTENCY_HEADER",
                   "LAGPILOT_KAFKA_SASL_USERNAME", "LAGPILOT_KAFKA_SASL_PASSWORD"):
        assert absent not in env
    c = container(dep)
    assert c["image"] == "default:image"
    assert "envFrom" not in c and "resources" not in c
    pod_spec = dep["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity"} & set(pod_spec)


def test_per_request_connection_is_mapped_to_consumer_flag_value() -> None:
    env = env_of(p.deployment(minimal_spec(target={"url": "http://t/x", "connection": "perRequest",
                                                   "timeoutSeconds": 2.5}), OWNER, 1))
    assert env["LAGPILOT_CONNECTION"] == "per-request"
    assert env["LAGPILOT_TIMEOUT_SECONDS"] == "2.5"


def test_probes_ports_and_security_context() -> None:
    c = container(p.deployment(minimal_spec(), OWNER, 1))
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    pod_spec = p.deployment(minimal_spec(), OWNER, 1)["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_labels_selector_and_owner_references() -> None:
    plan = p.plan(minimal_spec(), OWNER, 2)
    dep = plan.deployment
    rev = plan.revision
    assert len(rev) == 10 and all(ch in "0123456789abcdef" for ch in rev)
    assert dep["metadata"]["name"] == f"orders-to-billing-{rev}" == plan.deployment_name
    want = {"app.kubernetes.io/name": "lagpilot-worker", "app.kubernetes.io/instance": "orders-to-billing",
            "app.kubernetes.io/managed-by": "lagpilot-operator", "lagpilot.io/consumergroup": "orders-to-billing",
            "lagpilot.io/revision": rev}
    assert dep["metadata"]["labels"] == want
    assert dep["spec"]["template"]["metadata"]["labels"] == want
    assert dep["spec"]["selector"]["matchLabels"] == {"lagpilot.io/consumergroup": "orders-to-billing",
                                                      "lagpilot.io/revision": rev}
    for obj in (dep, *plan.applied, p.assignment_configmap(minimal_spec(), OWNER)):
        assert obj["metadata"]["namespace"] == "shop"
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "name": "orders-to-billing",
            "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
        assert obj["metadata"]["labels"]["lagpilot.io/consumergroup"] == "orders-to-billing"
    assert p.status_selector("orders-to-billing") == "lagpilot.io/consumergroup=orders-to-billing"


def test_supporting_objects_and_least_privilege_role() -> None:
    plan = p.plan(minimal_spec(), OWNER, 1)
    kinds = {o["kind"]: o for o in plan.applied}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "Service"}
    role = kinds["Role"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-to-billing-assignment"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update",
                                                                                 "patch"]},
    ]
    rb = kinds["RoleBinding"]
    assert rb["roleRef"]["name"] == role["metadata"]["name"]
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "orders-to-billing-worker", "namespace": "shop"}]
    svc = kinds["Service"]["spec"]
    assert svc["clusterIP"] == "None" and svc["selector"] == {"lagpilot.io/consumergroup": "orders-to-billing"}
    assert all(o["kind"] != "ConfigMap" for o in plan.applied)  # the hand-off owns the assignment ConfigMap
    cm = p.assignment_configmap(minimal_spec(), OWNER)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "orders-to-billing-assignment"
    assert AssignmentDoc.from_json(cm["data"]["assignment.json"]) == AssignmentDoc()


WORKER_CHANGES: list[dict[str, Any]] = [
    {"threads": 9}, {"image": "other:1"}, {"ordering": "none"}, {"retry": {"maxAttempts": 2}},
    {"target": {"url": "http://t/other"}}, {"target": {"url": "http://t/x", "method": "PUT"}},
    {"deadLetterTopic": "dlq"}, {"template": {"env": [{"name": "A", "value": "b"}]}},
    {"template": {"podLabels": {"team": "x"}}}, {"groupId": "g2"}, {"topic": "other"},
]
NON_WORKER_CHANGES: list[dict[str, Any]] = [
    {"workers": 7}, {"autoscaling": {"enabled": True}}, {"rollout": {"strategy": "BlueGreen"}},
    {"paused": True},
]


@pytest.mark.parametrize("change", WORKER_CHANGES, ids=[next(iter(c)) for c in WORKER_CHANGES])
def test_worker_affecting_change_makes_new_revision(change: dict[str, Any]) -> None:
    assert p.revision_of(minimal_spec(**change)) != p.revision_of(minimal_spec())


@pytest.mark.parametrize("change", NON_WORKER_CHANGES, ids=[next(iter(c)) for c in NON_WORKER_CHANGES])
def test_scaling_and_rollout_settings_keep_revision(change: dict[str, Any]) -> None:
    assert p.revision_of(minimal_spec(**change)) == p.revision_of(minimal_spec())


def test_revision_is_deterministic_and_ignores_header_order() -> None:
    a = minimal_spec(target={"url": "http://t/x", "headers": {"A": "1", "B": "2"}})
    b = minimal_spec(target={"url": "http://t/x", "headers": {"B": "2", "A": "1"}})
    assert p.revision_of(a) == p.revision_of(b)
    assert p.plan(a, OWNER, 1) == p.plan(a, OWNER, 1)


def test_replicas_come_from_caller_and_default_to_spec_workers() -> None:
    spec = minimal_spec(workers=5)
    assert p.desired_workers(spec) == 5
    assert p.deployment(spec, OWNER, 2)["spec"]["replicas"] == 2


def test_termination_grace_covers_target_timeout() -> None:
    spec = minimal_spec(target={"url": "http://t/x", "timeoutSeconds": 120})
    assert p.deployment(spec, OWNER, 1)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120


def test_assignment_mode_defaults_to_the_handoff() -> None:
    from lagpilot_operator.settings import from_env

    assert from_env({}).assignment_mode == "k8s"
    assert from_env({"LAGPILOT_ASSIGNMENT_MODE": " Kafka "}).assignment_mode == "kafka"
    unknown = from_env({"LAGPILOT_ASSIGNMENT_MODE": "zookeeper"})  # unknown: the safe default, and said
    assert (unknown.assignment_mode, unknown.assignment_mode_requested) == ("k8s", "zookeeper")
    spec = minimal_spec()
    env = {e["name"]: e.get("value") for e in p.consumer_env(spec, 15, "kafka")}
    assert env["LAGPILOT_ASSIGNMENT"] == "kafka"
    assert p.revision_of(spec, 15, "kafka") != p.revision_of(spec, 15, "k8s")


def test_status_codes_and_the_rate_cap_reach_the_worker_as_its_flags_read_them() -> None:
    spec, problems = parse({"metadata": {"name": "orders", "namespace": "shop"}, "spec": {
        "bootstrapServers": "k:9092", "topic": "orders", "target": {
            "url": "http://x/y", "successCodes": "200-299,304", "retryCodes": "500-599",
            "unavailableCodes": "503", "maxRequestsPerSecond": 250.5, "format": "cloudevents-binary",
            "headerMapping": ["X-Tenant", "baggage"], "idempotencyHeader": "Idempotency-Key"}}}, "img")
    assert spec is not None and problems == []
    env = env_of(p.deployment(spec, OWNER, replicas=1))
    assert (env["LAGPILOT_SUCCESS_CODES"], env["LAGPILOT_RETRY_CODES"], env["LAGPILOT_UNAVAILABLE_CODES"],
            env["LAGPILOT_MAX_REQUESTS_PER_SECOND"]) == ("200-299,304", "500-599", "503", "250.5")
    assert (env["LAGPILOT_FORMAT"], env["LAGPILOT_HEADER_MAPPING"], env["LAGPILOT_IDEMPOTENCY_HEADER"]) == (
        "cloudevents-binary", "X-Tenant,baggage", "Idempotency-Key")
