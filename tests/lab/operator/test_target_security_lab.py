"""The target side of production connectivity, through the operator and lab worker pods: an https target
with a private CA that requires a client certificate (mutual TLS), one behind OAuth2 client credentials
(a local token endpoint with short-lived tokens, revoked once mid-run: the 401 makes the worker fetch a new
token at once), and one taking a bearer token from a Secret. Every record arrives; no secret shows."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from lagpilot.lab.certs import CertPaths, ensure_certs
from lagpilot.lab.kafkatls import KafkaPKI, ensure_kafka_pki
from lagpilot.testing.kubeobjects import apply, get, ready, secret
from lagpilot.testing.oauth import TokenServer
from lagpilot.testing.operator import running_operator
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

OAUTH_SECRET = "target-oauth-secret-5c1e"
STATIC_TOKEN = "static-bearer-token-0d77"


def group(name: str, bootstrap: str, topic: str, target: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "workers": 1, "threads": 2,
                     "target": target}}


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0


def bodies(target: RecordingTarget) -> set[bytes]:
    return {a.body for a in target.accepted()}


def test_mtls_oauth2_and_bearer_targets_get_every_record(
        k8s: Any, namespace: str, crds: None, tmp_path: Path, lab_root: Path, bootstrap: str,
        topic_factory: Any) -> None:
    web: CertPaths = ensure_certs(lab_root / "web-certs")
    pki: KafkaPKI = ensure_kafka_pki(lab_root / "kafka-pki")  # its clients CA signs the workers' cert
    topic = topic_factory(partitions=2)
    serving = (str(web.serving_cert), str(web.serving_key))
    apply(k8s, namespace,
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-ca"},
           "data": {"ca.crt": web.ca_cert.read_text()}},
          secret("worker-cert", {"tls.crt": pki.text("user.crt"), "tls.key": pki.text("user.key")}),
          secret("idp", {"clientSecret": OAUTH_SECRET}),
          secret("static-token", {"token": STATIC_TOKEN}))
    with TokenServer("lagpilot", OAUTH_SECRET, lifetime=6, tls=serving) as idp, \
            RecordingTarget(tls=serving, client_ca=str(pki.clients_ca)) as mtls, \
            RecordingTarget(authorize=lambda h: bool(h) and h.startswith("Bearer ") and idp.valid(h[7:])) as oauth, \
            RecordingTarget(authorize=lambda h: h == f"Bearer {STATIC_TOKEN}") as bearer, \
            running_operator(k8s, namespace, tmp_path / "operator.log"):
        apply(k8s, namespace,
              group("mtls", bootstrap, topic, {"url": mtls.url, "tls": {
                  "ca": {"configMap": "web-ca"}, "clientCertificate": {"secret": "worker-cert"}}}),
              group("oauth", bootstrap, topic, {"url": oauth.url, "auth": {"oauth2": {
                  "tokenUrl": idp.url, "clientId": "lagpilot", "scope": "deliver",
                  "clientSecret": {"secret": "idp"}, "ca": {"configMap": "web-ca"}}}}),
              group("bearer", bootstrap, topic, {"url": bearer.url, "auth": {
                  "bearerToken": {"secret": "static-token"}}}))
        for name in ("mtls", "oauth", "bearer"):
            wait_for(lambda name=name: ready(k8s, namespace, name), timeout=180, what=f"{name} Ready")
        produce(bootstrap, topic, 0, 30)
        expected = {f"v{i}".encode() for i in range(30)}
        for target in (mtls, oauth, bearer):
            target.wait_for(lambda t: bodies(t) >= expected, timeout=120)
        fetched = idp.issued_count
        time.sleep(7)  # past the token's lifetime: the next delivery fetches a new one first, no 401
        idp.lifetime = 3600  # from now on long-lived: only the 401 below can make the worker drop its token
        produce(bootstrap, topic, 30, 10)
        expected |= {f"v{i}".encode() for i in range(30, 40)}
        oauth.wait_for(lambda t: bodies(t) >= expected, timeout=120)
        assert idp.issued_count > fetched
        assert not any(a.status == 401 for a in oauth.arrivals())
        idp.revoke_all()  # the next request's token is refused: 401, one fresh token, delivered
        produce(bootstrap, topic, 40, 20)
        expected |= {f"v{i}".encode() for i in range(40, 60)}
        for target in (mtls, oauth, bearer):
            target.wait_for(lambda t: bodies(t) >= expected, timeout=120)
            assert bodies(target) == expected
        assert any(a.status == 401 for a in oauth.arrivals()), "the revoked token was refused at least once"
        assert idp.refused == 0  # the worker always authenticated to the token endpoint
    dump = json.dumps([get(k8s, namespace, k) for k in ("pods", "deployments", "events", "consumergroups")])
    logs = "".join(p.read_text(errors="replace") for p in [*tmp_path.rglob("*.log"),
                                                            *k8s.runner_dir.rglob(f"*{namespace}*/*.log")])
    for value in (OAUTH_SECRET, STATIC_TOKEN, *idp.issued):
        assert value not in dump and value not in logs
