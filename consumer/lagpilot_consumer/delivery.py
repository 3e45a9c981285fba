"""Delivering one record: the HTTP client of a delivery thread, the retry loop, and the dead-letter writer.
The loop's decisions come from :mod:`lagpilot_consumer.policy`; this module only does the I/O."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Timeout

from lagpilot_consumer.config import Config
from lagpilot_consumer.metrics import Metrics
from lagpilot_consumer.policy import backoff_seconds, classify, parse_retry_after, record_headers

log = logging.getLogger("lagpilot.consumer.delivery")

Outcome = Literal["success", "dead_letter", "cancelled"]


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


MAX_REDIRECTS = 3  # 307/308 hops followed within the target's origin


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


class HttpClient:
    """The HTTP side of one delivery thread. ``pooled``: one keep-alive session, replaced once it is
    older than ``max_connection_age_seconds`` (so an L4 balancer in front of a target being rolled sees
    new connections); ``per-request``: a new session, hence a new TCP connection, for every request."""

    def __init__(self, cfg: Config) -> None:
        self.timeout = Timeout(total=cfg.timeout_seconds, connect=cfg.timeout_seconds, read=cfg.timeout_seconds)
        self.cfg = cfg
        self.base_headers = [("X-Lagpilot-Worker", cfg.pod_name or f"{socket.gethostname()}-{os.getpid()}"),
                             *cfg.headers]
        self._session: requests.Session | None = None
        self._born = 0.0

    def _new_session(self) -> requests.Session:
        s = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        return s

    def session(self) -> requests.Session:
        now = time.monotonic()
        age = self.cfg.max_connection_age_seconds
        if self._session is not None and age > 0 and now - self._born > age:
            self._session.close()
            self._session = None
        if self._session is None:
            self._session = self._new_session()
            self._born = now
        return self._session

    def send(self, rec: Record) -> Attempt:
        headers = record_headers(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp_ms,
                                 rec.headers, self.base_headers)
        per_request = self.cfg.connection == "per-request"
        session = self._new_session() if per_request else self.session()
        t0 = time.perf_counter()
        deadline = t0 + self.cfg.timeout_seconds
        url = self.cfg.target_url
        try:
            for hop in range(MAX_REDIRECTS + 1):
                # The whole attempt (every hop) is bounded by the target timeout, not only each socket
                # operation (a target dripping its answer would otherwise hold it open): a fenced worker's
                # last request must end within the target timeout that the Lease duration allows for.
                # Redirects are never followed by the HTTP library: a 301/302/303 would re-send the record
                # as a GET without its body, and a 2xx from there would commit a record never processed.
                resp = session.request(self.cfg.method, url, data=rec.value or b"", headers=headers,
                                       timeout=self.timeout, stream=True,  # type: ignore[arg-type]
                                       allow_redirects=False)
                try:
                    # Read the body (so the connection goes back to the pool) as it arrives, checking the
                    # deadline between reads; the body itself is not used.
                    while resp.raw.read1(65536):
                        if time.perf_counter() > deadline:
                            resp.close()
                            if not per_request:
                                self.close()
                            return Attempt(None, f"ReadTimeout: the answer took longer than "
                                                 f"{self.cfg.timeout_seconds:g} s", time.perf_counter() - t0)
                finally:
                    resp.close()
                status = resp.status_code
                if 300 <= status < 400:
                    target = urljoin(url, resp.headers.get("Location") or "")
                    if status in (307, 308) and same_origin(target, self.cfg.target_url) and hop < MAX_REDIRECTS:
                        url = target  # method and body are kept: follow within the same origin
                        continue
                    why = ("to another origin, or too many" if status in (307, 308) else
                           "it would re-send the record as a GET without its body")
                    return Attempt(status, f"HTTP {status}: redirect to {redact_url(target)} not followed ({why})",
                                   time.perf_counter() - t0)
                return Attempt(status, "" if resp.ok else f"HTTP {status}", time.perf_counter() - t0,
                               parse_retry_after(resp.headers.get("Retry-After")))
            raise AssertionError("unreachable")  # pragma: no cover
        except requests.RequestException as exc:
            if not per_request:  # a broken pooled connection: start afresh
                self.close()
            text = str(exc).replace(self.cfg.target_url, redact_url(self.cfg.target_url))
            return Attempt(None, f"{type(exc).__name__}: {text}"[:300], time.perf_counter() - t0)
        finally:
            if per_request:
                session.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class DeadLetterWriter:
    """Writes records that cannot be delivered to the dead-letter topic and waits for the broker's ack;
    a failed write is retried (with backoff) until it succeeds or the record is cancelled, because the
    record's offset may only count as done once the dead letter is safely stored."""

    def __init__(self, cfg: Config, metrics: Metrics) -> None:
        from confluent_kafka import Producer

        conf: dict[str, Any] = {"bootstrap.servers": cfg.bootstrap_servers, "acks": "all",
                                "enable.idempotence": True, "linger.ms": 5, "message.timeout.ms": 30_000}
        conf.update({k: v for k, v in cfg.kafka_config if not _consumer_only(k)})
        self.producer = Producer(conf)
        self.topic = cfg.dead_letter_topic
        self.cfg = cfg
        self.metrics = metrics

    def write(self, rec: Record, reason: dict[str, str], cancelled: Callable[[], bool]) -> bool:
        """True once stored; False if ``cancelled()`` became true before that."""
        headers: list[tuple[str, str | bytes | None]] = [
            (f"lagpilot-{k}", v.encode()) for k, v in reason.items()]
        headers += [(k, v or b"") for k, v in rec.headers or ()]
        attempt = 0
        while True:
            attempt += 1
            done = threading.Event()
            result: list[Any] = []

            def on_delivery(err: Any, _msg: Any, result: list[Any] = result,
                            done: threading.Event = done) -> None:
                result.append(err)
                done.set()

            try:
                self.producer.produce(self.topic, value=rec.value, key=rec.key, headers=headers,
                                      on_delivery=on_delivery)
                while not done.is_set():
                    self.producer.poll(0.05)
                err = result[0]
            except Exception as exc:  # KafkaException, BufferError (queue full)...
                err = exc
            if err is None:
                return True
            self.metrics.dead_letter_write_errors.inc()
            log.warning("dead-letter write failed, will retry", extra={"error": str(err), "topic": self.topic,
                                                                       "partition": rec.partition,
                                                                       "offset": rec.offset})
            delay = backoff_seconds(attempt, self.cfg.initial_backoff_ms, self.cfg.max_backoff_ms)
            if not sleep_unless(delay, cancelled):
                return False

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


