"""Issue 13, the delivery engine against the real lab broker and a real local target: a record waiting
for its retry holds no request slot (other keys flow past two keys retrying for ever with two slots), an
outage of the target dead-letters nothing, and the offsets kept behind a record that keeps failing are
bounded (its partition stops fetching, the others go on); a record whose delivery crashes is retried in
its key's order, then dead-lettered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from lagpilot.testing.consumer import ConsumerProcess, committed, keyed_records, produce, read_all
from lagpilot.testing.rawproduce import produce_raw
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


def args(bootstrap: str, topic: str, target: RecordingTarget, *extra: str) -> list[str]:
    return ["--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", f"g-{topic}", "--target-url",
            target.url, "--commit-interval-ms", "200", "--log-format", "json", *extra]


def first_values_in_order(target: RecordingTarget) -> dict[bytes, list[int]]:
    seen: set[tuple[int, int]] = set()
    out: dict[bytes, list[int]] = {}
    for a in target.accepted():
        if (a.partition, a.offset) not in seen:
            seen.add((a.partition, a.offset))
            key, _, seq = a.body.decode().partition(":")
            out.setdefault(key.encode(), []).append(int(seq))
    return out


def test_two_keys_retrying_for_ever_do_not_hold_the_two_slots(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    """``--threads 2`` and two keys answered 503 with Retry-After: 600. With the backoff slept on a
    delivery thread (before the engine), 0 of the other records arrived in 30 s; now every one does,
    in key order, while the two wait on their timers (one attempt each so far)."""
    topic = topic_factory(partitions=3, prefix="e-slots")
    stuck = [(0, b"stuck-a", b"stuck-a:0"), (1, b"stuck-b", b"stuck-b:0")]
    others = keyed_records(300, 3, 30)
    produce(bootstrap, topic, stuck + others)
    target.reject_keys([b"stuck-a", b"stuck-b"], status=503, retry_after=600)
    cp = run_consumer(*args(bootstrap, topic, target, "--partitions", "0-2", "--threads", "2"))
    cp.wait_ready()
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 300, timeout=90), cp.tail()
    assert sorted(len(v) for v in first_values_in_order(target).values()) == [10] * 30
    assert all(v == list(range(10)) for v in first_values_in_order(target).values())
    tried = [a for a in target.arrivals() if a.key in (b"stuck-a", b"stuck-b")]
    assert sorted(a.key for a in tried) == [b"stuck-a", b"stuck-b"], "each waits on its timer, 1 attempt"
    wait_for(lambda: cp.metric("lagpilot_retries_parked") == 2, timeout=10, what="two records parked")
    assert cp.metric("lagpilot_deliveries_total", outcome="dead_letter") == 0
    # The commit does not pass a record that is not done (partitions 0 and 1 start with one).
    wait_for(lambda: committed(bootstrap, f"g-{topic}", topic, 3).get(2) == 100, timeout=20,
             what="partition 2 committed to its end")
    offsets = committed(bootstrap, f"g-{topic}", topic, 3)
    assert offsets.get(0, 0) == 0 and offsets.get(1, 0) == 0
    assert cp.terminate() == 0


@pytest.mark.parametrize("outage", ["down", "503"])
def test_a_5s_target_outage_under_load_dead_letters_nothing(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess], outage: str) -> None:
    """Default retry settings (5 attempts from a 100 ms backoff: about 3 s of retrying) and a dead-letter
    topic. The target goes away for 5 s under load (its port closed: connection refused; or 503 to
    everything). Answers that say "unavailable" do not use up attempts: nothing is dead-lettered, every
    record arrives in key order, and the concurrency limit was cut while it lasted."""
    topic = topic_factory(partitions=6, prefix=f"e-out-{outage}")
    dlq = topic_factory(partitions=1, prefix="e-out-dead")
    produce(bootstrap, topic, keyed_records(4000, 6, 60))
    target.set_latency(0.005)
    cp = run_consumer(*args(bootstrap, topic, target, "--partitions", "0-5", "--threads", "16",
                            "--dead-letter-topic", dlq))
    cp.wait_ready()
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 500, timeout=60), cp.tail()
    if outage == "down":
        target.stop()
        wait_for(lambda: cp.metric("lagpilot_deliveries_total", outcome="retry") >= 5, timeout=20,
                 what="failed attempts while the target is down")
        time.sleep(5)
        target.start()
    else:
        target.fail(503, seconds=5.0)
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 4000, timeout=180), cp.tail()
    assert cp.metric("lagpilot_deliveries_total", outcome="retry") > 0, "the outage proved nothing"
    assert cp.metric("lagpilot_deliveries_total", outcome="dead_letter") == 0
    assert read_all(bootstrap, dlq, 1, expect=1, timeout=3) == []
    per_key = first_values_in_order(target)
    assert all(v == list(range(len(v))) for v in per_key.values()) and sum(map(len, per_key.values())) == 4000
    assert cp.terminate() == 0
    assert sum(committed(bootstrap, f"g-{topic}", topic, 6).values()) == 4000


def test_offsets_behind_a_stuck_record_are_bounded_and_other_partitions_go_on(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    """No dead-letter topic and a record the target rejects (400): it is retried at the max backoff for
    ever, so nothing of its partition after it can be committed. Those offsets are kept in memory; at
    ``--max-outstanding-per-partition`` the partition stops fetching (gauge and metric say so) while the
    other partition is read to its end. Once the record goes through, everything is committed."""
    topic = topic_factory(partitions=2, prefix="e-held")
    p0 = [(0, b"stuck", b"stuck:0")] + [(0, f"k{i % 50}".encode(), f"k{i % 50}:{i // 50}".encode())
                                         for i in range(5000)]
    p1 = [(1, f"j{i % 50}".encode(), f"j{i % 50}:{i // 50}".encode()) for i in range(3000)]
    produce(bootstrap, topic, p0 + p1)
    target.reject_keys([b"stuck"], status=400)
    cp = run_consumer(*args(bootstrap, topic, target, "--partitions", "0-1", "--threads", "8",
                            "--max-outstanding-per-partition", "300", "--max-backoff-ms", "1000",
                            "--initial-backoff-ms", "100"))
    cp.wait_ready()
    assert target.wait_for(lambda t: sum(1 for p, _ in t.accepted_records() if p == 1) >= 3000, timeout=90), \
        cp.tail()
    wait_for(lambda: cp.metric("lagpilot_partition_fetch_held", partition="0") == 1, timeout=20,
             what="partition 0 held")
    held_at = sum(1 for p, _ in target.accepted_records() if p == 0)
    outstanding = cp.metric("lagpilot_outstanding_offsets", partition="0")
    # Bounded: the limit plus what was already fetched when it was reached (one poll batch and
    # librdkafka's queue), far below the 5 000 records behind the stuck one.
    assert 300 <= outstanding < 2500, outstanding
    assert held_at < 2500
    assert committed(bootstrap, f"g-{topic}", topic, 2).get(0, 0) == 0
    target.forgive_keys([b"stuck"])
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 8001, timeout=120), cp.tail()
    wait_for(lambda: committed(bootstrap, f"g-{topic}", topic, 2) == {0: 5001, 1: 3000}, timeout=30,
             what="everything committed")
    assert cp.metric("lagpilot_partition_fetch_held", partition="0") == 0
    assert target.order_violations(strict=True) == []
    assert cp.terminate() == 0


READ_HEADERS = """
import sys
from confluent_kafka import Consumer
from lagpilot_consumer.engine import HeadersOnce, UnreadableHeaders
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "headers-" + sys.argv[2],
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([sys.argv[2]])
msgs = []
while len(msgs) < int(sys.argv[3]):
    m = c.poll(5)
    if m is not None and m.error() is None:
        msgs.append(m)
