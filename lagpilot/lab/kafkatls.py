"""A private PKI for a lab broker with secured listeners, shaped like what users run in production: a
cluster CA that signs the broker (as Strimzi's cluster CA does), a separate clients CA that signs client
certificates (Strimzi's clients CA, a KafkaUser's ``user.crt``/``user.key``), one expired client certificate
and an unrelated CA (for the "wrong CA" and "expired certificate" failures).

The broker's listeners (all on 127.0.0.1, all advertised):

================ ============== =====================================================================
listener          protocol       who gets in
================ ============== =====================================================================
``PLAINTEXT``     PLAINTEXT      the lab itself (topics, SCRAM users); never given to a ConsumerGroup
``SSL``           SSL            anyone trusting the cluster CA (server authentication only)
``MTLS``          SSL            a client certificate signed by the clients CA is required
``SCRAM``         SASL_SSL       SCRAM-SHA-512 users (created with :func:`add_scram_user`)
``OAUTH``         SASL_SSL       OAUTHBEARER; Kafka's unsecured-JWS validator (tokens from
                                 :class:`lagpilot.testing.oauth.TokenServer`)
``V6``            PLAINTEXT      anyone, on the IPv6 loopback ``[::1]``
================ ============== =====================================================================
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from lagpilot.lab.certs import _issue, _key, _name, _pem, _write_key

LISTENERS = ("SSL", "MTLS", "SCRAM", "OAUTH", "V6")
PROTOCOLS = {"SSL": "SSL", "MTLS": "SSL", "SCRAM": "SASL_SSL", "OAUTH": "SASL_SSL", "V6": "PLAINTEXT"}
HOSTS = {"V6": "[::1]"}  # the others listen on 127.0.0.1


@dataclass(frozen=True)
class KafkaPKI:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def cluster_ca(self) -> Path:
        return self.path("cluster-ca.crt")

    @property
    def clients_ca(self) -> Path:
        return self.path("clients-ca.crt")

    @property
    def other_ca(self) -> Path:
        return self.path("other-ca.crt")

    @property
    def broker_keystore(self) -> Path:
        """PEM: the broker's private key followed by its certificate (Kafka's ``ssl.keystore.type=PEM``)."""
        return self.path("broker-keystore.pem")

    @property
    def user_cert(self) -> Path:
        return self.path("user.crt")

    @property
    def user_key(self) -> Path:
        return self.path("user.key")

    @property
    def expired_cert(self) -> Path:
        return self.path("expired-user.crt")

    @property
    def expired_key(self) -> Path:
        return self.path("expired-user.key")

    def text(self, name: str) -> str:
        return self.path(name).read_text()


def ensure_kafka_pki(directory: Path) -> KafkaPKI:
    """Create the PKI once per directory (reused by a restarted broker)."""
    pki = KafkaPKI(directory)
    if pki.expired_key.exists():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    cluster_key, clients_key, other_key = _key(), _key(), _key()
    cluster_name, clients_name = _name("lagpilot-lab-cluster-ca"), _name("lagpilot-lab-clients-ca")
    other_name = _name("some-other-ca")
    pki.cluster_ca.write_bytes(_pem(_issue(cluster_name, cluster_key, cluster_name, cluster_key, ca=True)))
    pki.clients_ca.write_bytes(_pem(_issue(clients_name, clients_key, clients_name, clients_key, ca=True)))
    pki.other_ca.write_bytes(_pem(_issue(other_name, other_key, other_name, other_key, ca=True)))

    sans: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    broker_key = _key()
    broker = _issue(_name("lab-kafka-0"), broker_key, cluster_name, cluster_key, server_sans=sans)
    _write_key(broker_key, pki.path("broker.key"))
    pki.broker_keystore.write_bytes(pki.path("broker.key").read_bytes() + _pem(broker))
    pki.broker_keystore.chmod(0o600)

    user_key = _key()
    _write_key(user_key, pki.user_key)
    pki.user_cert.write_bytes(_pem(_issue(_name("lagpilot-worker"), user_key, clients_name, clients_key,
                                          client=True)))
    expired_key = _key()
    _write_key(expired_key, pki.expired_key)
    pki.expired_cert.write_bytes(_pem(_issue(_name("lagpilot-worker"), expired_key, clients_name, clients_key,
                                             client=True, expired=True)))
    return pki


def secure_listener_properties(pki: KafkaPKI) -> dict[str, str]:
    """server.properties entries for the secured listeners' TLS and SASL (the listeners themselves are
    added by :func:`lagpilot.lab.kafka.server_properties`)."""
    jaas_scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    jaas_oauth = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;"
    return {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.clients_ca),
        "listener.name.mtls.ssl.client.auth": "required",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,OAUTHBEARER",
        "listener.name.scram.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.scram.scram-sha-512.sasl.jaas.config": jaas_scram,
        "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.oauth.oauthbearer.sasl.jaas.config": jaas_oauth,
    }


def add_scram_user(plain_bootstrap: str, user: str, password: str) -> None:
    """Create (or reset) a SCRAM-SHA-512 user through the PLAINTEXT listener (the lab has no authorizer)."""
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    admin = AdminClient({"bootstrap.servers": plain_bootstrap})
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                          password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=30)
