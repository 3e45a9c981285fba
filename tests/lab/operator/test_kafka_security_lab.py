"""ConsumerGroups against a real broker's secured listeners (lagpilot.lab.kafkatls): TLS with a private CA,
mTLS with a Strimzi-shaped KafkaUser Secret, SASL_SSL SCRAM-SHA-512 and OAUTHBEARER (OIDC client
credentials from a local token endpoint with short-lived tokens), and a bracketed IPv6 address. The
operator runs as a process, workers as lab pods that get the material as mounted files. A wrong CA, an
expired client certificate and a bad password each give Degraded with their own reason and an Event, and
once fixed, every record arrives. A disallowed broker is never contacted, and no secret value shows
anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lagpilot.lab.certs import CertPaths, ensure_certs
from lagpilot.lab.kafka import KafkaBroker, create_topic, start_kafka, stop_kafka
from lagpilot.lab.kafkatls import KafkaPKI, add_scram_user, ensure_kafka_pki
from lagpilot.testing.chart import apply_operator_rbac, lagpilot_cli
from lagpilot.testing.kubeobjects import (
    apply,
    condition,
    config_map,
    degraded_with,
    deployments,
    event_with,
    get,
    ready,
    secret,
)
from lagpilot.testing.oauth import TokenServer
from lagpilot.testing.operator import running_operator, service_account_kubeconfig
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

SCRAM_PASSWORD = "scram-pw-7f3a9c"  # a lab user's password: the tests grep for it
OAUTH_SECRET = "oauth-client-secret-91bd"


@pytest.fixture(scope="module")
def pki(lab_root: Path) -> KafkaPKI:
    return ensure_kafka_pki(lab_root / "kafka-pki")


@pytest.fixture(scope="module")
def secure_kafka(lab_root: Path, pki: KafkaPKI) -> Iterator[KafkaBroker]:
    broker = start_kafka(lab_root / "kafka-secure", heap="512m", secure=pki)
    try:
        add_scram_user(broker.bootstrap_servers, "lagpilot-worker", SCRAM_PASSWORD)
        yield broker
    finally:
        stop_kafka(broker, remove=True)


@pytest.fixture(scope="module")
def web_certs(lab_root: Path) -> CertPaths:
    return ensure_certs(lab_root / "web-certs")


def group(name: str, bootstrap: str, topic: str, url: str, kafka: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "workers": 1, "threads": 2,
                     "target": {"url": url}, "kafka": kafka}}


def produce(broker: KafkaBroker, topic: str, start: int, count: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(start, start + count):
        producer.produce(topic, key=f"k{i % 5}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0


def values(target: RecordingTarget) -> set[bytes]:
    return {a.body for a in target.accepted()}


def assert_no_secret_anywhere(k8s: Any, ns: str, tmp_path: Path, *values_: str) -> None:
    """Nothing the API server holds about the group (status, Events, pods' env and argv) nor the operator's
    and workers' logs contains a secret value."""
    objects = json.dumps([get(k8s, ns, kind) for kind in ("consumergroups", "events", "pods", "deployments")])
    logs = "".join(p.read_text(errors="replace") for p in [*tmp_path.rglob("*.log"),
                                                            *k8s.runner_dir.rglob(f"*{ns}*/*.log")])
    for v in values_:
        assert v not in objects, "a secret value is in an API object"
        assert v not in logs, "a secret value is in a log"


def test_tls_mtls_scram_and_oauthbearer_deliver_every_record(
        k8s: Any, namespace: str, crds: None, tmp_path: Path, secure_kafka: KafkaBroker, pki: KafkaPKI,
        web_certs: CertPaths) -> None:
    topic = "secure-" + namespace[-5:]
    create_topic(secure_kafka.bootstrap_servers, topic, 2)
    apply(k8s, namespace,
          config_map("kafka-ca", {"ca.crt": pki.text("cluster-ca.crt")}),
          config_map("idp-ca", {"ca.crt": web_certs.ca_cert.read_text()}),
          # Strimzi's shapes: the cluster CA Secret, a TLS KafkaUser's and a SCRAM KafkaUser's Secrets
          secret("my-cluster-cluster-ca-cert", {"ca.crt": pki.text("cluster-ca.crt")}),
          secret("lagpilot-worker-tls", {"user.crt": pki.text("user.crt"), "user.key": pki.text("user.key"),
                                         "ca.crt": pki.text("clients-ca.crt")}),
          secret("lagpilot-worker", {"password": SCRAM_PASSWORD}),
          secret("idp-client", {"clientSecret": OAUTH_SECRET}))
    tls_ca = {"ca": {"configMap": "kafka-ca"}}
    strimzi_ca = {"ca": {"secret": "my-cluster-cluster-ca-cert"}}
    with TokenServer("lagpilot", OAUTH_SECRET, lifetime=12,
                     tls=(str(web_certs.serving_cert), str(web_certs.serving_key))) as idp, \
            running_operator(k8s, namespace, tmp_path / "operator.log") as _op:
        targets = {n: RecordingTarget().start() for n in ("tls", "mtls", "scram", "oauth", "ipv6")}
        try:
            apply(k8s, namespace,
                  group("tls", secure_kafka.listener("SSL"), topic, targets["tls"].url,
                        {"securityProtocol": "SSL", "tls": tls_ca}),
                  group("mtls", secure_kafka.listener("MTLS"), topic, targets["mtls"].url,
                        {"securityProtocol": "SSL", "tls": {**strimzi_ca, "clientCertificate": {
                            "secret": "lagpilot-worker-tls", "certificate": "user.crt", "key": "user.key"}}}),
                  group("scram", secure_kafka.listener("SCRAM"), topic, targets["scram"].url,
                        {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512",
                         "credentialsSecret": "lagpilot-worker", "username": "lagpilot-worker", "tls": strimzi_ca}),
                  group("oauth", secure_kafka.listener("OAUTH"), topic, targets["oauth"].url,
                        {"securityProtocol": "SASL_SSL", "saslMechanism": "OAUTHBEARER", "tls": tls_ca,
                         "oauth": {"tokenUrl": idp.url, "clientId": "lagpilot", "scope": "kafka",
                                   "clientSecret": {"secret": "idp-client"}, "ca": {"configMap": "idp-ca"}}}),
                  group("ipv6", secure_kafka.listener("V6"), topic, targets["ipv6"].url, {}))
            for name in targets:
                wait_for(lambda name=name: ready(k8s, namespace, name), timeout=180, what=f"{name} Ready")
            produce(secure_kafka, topic, 0, 40)
            expected = {f"v{i}".encode() for i in range(40)}
            for target in targets.values():
                target.wait_for(lambda t: values(t) >= expected, timeout=120)
            issued = idp.issued_count
            # Past a token's lifetime: librdkafka has refreshed it and delivery goes on.
            wait_for(lambda: idp.issued_count > issued, timeout=60, what="OAuth token refreshed")
            produce(secure_kafka, topic, 40, 20)
            expected |= {f"v{i}".encode() for i in range(40, 60)}
            for name, target in targets.items():
                target.wait_for(lambda t: values(t) >= expected, timeout=120)
                assert values(target) == expected, name
            pod = get(k8s, namespace, "pods", selector="lagpilot.io/consumergroup=scram")[0]
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env["LAGPILOT_KAFKA_SASL_PASSWORD_FILE"] == "/etc/lagpilot/kafka/kafka-sasl/password"
            assert_no_secret_anywhere(k8s, namespace, tmp_path, SCRAM_PASSWORD, OAUTH_SECRET,
                                      pki.text("user.key").splitlines()[1])
        finally:
            for target in targets.values():
                target.stop()


@pytest.mark.parametrize(("case", "listener", "reason"), [
    ("wrong-ca", "SSL", "BrokerCertificateUntrusted"),
    ("expired-cert", "MTLS", "ClientCertificateRejected"),
    ("bad-password", "SCRAM", "BrokerAuthenticationFailed"),
])
def test_a_refused_connection_is_degraded_with_its_reason_and_nothing_is_lost_once_fixed(
        k8s: Any, namespace: str, crds: None, tmp_path: Path, secure_kafka: KafkaBroker, pki: KafkaPKI,
        case: str, listener: str, reason: str) -> None:
    topic = f"{case}-{namespace[-5:]}"
    create_topic(secure_kafka.bootstrap_servers, topic, 2)
    apply(k8s, namespace,
          secret("cluster-ca", {"ca.crt": pki.text("cluster-ca.crt")}),
          secret("other-ca", {"ca.crt": pki.text("other-ca.crt")}),
          secret("good-cert", {"tls.crt": pki.text("user.crt"), "tls.key": pki.text("user.key")}),
          secret("expired-cert", {"tls.crt": pki.text("expired-user.crt"),
                                  "tls.key": pki.text("expired-user.key")}),
          secret("good-user", {"username": "lagpilot-worker", "password": SCRAM_PASSWORD}),
          secret("bad-user", {"username": "lagpilot-worker", "password": "not-the-password"}))

    def kafka(broken: bool) -> dict[str, Any]:
        if case == "wrong-ca":
            return {"securityProtocol": "SSL", "tls": {"ca": {"secret": "other-ca" if broken else "cluster-ca"}}}
        if case == "expired-cert":
            return {"securityProtocol": "SSL", "tls": {"ca": {"secret": "cluster-ca"}, "clientCertificate": {
                "secret": "expired-cert" if broken else "good-cert"}}}
        return {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512",
                "tls": {"ca": {"secret": "cluster-ca"}}, "credentialsSecret": "bad-user" if broken else "good-user"}

    produce(secure_kafka, topic, 0, 30)
    with RecordingTarget() as target, running_operator(k8s, namespace, tmp_path / "operator.log"):
        apply(k8s, namespace, group("g", secure_kafka.listener(listener), topic, target.url, kafka(broken=True)))
        cg = wait_for(lambda: degraded_with(k8s, namespace, "g", reason), timeout=120, what=reason)
        assert cg["status"]["phase"] == "Degraded"
        wait_for(lambda: event_with(k8s, namespace, "g", reason), what=f"{reason} Event")
        assert values(target) == set()
        apply(k8s, namespace, group("g", secure_kafka.listener(listener), topic, target.url, kafka(broken=False)))
        wait_for(lambda: ready(k8s, namespace, "g"), timeout=180, what="Ready after the fix")
        target.wait_for(lambda t: len(values(t)) >= 30, timeout=120)
        assert values(target) == {f"v{i}".encode() for i in range(30)}
        if case == "bad-password":
            assert_no_secret_anywhere(k8s, namespace, tmp_path, SCRAM_PASSWORD, "not-the-password")


def test_a_disallowed_broker_is_never_contacted(k8s: Any, namespace: str, crds: None, tmp_path: Path,
                                                secure_kafka: KafkaBroker) -> None:
    """The operator's allowlist: a group naming another broker gets BootstrapNotAllowed, no worker, and no
    connection from the operator (the SCRAM listener would see an authentication attempt)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    trap = f"127.0.0.1:{listener.getsockname()[1]}"
    env = {"LAGPILOT_ALLOWED_BOOTSTRAP_SERVERS": f"{secure_kafka.listener('SCRAM')},kafka.example:*"}
    apply(k8s, namespace, secret("creds", {"username": "u", "password": "p"}))
    try:
        with running_operator(k8s, namespace, tmp_path / "operator.log", env):
            apply(k8s, namespace, group("evil", trap, "orders", "http://127.0.0.1:9/x", {
                "securityProtocol": "SASL_SSL", "saslMechanism": "PLAIN", "credentialsSecret": "creds"}))
            cg = wait_for(lambda: degraded_with(k8s, namespace, "evil", "BootstrapNotAllowed"), timeout=60,
                          what="BootstrapNotAllowed")
            assert trap in condition(cg, "Degraded")["message"]
            wait_for(lambda: event_with(k8s, namespace, "evil", "BootstrapNotAllowed"), what="Event")
            assert deployments(k8s, namespace, "evil") == []
            with pytest.raises(TimeoutError):
                listener.accept()  # nobody connected
    finally:
        listener.close()


def test_the_lag_cli_reads_a_scram_password_from_a_file_not_argv(secure_kafka: KafkaBroker, pki: KafkaPKI,
                                                                   tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    topic = "cli-" + tmp_path.name[-8:].replace("_", "-")
    create_topic(secure_kafka.bootstrap_servers, topic, 1)
    password = tmp_path / "password"
    password.write_text(SCRAM_PASSWORD + "\n")
    config = tmp_path / "kafka.properties"
    config.write_text(f"security.protocol=SASL_SSL\nssl.ca.location={pki.cluster_ca}\n")
    exe = shutil.which("lagpilot") or str(Path(sys.executable).with_name("lagpilot"))
    argv = [exe, "lag", "-b", secure_kafka.listener("SCRAM"), "-g", "cli-group", "-t", topic, "-o", "json",
            "--kafka-config-file", str(config), "-X", "sasl.mechanism=SCRAM-SHA-512",
            "-X", "sasl.username=lagpilot-worker", "-X", f"sasl.password=@{password}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["partitions"][0]["partition"] == 0
    assert SCRAM_PASSWORD not in " ".join(argv)
    bad = subprocess.run([*argv[:-1], "sasl.password=@/nonexistent/pw"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "cannot read '/nonexistent/pw'" in bad.stderr


def test_the_operator_as_its_chart_service_account_reads_only_granted_secrets(
        k8s: Any, namespace: str, crds: None, tmp_path: Path, secure_kafka: KafkaBroker, pki: KafkaPKI,
        helm_bin: Path) -> None:
    """The operator runs with a token of the ServiceAccount the chart's default values make (a Role in its
    own namespace, no Secret readable): a group whose SCRAM password it may not read is Degraded
    SecretNotPermitted with an Event and loses nothing; once `lagpilot grant-secret` grants that one
    Secret (with the admin's rights), every record arrives, carrying the header from a Secret the operator
    never may read (the workers get it mounted)."""
    release = f"sa{namespace[-5:]}"
    manifest, sa = apply_operator_rbac(k8s, helm_bin, namespace, release)
    who = f"system:serviceaccount:{namespace}:{sa}"
    topic = "granted-" + namespace[-5:]
    create_topic(secure_kafka.bootstrap_servers, topic, 2)
    apply(k8s, namespace, secret("my-cluster-cluster-ca-cert", {"ca.crt": pki.text("cluster-ca.crt")}),
          secret("lagpilot-worker", {"password": SCRAM_PASSWORD}),
          secret("target-auth", {"Authorization": "Bearer " + HEADER_TOKEN + "\n"}))
    kubeconfig = service_account_kubeconfig(k8s, namespace, sa, tmp_path / "operator.kubeconfig")
    target = RecordingTarget().start()
    try:
        with running_operator(k8s, namespace, tmp_path / "operator.log", kubeconfig=kubeconfig) as op:
            doc = group("granted", secure_kafka.listener("SCRAM"), topic, target.url,
                        {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512",
                         "credentialsSecret": "lagpilot-worker", "username": "lagpilot-worker",
                         "tls": {"ca": {"secret": "my-cluster-cluster-ca-cert"}}})
            doc["spec"]["target"]["headersFromSecret"] = "target-auth"
            apply(k8s, namespace, doc)
            cg = wait_for(lambda: degraded_with(k8s, namespace, "granted", "SecretNotPermitted"), timeout=90,
                          what="SecretNotPermitted")
            message = condition(cg, "Degraded")["message"]
            assert "lagpilot-worker" in message and "my-cluster-cluster-ca-cert" in message
            assert f"lagpilot grant-secret lagpilot-worker my-cluster-cluster-ca-cert -n {namespace}" in message
            assert "target-auth" not in message  # only the workers need it: not the operator's to check
            wait_for(lambda: event_with(k8s, namespace, "granted", "SecretNotPermitted"), what="Event")
            produce(secure_kafka, topic, 0, 30)
            out = lagpilot_cli(k8s, "grant-secret", "lagpilot-worker", "my-cluster-cluster-ca-cert", "-n", namespace,
                               "--operator", f"{namespace}/{sa}")
            assert out.returncode == 0, out.stderr
            assert "lagpilot-worker" in out.stdout and "my-cluster-cluster-ca-cert" in out.stdout
            wait_for(lambda: ready(k8s, namespace, "granted"), timeout=120, what="Ready once granted")
            expected = {f"v{i}".encode() for i in range(30)}
            target.wait_for(lambda t: values(t) >= expected, timeout=120)
            assert {a.headers.get("Authorization") for a in target.accepted()} == {"Bearer " + HEADER_TOKEN}
            assert values(target) == expected
            assert can_get(k8s, who, "secret/lagpilot-worker", namespace)
            assert not can_get(k8s, who, "secret/target-auth", namespace)
            # A 403 answer, not the digits inside a number (the target's random port was once 42403).
            assert not re.search(r"\b403\b", op.log()), "the operator was refused a request"
            assert "Forbidden" not in op.log().replace("SecretNotPermitted", "")
            assert_no_secret_anywhere(k8s, namespace, tmp_path, SCRAM_PASSWORD, HEADER_TOKEN)
    finally:
        target.stop()
        k8s.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)


HEADER_TOKEN = "header-token-e3a18c"


def can_get(k8s: Any, who: str, resource: str, namespace: str) -> bool:
    out = k8s.kubectl("auth", "can-i", "get", resource, "--as", who, "-n", namespace, check=False)
    return out.stdout.strip() == "yes"