unreadable = 0
for m in msgs:
    try:
        HeadersOnce(m).headers()
    except UnreadableHeaders:
        unreadable += 1
print("unreadable", unreadable, flush=True)
c.close()
"""


def test_unreadable_kafka_headers_raise_where_they_are_read_every_time(
        bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """confluent-kafka returns the header list of a non-UTF-8 header name with the decode error still set.
    Read at a plain ``msg.headers()`` call site, the error escapes once CPython 3.11 has specialised that
    site (after a few calls) and surfaces at some later, unrelated call; the list it returned crashes the
    interpreter when read. Through ``HeadersOnce`` (a checked call) every one of 60 such records raises
    ``UnreadableHeaders`` where it is read, and the process ends normally. With ``HeadersOnce`` calling
    ``self._msg.headers()`` directly this fails: the SystemError escapes its ``try``."""
    topic = topic_factory(partitions=1, prefix="e-headers")
    produce_raw(bootstrap, topic, [(0, b"k", f"v{i}".encode(), [(b"\xff\xfe-bad", b"v")]) for i in range(60)])
    run = subprocess.run([sys.executable, "-c", READ_HEADERS, bootstrap, topic, "60"], capture_output=True,
                         text=True, timeout=120)
    assert (run.returncode, run.stdout.strip()) == (0, "unreadable 60"), run.stderr[-2000:]


def test_a_delivery_that_crashes_is_retried_in_key_order_then_dead_lettered(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    """A record written by a client that allows any bytes in a header name (here librdkafka called
    directly, as Go clients do): confluent-kafka raises UnicodeDecodeError from its ``headers()``, so every
    delivery of it crashes. Before the engine, such a crash completed the key's lane: the next record of
    the key went first and the commit froze. Without a dead-letter topic it is retried for ever and
    nothing of its key overtakes it, while other keys flow; with one it is dead-lettered after
    ``--max-attempts``, saying why, and then its key goes on and everything is committed."""
    topic = topic_factory(partitions=1, prefix="e-crash")
    dlq = topic_factory(partitions=1, prefix="e-crash-dead")
    produce_raw(bootstrap, topic, [
        (0, b"k", b"k:0", []),
        (0, b"k", b"k:1", [(b"\xff\xfe-latin1-name", b"v")]),
        (0, b"k", b"k:2", [(b"ok", b"v")]),
        *[(0, f"o{i % 5}".encode(), f"o{i % 5}:{i // 5}".encode(), []) for i in range(50)],
    ])
    assert read_all(bootstrap, topic, 1, expect=53, timeout=30)[-1].offset() == 52
    common = ("--partitions", "0", "--threads", "4", "--initial-backoff-ms", "50", "--max-backoff-ms", "200")
    cp = run_consumer(*args(bootstrap, topic, target, *common, "--max-attempts", "3"))
    cp.wait_ready()
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 51, timeout=60), cp.tail()
    wait_for(lambda: cp.tail(10**7).count("delivery crashed; retrying the record") >= 6, timeout=30,
             what="the crashing record retried past --max-attempts (no dead-letter topic)")
    assert (0, 2) not in target.accepted_records(), "k:2 overtook the crashing k:1"
    assert first_values_in_order(target)[b"k"] == [0]
    assert committed(bootstrap, f"g-{topic}", topic, 1).get(0, 0) == 1, "committed past a record not done"
    assert cp.terminate() == 0

    cp = run_consumer(*args(bootstrap, topic, target, *common, "--max-attempts", "3",
                            "--dead-letter-topic", dlq))
    cp.wait_ready()
    assert target.wait_for(lambda t: (0, 2) in t.accepted_records(), timeout=60), cp.tail()
    [dead] = read_all(bootstrap, dlq, 1, expect=1, timeout=20)
    why = {k: (v or b"").decode() for k, v in dead.headers()}
    assert (dead.key(), dead.value()) == (b"k", b"k:1")
    assert why["lagpilot-original-offset"] == "1" and why["lagpilot-attempts"] == "3", why
    assert why["lagpilot-error"].startswith("UnreadableHeaders: Kafka headers not readable (UnicodeDecodeError"), why
    assert first_values_in_order(target)[b"k"] == [0, 2]
    wait_for(lambda: committed(bootstrap, f"g-{topic}", topic, 1).get(0) == 53, timeout=20,
             what="everything committed")
    assert cp.terminate() == 0


@pytest.mark.parametrize("mode", ["cloudevents-binary", "cloudevents-structured"])
def test_records_arrive_as_cloudevents_with_their_trace_context(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess], mode: str) -> None:
    """Issue 19 item 3: Kafka records with ``ce_*`` headers (the Kafka protocol binding) and a W3C
    ``traceparent`` arrive as CloudEvents the CloudEvents SDK's HTTP parser accepts, with ``traceparent``
    as a real header and the idempotency key on every request."""
    from cloudevents.core.bindings.http import HTTPMessage, from_http
    from cloudevents.core.formats.json import JSONFormat

    topic = topic_factory(partitions=2, prefix="e-ce")
    trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    produce(bootstrap, topic, [(i % 2, f"k{i}".encode(), json.dumps({"n": i}).encode()) for i in range(20)],
            headers=[("ce_type", b"com.shop.order"), ("ce_source", b"/shop"), ("content-type", b"application/json"),
                     ("traceparent", trace)])
    cp = run_consumer(*args(bootstrap, topic, target, "--partitions", "0-1", "--format", mode,
                            "--idempotency-header", "Idempotency-Key"))
    cp.wait_ready()
    assert target.wait_for(lambda t: len(t.accepted_records()) >= 20, timeout=60), cp.tail()
    seen = set()
    for a in target.accepted():
        event = from_http(HTTPMessage(a.headers, a.body), JSONFormat())
        attrs = event.get_attributes()
        assert (attrs["type"], attrs["source"]) == ("com.shop.order", "/shop")
        assert attrs["id"] == f"{topic}/{a.partition}/{a.offset}"
        assert a.headers["traceparent"] == trace.decode()
        assert a.headers["Idempotency-Key"] == attrs["id"]
        seen.add(event.get_data()["n"])  # type: ignore[index]
    assert seen == set(range(20))
    assert cp.terminate() == 0
