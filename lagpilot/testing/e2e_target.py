"""A recording HTTP target for the e2e tests: every POST is recorded (partition, offset, key, worker from
the X-Lagpilot-* headers, the body, and `start`/`end`: when the request arrived and when its answer was
written, on this process's clock, so overlapping deliveries of one partition can be told apart);
GET /records returns them as JSON; GET /healthz answers 200.

The same file runs in-process (local mode, `serve_in_thread`) and as a pod (incluster mode, passed to
`python -c` so no volume is needed); it uses only the standard library."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Target(Protocol):
    """What the e2e tests need of a target, wherever it runs: its URL and what it recorded."""

    url: str

    def records(self) -> list[dict[str, Any]]: ...


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []


def make_handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            start = time.time()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            h = self.headers
            entry: dict[str, Any] = {"partition": int(h.get("X-Lagpilot-Partition", -1)),
                                     "offset": int(h.get("X-Lagpilot-Offset", -1)),
                                     "key": h.get("X-Lagpilot-Key"), "worker": h.get("X-Lagpilot-Worker"),
                                     "path": self.path, "body": body, "start": start, "end": None,
                                     "authorization": h.get("Authorization")}
            with rec.lock:
                rec.records.append(entry)
            self._send(200, b"{}")
            with rec.lock:
                entry["end"] = time.time()

        def do_GET(self) -> None:
            if self.path.startswith("/records"):
                with rec.lock:
                    self._send(200, json.dumps(rec.records).encode())
            else:
                self._send(200, b'{"ok": true}')

    return Handler


def serve_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[ThreadingHTTPServer, Recorder]:
    rec = Recorder()
    server = ThreadingHTTPServer((host, port), make_handler(rec))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="e2e-target").start()
    return server, rec


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    recorder = Recorder()
    ThreadingHTTPServer(("0.0.0.0", port), make_handler(recorder)).serve_forever()
