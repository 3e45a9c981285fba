"""A local OAuth2 token endpoint (client-credentials grant) issuing short-lived unsecured JWS tokens
(``alg: none``), which Kafka's default OAUTHBEARER validator accepts; also a validator for targets that
require ``Authorization: Bearer``. Tests use it to show that tokens are fetched, cached and refreshed."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()


def unsecured_jws(subject: str, lifetime: float, scope: str = "") -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + int(lifetime), "jti": uuid.uuid4().hex}
    if scope:
        claims["scope"] = scope
    return f"{_b64({'alg': 'none'})}.{_b64(claims)}."


def token_claims(token: str) -> dict[str, Any] | None:
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return None


class TokenServer:
    """``POST /token`` with HTTP Basic or form client credentials -> ``{"access_token", "expires_in"}``."""

    def __init__(self, client_id: str, client_secret: str, lifetime: float = 30.0,
                 tls: tuple[str, str] | None = None) -> None:
        self.client_id, self.client_secret, self.lifetime, self.tls = client_id, client_secret, lifetime, tls
        self._lock = threading.Lock()
        self.issued: list[str] = []
        self.refused = 0
        self._revoked: set[str] = set()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = dict(urllib.parse.parse_qsl(body))
                cid, secret = form.get("client_id"), form.get("client_secret")
                auth = self.headers.get("Authorization") or ""
                if auth.startswith("Basic "):
                    cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                    cid, secret = urllib.parse.unquote(cid), urllib.parse.unquote(secret)
                if form.get("grant_type") != "client_credentials" or (cid, secret) != (
                        owner.client_id, owner.client_secret):
                    with owner._lock:
                        owner.refused += 1
                    self._answer(401, {"error": "invalid_client"})
                    return
                token = unsecured_jws(cid or "", owner.lifetime, form.get("scope", ""))
                with owner._lock:
                    owner.issued.append(token)
                self._answer(200, {"access_token": token, "token_type": "Bearer",
                                   "expires_in": int(owner.lifetime)})

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            from lagpilot.testing.target import serve_tls

            serve_tls(server, self.tls)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                         name="token-server").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/token"

    def revoke_all(self) -> None:
        """Every token issued so far stops being valid (as when a signing key is rotated)."""
        with self._lock:
            self._revoked.update(self.issued)

    def valid(self, token: str) -> bool:
        """Issued here, not revoked and not expired."""
        with self._lock:
            known = token in self.issued and token not in self._revoked
        claims = token_claims(token) or {}
        return known and float(claims.get("exp", 0)) > time.time()

    @property
    def issued_count(self) -> int:
        with self._lock:
            return len(self.issued)
