"""Issue 14 item 4 (second half): one delivery attempt is bounded as a whole by the target timeout, not
per socket operation, so a target that drips its answer cannot keep a fenced worker's request open past
what the Lease duration allows. A real HTTP server on loopback and the engine's real HTTP client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lagpilot_consumer.config import parse
from lagpilot_consumer.engine import DeliveryEngine
from lagpilot_consumer.metrics import Metrics

pytestmark = pytest.mark.lab


class Dripping(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "20")
        self.end_headers()
        for _ in range(20):  # one byte every 0.5 s: each read is quick, the whole answer takes 10 s
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.5)

    def log_message(self, *args: Any) -> None:
        pass


class FakeMessage:
    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


@pytest.fixture
def dripping() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/slow"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("connection", ["pooled", "per-request"])
def test_a_dripping_answer_is_cut_at_the_target_timeout(dripping: str, connection: str) -> None:
    cfg = parse(["--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--group-id", "g", "--target-url",
                 dripping, "--timeout-seconds", "2", "--connection", connection, "--partitions", "0"], {})
    engine = DeliveryEngine(cfg, Metrics(), None, None)  # type: ignore[arg-type]  # no queue: one send
    engine.start()
    try:
        assert engine.loop is not None
        started = time.monotonic()
        attempt = asyncio.run_coroutine_threadsafe(engine._send(FakeMessage()), engine.loop).result(30)
        took = time.monotonic() - started
    finally:
        engine.stop()
    assert attempt.status is None and "2 s" in attempt.error, attempt
    assert took < 2 + 1.5, f"the attempt took {took:.1f} s against a 2 s target timeout"
