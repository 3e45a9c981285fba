"""Consumer benchmark: lagpilot-consumer beside Confluent's Parallel Consumer (0.5.3.2, KEY order, the JDK
HttpClient, same number of threads) on the same broker, topic and nginx target, in one run:

- records/s counted **by nginx** over a steady window after warm-up, for an immediate 200 (``/fast``,
  8 threads) and a 200 after 20 ms (``/slow``, echo module, 64 threads);
- CPU milliseconds per record of each consumer process over the same window (``/proc``; nginx's and the
  broker's CPU are printed apart);
- peak RSS of lagpilot-consumer reading a 1M-record backlog, and with one key rejected for ever (400, no
  dead-letter topic: it retries at the max backoff) while the rest of that backlog flows.

The machine's load average is printed before and after. 12 partitions, 10 007 keys, 100-byte values.

    .venv/bin/python bench/consumer/run.py [--window 10] [--records 300000] [--backlog 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import NginxTarget, process_cpu_seconds, process_rss_peak_mb, start_parallel_consumer

from lagpilot.lab.kafka import create_topic, start_kafka, stop_kafka

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PARTITIONS = 12
KEYS = 10_007


def produce(bootstrap: str, topic: str, n: int, value_bytes: int = 100) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})
    value = b"v" * value_bytes
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, key=f"key-{i % KEYS}".encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(300)


def lagpilot(bootstrap: str, topic: str, group: str, url: str, threads: int, *extra: str,
             partitions: str = f"0-{PARTITIONS - 1}") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "lagpilot-consumer"), "--bootstrap-servers", bootstrap, "--topic", topic, "--group-id",
         group, "--target-url", url, "--threads", str(threads), "--partitions", partitions,
         "--ordering", "key", "--http-port", "0", "--log-level", "WARNING", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def measure(procs: list[subprocess.Popen[bytes]], count: Callable[[], int], window: float, warm_s: float,
            others: list[int]) -> dict[str, float]:
    """Records/s at the target and CPU per record of ``procs`` (summed) over ``window`` s, ``warm_s`` s
    after the first request arrived (a JIT or a fetch warm-up is not counted); the CPU of ``others``
    (broker, nginx) over the same window, in cores."""
    deadline = time.monotonic() + 120
    start = count()
    cpu_of = [p.pid for p in procs] + others
    while count() == start:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a consumer process exited early")
        if time.monotonic() > deadline:
            raise TimeoutError("no traffic reached the target")
        time.sleep(0.05)
    time.sleep(warm_s)
    c0, t0 = count(), time.monotonic()
    cpu0 = {pid: process_cpu_seconds(pid) for pid in cpu_of}
    time.sleep(window)
    c1, t1 = count(), time.monotonic()
    cpu1 = {pid: process_cpu_seconds(pid) for pid in cpu_of}
    n = c1 - c0
    if n <= 0:
        raise RuntimeError("nothing delivered in the window (topic drained? raise --records)")
    cpu = sum(cpu1[p.pid] - cpu0[p.pid] for p in procs)
    other = sum(cpu1[pid] - cpu0[pid] for pid in others)
    return {"rate": n / (t1 - t0), "cpu_ms_per_record": 1000 * cpu / n, "cpu_cores": cpu / (t1 - t0),
            "delivered": n, "broker_and_nginx_cores": other / (t1 - t0)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--warm", type=float, default=5.0, help="seconds after the first request before measuring")
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--rss-seconds", type=float, default=30.0)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lagpilot-bench-"))
    load_before = os.getloadavg()
    broker = start_kafka(tmp / "kafka")
    nginx = NginxTarget.start(tmp / "nginx")
    bootstrap = broker.bootstrap_servers
    run_id = os.urandom(3).hex()
    results: dict[str, object] = {"cpus": os.cpu_count(), "loadavg_before": load_before,
                                  "partitions": PARTITIONS, "keys": KEYS, "value_bytes": 100}
    rows: list[dict[str, object]] = []
    try:
        topic = f"bench-{run_id}"
        create_topic(bootstrap, topic, PARTITIONS)
        produce(bootstrap, topic, args.records)
        broker_pid = broker.pid
        print(f"broker {bootstrap} (pid {broker_pid}); {args.records} records; window {args.window}s; "
              f"cpus {os.cpu_count()}; load {load_before}", flush=True)
        for location, threads in (("fast", 8), ("slow", 64)):
            url = nginx.url(location)
            row: dict[str, object] = {"target": location, "threads": threads}
            runs = ["lagpilot", "parallel_consumer", "lagpilot_2_processes"]
            if location == "slow":
                runs.append("lagpilot_256_in_flight")
            for name in runs:
                group = f"{name}-{location}-{run_id}"
                if name == "lagpilot":
                    procs = [lagpilot(bootstrap, topic, group, url, threads)]
                elif name == "lagpilot_2_processes":  # two pods' worth: half the partitions each
                    half = PARTITIONS // 2
                    procs = [lagpilot(bootstrap, topic, group, url, threads // 2, partitions=f"0-{half - 1}"),
                             lagpilot(bootstrap, topic, group, url, threads // 2,
                                      partitions=f"{half}-{PARTITIONS - 1}")]
                elif name == "lagpilot_256_in_flight":  # what one process does when allowed more at once
                    procs = [lagpilot(bootstrap, topic, group, url, 256)]
                else:
                    procs = [start_parallel_consumer(bootstrap, topic, group, threads, url, "KEY",
                                                     log_path=tmp / f"pc-{location}.log")]
                try:
                    m = measure(procs, lambda loc=location: nginx.count(loc), args.window, args.warm,
                                [broker_pid, *nginx.pids()])
                finally:
                    for proc in procs:
                        stop(proc)
                row[name] = {k: round(v, 3) for k, v in m.items()}
                print(f"  {location:5s} {name:24s} {m['rate']:8.0f} rec/s  {m['cpu_ms_per_record']:.3f} ms CPU/rec"
                      f"  {m['cpu_cores']:.2f} cores", flush=True)
            lp, pc = row["lagpilot"], row["parallel_consumer"]
            assert isinstance(lp, dict) and isinstance(pc, dict)
            row["rate_ratio"] = round(lp["rate"] / pc["rate"], 2)
            row["cpu_per_record_ratio"] = round(pc["cpu_ms_per_record"] / lp["cpu_ms_per_record"], 2)
            rows.append(row)
            print(f"  {location}: lagpilot/parallel-consumer records/s {row['rate_ratio']}x; "
                  f"CPU per record {row['cpu_per_record_ratio']}x less", flush=True)
        results["rates"] = rows
        if not args.skip_rss:
            big = f"bench-{run_id}-backlog"
            create_topic(bootstrap, big, PARTITIONS)
            t0 = time.monotonic()
            produce(bootstrap, big, args.backlog)
            results["backlog_produce_seconds"] = round(time.monotonic() - t0, 1)
            rss: dict[str, object] = {"backlog": args.backlog, "seconds": args.rss_seconds}
            for case, location, extra in (("backlog", "fast", ()), ("stuck_key", "stuck", ("--max-attempts", "3"))):
                proc = lagpilot(bootstrap, big, f"rss-{case}-{run_id}", nginx.url(location), 8, *extra)
                try:
                    c0 = nginx.count(location)
                    time.sleep(args.rss_seconds)
                    rss[case] = {"peak_rss_mb": round(process_rss_peak_mb(proc.pid), 1),
                                 "delivered": nginx.count(location) - c0}
                finally:
                    stop(proc)
                print(f"  rss {case}: {rss[case]}", flush=True)
            results["rss"] = rss
    finally:
        nginx.stop()
        stop_kafka(broker, remove=True)
    results["loadavg_after"] = os.getloadavg()
    out = HERE / "results.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"load {results['loadavg_after']}; wrote {out}")


if __name__ == "__main__":
    main()
