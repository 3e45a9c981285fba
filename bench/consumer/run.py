"""Consumer benchmark: delivered records/s of lagpilot-consumer beside (a) the raw ceiling of the same
HTTP client with the same threads and no Kafka and (b) the baseline design, in one run, for a fast
target and a 20 ms target, with 3 and 12 partitions; plus pooled vs per-request connections and the
peak RSS of lagpilot-consumer with a large backlog. All rates are measured at the target, over a steady
window after warm-up.

    .venv/bin/python bench/consumer/run.py [--bootstrap HOST:PORT] [--window 8] [--backlog 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer

from lagpilot.lab.kafka import create_topic, start_kafka, stop_kafka
from lagpilot.lab.proc import free_port, wait_until

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PY = sys.executable


def stats(port: int, reset: bool = False) -> dict[str, float]:
    path = "__reset" if reset else "__stats"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def start_target(latency_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([PY, str(HERE / "fast_target.py"), "--port", str(port), "--latency-ms",
                             str(latency_ms)])
    wait_until(lambda: stats(port) is not None, 20, "bench target")
    return proc, port


def produce(bootstrap: str, topic: str, partitions: int, n: int, value_bytes: int = 100) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})
    value = b"v" * value_bytes
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, key=f"key-{i % 10007}".encode(), partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(120)


def measure(proc: subprocess.Popen[bytes], port: int, window: float, warm: int = 50,
            timeout: float = 60) -> float:
    """Rate at the target over ``window`` seconds, once ``warm`` requests have arrived."""
    stats(port, reset=True)
    deadline = time.monotonic() + timeout
    while stats(port)["count"] < warm:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("no traffic reached the target")
        time.sleep(0.1)
    s0, t0 = stats(port)["count"], time.monotonic()
    time.sleep(window)
    s1, t1 = stats(port)["count"], time.monotonic()
    return (s1 - s0) / (t1 - t0)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lagpilot(bootstrap: str, topic: str, group: str, url: str, threads: int, partitions: int,
             connection: str = "pooled", extra: list[str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "lagpilot-consumer"), "--bootstrap-servers", bootstrap, "--topic", topic, "--group-id",
         group, "--target-url", url, "--threads", str(threads), "--partitions", f"0-{partitions - 1}",
         "--connection", connection, "--http-port", "0", "--log-level", "WARNING", *(extra or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--records", type=int, default=60_000, help="records per partition-count topic")
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--rss-seconds", type=float, default=30.0)
    ap.add_argument("--skip-rates", action="store_true", help="only the backlog/RSS measurement")
    args = ap.parse_args()
    broker = None
    tmp = None
    bootstrap = args.bootstrap
    if not bootstrap:
        tmp = tempfile.mkdtemp(prefix="lagpilot-bench-")
        broker = start_kafka(Path(tmp) / "kafka")
        bootstrap = broker.bootstrap_servers
    run_id = os.urandom(3).hex()
    results: list[dict[str, object]] = []
    try:
        topics = {}
        for parts in () if args.skip_rates else (3, 12):
            topics[parts] = f"bench-{run_id}-{parts}"
            create_topic(bootstrap, topics[parts], parts)
            produce(bootstrap, topics[parts], parts, args.records)
        print(f"broker {bootstrap}; {args.records} records per topic; window {args.window}s; "
              f"cpus {os.cpu_count()}", flush=True)
        for latency, threads in () if args.skip_rates else ((0.0, 8), (20.0, 32)):
            target, port = start_target(latency)
            url = f"http://127.0.0.1:{port}/deliver"
            try:
                for parts in (3, 12):
                    row: dict[str, object] = {"target": "fast" if not latency else f"{latency:.0f}ms",
                                              "partitions": parts, "threads": threads}
                    group = f"{run_id}-{latency:.0f}-{parts}"
                    lp = [str(BIN / "lagpilot-consumer"), "--bootstrap-servers", bootstrap, "--topic",
                          topics[parts], "--target-url", url, "--threads", str(threads), "--partitions",
                          f"0-{parts - 1}", "--http-port", "0", "--log-level", "WARNING"]
                    runs = {
                        "raw": [PY, str(HERE / "raw_client.py"), "--url", url, "--threads", str(threads),
                                "--seconds", str(args.window + 5)],
                        "lagpilot": [*lp, "--group-id", f"lp-{group}", "--connection", "pooled"],
                        "per_request": [*lp, "--group-id", f"lpr-{group}", "--connection", "per-request"],
                        "baseline": [PY, str(HERE / "baseline.py"), "--bootstrap-servers", bootstrap, "--topic",
                                     topics[parts], "--group-id", f"bl-{group}", "--partitions", str(parts),
                                     "--url", url],
                    }
                    for name, argv in runs.items():
                        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        try:
                            row[name] = round(measure(proc, port, args.window))
                        finally:
                            stop(proc)
                    rates = {k: float(v) for k, v in row.items() if k in runs}  # type: ignore[arg-type]
                    row["lagpilot/raw"] = round(rates["lagpilot"] / rates["raw"], 2)
                    row["lagpilot/baseline"] = round(rates["lagpilot"] / rates["baseline"], 1)
                    row["pooled/per_request"] = round(rates["lagpilot"] / rates["per_request"], 2)
                    results.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                stop(target)
        # Peak RSS with a large backlog (fast target, 12 partitions, defaults otherwise).
        big = f"bench-{run_id}-backlog"
        create_topic(bootstrap, big, 12)
        t0 = time.monotonic()
        produce(bootstrap, big, 12, args.backlog)
        produced_s = time.monotonic() - t0
        target, port = start_target(0.0)
        try:
            proc = lagpilot(bootstrap, big, f"rss-{run_id}", f"http://127.0.0.1:{port}/deliver", 8, 12)
            try:
                rate = measure(proc, port, args.rss_seconds)
                rss = peak_rss_mb(proc.pid)
                delivered = stats(port)["count"]
            finally:
                stop(proc)
        finally:
            stop(target)
        row = {"backlog": args.backlog, "produce_seconds": round(produced_s, 1),
               "rss_window_s": args.rss_seconds, "rate": round(rate), "delivered_in_window": int(delivered),
               "peak_rss_mb": round(rss, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
    finally:
        if broker is not None:
            stop_kafka(broker, remove=True)
    out = HERE / ("results-rss.json" if args.skip_rates else "results.json")
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