def deliver(rec: Record, client: HttpClient, cfg: Config, metrics: Metrics,
            dlq: DeadLetterWriter | None, cancelled: Callable[[], bool]) -> Outcome:
    """Deliver ``rec`` until it succeeds, is dead-lettered, or ``cancelled()`` (its partition was released
    or the process is stopping). Without a dead-letter topic a record that failed for the last time keeps
    retrying at the max backoff: it is never dropped."""
    attempt = 0
    while True:
        if cancelled():
            return "cancelled"
        attempt += 1
        try:
            a = client.send(rec)
        except Exception as exc:  # any failure is a failed attempt, retried in order like the others
            log.warning("delivery attempt raised", exc_info=True,
                        extra={"partition": rec.partition, "offset": rec.offset})
            a = Attempt(None, f"{type(exc).__name__}: {exc}"[:300], 0.0)
        verdict = classify(a.status, cfg.success_codes, cfg.retry_codes)
        if verdict == "success":
            metrics.delivery("success", rec.partition, a.status, a.seconds)
            return "success"
        final = verdict == "fatal" or attempt >= cfg.max_attempts
        if final and dlq is not None:
            metrics.delivery("dead_letter", rec.partition, a.status, a.seconds)
            reason = {"reason": "rejected" if verdict == "fatal" else "attempts-exhausted",
                      "status": "" if a.status is None else str(a.status), "error": a.error,
                      "attempts": str(attempt), "original-topic": rec.topic,
                      "original-partition": str(rec.partition), "original-offset": str(rec.offset)}
            if rec.timestamp_ms is not None:
                reason["original-timestamp"] = str(rec.timestamp_ms)
            log.warning("dead-lettering record", extra={"partition": rec.partition, "offset": rec.offset,
                                                        "status": a.status, "error": a.error,
                                                        "attempts": attempt})
            return "dead_letter" if dlq.write(rec, reason, cancelled) else "cancelled"
        if final:
            metrics.delivery("error", rec.partition, a.status, a.seconds)
            delay = backoff_seconds(1, cfg.max_backoff_ms, cfg.max_backoff_ms, retry_after=a.retry_after)
            delay = max(delay, cfg.max_backoff_ms / 1000.0)
            if attempt == cfg.max_attempts or (verdict == "fatal" and attempt == 1) or attempt % 10 == 0:
                log.error("record failed and there is no dead-letter topic: retrying at the max backoff",
                          extra={"partition": rec.partition, "offset": rec.offset, "status": a.status,
                                 "error": a.error, "attempts": attempt})
        else:
            metrics.delivery("retry", rec.partition, a.status, a.seconds)
            delay = backoff_seconds(attempt, cfg.initial_backoff_ms, cfg.max_backoff_ms,
                                    retry_after=a.retry_after)
        if not sleep_unless(delay, cancelled):
            return "cancelled"
