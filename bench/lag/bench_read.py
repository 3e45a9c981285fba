"""Lag read time for 1, 100 and 1 000 partitions, with the requests each poll costs.

Two counts per poll: client calls issued by LagReader (its own counter) and requests the broker actually
received, from librdkafka's statistics (per-broker `req` counters, Metadata/ListOffsets/OffsetFetch...).

    .venv/bin/python bench/lag/bench_read.py [--bootstrap HOST:PORT] [--polls 20]

Without --bootstrap it starts a private lab broker (and stops it at the end).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from lagpilot.lab.kafka import create_topic, start_kafka, stop_kafka
from lagpilot_operator.autoscale.offsets import LagReader
from lagpilot_operator.brokers import admin_client, offsets_client

SIZES = (1, 100, 1000)


class BrokerRequests:
    """Cumulative per-request-type counters from librdkafka's stats (emitted every second)."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, int]] = {}

    def callback(self) -> Any:
        def cb(raw: str) -> None:
            stats = json.loads(raw)
            counts: dict[str, int] = {}
            for broker in stats.get("brokers", {}).values():
                for req, n in broker.get("req", {}).items():
                    counts[req] = counts.get(req, 0) + n
            self.latest[stats["name"]] = counts  # one entry per client (admin, offsets consumer)
        return cb

    def total(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.latest.values():
            for req, n in counts.items():
                out[req] = out.get(req, 0) + n
        return out


def prepare(bootstrap: str, partitions: int, group: str) -> str:
    topic = f"bench-lag-{partitions}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for p in range(partitions):
        for i in range(3):
            producer.produce(topic, value=b"x%d" % i, partition=p)
    producer.flush(60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 1) for p in range(partitions)], asynchronous=False)
    consumer.close()
    return topic


def settle(reader_conf: dict[str, Any], bootstrap: str, group: str) -> None:
    """Wait for the next statistics emission of both clients."""
    time.sleep(1.2)
    admin_client(bootstrap, reader_conf).poll(0)
    offsets_client(bootstrap, group, reader_conf).poll(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap")
    ap.add_argument("--polls", type=int, default=20)
    args = ap.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        workdir = Path(tempfile.mkdtemp(prefix="bench-lag-"))
        broker = start_kafka(workdir / "kafka")
        bootstrap = broker.bootstrap_servers
    try:
        rows = []
        for n in SIZES:
            group = f"bench-group-{n}"
            topic = prepare(bootstrap, n, group)
            counter = BrokerRequests()
            conf = {"statistics.interval.ms": 1000, "stats_cb": counter.callback()}
            reader = LagReader(bootstrap, conf)
            reader.read(group, [topic])  # warm-up: metadata, coordinator lookup, connections
            times = []
            for _ in range(args.polls):
                t0 = time.perf_counter()
                snap = reader.read(group, [topic])
                times.append(time.perf_counter() - t0)
            assert len(snap.partitions) == n and snap.total == 2 * n
            # broker-level requests of exactly one poll
            settle(conf, bootstrap, group)
            before = counter.total()
            calls_before = reader.requests_total
            reader.read(group, [topic])
            settle(conf, bootstrap, group)
            after = counter.total()
            broker_reqs = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
            rows.append((n, statistics.median(times) * 1000, max(times) * 1000,
                         reader.requests_total - calls_before, broker_reqs))
        print(f"{'partitions':>10} {'median ms':>10} {'max ms':>8} {'calls/poll':>10}  broker requests/poll")
        for n, med, mx, calls, reqs in rows:
            print(f"{n:>10} {med:>10.1f} {mx:>8.1f} {calls:>10}  {json.dumps(reqs, sort_keys=True)}")
        base = rows[0][1]
        print("read time ratio vs 1 partition: " + ", ".join(f"{n}: x{med / base:.1f}" for n, med, *_ in rows))
    finally:
        if broker:
            stop_kafka(broker, remove=True)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
