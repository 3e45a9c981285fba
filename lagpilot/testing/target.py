"""RecordingTarget: a real local HTTP server (``ThreadingHTTPServer``, HTTP/1.1 keep-alive) standing in
for the consumer's target URL. It records every request lagpilot-consumer makes (key, topic, partition,
offset, worker, start/end times, status answered), checks per-key order, and can be told to fail:
answer a status for a time window or for N requests, reject given keys, add latency.

    with RecordingTarget() as target:
        ... run lagpilot-consumer --target-url target.url ...
        target.wait_for(lambda t: len(t.accepted_records()) >= 1000, timeout=60)
        assert target.order_violations() == []
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Arrival:
    """One request as the target saw it. ``status`` is what the target answered."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    worker: str
    start: float
    end: float
    status: int
    body: bytes
    headers: dict[str, str]
    path: str = ""

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    target: RecordingTarget

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.open_sockets: set[Any] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Close every open keep-alive connection, as a target process that goes away does."""
        import socket

        with self.sockets_lock:
            socks = list(self.open_sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients killed by tests: expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed-ACK stall
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _handle(self) -> None:
        start = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-request: nothing was delivered
            self.close_connection = True
            return
        target = self.server.target
        h = {k: v for k, v in self.headers.items()}
        key: bytes | None = None
        raw_key = self.headers.get("X-Lagpilot-Key")
        if raw_key is not None:
            # http.server decodes header bytes as latin-1; undo that to get the bytes sent.
            key = (base64.b64decode(raw_key) if self.headers.get("X-Lagpilot-Key-Encoding") == "base64"
                   else raw_key.encode("latin-1"))
        status, retry_after, delay = target._decide(key, self.path)
        if target.authorize is not None and not target.authorize(self.headers.get("Authorization")):
            status, retry_after, delay = 401, None, 0.0
        if delay > 0:
            time.sleep(delay)
        body_out = b"ok\n" if status < 300 else f"failing with {status}\n".encode()
        # Record before answering: the client cannot send the key's next record before it has this
        # answer, so list order and [start, end] are exact for per-key order checks.
        target._record(Arrival(
            topic=self.headers.get("X-Lagpilot-Topic", ""),
            partition=int(self.headers.get("X-Lagpilot-Partition", "-1")),
            offset=int(self.headers.get("X-Lagpilot-Offset", "-1")),
            key=key, worker=self.headers.get("X-Lagpilot-Worker") or self.client_address[0],
            start=start, end=time.monotonic(), status=status, body=body, headers=h, path=self.path))
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body_out)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(body_out)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_tls(server: Any, cert_and_key: tuple[str, str], client_ca: str | None = None) -> None:
    """Make a listening test server speak TLS with this certificate; with ``client_ca``, require a client
    certificate signed by it (mutual TLS)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert_and_key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)


