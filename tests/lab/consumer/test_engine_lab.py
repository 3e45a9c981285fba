"""The delivery engine on its own: a real event loop, the real HTTP client and a real local target, fed by
a work queue that stands in for the runtime (the real ordering scheduler inside, no broker). What a
record's lifetime in the engine must keep: order per key through a crash and through retries, parked
records ending as soon as they are cancelled, fewer requests at once while the target is unavailable,
and the request-rate cap."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from lagpilot.protocol import PartitionId
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for
from lagpilot_consumer.config import Config, parse
from lagpilot_consumer.engine import DeliveryEngine
from lagpilot_consumer.metrics import Metrics
from lagpilot_consumer.scheduler import Item, Scheduler

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


class Message:
    """What the engine reads of a confluent_kafka Message; ``crash`` raises in ``value()`` that often."""

    def __init__(self, partition: int, offset: int, key: bytes, crash: int = 0) -> None:
        self._p, self._o, self._k, self.crash = partition, offset, key, crash

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        if self.crash > 0:
            self.crash -= 1
            raise UnicodeEncodeError("latin-1", "\u2603", 0, 1, "a hostile value")
        return self._k + b":" + str(self._o).encode()

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


class Queue:
    """The runtime's side of the engine: a key-ordering scheduler, outcomes recorded, cancellation by
    partition."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sched = Scheduler("key")
        self.outcomes: dict[tuple[int, int], str] = {}
        self.cancelled_partitions: set[int] = set()

    def add(self, msg: Message) -> None:
        with self.lock:
            self.sched.submit(Item(PartitionId(msg.topic(), msg.partition()), msg.offset(), msg.key(), 0, 1, msg))

    def take(self) -> Item | None:
        with self.lock:
            return self.sched.take()

    def finish(self, item: Item, outcome: str) -> None:
        with self.lock:
            self.sched.complete(item)
            self.outcomes[(item.partition.partition, item.offset)] = outcome

    def cancelled(self, item: Item) -> bool:
        return item.partition.partition in self.cancelled_partitions


class Letters:
    """A dead-letter writer that keeps what it was given."""

    def __init__(self) -> None:
        self.written: list[tuple[int, dict[str, str]]] = []

    def write(self, rec: Any, reason: dict[str, str], cancelled: object) -> bool:
        self.written.append((rec.offset, reason))
        return True


def config(target: RecordingTarget, *extra: str) -> Config:
    return parse(["--bootstrap-servers", "127.0.0.1:9", "--topic", "t", "--group-id", "g", "--target-url",
                  target.url, "--partitions", "0-3", "--initial-backoff-ms", "20", "--max-backoff-ms", "100",
                  *extra], {})


def run(cfg: Config, queue: Queue, metrics: Metrics | None = None, dlq: Letters | None = None) -> DeliveryEngine:
    engine = DeliveryEngine(cfg, metrics or Metrics(), queue, dlq)  # type: ignore[arg-type]
    engine.start()
    engine.wake()
    return engine


def test_an_exception_while_delivering_is_a_failed_attempt_retried_in_order(target: RecordingTarget) -> None:
    queue = Queue()
    for off in range(3):
        queue.add(Message(0, off, b"k", crash=2 if off == 0 else 0))
    engine = run(config(target), queue)
    try:
        wait_for(lambda: len(queue.outcomes) == 3, timeout=20, what="three records finished")
    finally:
        engine.stop()
    assert queue.outcomes == {(0, 0): "success", (0, 1): "success", (0, 2): "success"}
    assert [a.offset for a in target.arrivals()] == [0, 1, 2], "the crashed record went first, after retries"


def test_a_crashing_record_is_dead_lettered_after_max_attempts_when_there_is_a_topic(
        target: RecordingTarget) -> None:
    queue = Queue()
    queue.add(Message(0, 0, b"k", crash=10**6))  # every attempt crashes (value() raises)
    queue.add(Message(0, 1, b"k"))
    dlq = Letters()
    engine = run(config(target, "--max-attempts", "3"), queue, dlq=dlq)
    try:
        wait_for(lambda: len(queue.outcomes) == 2, timeout=20, what="both finished")
    finally:
        engine.stop()
    assert queue.outcomes == {(0, 0): "dead_letter", (0, 1): "success"}
    assert dlq.written[0][1]["error"].startswith("UnicodeEncodeError"), dlq.written


