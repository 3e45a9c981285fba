"""A fast HTTP/1.1 keep-alive target for the benchmark (asyncio, minimal parsing): answers 200 to every
request, optionally after ``--latency-ms``. ``GET /__stats`` returns JSON {count, first, last} (times are
``time.time()`` of requests answered), ``GET /__reset`` zeroes them. Not a general HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n"


class Stats:
    count = 0
    first = 0.0
    last = 0.0


class Proto(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            first_line = head.split(b"\r\n", 1)[0]
            if first_line.startswith(b"GET /__"):
                self._control(first_line)
            elif self.latency > 0:
                asyncio.get_running_loop().call_later(self.latency, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        now = time.time()
        if Stats.count == 0:
            Stats.first = now
        Stats.count += 1
        Stats.last = now
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(OK)

    def _control(self, first_line: bytes) -> None:
        if b"/__reset" in first_line:
            Stats.count, Stats.first, Stats.last = 0, 0.0, 0.0
        body = json.dumps({"count": Stats.count, "first": Stats.first, "last": Stats.last}).encode()
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Proto(args.latency_ms / 1000.0), "127.0.0.1", args.port,
                                      backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
