"""The design lagpilot replaces, reproduced for comparison: one record at a time per partition (a thread
and a consumer per partition), a new HTTP session -- hence a new connection -- per request, and Kafka's
periodic auto-commit."""

from __future__ import annotations

import argparse
import threading

import requests
from confluent_kafka import Consumer, TopicPartition


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap-servers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group-id", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--url", required=True)
    args = ap.parse_args()

    def run(p: int) -> None:
        c = Consumer({"bootstrap.servers": args.bootstrap_servers, "group.id": args.group_id,
                      "enable.auto.commit": True, "auto.commit.interval.ms": 5000,
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(args.topic, p)])
        while True:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            with requests.Session() as s:
                s.post(args.url, data=m.value(), timeout=10,
                       headers={"X-Key": (m.key() or b"").decode(), "X-Partition": str(p),
                                "X-Offset": str(m.offset())}).raise_for_status()

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in range(args.partitions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