def test_parked_records_end_at_once_when_cancelled(target: RecordingTarget) -> None:
    """Records waiting on a long timer (Retry-After: 600) end as cancelled within a sweep once their
    partition is released, so a release or a fence does not wait for the timer."""
    target.reject_keys([b"a", b"b"], status=503, retry_after=600)
    queue = Queue()
    queue.add(Message(1, 0, b"a"))
    queue.add(Message(1, 1, b"b"))
    queue.add(Message(2, 0, b"c"))
    metrics = Metrics()
    engine = run(config(target), queue, metrics)
    try:
        wait_for(lambda: engine.parked() == 2 and (2, 0) in queue.outcomes, timeout=20, what="two parked")
        assert metrics.retries_parked._value.get() == 2  # type: ignore[attr-defined]
        queue.cancelled_partitions.add(1)
        wait_for(lambda: len(queue.outcomes) == 3, timeout=2, what="parked records cancelled")
    finally:
        engine.stop()
    assert queue.outcomes == {(1, 0): "cancelled", (1, 1): "cancelled", (2, 0): "success"}
    assert sum(1 for a in target.arrivals() if a.partition == 1) == 2  # one attempt each, no more


def test_the_concurrency_limit_is_cut_while_the_target_is_unavailable_and_grows_back(
        target: RecordingTarget) -> None:
    target.fail(503, seconds=1.0)
    target.set_latency(0.002)
    queue = Queue()
    for off in range(400):
        queue.add(Message(off % 4, off, f"k{off % 40}".encode()))
    metrics = Metrics()
    engine = run(config(target, "--threads", "16"), queue, metrics)
    lowest = [16]

    def watch() -> bool:
        lowest[0] = min(lowest[0], engine.limit.allowed())
        return len(queue.outcomes) == 400

    try:
        wait_for(watch, timeout=60, interval=0.01, what="every record delivered")
        wait_for(lambda: engine.limit.allowed() == 16, timeout=10, what="the limit back at --threads")
    finally:
        engine.stop()
    assert lowest[0] <= 4, f"the limit went down to {lowest[0]} only"
    assert set(queue.outcomes.values()) == {"success"}
    assert target.order_violations(strict=True) == []


def test_max_requests_per_second_caps_the_rate(target: RecordingTarget) -> None:
    queue = Queue()
    for off in range(120):
        queue.add(Message(off % 4, off, f"k{off}".encode()))
    engine = run(config(target, "--threads", "32", "--max-requests-per-second", "40"), queue)
    try:
        wait_for(lambda: len(queue.outcomes) == 120, timeout=30, what="every record delivered")
    finally:
        engine.stop()
    starts = sorted(a.start for a in target.arrivals())
    # A token bucket of 40/s with a burst of 40: no one-second window holds more than 40 + 40 requests,
    # and the 120 requests cannot all fit in the first second.
    most = max(sum(1 for s in starts if t <= s < t + 1.0) for t in starts)
    assert most <= 81, most
    assert starts[-1] - starts[0] >= 1.5


