"""One description of a ConsumerGroup's Kafka connection, given to two kinds of client.

Every setting is either a literal librdkafka property (``security.protocol``, the OIDC token URL) or a
:class:`Material`: a key of a Secret/ConfigMap (a CA, a client certificate and key, a password, an OAuth
client secret). Workers get material as files of a mounted volume and only the *path* in their env
(``LAGPILOT_KAFKA_SSL_CA_LOCATION``, ``LAGPILOT_KAFKA_SASL_PASSWORD_FILE``), so no secret value is ever in
a pod spec, an env value or argv; the operator's own metadata and lag clients read the same keys through
the API and hand librdkafka the text in memory (``ssl.ca.pem``, ``sasl.password``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lagpilot_operator.resource.spec import KafkaSpec, KeyRef, TargetSpec

MOUNT_ROOT = "/etc/lagpilot/kafka"
TARGET_ROOT = "/etc/lagpilot/target"
ENV_PREFIX = "LAGPILOT_KAFKA_"


@dataclass(frozen=True)
class Material:
    """A setting whose value lives in a Secret/ConfigMap key."""

    ref: KeyRef
    volume: str  # the worker pod's volume (one per kind of material)
    filename: str
    location_property: str | None = None  # takes the file's path (workers)
    pem_property: str | None = None  # takes the PEM text (the operator's clients)
    value_property: str | None = None  # takes the content itself (both: workers read the file at start)
    root: str = MOUNT_ROOT
    env: str | None = None  # the worker's env var naming the file, where no librdkafka property does

    @property
    def path(self) -> str:
        return f"{self.root}/{self.volume}/{self.filename}"

    @property
    def describe(self) -> str:
        return f"{self.ref.kind} {self.ref.name} (key {self.ref.key})"


@dataclass(frozen=True)
class ClientSettings:
    literal: Mapping[str, str]
    materials: tuple[Material, ...]


def client_settings(k: KafkaSpec) -> ClientSettings:
    literal: dict[str, str] = {"security.protocol": k.security_protocol}
    materials: list[Material] = []
    if k.sasl_mechanism and k.uses_sasl:
        literal["sasl.mechanism"] = k.sasl_mechanism
    if k.tls is not None and k.uses_tls:
        if not k.tls.verify_hostname:
            literal["ssl.endpoint.identification.algorithm"] = "none"
        if k.tls.ca is not None:
            materials.append(Material(k.tls.ca, "kafka-ca", "ca.crt", "ssl.ca.location", "ssl.ca.pem"))
        if k.tls.client_certificate is not None and k.tls.client_key is not None:
            materials.append(Material(k.tls.client_certificate, "kafka-client-cert", "tls.crt",
                                      "ssl.certificate.location", "ssl.certificate.pem"))
            materials.append(Material(k.tls.client_key, "kafka-client-cert", "tls.key",
                                      "ssl.key.location", "ssl.key.pem"))
    if k.uses_sasl and k.sasl_mechanism != "OAUTHBEARER" and k.credentials_secret:
        if k.username is not None:
            literal["sasl.username"] = k.username
        else:
            materials.append(Material(KeyRef("Secret", k.credentials_secret, "username"), "kafka-sasl",
                                      "username", value_property="sasl.username"))
        materials.append(Material(KeyRef("Secret", k.credentials_secret, k.password_key), "kafka-sasl",
                                  "password", value_property="sasl.password"))
    if k.uses_sasl and k.sasl_mechanism == "OAUTHBEARER" and k.oauth is not None:
        o = k.oauth
        literal.update({"sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": o.client_id,
                        "sasl.oauthbearer.token.endpoint.url": o.token_url})
        if o.scope:
            literal["sasl.oauthbearer.scope"] = o.scope
        materials.append(Material(o.client_secret, "kafka-oauth", "client-secret",
                                  value_property="sasl.oauthbearer.client.secret"))
        if o.ca is not None:
            materials.append(Material(o.ca, "kafka-oauth-ca", "ca.crt", "https.ca.location", "https.ca.pem"))
    return ClientSettings(literal, tuple(materials))


def env_name(prop: str) -> str:
    """``ssl.ca.location`` -> ``LAGPILOT_KAFKA_SSL_CA_LOCATION`` (the consumer maps it back)."""
    return ENV_PREFIX + prop.upper().replace(".", "_")


def worker_env(settings: ClientSettings) -> list[dict[str, str]]:
    """Literal properties as values; material as the path of its mounted file (``*_FILE``: read the
    content at start; ``*_LOCATION``: librdkafka opens the file)."""
    env = [{"name": env_name(p), "value": v} for p, v in settings.literal.items()]
    for m in settings.materials:
        if m.location_property:
            env.append({"name": env_name(m.location_property), "value": m.path})
        elif m.value_property:
            env.append({"name": env_name(m.value_property) + "_FILE", "value": m.path})
    return env


def worker_volumes(materials: Sequence[Material]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): one read-only volume per kind of material, holding only the named keys."""
    volumes: dict[str, dict[str, Any]] = {}
    roots: dict[str, str] = {}
    for m in materials:
        roots[m.volume] = m.root
        vol = volumes.get(m.volume)
        if vol is None:
            if m.ref.kind == "Secret":
                source: dict[str, Any] = {"secret": {"secretName": m.ref.name, "items": [], "defaultMode": 0o440}}
            else:
                source = {"configMap": {"name": m.ref.name, "items": [], "defaultMode": 0o444}}
            vol = volumes[m.volume] = {"name": m.volume, **source}
        body = vol.get("secret") or vol["configMap"]
        body["items"].append({"key": m.ref.key, "path": m.filename})
    mounts = [{"name": name, "mountPath": f"{roots[name]}/{name}", "readOnly": True} for name in volumes]
    return list(volumes.values()), mounts