class RecordingTarget:
    """See the module docstring. Thread-safe; all times are ``time.monotonic()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0,
                 tls: tuple[str, str] | None = None, client_ca: str | None = None,
                 authorize: Callable[[str | None], bool] | None = None) -> None:
        """``tls``: (certificate chain file, key file): serve HTTPS with that certificate; ``client_ca``:
        require a client certificate signed by it (mutual TLS); ``authorize``: judges each request's
        Authorization header (None when absent), answering 401 when it says no."""
        self.tls = tls
        self.client_ca = client_ca
        self.authorize = authorize
        self.host = host
        self._port = port
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._fail_status: int | None = None
        self._fail_until: float | None = None
        self._fail_left: int | None = None
        self._fail_retry_after: int | None = None
        self._reject: dict[bytes, tuple[int, int | None]] = {}
        self._reject_paths: dict[str, tuple[int, int]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----
    def start(self) -> RecordingTarget:
        server = _Server((self.host, self._port), _Handler)
        server.target = self
        if self.tls is not None:
            serve_tls(server, self.tls, self.client_ca)
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="recording-target", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close open connections (a target that goes away); :meth:`start` again
        listens on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.cut_connections()
            self._server = None

    def __enter__(self) -> RecordingTarget:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._port)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/deliver"

    # ---- failure modes ----
    def fail(self, status: int = 503, seconds: float | None = None, count: int | None = None,
             retry_after: int | None = None) -> None:
        """Answer ``status`` to every request for ``seconds`` (from now) and/or the next ``count``
        requests; with neither, until :meth:`recover`."""
        with self._lock:
            self._fail_status = status
            self._fail_until = None if seconds is None else time.monotonic() + seconds
            self._fail_left = count
            self._fail_retry_after = retry_after

    def recover(self) -> None:
        with self._lock:
            self._fail_status = None

    def reject_keys(self, keys: Iterable[bytes], status: int = 400, retry_after: int | None = None) -> None:
        """Always answer ``status`` (with ``Retry-After`` if given) for records with these keys."""
        with self._lock:
            self._reject.update({k: (status, retry_after) for k in keys})

    def forgive_keys(self, keys: Iterable[bytes]) -> None:
        """Stop rejecting these keys (see :meth:`reject_keys`)."""
        with self._lock:
            for k in keys:
                self._reject.pop(k, None)

    def reject_path(self, path: str, status: int = 503, count: int = 1) -> None:
        """Answer ``status`` to the next ``count`` requests for ``path`` (a route's URL path)."""
        with self._lock:
            self._reject_paths[path] = (status, count)

    def set_latency(self, seconds: float) -> None:
        self.latency_s = seconds

    def _decide(self, key: bytes | None, path: str = "") -> tuple[int, int | None, float]:
        with self._lock:
            if path in self._reject_paths:
                status, left = self._reject_paths[path]
                if left <= 1:
                    del self._reject_paths[path]
                else:
                    self._reject_paths[path] = (status, left - 1)
                return status, None, self.latency_s
            if key is not None and key in self._reject:
                status, retry_after = self._reject[key]
                return status, retry_after, self.latency_s
            if self._fail_status is not None:
                expired = self._fail_until is not None and time.monotonic() >= self._fail_until
                if not expired and self._fail_left is not None:
                    if self._fail_left <= 0:
                        expired = True
                    else:
                        self._fail_left -= 1
                if expired:
                    self._fail_status = None
                else:
                    return self._fail_status, self._fail_retry_after, self.latency_s
            return 200, None, self.latency_s

    def _record(self, a: Arrival) -> None:
        with self._lock:
            self._arrivals.append(a)

    # ---- what arrived ----
    def arrivals(self) -> list[Arrival]:
        """Every request, in the order the target finished answering them."""
        with self._lock:
            return list(self._arrivals)

    def accepted(self) -> list[Arrival]:
        return [a for a in self.arrivals() if a.accepted]

    def accepted_records(self) -> set[tuple[int, int]]:
        """Distinct (partition, offset) answered with 2xx (one topic; see :meth:`accepted_by_topic`)."""
        return {(a.partition, a.offset) for a in self.accepted()}

    def accepted_by_topic(self) -> set[tuple[str, int, int]]:
        """Distinct (topic, partition, offset) answered with 2xx: a worker reading several topics."""
        return {(a.topic, a.partition, a.offset) for a in self.accepted()}

    def clear(self) -> None:
        with self._lock:
            self._arrivals.clear()

    def wait_for(self, condition: Callable[[RecordingTarget], bool], timeout: float,
                 interval: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(interval)
        return condition(self)

    def order_violations(self, strict: bool = False) -> list[str]:
        """Per-key order problems among accepted requests, as readable strings (empty = in order).

        Default: the *first* accepted delivery of each (key, offset) must come in increasing offset order
        per (topic, partition, key) -- redeliveries after a crash or a hand-off are allowed. ``strict``: every
        accepted delivery must be in increasing order (no redelivery at all). Overlapping requests for the
        same key (two in flight at once) are always violations."""
        out: list[str] = []
        by_key: dict[tuple[str, int, bytes], list[Arrival]] = {}
        for a in self.arrivals():
            if a.key is not None:
                by_key.setdefault((a.topic, a.partition, a.key), []).append(a)
        for (topic, number, key), arrs in by_key.items():
            p = f"{topic}:{number}" if topic else str(number)
            ok = [a for a in arrs if a.accepted]
            seen: set[int] = set()
            last = -1
            for a in ok:
                if a.offset in seen and not strict:
                    continue
                if a.offset <= last:
                    out.append(f"partition {p} key {key!r}: offset {a.offset} after {last}")
                seen.add(a.offset)
                last = max(last, a.offset)
            ordered = sorted(arrs, key=lambda a: a.start)
            for prev, cur in itertools.pairwise(ordered):
                if cur.start < prev.end and cur.worker == prev.worker:
                    out.append(f"partition {p} key {key!r}: offsets {prev.offset} and {cur.offset} in "
                               "flight at the same time")
        return out

    def stats(self) -> dict[str, Any]:
        arr = self.arrivals()
        return {"requests": len(arr), "accepted": sum(a.accepted for a in arr),
                "distinct_accepted": len({(a.partition, a.offset) for a in arr if a.accepted})}
