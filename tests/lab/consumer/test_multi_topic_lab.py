"""One worker process owning partitions of several topics, against the real lab broker: records of every
topic arrive, named by their own topic, in key order per (topic, partition), and each topic's commits
reach its end. A topic that is missing from the start, or deleted while the worker owns it, does not stop
the worker nor its other topics, and does not hold up its release."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from lagpilot.testing.consumer import ConsumerProcess, committed, end_offsets, keyed_records, produce
from lagpilot.testing.history import Produced, check_history
from lagpilot.testing.target import RecordingTarget

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


def worker_args(bootstrap: str, topics: str, partitions: str, group: str, target: RecordingTarget) -> list[str]:
    return ["--bootstrap-servers", bootstrap, "--topic", topics, "--partitions", partitions, "--group-id", group,
            "--target-url", target.url, "--commit-interval-ms", "200", "--log-format", "json", "--threads", "8"]


def produced_log(bootstrap: str, topic: str, partitions: int, since: dict[int, int] | None = None) -> list[Produced]:
    """Every record of ``topic`` from ``since`` (default: the beginning) to its end, for the history
    checker (keys are not needed by the loss check, so none are given)."""
    ends = end_offsets(bootstrap, topic, partitions)
    start = since or {}
    return [Produced(p, o, None, topic) for p in range(partitions) for o in range(start.get(p, 0), ends[p])]


def test_one_worker_delivers_two_topics_in_key_order_per_topic_partition(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    t1, t2 = topic_factory(partitions=2, prefix="mt-a"), topic_factory(partitions=1, prefix="mt-b")
    # The same 80 keys in both topics: per-key order must hold per (topic, partition), not across them.
    assert produce(bootstrap, t1, keyed_records(3000, 2, 80)) == 3000
    assert produce(bootstrap, t2, keyed_records(1500, 1, 80)) == 1500
    group = f"g-{t1}"
    cp = run_consumer(*worker_args(bootstrap, f"{t1},{t2}", f"{t1}:0,{t1}:1,{t2}:0", group, target))
    cp.wait_ready()
    expected = {(t1, p, o) for p, end in end_offsets(bootstrap, t1, 2).items() for o in range(end)}
    expected |= {(t2, 0, o) for o in range(1500)}
    assert target.wait_for(lambda t: expected <= t.accepted_by_topic(), timeout=180), \
        f"{len(expected - target.accepted_by_topic())} records missing\n{cp.tail()}"
    assert target.accepted_by_topic() == expected  # nothing of another topic, every topic named right
    verdict = check_history(target.arrivals(), produced_log(bootstrap, t1, 2) + produced_log(bootstrap, t2, 1))
    assert verdict.ok, verdict.details()
    assert target.order_violations(strict=True) == []
    # Values say key:seq: each (topic, key)'s sequence arrives complete and in order.
    seqs: dict[tuple[str, str], list[int]] = {}
    for a in sorted(target.accepted(), key=lambda a: a.start):
        key, _, seq = a.body.decode().partition(":")
        seqs.setdefault((a.topic, key), []).append(int(seq))
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert {t for t, _ in seqs} == {t1, t2} and sum(map(len, seqs.values())) == 4500
    assert cp.metric("lagpilot_deliveries_total", outcome="success", topic=t1) == 3000
    assert cp.metric("lagpilot_deliveries_total", outcome="success", topic=t2, partition="0") == 1500
    assert cp.metric("lagpilot_records_consumed_total", topic=t2) == 1500
    assert cp.metric("lagpilot_assigned_partitions") == 3
    assert cp.terminate() == 0
    assert committed(bootstrap, group, t1, 2) == end_offsets(bootstrap, t1, 2)
    assert committed(bootstrap, group, t2, 1) == {0: 1500}


def test_a_deleted_or_missing_topic_does_not_stop_the_others(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    doomed, kept = topic_factory(partitions=1, prefix="mt-doomed"), topic_factory(partitions=1, prefix="mt-kept")
    missing = f"mt-missing-{kept[-10:]}"  # never created
    produce(bootstrap, doomed, keyed_records(200, 1, 20))
    produce(bootstrap, kept, keyed_records(200, 1, 20))
    group = f"g-{kept}"
    cp = run_consumer(*worker_args(bootstrap, f"{doomed},{kept},{missing}", f"{doomed}:0,{kept}:0,{missing}:0",
                                   group, target))
    cp.wait_ready()
    assert target.wait_for(lambda t: len(t.accepted_by_topic()) >= 400, timeout=120), cp.tail()

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics([doomed], operation_timeout=30).values():
        future.result()
    time.sleep(3)  # the worker's fetcher and commits meet the deleted topic
    produce(bootstrap, kept, keyed_records(300, 1, 20))
    after = {(kept, 0, o) for o in range(200, 500)}
    assert target.wait_for(lambda t: after <= t.accepted_by_topic(), timeout=120), \
        f"{len(after - target.accepted_by_topic())} records of {kept} missing after the deletion\n{cp.tail()}"
    assert target.wait_for(lambda t: committed(bootstrap, group, kept, 1) == {0: 500}, timeout=60, interval=1), \
        f"{kept} committed {committed(bootstrap, group, kept, 1)}\n{cp.tail()}"
    assert cp.proc.poll() is None and cp.get("/healthz")[0] == 200, cp.tail()
    assert {a.topic for a in target.accepted()} == {doomed, kept}
    # Stopping releases every partition, the deleted topic's too: its failing final commit is not retried
    # (RELEASE_COMMIT_GRACE, 10 s, would be spent on it otherwise).
    began = time.monotonic()
    assert cp.terminate(timeout=60) == 0, cp.tail()
    assert time.monotonic() - began < 8.0, cp.tail()
    assert committed(bootstrap, group, kept, 1) == {0: 500}
