"""Which HTTP client for the delivery hot path: client CPU per request of requests, urllib3's pool
(requests' own transport), http.client, aiohttp, and the engine's own client (httptools on asyncio and on
uvloop), against the same nginx ``/fast`` on loopback, same headers and 100-byte body; 8 requests at once
for the event-loop clients, one connection for the blocking ones. CPU is this process's only (nginx
runs apart), so the figure is what a worker pays per request.

    .venv/bin/python bench/consumer/clients.py [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import NginxTarget

BODY = b"x" * 100
HDR = {"X-Lagpilot-Topic": "t", "X-Lagpilot-Partition": "3", "X-Lagpilot-Offset": "12345",
       "X-Lagpilot-Key": "key-123", "Content-Type": "application/octet-stream"}
CONCURRENCY = 8


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    n = ap.parse_args().requests
    nginx = NginxTarget.start(Path(tempfile.mkdtemp(prefix="lagpilot-clients-")))
    port, url = nginx.port, nginx.url("fast")
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, fn: Callable[[], None]) -> None:
        before = nginx.count("fast")
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        assert nginx.count("fast") - before >= n * 0.99, f"{name}: requests did not all arrive"
        results[name] = {"cpu_us_per_request": round(cpu / n * 1e6, 1), "requests_per_s": round(n / wall)}
        print(f"{name:26s} {cpu / n * 1e6:8.1f} µs CPU/request  {n / wall:8.0f} requests/s", flush=True)

    def with_requests() -> None:
        s = requests.Session()
        for _ in range(n):
            s.post(url, data=BODY, headers=HDR, allow_redirects=False).content  # noqa: B018

    def with_urllib3() -> None:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
        for _ in range(n):
            pool.urlopen("POST", "/fast", body=BODY, headers=HDR, retries=False, redirect=False)

    def with_http_client() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(n):
            c.request("POST", "/fast", body=BODY, headers=HDR)
            c.getresponse().read()

    async def with_aiohttp() -> None:
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
            async def lane(k: int) -> None:
                for _ in range(k):
                    async with s.post(url, data=BODY, headers=HDR) as r:
                        await r.read()
            await asyncio.gather(*(lane(n // CONCURRENCY) for _ in range(CONCURRENCY)))

    async def with_engine_client() -> None:
        from lagpilot_consumer.http1 import Origin, Pool

        pool = Pool(10.0)
        origin = Origin.of(url)
        head = ("POST /fast HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in HDR.items())
                + f"Content-Length: {len(BODY)}\r\n\r\n").encode()

        async def lane(k: int) -> None:
            for _ in range(k):
                resp = await pool.request(origin, head, BODY, time.monotonic() + 10)
                assert resp.status == 200
        await asyncio.gather(*(lane(n // CONCURRENCY) for _ in range(CONCURRENCY)))
        pool.close()

    try:
        measure("requests.Session", with_requests)
        measure("urllib3 pool", with_urllib3)
        measure("http.client", with_http_client)
        measure("aiohttp (asyncio)", lambda: asyncio.run(with_aiohttp()))
        import uvloop

        measure("aiohttp (uvloop)", lambda: uvloop.run(with_aiohttp()))
        measure("engine client (asyncio)", lambda: asyncio.run(with_engine_client()))
        measure("engine client (uvloop)", lambda: uvloop.run(with_engine_client()))
    finally:
        nginx.stop()
    out = Path(__file__).resolve().parent / "results-clients.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
