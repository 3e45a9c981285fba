"""Why the brokers could not be read, told apart from librdkafka's error events: a request only fails
with "transport failure", while the client's error callback says what happened (an untrusted broker
certificate, a client certificate the broker refused, rejected credentials, no OAuth token). Pure."""

from __future__ import annotations

from collections.abc import Sequence

from lagpilot.redact import redact_url

BROKER_UNREACHABLE = "BrokerUnreachable"
BROKER_CERTIFICATE_UNTRUSTED = "BrokerCertificateUntrusted"
CLIENT_CERTIFICATE_REJECTED = "ClientCertificateRejected"
BROKER_AUTHENTICATION_FAILED = "BrokerAuthenticationFailed"
TOKEN_REQUEST_FAILED = "TokenRequestFailed"

# What OpenSSL says when the broker refused our certificate (a TLS alert it sent) or found none.
_CLIENT_CERT_ALERTS = ("alert certificate unknown", "alert bad certificate", "alert certificate expired",
                       "alert unknown ca", "alert certificate required", "alert certificate revoked",
                       "alert handshake failure")
_HINTS = {
    BROKER_CERTIFICATE_UNTRUSTED: "the brokers' certificate is not trusted (check spec.kafka.tls.ca, or "
                                  "verifyHostname if the name does not match)",
    CLIENT_CERTIFICATE_REJECTED: "the brokers refused the client certificate (expired, not signed by the "
                                 "clients CA they trust, or missing: spec.kafka.tls.clientCertificate)",
    BROKER_AUTHENTICATION_FAILED: "the brokers rejected the credentials (spec.kafka.credentialsSecret)",
    TOKEN_REQUEST_FAILED: "no OAuth token could be fetched (spec.kafka.oauth)",
}
_PRECEDENCE = (TOKEN_REQUEST_FAILED, BROKER_AUTHENTICATION_FAILED, CLIENT_CERTIFICATE_REJECTED,
               BROKER_CERTIFICATE_UNTRUSTED)


def classify_one(code: str, text: str) -> str | None:
    """The reason one librdkafka error event (code name such as ``_SSL``, its text) points to, if any."""
    low = text.lower()
    if "oidc" in low or "token endpoint" in low or "oauthbearer token" in low:
        return TOKEN_REQUEST_FAILED
    if code == "_AUTHENTICATION" or "sasl authentication error" in low:
        return BROKER_AUTHENTICATION_FAILED
    if any(alert in low for alert in _CLIENT_CERT_ALERTS):
        return CLIENT_CERTIFICATE_REJECTED
    if "certificate verify failed" in low or "hostname mismatch" in low:
        return BROKER_CERTIFICATE_UNTRUSTED
    return None


def classify(errors: Sequence[tuple[str, str]], fallback: str) -> tuple[str, str]:
    """(reason, message) for a failed read, from the connection's recent error events; ``fallback`` is
    the message when none of them says more than "unreachable"."""
    found: dict[str, str] = {}
    for code, text in errors:
        reason = classify_one(code, text)
        if reason is not None:
            found.setdefault(reason, text)
    for reason in _PRECEDENCE:
        if reason in found:
            return reason, redact_url(f"{_HINTS[reason]}: {found[reason]}")
    return BROKER_UNREACHABLE, redact_url(fallback)
