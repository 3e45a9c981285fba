"""The worker behind an egress proxy, on the lab broker: HTTP_PROXY forwards plain-http requests (tinyproxy adds
its Via header to each), HTTPS_PROXY tunnels https with CONNECT (TLS to the target inside the tunnel, verified
against the target's private CA), NO_PROXY sends a target around the proxy, and a proxy that is down
dead-letters nothing: the records wait and go once it is back; and a worker that cannot start (a header value
with a line break, a proxy URL with a credential) says why in one line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lagpilot.testing.consumer import ConsumerProcess, committed, keyed_records, produce
from lagpilot.testing.proxy import TinyProxy
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


def args(bootstrap: str, topic: str, url: str, *extra: str) -> list[str]:
    return ["--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", f"g-{topic}", "--target-url", url,
            "--partitions", "0-1", "--commit-interval-ms", "200", "--initial-backoff-ms", "50",
            "--max-backoff-ms", "300", "--max-attempts", "2", *extra]


def in_key_order(target: RecordingTarget) -> bool:
    seen: dict[bytes | None, list[int]] = {}
    for a in target.accepted():
        seen.setdefault(a.key, []).append(int(a.body.decode().partition(":")[2]))
    return all(v == sorted(v) for v in seen.values())


def test_plain_http_goes_through_http_proxy_and_no_proxy_goes_around_it(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess], tmp_path: Path) -> None:
    topic = topic_factory(partitions=2, prefix="proxy-http")
    produce(bootstrap, topic, keyed_records(60, 2, 6))
    with TinyProxy(tmp_path / "proxy") as proxy:
        cp = run_consumer(*args(bootstrap, topic, target.url), env={"HTTP_PROXY": proxy.url})
        cp.wait_ready()
        assert target.wait_for(lambda t: len(t.accepted_records()) >= 60, timeout=60), cp.tail()
        vias = {a.headers.get("Via", "") for a in target.accepted()}
        assert all("lagpilot-test-proxy" in v for v in vias), vias  # every request came through the proxy
        assert in_key_order(target)
        wait_for(lambda: committed(bootstrap, f"g-{topic}", topic, 2) == {0: 30, 1: 30}, timeout=20,
                 what="all committed")
        assert cp.terminate() == 0

        topic2 = topic_factory(partitions=2, prefix="proxy-bypass")
        produce(bootstrap, topic2, keyed_records(20, 2, 4))
        before = len(target.accepted())
        cp = run_consumer(*args(bootstrap, topic2, target.url),
                          env={"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.0/8"})
        cp.wait_ready()
        assert target.wait_for(lambda t: len(t.accepted()) >= before + 20, timeout=60), cp.tail()
        assert not any("Via" in a.headers for a in target.accepted()[before:])  # straight to the target
        assert cp.terminate() == 0


def test_https_is_tunnelled_with_connect_and_verified_inside_the_tunnel(
        bootstrap: str, topic_factory: Callable[..., str], run_consumer: Callable[..., ConsumerProcess],
        tmp_path: Path) -> None:
    from lagpilot.lab.certs import ensure_certs

    certs = ensure_certs(tmp_path / "pki")
    topic = topic_factory(partitions=2, prefix="proxy-tls")
    produce(bootstrap, topic, keyed_records(40, 2, 4))
    with RecordingTarget(tls=(str(certs.serving_cert), str(certs.serving_key))) as target, \
            TinyProxy(tmp_path / "proxy") as proxy:
        url = target.url.replace("http://", "https://")
        cp = run_consumer(*args(bootstrap, topic, url, "--target-ca-file", str(certs.ca_cert)),
                          env={"HTTPS_PROXY": proxy.url, "HTTP_PROXY": "http://127.0.0.1:9"})
        cp.wait_ready()
        assert target.wait_for(lambda t: len(t.accepted_records()) >= 40, timeout=60), cp.tail()
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert f"CONNECT 127.0.0.1:{port}" in proxy.log(), proxy.log()[-2000:]
        assert not any("Via" in a.headers for a in target.accepted())  # end-to-end TLS: the proxy saw no request
        assert in_key_order(target)
        assert cp.metric("lagpilot_deliveries_total", outcome="dead_letter") == 0
        assert cp.terminate() == 0


def test_a_proxy_that_is_down_dead_letters_nothing_and_the_records_go_once_it_is_back(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess], tmp_path: Path) -> None:
    topic = topic_factory(partitions=2, prefix="proxy-down")
    dlq = topic_factory(partitions=1, prefix="proxy-down-dead")
    produce(bootstrap, topic, keyed_records(30, 2, 3))
    proxy = TinyProxy(tmp_path / "proxy")
    port = proxy.port
    proxy.stop()  # its port is now closed: every attempt is a connection error
    cp = run_consumer(*args(bootstrap, topic, target.url, "--dead-letter-topic", dlq),
                      env={"HTTP_PROXY": f"http://127.0.0.1:{port}"})
    cp.wait_ready()
    wait_for(lambda: (cp.metric("lagpilot_deliveries_total", outcome="retry") or 0) >= 6, timeout=30,
             what="attempts failing against the closed proxy port")
    assert target.accepted() == [] and cp.metric("lagpilot_deliveries_total", outcome="dead_letter") == 0
    assert "ConnectionError" in cp.tail(10**6) or "connection" in cp.tail(10**6).lower()
    assert committed(bootstrap, f"g-{topic}", topic, 2) in ({}, {0: 0, 1: 0})
    proxy = TinyProxy(tmp_path / "proxy2", port=port)
    try:
        assert target.wait_for(lambda t: len(t.accepted_records()) >= 30, timeout=60), cp.tail()
        assert in_key_order(target)
        assert cp.metric("lagpilot_deliveries_total", outcome="dead_letter") == 0
        assert cp.terminate() == 0
    finally:
        proxy.stop()


@pytest.mark.parametrize("env, says, secret", [
    ({"LAGPILOT_HEADER_Authorization": "Bearer s3cret\n"}, "invalid value of request header 'Authorization' "
     "(from LAGPILOT_HEADER_Authorization): it contains a line break", "s3cret"),
    ({"HTTPS_PROXY": "http://egress:pr0xy-pw@proxy.corp:3128"}, "invalid HTTPS_PROXY: a proxy URL with "
     "credentials is refused", "pr0xy-pw"),
], ids=["header-with-a-newline", "proxy-credential"])
def test_a_worker_that_cannot_start_says_why_in_one_line_without_the_secret(
        env: dict[str, str], says: str, secret: str, tmp_path: Path) -> None:
    """Issue 13: a header value with a line break (a Secret written with a trailing newline) would make every
    request fail and dead-letter the stream; a proxy credential would sit in the environment. Both stop the
    real worker process at start: exit 2, one line on stderr naming the variable, never the value."""
    import subprocess

    from lagpilot.testing.consumer import VENV_BIN

    run = subprocess.run([str(VENV_BIN / "lagpilot-consumer"), *args("127.0.0.1:9", "t", "http://127.0.0.1:9/x")],
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert lines[0].startswith(f"lagpilot-consumer: {says}"), lines
    assert secret not in run.stderr + run.stdout


def test_a_request_retried_on_a_fresh_proxy_connection_keeps_its_absolute_request_line() -> None:
    """A proxy closes idle keep-alive connections on its own schedule: the pool then retries the request once on
    a new connection. Here a loopback proxy answers the first request, keeps that connection open, and closes
    it without answering when the second arrives: the second request must reach the proxy again, on a new
    connection, with the same absolute-form request line (once rewritten, not twice)."""
    import asyncio
    import time

    from lagpilot_consumer.http1 import Origin, Pool
    from lagpilot_consumer.proxy import Proxy, ProxySettings

    lines: list[bytes] = []

    async def main() -> list[int]:
        seen = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal seen
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen += 1
                if seen == 2:  # the idle connection "timed out" at the proxy: closed, nothing answered
                    writer.close()
                    return
                lines.append(head.split(b"\r\n", 1)[0])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(5.0, proxies=ProxySettings(http=Proxy("127.0.0.1", port)))
        origin = Origin("http", "billing.example", 8080)
        statuses = []
        for n in range(2):
            head = f"POST /orders/{n} HTTP/1.1\r\nHost: billing.example:8080\r\nContent-Length: 0\r\n\r\n".encode()
            statuses.append((await pool.request(origin, head, b"", time.monotonic() + 5)).status)
        pool.close()
        server.close()
        return statuses

    assert asyncio.run(main()) == [200, 200]
    assert lines == [b"POST http://billing.example:8080/orders/0 HTTP/1.1",
                     b"POST http://billing.example:8080/orders/1 HTTP/1.1"], lines
