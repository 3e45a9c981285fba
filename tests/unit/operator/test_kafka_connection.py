"""spec.kafka's TLS, mTLS, SASL and OAUTHBEARER settings: parsing (table-driven), how they reach workers
(mounted files, only paths in env) and the operator's own clients (in memory), the broker allowlist, and
telling librdkafka's error events apart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lagpilot.redact import redact_url
from lagpilot_operator import brokererrors as be
from lagpilot_operator.resource.spec import KeyRef, bootstrap_problems, parse
from lagpilot_operator.workload import kafka_client as kc
from lagpilot_operator.workload import plan as planner
from lagpilot_operator.workload.status import Observation, compute

pytestmark = pytest.mark.unit


def body(kafka: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"bootstrapServers": "k:9093", "topic": "orders", "target": {"url": "http://t/x"},
                           **spec}
    if kafka is not None:
        raw["kafka"] = kafka
    return {"metadata": {"name": "orders", "namespace": "shop", "uid": "u"}, "spec": raw}


def problems_of(kafka: dict[str, Any] | None = None, **spec: Any) -> set[tuple[str, str]]:
    _, problems = parse(body(kafka, **spec), "img")
    return {(p.field, p.code) for p in problems}


STRIMZI_TLS = {"securityProtocol": "SSL", "tls": {
    "ca": {"secret": "my-cluster-cluster-ca-cert", "key": "ca.crt"},
    "clientCertificate": {"secret": "my-user", "certificate": "user.crt", "key": "user.key"}}}
SCRAM = {"securityProtocol": "SASL_SSL", "saslMechanism": "SCRAM-SHA-512", "credentialsSecret": "my-user",
         "username": "my-user", "tls": {"ca": {"configMap": "kafka-ca"}}}
OAUTH = {"securityProtocol": "SASL_SSL", "saslMechanism": "OAUTHBEARER",
         "oauth": {"tokenUrl": "https://idp.example/token", "clientId": "lagpilot", "scope": "kafka",
                   "clientSecret": {"secret": "idp-client"}}}


@pytest.mark.parametrize(("kafka", "spec", "expected"), [
    (STRIMZI_TLS, {}, set()),
    (SCRAM, {}, set()),
    (OAUTH, {}, set()),
    ({"securityProtocol": "SSL"}, {}, set()),  # system CAs
    ({"securityProtocol": "PLAINTEXT", "tls": {"ca": {"secret": "c"}}}, {}, {("spec.kafka.tls", "TlsNotEnabled")}),
    ({"securityProtocol": "SSL", "tls": {"ca": {"secret": "c", "configMap": "c"}}}, {},
     {("spec.kafka.tls.ca", "InvalidReference")}),
    ({"securityProtocol": "SSL", "tls": {"ca": {"key": "ca.crt"}}}, {}, {("spec.kafka.tls.ca", "InvalidReference")}),
    ({"securityProtocol": "SSL", "tls": {"ca": {"secret": "Bad_Name"}}}, {},
     {("spec.kafka.tls.ca", "InvalidSecretName")}),
    ({"securityProtocol": "SSL", "tls": {"clientCertificate": {"certificate": "x"}}}, {},
     {("spec.kafka.tls.clientCertificate.secret", "Required")}),
    ({"securityProtocol": "SASL_PLAINTEXT", "saslMechanism": "PLAIN", "credentialsSecret": "c"}, {},
     {("spec.kafka.securityProtocol", "PlaintextCredentials")}),
    ({"securityProtocol": "SASL_PLAINTEXT", "saslMechanism": "PLAIN", "credentialsSecret": "c",
      "allowPlaintextCredentials": True}, {}, set()),
    ({**OAUTH, "oauth": {**OAUTH["oauth"], "tokenUrl": "http://idp/token"}}, {},
     {("spec.kafka.oauth.tokenUrl", "PlaintextCredentials")}),
    ({"securityProtocol": "SASL_SSL", "saslMechanism": "OAUTHBEARER"}, {}, {("spec.kafka.oauth", "SaslIncomplete")}),
    ({**OAUTH, "credentialsSecret": "c"}, {}, {("spec.kafka.credentialsSecret", "SaslConflict")}),
    ({**SCRAM, "oauth": OAUTH["oauth"]}, {}, {("spec.kafka.oauth", "SaslConflict")}),
    ({"securityProtocol": "SSL", "oauth": OAUTH["oauth"]}, {}, {("spec.kafka.securityProtocol", "SaslNotEnabled")}),
    ({**OAUTH, "oauth": {"tokenUrl": "https://i/t", "clientId": "c"}}, {},
     {("spec.kafka.oauth.clientSecret", "Required")}),
    ({"securityProtocol": "SSL", "username": "u"}, {}, {("spec.kafka.username", "SaslIncomplete")}),
    ({**SCRAM, "passwordKey": "bad key"}, {}, {("spec.kafka.passwordKey", "InvalidKey")}),
    (None, {"bootstrapServers": "[::1]:9092,[fd00::5%eth0]:9093,k:1"}, set()),
    (None, {"bootstrapServers": "::1:9092"}, {("spec.bootstrapServers", "InvalidBootstrapServers")}),
    (None, {"startFrom": "latest"}, set()),
    (None, {"startFrom": "2026-11-30T12:00:00Z"}, set()),
    (None, {"startFrom": "yesterday"}, {("spec.startFrom", "InvalidStartFrom")}),
    (None, {"startFrom": "2026"}, {("spec.startFrom", "InvalidStartFrom")}),
])
def test_kafka_connection_fields(kafka: dict[str, Any] | None, spec: dict[str, Any],
                                 expected: set[tuple[str, str]]) -> None:
    assert problems_of(kafka, **spec) == expected


def settings_of(kafka: dict[str, Any]) -> kc.ClientSettings:
    spec, problems = parse(body(kafka), "img")
    assert spec is not None and not problems, problems
    return kc.client_settings(spec.kafka)


def test_strimzi_tls_mounts_the_named_keys_and_puts_only_paths_in_env() -> None:
    s = settings_of({**STRIMZI_TLS, "tls": {**STRIMZI_TLS["tls"], "verifyHostname": False}})
    assert kc.worker_env(s) == [
        {"name": "LAGPILOT_KAFKA_SECURITY_PROTOCOL", "value": "SSL"},
        {"name": "LAGPILOT_KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "value": "none"},
        {"name": "LAGPILOT_KAFKA_SSL_CA_LOCATION", "value": "/etc/lagpilot/kafka/kafka-ca/ca.crt"},
        {"name": "LAGPILOT_KAFKA_SSL_CERTIFICATE_LOCATION", "value": "/etc/lagpilot/kafka/kafka-client-cert/tls.crt"},
        {"name": "LAGPILOT_KAFKA_SSL_KEY_LOCATION", "value": "/etc/lagpilot/kafka/kafka-client-cert/tls.key"}]
    volumes, mounts = kc.worker_volumes(s.materials)
    assert volumes == [
        {"name": "kafka-ca", "secret": {"secretName": "my-cluster-cluster-ca-cert", "defaultMode": 0o440,
                                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"name": "kafka-client-cert", "secret": {"secretName": "my-user", "defaultMode": 0o440, "items": [
            {"key": "user.crt", "path": "tls.crt"}, {"key": "user.key", "path": "tls.key"}]}}]
    assert all(m["readOnly"] for m in mounts)


def test_scram_with_a_literal_user_name_mounts_only_the_password_and_a_configmap_ca() -> None:
    s = settings_of(SCRAM)
    env = {e["name"]: e["value"] for e in kc.worker_env(s)}
    assert env["LAGPILOT_KAFKA_SASL_USERNAME"] == "my-user"
    assert env["LAGPILOT_KAFKA_SASL_PASSWORD_FILE"] == "/etc/lagpilot/kafka/kafka-sasl/password"
    volumes, _ = kc.worker_volumes(s.materials)
    assert {"name": "kafka-ca", "configMap": {"name": "kafka-ca", "defaultMode": 0o444,
                                              "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in volumes


def test_oauth_settings_for_workers_and_for_the_operator() -> None:
    s = settings_of(OAUTH)
    env = {e["name"]: e["value"] for e in kc.worker_env(s)}
    assert env["LAGPILOT_KAFKA_SASL_OAUTHBEARER_METHOD"] == "oidc"
    assert env["LAGPILOT_KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"] == "https://idp.example/token"
    assert env["LAGPILOT_KAFKA_SASL_OAUTHBEARER_CLIENT_ID"] == "lagpilot"
    assert env["LAGPILOT_KAFKA_SASL_OAUTHBEARER_SCOPE"] == "kafka"
    assert env["LAGPILOT_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE"] == "/etc/lagpilot/kafka/kafka-oauth/client-secret"
    conf, missing = kc.operator_conf(s, lambda ref: "s3cret\n" if ref == KeyRef("Secret", "idp-client",
                                                                                  "clientSecret") else None)
    assert conf["sasl.oauthbearer.client.secret"] == "s3cret" and not missing


def test_operator_conf_holds_pem_text_and_reports_each_missing_key() -> None:
    s = settings_of(STRIMZI_TLS)
    store = {KeyRef("Secret", "my-cluster-cluster-ca-cert", "ca.crt"): "-----CA-----"}
    conf, missing = kc.operator_conf(s, store.get)
    assert conf == {"security.protocol": "SSL", "ssl.ca.pem": "-----CA-----"}
    assert [m.describe for m in missing] == ["Secret my-user (key user.crt)", "Secret my-user (key user.key)"]


def test_no_secret_value_in_a_planned_deployment() -> None:
    spec, _ = parse(body({**SCRAM, "username": None}), "img")
    assert spec is not None
    dump = json.dumps(planner.deployment(spec, planner.Owner("orders", "shop", "u"), 2))
    assert "secretKeyRef" not in dump  # not even by reference as an env value: files only
    assert '"LAGPILOT_KAFKA_SASL_PASSWORD"' not in dump


@pytest.mark.parametrize(("servers", "allowed", "bad"), [
    ("k:9093", (), None),
    ("kafka-0.kafka.shop.svc:9093,kafka-1.kafka.shop.svc:9093", ("*.kafka.shop.svc:9093",), None),
    ("kafka-0.kafka.shop.svc:9093,evil.example:9093", ("*.kafka.shop.svc:9093",), "evil.example:9093"),
    ("KAFKA.SHOP.SVC:9093", ("kafka.shop.svc:*",), None),
    ("kafka.shop.svc:9092", ("kafka.shop.svc:9093",), "kafka.shop.svc:9092"),
])
def test_bootstrap_allowlist(servers: str, allowed: tuple[str, ...], bad: str | None) -> None:
    spec, _ = parse(body(bootstrapServers=servers), "img")
    assert spec is not None
    problems = bootstrap_problems(spec, allowed)
    assert [p.code for p in problems] == ([] if bad is None else ["BootstrapNotAllowed"])
    if bad is not None:
        assert problems[0].message.startswith(bad + " not allowed")


def test_a_disallowed_bootstrap_is_its_own_degraded_reason() -> None:
    spec, problems = parse(body(bootstrapServers="evil:9092"), "img")
    assert spec is not None
    problems += bootstrap_problems(spec, ("kafka:*",))
    status = compute(Observation(generation=1, name="orders", desired_workers=1, revision=None,
                                 deployment_name=None, problems=problems), {}, "2026-12-02T00:00:00Z")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "BootstrapNotAllowed")


# Texts as librdkafka 2.16 reports them (from the lab broker's secured listeners).
UNTRUSTED = ("_SSL", "ssl://127.0.0.1:52325/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
             "certificate verify failed: broker certificate could not be verified")
EXPIRED = ("_TRANSPORT", "ssl://127.0.0.1:33059/bootstrap: Receive failed: error:0A000416:SSL routines::ssl/tls "
           "alert certificate unknown: SSL alert number 46 (after 21ms in state APIVERSION_QUERY)")
NO_CERT = ("_TRANSPORT", "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert "
           "number 42")
BAD_PASSWORD = ("_AUTHENTICATION", "sasl_ssl://127.0.0.1:36025/bootstrap: SASL authentication error: "
                "Authentication failed during authentication due to invalid credentials with SASL mechanism "
                "SCRAM-SHA-512")
DOWN = ("_ALL_BROKERS_DOWN", "1/1 brokers are down")
REFUSED = ("_TRANSPORT", "Connect to ipv4#127.0.0.1:1 failed: Connection refused")


@pytest.mark.parametrize(("errors", "reason"), [
    ([UNTRUSTED, DOWN], be.BROKER_CERTIFICATE_UNTRUSTED),
    ([EXPIRED, DOWN], be.CLIENT_CERTIFICATE_REJECTED),
    ([NO_CERT], be.CLIENT_CERTIFICATE_REJECTED),
    ([DOWN, BAD_PASSWORD, DOWN], be.BROKER_AUTHENTICATION_FAILED),
    ([REFUSED, DOWN], be.BROKER_UNREACHABLE),
    ([], be.BROKER_UNREACHABLE),
])
def test_broker_errors_are_told_apart(errors: list[tuple[str, str]], reason: str) -> None:
    got, message = be.classify(errors, "cannot read metadata from k:9093")
    assert got == reason
    assert message == "cannot read metadata from k:9093" if reason == be.BROKER_UNREACHABLE else message.endswith(
        errors[[be.classify_one(*e) for e in errors].index(reason)][1])


@pytest.mark.parametrize(("text", "expected"), [
    ("POST https://user:pa55@billing.example/x failed", "POST https://***@billing.example/x failed"),
    ("see http://tok@h:8080/a?b=c and https://h2/", "see http://***@h:8080/a?b=c and https://h2/"),
    ("mailto-like user@example.com stays", "mailto-like user@example.com stays"),
    ("no url here", "no url here"),
])
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected


def target_problems(target: dict[str, Any]) -> set[tuple[str, str]]:
    _, problems = parse(body(target=target), "img")
    return {(p.field, p.code) for p in problems}


@pytest.mark.parametrize(("target", "expected"), [
    ({"url": "https://t/x", "tls": {"ca": {"secret": "ca"}, "clientCertificate": {"secret": "c"}}}, set()),
    ({"url": "http://t/x", "tls": {"ca": {"secret": "ca"}}}, {("spec.target.tls", "TlsNotEnabled")}),
    ({"url": "https://t/x", "auth": {"bearerToken": {"secret": "tok"}}}, set()),
    ({"url": "https://t/x", "auth": {"oauth2": {"tokenUrl": "https://i/t", "clientId": "c",
                                                "clientSecret": {"secret": "s"}}}}, set()),
    ({"url": "https://t/x", "auth": {"oauth2": {"tokenUrl": "http://i/t", "clientId": "c",
                                                "clientSecret": {"secret": "s"}}}},
     {("spec.target.auth.oauth2.tokenUrl", "PlaintextCredentials")}),
    ({"url": "https://t/x", "auth": {"bearerToken": {"secret": "tok"}, "oauth2": {
        "tokenUrl": "https://i/t", "clientId": "c", "clientSecret": {"secret": "s"}}}},
     {("spec.target.auth", "AuthConflict")}),
    ({"url": "https://user:hunter2@t/x y"}, {("spec.target.url", "InvalidURL")}),
])
def test_target_tls_and_auth_fields(target: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    assert target_problems(target) == expected


def test_a_bad_target_url_is_reported_without_its_password() -> None:
    _, problems = parse(body(target={"url": "https://user:hunter2@t/x y"}), "img")
    assert "hunter2" not in problems[0].message and "***@t" in problems[0].message


def test_target_material_is_mounted_and_named_by_path() -> None:
    spec, problems = parse(body(target={"url": "https://t/x", "tls": {"ca": {"configMap": "ca"}, "verify": False,
                                                                      "clientCertificate": {"secret": "c"}},
                                        "auth": {"oauth2": {"tokenUrl": "https://i/t", "clientId": "me",
                                                            "clientSecret": {"secret": "s"}}}}), "img")
    assert spec is not None and not problems
    env = {e["name"]: e["value"] for e in kc.target_env(spec.target)}
    assert env == {"LAGPILOT_TARGET_CA_FILE": "/etc/lagpilot/target/target-ca/ca.crt",
                   "LAGPILOT_TARGET_CERT_FILE": "/etc/lagpilot/target/target-client-cert/tls.crt",
                   "LAGPILOT_TARGET_KEY_FILE": "/etc/lagpilot/target/target-client-cert/tls.key",
                   "LAGPILOT_OAUTH_CLIENT_SECRET_FILE": "/etc/lagpilot/target/target-oauth/client-secret",
                   "LAGPILOT_TARGET_TLS_VERIFY": "false", "LAGPILOT_OAUTH_TOKEN_URL": "https://i/t",
                   "LAGPILOT_OAUTH_CLIENT_ID": "me"}
    dep = planner.deployment(spec, planner.Owner("orders", "shop", "u"), 1)
    mounts = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "target-oauth", "mountPath": "/etc/lagpilot/target/target-oauth", "readOnly": True} in mounts
