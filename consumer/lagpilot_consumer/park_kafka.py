"""The retry park's Kafka calls (:mod:`lagpilot_consumer.park` says what the park is): the writer that
stores a record in its park partition, the check of the park topic at start, and the scan a new owner runs
before it delivers anything."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lagpilot_consumer.config import Config, ConfigError
from lagpilot_consumer.park import ParkedKeys, park_key

log = logging.getLogger("lagpilot.consumer.park")


class ParkWriter:
    """Writes records to the park topic and waits for the broker's acknowledgement (the record's source
    offset counts as done only once it is stored); a failed write is retried until stored or cancelled."""

    def __init__(self, cfg: Config, on_error: Callable[[], None]) -> None:
        from confluent_kafka import Producer

        from lagpilot_consumer.delivery import producer_conf

        self.producer = Producer(producer_conf(cfg))
        self.topic = cfg.park_topic
        self.cfg = cfg
        self.on_error = on_error

    def park(self, msg: Any, partition: int, ours: list[tuple[str, bytes]],
             cancelled: Callable[[], bool]) -> bool:
        """Store ``msg`` (key, value, its Kafka headers after ours, its timestamp) in park partition
        ``partition``. True once stored; False if ``cancelled()`` became true first."""
        from lagpilot_consumer.delivery import produce_acked

        if cancelled():  # ownership lost (released, fenced) since the record was taken: not ours to write
            return False
        headers: list[tuple[str, Any]] = [*ours, *((k, v or b"") for k, v in (msg.headers() or ()))]
        ts_type, ts = msg.timestamp()
        return produce_acked(self.producer, self.cfg, cancelled, self.on_error, "park", topic=self.topic,
                             partition=partition, key=msg.key(), value=msg.value(), headers=headers,
                             **({"timestamp": ts} if ts_type != 0 and ts >= 0 else {}))

    def close(self, timeout: float = 10.0) -> None:
        self.producer.flush(timeout)


def check_park_topic(consumer: Any, cfg: Config) -> None:
    """At start: the park topic must exist with at least the source topic's partitions (partition ``p``
    parks into ``p``). Raises ConfigError (the one line the worker exits with); says nothing when the
    brokers cannot be reached yet (the scan before each assignment waits for them)."""
    try:
        md = consumer.list_topics(timeout=10)
    except Exception as exc:
        log.warning("park topic not checked: brokers not reachable", extra={"error": str(exc)})
        return
    source = cfg.topics[0]  # config.parse: a park serves exactly one source topic
    src, park = md.topics.get(source), md.topics.get(cfg.park_topic)
    if src is None or src.error is not None:
        return  # the source topic's own problem, reported elsewhere
    if park is None or park.error is not None:
        raise ConfigError(f"invalid --park-topic {cfg.park_topic!r}: no such topic (create it with at least "
                          f"the {len(src.partitions)} partitions of {source!r})")
    if len(park.partitions) < len(src.partitions):
        raise ConfigError(f"invalid --park-topic {cfg.park_topic!r}: {len(park.partitions)} partitions, fewer "
                          f"than the {len(src.partitions)} of {source!r} (partition p parks into p)")


class ParkScanError(Exception):
    """The park partition could not be read to its end: which keys are parked is unknown."""


def scan_parked_keys(consumer: Any, cfg: Config, partition: int, start: int, end: int,
                     keep_going: Callable[[], bool], timeout: float = 60.0) -> ParkedKeys:
    """The keys parked in park partition ``partition`` between ``start`` (its committed offset) and
    ``end`` (its end when the partition was assigned): records there are not done yet. ``consumer`` is a
    consumer used for nothing else (its assignment is replaced). Reads keys only; raises ParkScanError
    if the end is not reached within ``timeout`` or ``keep_going()`` turns false."""
    from confluent_kafka import KafkaError, TopicPartition

    keys = ParkedKeys()
    if start >= end:
        return keys
    consumer.assign([TopicPartition(cfg.park_topic, partition, start)])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and keep_going():
            for m in consumer.consume(num_messages=1000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return keys  # the end (transaction markers may leave no record at end - 1)
                    log.warning("park scan fetch error", extra={"error": str(err)})
                    continue
                if m.offset() >= end:
                    return keys
                keys.add(park_key(cfg.ordering, m.key()))
                if m.offset() >= end - 1:
                    return keys
        raise ParkScanError(f"park partition {partition} not read from {start} to {end}")
    finally:
        consumer.unassign()