def target_materials(t: TargetSpec) -> tuple[Material, ...]:
    """The target's TLS and auth material: files under /etc/lagpilot/target, named by LAGPILOT_* env."""
    out: list[Material] = []

    def add(ref: KeyRef | None, volume: str, filename: str, env: str) -> None:
        if ref is not None:
            out.append(Material(ref, volume, filename, root=TARGET_ROOT, env=env))

    if t.tls is not None:
        add(t.tls.ca, "target-ca", "ca.crt", "LAGPILOT_TARGET_CA_FILE")
        add(t.tls.client_certificate, "target-client-cert", "tls.crt", "LAGPILOT_TARGET_CERT_FILE")
        add(t.tls.client_key, "target-client-cert", "tls.key", "LAGPILOT_TARGET_KEY_FILE")
    add(t.bearer_token, "target-token", "token", "LAGPILOT_BEARER_TOKEN_FILE")
    if t.oauth2 is not None:
        add(t.oauth2.client_secret, "target-oauth", "client-secret", "LAGPILOT_OAUTH_CLIENT_SECRET_FILE")
        add(t.oauth2.ca, "target-oauth-ca", "ca.crt", "LAGPILOT_OAUTH_CA_FILE")
    return tuple(out)


def worker_materials(k: KafkaSpec, t: TargetSpec) -> tuple[Material, ...]:
    """Everything a worker pod mounts: the brokers' material, then the target's."""
    return (*client_settings(k).materials, *target_materials(t))


def target_env(t: TargetSpec) -> list[dict[str, str]]:
    env = [{"name": m.env, "value": m.path} for m in target_materials(t) if m.env]
    if t.tls is not None and not t.tls.verify_hostname:
        env.append({"name": "LAGPILOT_TARGET_TLS_VERIFY", "value": "false"})
    if t.oauth2 is not None:
        env += [{"name": "LAGPILOT_OAUTH_TOKEN_URL", "value": t.oauth2.token_url},
                {"name": "LAGPILOT_OAUTH_CLIENT_ID", "value": t.oauth2.client_id}]
        if t.oauth2.scope:
            env.append({"name": "LAGPILOT_OAUTH_SCOPE", "value": t.oauth2.scope})
    return env


def operator_conf(settings: ClientSettings,
                  read: Callable[[KeyRef], str | None]) -> tuple[dict[str, str], list[Material]]:
    """librdkafka settings for the operator's own clients, material read in memory; and what is missing."""
    conf = dict(settings.literal)
    missing: list[Material] = []
    for m in settings.materials:
        value = read(m.ref)
        if value is None:
            missing.append(m)
            continue
        prop = m.pem_property or m.value_property
        if prop:
            conf[prop] = value.rstrip("\r\n") if m.value_property else value
    return conf, missing
