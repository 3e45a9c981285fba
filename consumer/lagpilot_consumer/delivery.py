"""What a delivery is made of: the record, one attempt's result, URL helpers, and the dead-letter writer.
The engine (:mod:`lagpilot_consumer.engine`) runs the attempts; :mod:`lagpilot_consumer.policy` decides."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lagpilot_consumer.config import Config
from lagpilot_consumer.metrics import Metrics
from lagpilot_consumer.policy import backoff_seconds

log = logging.getLogger("lagpilot.consumer.delivery")



@dataclass
class Record:
    """What the delivery path needs of a Kafka message (a plain object, so tests and the benchmark can
    build records without a broker)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: list[tuple[str, bytes | None]] | None = None

    @classmethod
    def from_message(cls, msg: Any) -> Record:
        ts_type, ts = msg.timestamp()
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                   ts if ts_type != 0 else None, msg.headers())


@dataclass
class Attempt:
    status: int | None
    error: str
    seconds: float
    retry_after: float | None = None




def same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def redact_url(url: str) -> str:
    """The URL without user:password (never in logs, errors or dead-letter headers)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def producer_conf(cfg: Config) -> dict[str, Any]:
    """An idempotent producer whose writes are acknowledged by every in-sync replica, with the user's
    librdkafka properties (those meant for the producer)."""
    conf: dict[str, Any] = {"bootstrap.servers": cfg.bootstrap_servers, "acks": "all",
                            "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 30_000}
    conf.update({k: v for k, v in cfg.kafka_config if not _consumer_only(k)})
    return conf


def produce_acked(producer: Any, cfg: Config, cancelled: Callable[[], bool], on_error: Callable[[], None],
                  what: str, **record: Any) -> bool:
    """Produce one record and wait for the broker's ack, retrying with backoff until it is stored (True)
    or ``cancelled()`` becomes true (False)."""
    attempt = 0
    while True:
        attempt += 1
        done = threading.Event()
        result: list[Any] = []

        def on_delivery(err: Any, _msg: Any, result: list[Any] = result, done: threading.Event = done) -> None:
            result.append(err)
            done.set()

        try:
            producer.produce(**record, on_delivery=on_delivery)
            while not done.is_set():
                producer.poll(0.05)
            err = result[0]
        except Exception as exc:  # KafkaException, BufferError (queue full)...
            err = exc
        if err is None:
            return True
        on_error()
        log.warning(f"{what} write failed, will retry", extra={"error": str(err), "topic": record.get("topic")})
        delay = backoff_seconds(attempt, cfg.initial_backoff_ms, cfg.max_backoff_ms)
        if not sleep_unless(delay, cancelled):
            return False


class DeadLetterWriter:
    """Writes records that cannot be delivered to the dead-letter topic and waits for the broker's ack;
    a failed write is retried (with backoff) until it succeeds or the record is cancelled, because the
    record's offset may only count as done once the dead letter is safely stored."""

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(producer_conf(cfg))
        self.topic = cfg.dead_letter_topic
        self.cfg = cfg
        self.metrics = metrics

    def write(self, rec: Record, reason: dict[str, str], cancelled: Callable[[], bool]) -> bool:
        """True once stored; False if ``cancelled()`` became true before that."""
        headers: list[tuple[str, str | bytes | None]] = [
            (f"lagpilot-{k}", v.encode()) for k, v in reason.items()]
        headers += [(k, v or b"") for k, v in rec.headers or ()]
        return produce_acked(self.producer, self.cfg, cancelled, self.metrics.dead_letter_write_errors.inc,
                             "dead-letter", topic=self.topic, value=rec.value, key=rec.key, headers=headers)

    def close(self, timeout: float = 10.0) -> None:
        self.producer.flush(timeout)


def _consumer_only(key: str) -> bool:
    return key.startswith(("auto.offset", "fetch.", "queued.", "partition.assignment", "session.timeout",
                           "heartbeat.", "max.poll", "group.", "isolation.", "enable.partition.eof",
                           "check.crcs", "auto.commit", "allow.auto.create"))


def sleep_unless(seconds: float, cancelled: Callable[[], bool], step: float = 0.05) -> bool:
    """Sleep ``seconds`` unless ``cancelled()`` becomes true first (checked every ``step``); True if slept."""
    deadline = time.monotonic() + seconds
    while True:
        if cancelled():
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(step, left))
