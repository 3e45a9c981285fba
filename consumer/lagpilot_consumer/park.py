"""The retry park (``--park-topic``, ``--park-after``): durable retries that keep each key's order.

A record still failing ``--park-after`` seconds after its first failed attempt is written to the park
topic, and its key is *parked*: every later record of that key follows it there, in order, instead of
being delivered. Their offsets in the source partition count as done, so its commit moves on and the
worker's memory stays flat while part of the key space is down for a long time. The worker reads the park
topic too and delivers those records with the same per-key order and backoff; a key leaves the parked set
when its last parked record is done (delivered or dead-lettered).

Partition ``p`` of the source is parked into partition ``p`` of the park topic, so one ownership covers
both: the worker that owns ``p`` (its Lease, its fence) is the only one writing and reading park partition
``p``. A new owner learns which keys are parked by scanning the park partition from its committed offset
to its end before it delivers any record of ``p`` (:func:`scan_parked_keys`).

This module is the pure part (what a parked record holds back, the counts, the headers, how a record read
back is seen); :mod:`lagpilot_consumer.park_kafka` is the thin Kafka part (the writer, the scan, the check
at start)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from lagpilot import protocol

MAIN, PARK = 0, 1  # the two streams of an owned partition: the source topic and its park partition
WHOLE_PARTITION = ("partition",)  # with --ordering partition a parked record parks its whole partition


def park_key(ordering: str, key: bytes | None) -> Hashable | None:
    """What a parked record holds back: its key (``--ordering key``), its whole partition (``partition``),
    or nothing (``none``, and keyless records, which are not ordered)."""
    if ordering == "partition":
        return WHOLE_PARTITION
    if ordering == "key" and key is not None:
        return key
    return None


@dataclass
class ParkedKeys:
    """Per owned partition: how many records of each parked key are in the park and not yet done. A
    record is counted from the moment it is decided to park it (before its write is acknowledged), so a
    later record of its key can never slip past it."""

    counts: dict[Hashable, int] = field(default_factory=dict)

    def holds(self, key: Hashable | None) -> bool:
        return key is not None and key in self.counts

    def add(self, key: Hashable | None) -> None:
        if key is not None:
            self.counts[key] = self.counts.get(key, 0) + 1

    def done(self, key: Hashable | None) -> None:
        """One parked record of ``key`` is done; the key is free again after its last one."""
        if key is None or key not in self.counts:
            return
        left = self.counts[key] - 1
        if left > 0:
            self.counts[key] = left
        else:
            del self.counts[key]

    def __len__(self) -> int:
        return len(self.counts)


def park_headers(topic: str, partition: int, offset: int, timestamp_ms: int | None, attempts: int,
                 route_step: int, reason: str) -> list[tuple[str, bytes]]:
    """Our headers on a parked record (the record's own Kafka headers follow them)."""
    out = [(protocol.PARK_ORIGINAL_TOPIC, topic.encode()),
           (protocol.PARK_ORIGINAL_PARTITION, b"%d" % partition),
           (protocol.PARK_ORIGINAL_OFFSET, b"%d" % offset),
           (protocol.PARK_ATTEMPTS, b"%d" % attempts),
           (protocol.PARK_REASON, reason.encode())]
    if timestamp_ms is not None:
        out.append((protocol.PARK_ORIGINAL_TIMESTAMP, b"%d" % timestamp_ms))
    if route_step:
        out.append((protocol.PARK_ROUTE_STEP, b"%d" % route_step))
    return out


class ParkedMessage:
    """A record read back from the park topic, seen as the original: its topic, partition, offset and
    timestamp, and its Kafka headers without ours. So the target gets the same request (and the same
    idempotency key) as it would have without the park."""

    __slots__ = ("_headers", "_msg", "attempts", "offset_", "partition_", "route_step", "timestamp_", "topic_")

    def __init__(self, msg: Any, ours: dict[str, bytes], rest: list[tuple[str, bytes | None]]) -> None:
        self._msg = msg
        self._headers = rest or None
        self.topic_ = ours[protocol.PARK_ORIGINAL_TOPIC].decode("utf-8", "replace")
        self.partition_ = int(ours[protocol.PARK_ORIGINAL_PARTITION])
        self.offset_ = int(ours[protocol.PARK_ORIGINAL_OFFSET])
        ts = ours.get(protocol.PARK_ORIGINAL_TIMESTAMP)
        self.timestamp_ = (1, int(ts)) if ts is not None else (0, -1)
        self.attempts = int(ours.get(protocol.PARK_ATTEMPTS, b"0"))
        self.route_step = int(ours.get(protocol.PARK_ROUTE_STEP, b"0"))

    @classmethod
    def of(cls, msg: Any) -> Any:
        """The original behind a park-topic message; the message itself when it is not one of ours (or its
        headers cannot be read: then its delivery fails on them the usual way, retried and dead-lettered)."""
        try:
            headers = msg.headers() or []
            ours = {k: v or b"" for k, v in headers if k.startswith(protocol.PARK_HEADER_PREFIX)}
            rest = [(k, v) for k, v in headers if not k.startswith(protocol.PARK_HEADER_PREFIX)]
            return cls(msg, ours, rest)
        except Exception:
            return msg

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_

    def key(self) -> Any:
        return self._msg.key()

    def value(self) -> Any:
        return self._msg.value()

    def headers(self) -> Any:
        return self._headers
