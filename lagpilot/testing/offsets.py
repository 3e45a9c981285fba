"""Offsets on the lab broker for the lag tests: produce counts per partition, commit as an assign()-mode
worker does, and a snapshot's figures in a comparable shape."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition


def produce(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, n in counts.items():
        for i in range(n):
            p.produce(topic, value=f"v{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for the group the way an assign()-mode worker does (no group membership)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    finally:
        c.close()


def lags(snapshot: object) -> dict[int, tuple[int, int, int | None, int]]:
    return {p.partition: (p.log_start, p.log_end, p.committed, p.lag) for p in snapshot.partitions}  # type: ignore[attr-defined]
