"""Certificates for the lab control plane: a CA, the API server's serving cert, client certs, SA keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

VALID_FOR = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _issue(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: x509.Name, issuer_key: rsa.RSAPrivateKey,
           *, ca: bool = False, server_sans: list[x509.GeneralName] | None = None,
           client: bool = False, expired: bool = False) -> x509.Certificate:
    """``expired``: valid for a day that ended an hour ago (for tests of a rejected client cert)."""
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=1, hours=1), now - dt.timedelta(hours=1)) if expired else (
        now - dt.timedelta(minutes=5), now + VALID_FOR)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        usages = []
        if server_sans is not None:
            usages.append(x509.ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.SubjectAlternativeName(server_sans), critical=False)
        if client:
            usages.append(x509.ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                                        critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_certs(directory: Path) -> CertPaths:
    """Create everything once; a restarted lab reuses the same CA so kubeconfigs stay valid."""
    directory.mkdir(parents=True, exist_ok=True)
    p = CertPaths(*(directory / n for n in ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key",
                                            "admin.crt", "admin.key", "sa.key", "sa.pub")))
    if all(path.exists() for path in p.__dict__.values()):
        return p
    ca_key = _key()
    ca_name = _name("lagpilot-lab-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    _write_key(ca_key, p.ca_key)
    p.ca_cert.write_bytes(_pem(ca))

    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local")]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1")]
    serving_key = _key()
    _write_key(serving_key, p.serving_key)
    p.serving_cert.write_bytes(_pem(_issue(_name("kube-apiserver"), serving_key, ca_name, ca_key,
                                           server_sans=sans)))
    admin_key = _key()
    _write_key(admin_key, p.admin_key)
    p.admin_cert.write_bytes(_pem(_issue(_name("lagpilot-lab-admin", "system:masters"), admin_key,
                                         ca_name, ca_key, client=True)))
    sa_key = _key()
    _write_key(sa_key, p.sa_key)
    p.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return p
