"""The target's Authorization: a bearer token file re-read when it changes, and OAuth2 client credentials
against a real local token endpoint (fetched once for concurrent requests, cached, refreshed early and on
invalidation after a 401, errors that name no secret)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from lagpilot.testing.oauth import TokenServer
from lagpilot_consumer import auth
from lagpilot_consumer.http1 import HttpError

pytestmark = pytest.mark.unit


def test_a_bearer_token_file_is_re_read_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "FILE_CHECK_SECONDS", 0.0)
    f = tmp_path / "token"
    f.write_text("one\n")
    token = auth.FileToken(str(f))
    assert asyncio.run(token.header()) == b"Bearer one"
    f.write_text("two")
    os.utime(f, (1, 1))  # a new mtime, as the kubelet's atomic swap of a Secret volume gives
    assert asyncio.run(token.header()) == b"Bearer two"


def test_client_credentials_fetch_once_cache_and_refresh(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    with TokenServer("me", "s3cret", lifetime=3600) as idp:
        cc = auth.ClientCredentials(idp.url, "me", str(secret), scope="a b")

        async def many() -> set[bytes]:
            return set(await asyncio.gather(*(cc.header() for _ in range(20))))

        async def run() -> None:
            (first,) = await many()  # 20 concurrent deliveries share one fetch
            assert idp.issued_count == 1 and idp.valid(first.decode()[7:])
            assert await cc.header() == first and idp.issued_count == 1  # cached
            cc.invalidate(b"Bearer some-older-token")  # a 401 for another token changes nothing
            assert await cc.header() == first
            cc.invalidate(first)  # the target refused this one
            second = await cc.header()
            assert second != first and idp.issued_count == 2
        asyncio.run(run())


def test_a_short_lived_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    with TokenServer("me", "s3cret", lifetime=2) as idp:
        cc = auth.ClientCredentials(idp.url, "me", str(secret))

        async def run() -> None:
            first = await cc.header()
            await asyncio.sleep(1.7)  # past 80% of its lifetime, before its end
            assert await cc.header() != first
        asyncio.run(run())
        assert idp.issued_count == 2


def test_a_refused_client_fails_the_attempt_without_showing_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("wrong-secret-value")
    with TokenServer("me", "s3cret") as idp:
        cc = auth.ClientCredentials(f"{idp.url.replace('http://', 'http://me:pw@')}", "me", str(secret))
        with pytest.raises(HttpError) as err:
            asyncio.run(cc.header())
    assert "401" in str(err.value) and "wrong-secret-value" not in str(err.value)
    cc = auth.ClientCredentials("http://user:pw@127.0.0.1:9/token", "me", str(secret), timeout=2)
    with pytest.raises(HttpError) as err:
        asyncio.run(cc.header())
    assert "user:pw" not in str(err.value) and "***@127.0.0.1:9" in str(err.value)
