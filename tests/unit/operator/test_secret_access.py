"""The operator reads only what RBAC lets it: a Secret it may not read (403) is not reported missing when
only the workers mount it (the kubelet reads it for them), and is SecretNotPermitted when the operator's own
broker connection needs it. Table-driven over a fake API that refuses some names."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from lagpilot_operator.resource.spec import parse
from lagpilot_operator.workload.reconcile import _Objects, kafka_security_read, missing_material

pytestmark = pytest.mark.unit


class RefusingKube:
    """Secrets by name; `refused` ones answer 403, absent ones 404 (None), as the API server does."""

    def __init__(self, secrets: dict[str, dict[str, str]], refused: set[str]) -> None:
        self.secrets, self.refused, self.reads = secrets, refused, 0

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if kind == "Secret" and name in self.refused:
            raise ApiException(status=403, reason="Forbidden")
        data = self.secrets.get(name) if kind == "Secret" else None
        if data is None:
            return None
        return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def spec_of(kafka: dict[str, Any] | None = None, target: dict[str, Any] | None = None) -> Any:
    body = {"metadata": {"name": "cg", "namespace": "shop", "uid": "u1", "generation": 1},
            "spec": {"bootstrapServers": "b:9093", "topic": "t",
                     "target": {"url": "https://t.example/x", **(target or {})}, **({"kafka": kafka} if kafka else {})}}
    spec, problems = parse(body, "img:1")
    assert spec is not None and not problems, problems
    return spec


SCRAM = {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "credentialsSecret": "kafka-user"}
HEADERS = {"headersFromSecret": "billing-auth"}


@pytest.mark.parametrize(("kafka", "target", "secrets", "refused", "missing", "not_permitted"), [
    # the operator may read everything: nothing to report
    (SCRAM, HEADERS, {"kafka-user": {"username": "u", "password": "p"}, "billing-auth": {"A": "1"}}, set(), [], []),
    # a worker-only Secret it may not read: not checked, not reported (the kubelet mounts it)
    (SCRAM, HEADERS, {"kafka-user": {"username": "u", "password": "p"}}, {"billing-auth"}, [], []),
    # a worker-only Secret it may read and that is not there: SecretNotFound as before
    (SCRAM, HEADERS, {"kafka-user": {"username": "u", "password": "p"}}, set(), ["Secret billing-auth"], []),
    # the Kafka credentials it needs itself, refused: SecretNotPermitted, not SecretNotFound
    (SCRAM, HEADERS, {"billing-auth": {"A": "1"}}, {"kafka-user"}, [], ["kafka-user"]),
    # a Kafka client certificate refused, CA from a ConfigMap readable
    ({"securityProtocol": "SSL", "tls": {"clientCertificate": {"secret": "user-tls"}}}, None, {}, {"user-tls"},
     [], ["user-tls"]),
])
def test_what_the_operator_may_not_read(kafka: dict[str, Any], target: dict[str, Any] | None,
                                        secrets: dict[str, dict[str, str]], refused: set[str],
                                        missing: list[str], not_permitted: list[str]) -> None:
    kube = RefusingKube(secrets, refused)
    spec = spec_of(kafka, target)
    objects = _Objects(kube, "shop")  # type: ignore[arg-type]
    assert missing_material(spec, objects) == missing
    conf, unread, refused_names = kafka_security_read(spec, objects)
    assert refused_names == not_permitted
    assert unread == []
    if not not_permitted:
        assert conf.get("sasl.password", "p") == "p"


def test_each_object_is_read_once_even_when_refused() -> None:
    kube = RefusingKube({}, {"kafka-user"})
    objects = _Objects(kube, "shop")  # type: ignore[arg-type]
    spec = spec_of(SCRAM)
    missing_material(spec, objects)
    kafka_security_read(spec, objects)
    assert kube.reads == 1


def test_any_other_api_error_is_not_taken_for_a_refusal() -> None:
    class Broken(RefusingKube):
        def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
            raise ApiException(status=500, reason="Internal")

    with pytest.raises(ApiException):
        _Objects(Broken({}, set()), "shop").get("Secret", "x")  # type: ignore[arg-type]