def test_https_target_verified_against_a_mounted_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An https target with a certificate from a private CA: delivered when ``SSL_CERT_FILE`` names
    that CA; refused (a failed attempt saying why, nothing delivered) when it does not."""
    from lagpilot.lab.certs import ensure_certs

    certs = ensure_certs(tmp_path / "pki")  # a CA and a serving certificate for 127.0.0.1/localhost
    with RecordingTarget(tls=(str(certs.serving_cert), str(certs.serving_key))) as target:
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
        queue = Queue()
        for off in range(5):
            queue.add(Message(0, off, b"k"))
        engine = run(config(target), queue)
        try:
            wait_for(lambda: len(queue.outcomes) == 5, timeout=20, what="delivered over TLS")
        finally:
            engine.stop()
        assert [a.offset for a in target.arrivals()] == [0, 1, 2, 3, 4]

        monkeypatch.delenv("SSL_CERT_FILE")
        queue = Queue()
        queue.add(Message(0, 9, b"k"))
        metrics = Metrics()
        engine = run(config(target), queue, metrics)
        try:
            wait_for(lambda: metrics.deliveries.labels("retry", "t", "0")._value.get() >= 2,  # type: ignore[attr-defined]
                     timeout=20, what="failed attempts against an unknown CA")
        finally:
            engine.stop()
        assert (0, 9) not in {(a.partition, a.offset) for a in target.arrivals()}


class JsonMessage(Message):
    """A record whose value is a JSON order."""

    def __init__(self, partition: int, offset: int, key: bytes, kind: str) -> None:
        super().__init__(partition, offset, key)
        self.kind = kind

    def value(self) -> bytes:
        return json.dumps({"order": {"type": self.kind, "n": self._o}}).encode()


ROUTES = json.dumps([
    {"name": "users", "match": {"key": {"prefix": "user-"}}, "target": {"url": "{base}/users"}},
    {"name": "refunds", "match": {"json": {"path": "order.type", "equals": "refund"}},
     "target": {"url": "{base}/refunds", "method": "PUT", "headers": {"X-Route-Header": "r"}}},
])


def routes_config(target: RecordingTarget, *extra: str) -> Config:
    base = target.url.rsplit("/", 1)[0]
    return config(target, "--routes", ROUTES.replace("{base}", base), *extra)


def test_a_record_matching_two_routes_is_two_requests_in_route_order_resumed_at_the_failed_one(
        target: RecordingTarget) -> None:
    queue = Queue()
    kinds = ["refund", "sale", "refund", "refund"]
    for off, kind in enumerate(kinds):
        queue.add(JsonMessage(0, off, b"user-1", kind))
    queue.add(JsonMessage(1, 0, b"admin", "refund"))  # only the JSON route
    queue.add(JsonMessage(1, 1, b"admin", "sale"))  # no route: skipped
    target.reject_path("/refunds", status=503, count=3)  # offset 0's second request fails 3 times
    metrics = Metrics()
    engine = run(routes_config(target), queue, metrics)
    try:
        wait_for(lambda: len(queue.outcomes) == 6, timeout=30, what="six records finished")
    finally:
        engine.stop()
    assert queue.outcomes[(1, 1)] == "skipped"
    assert metrics.unmatched._value.get() == 1
    accepted = [(a.partition, a.offset, a.path) for a in target.arrivals() if a.accepted]
    user = [(o, path) for p, o, path in accepted if p == 0]
    assert user == [(0, "/users"), (0, "/refunds"), (1, "/users"), (2, "/users"), (2, "/refunds"),
                    (3, "/users"), (3, "/refunds")], "route order within a record, key order across records"
    failed = [(a.offset, a.path) for a in target.arrivals() if not a.accepted]
    assert failed == [(0, "/refunds")] * 3
    users_of_0 = [a for a in target.arrivals() if a.partition == 0 and a.offset == 0 and a.path == "/users"]
    assert len(users_of_0) == 1, "the retry resumed at the failed request, the delivered one was not re-sent"
    assert [(o, path) for p, o, path in accepted if p == 1] == [(0, "/refunds")]
    refund = next(a for a in target.arrivals() if a.path == "/refunds" and a.accepted)
    assert refund.headers["X-Route-Header"] == "r" and refund.headers["X-Lagpilot-Route"] == "refunds"
    assert "X-Route-Header" not in next(a for a in target.arrivals() if a.path == "/users").headers


def test_a_route_that_keeps_failing_dead_letters_the_record_saying_which_route_and_what_was_done(
        target: RecordingTarget) -> None:
    queue = Queue()
    queue.add(JsonMessage(0, 0, b"user-1", "refund"))
    queue.add(JsonMessage(0, 1, b"user-1", "refund"))
    queue.add(JsonMessage(0, 2, b"nobody", "sale"))  # no route: dead-lettered with --unmatched dead-letter
    target.reject_path("/refunds", status=400, count=1)  # offset 0's refund request is rejected (fatal)
    letters = Letters()
    engine = run(routes_config(target, "--unmatched", "dead-letter", "--dead-letter-topic", "dlq"), queue,
                 dlq=letters)
    try:
        wait_for(lambda: len(queue.outcomes) == 3, timeout=30, what="three records finished")
    finally:
        engine.stop()
    assert queue.outcomes == {(0, 0): "dead_letter", (0, 1): "success", (0, 2): "dead_letter"}
    by_offset = dict(letters.written)
    assert by_offset[0]["reason"] == "rejected" and by_offset[0]["status"] == "400"
    assert by_offset[0]["route"] == "refunds" and by_offset[0]["routes-delivered"] == "users"
    assert by_offset[2]["reason"] == "unmatched" and by_offset[2]["error"] == "the record matched no route"
    assert [(a.offset, a.path) for a in target.arrivals() if a.accepted] == [(0, "/users"), (1, "/users"),
                                                                             (1, "/refunds")]
