"""The target's Authorization header: a bearer token from a mounted Secret file (re-read when the file
changes, so a rotated Secret needs no restart), or an OAuth2 client-credentials token fetched from the
token endpoint, cached until shortly before it expires, shared by every delivery (one fetch at a time) and
refreshed at once when the target answers 401 with it."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, Protocol

from lagpilot.redact import redact_url
from lagpilot_consumer.http1 import HttpError

DEFAULT_LIFETIME = 300.0  # when the token endpoint says no expires_in
FILE_CHECK_SECONDS = 1.0


class TargetAuth(Protocol):
    refreshable: bool

    async def header(self) -> bytes: ...

    def invalidate(self, sent: bytes) -> None: ...


def read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


class FileToken:
    """``Authorization: Bearer <file content>``."""

    refreshable = True  # a 401 re-reads the file at once (it may just have been rotated)

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime = -1.0
        self._checked = 0.0
        self._value = b""

    async def header(self) -> bytes:
        now = time.monotonic()
        if now - self._checked >= FILE_CHECK_SECONDS or not self._value:
            self._checked = now
            mtime = os.stat(self.path).st_mtime
            if mtime != self._mtime:
                self._value = b"Bearer " + read_secret(self.path).encode("latin-1")
                self._mtime = mtime
        return self._value

    def invalidate(self, sent: bytes) -> None:
        self._mtime = -1.0
        self._checked = 0.0


class ClientCredentials:
    """OAuth2 client credentials (RFC 6749 4.4): HTTP Basic client authentication, form body."""

    refreshable = True

    def __init__(self, token_url: str, client_id: str, secret_file: str, scope: str = "", ca_file: str = "",
                 timeout: float = 10.0, metrics: Any = None) -> None:
        self.token_url, self.client_id, self.secret_file = token_url, client_id, secret_file
        self.scope, self.ca_file, self.timeout, self.metrics = scope, ca_file, timeout, metrics
        self._value = b""
        self._refresh_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    async def header(self) -> bytes:
        if self._value and time.monotonic() < self._refresh_at:
            return self._value
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not (self._value and time.monotonic() < self._refresh_at):
                token, lifetime = await asyncio.get_running_loop().run_in_executor(None, self._fetch)
                self._value = b"Bearer " + token.encode("latin-1")
                # Early: 20% of the lifetime before it ends, at most 30 s before.
                self._refresh_at = time.monotonic() + max(0.5, lifetime - min(30.0, lifetime * 0.2))
        return self._value

    def invalidate(self, sent: bytes) -> None:
        if sent == self._value:
            self._refresh_at = 0.0

    def _fetch(self) -> tuple[str, float]:
        import requests

        data = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        try:
            resp = requests.post(self.token_url, data=data, auth=(self.client_id, read_secret(self.secret_file)),
                                 timeout=self.timeout, verify=self.ca_file or True, allow_redirects=False)
            if resp.status_code != 200:
                raise HttpError(f"token endpoint answered HTTP {resp.status_code}")
            doc = resp.json()
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in") or DEFAULT_LIFETIME)
        except HttpError as exc:
            self._count("error")
            raise HttpError(f"OAuth2: {exc}") from None
        except (OSError, ValueError, KeyError, TypeError, requests.RequestException) as exc:
            self._count("error")
            raise HttpError(redact_url(f"OAuth2: no token from {self.token_url}: {type(exc).__name__}"
                                       f"{': ' + str(exc) if not isinstance(exc, KeyError) else ''}")[:300]) from None
        if not isinstance(token, str) or not token:
            self._count("error")
            raise HttpError("OAuth2: the token endpoint's answer has no access_token")
        self._count("ok")
        self.fetches += 1
        return token, lifetime

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.token_fetches.labels(outcome).inc()


def target_auth(cfg: Any, metrics: Any = None) -> TargetAuth | None:
    if cfg.oauth_token_url:
        return ClientCredentials(cfg.oauth_token_url, cfg.oauth_client_id, cfg.oauth_client_secret_file,
                                 cfg.oauth_scope, cfg.oauth_ca_file, min(cfg.timeout_seconds, 30.0), metrics)
    if cfg.bearer_token_file:
        return FileToken(cfg.bearer_token_file)
    return None
