"""A release's final commit must land, or the next owner delivers again what this worker delivered since
its last commit. The fault is real: while another member is in the consumer group, the broker refuses
the worker's commits (UNKNOWN_MEMBER_ID; workers commit without a membership). Here that member is there
the whole time the worker delivers and for a while after it was asked to stop, then leaves: the worker's
final commit is tried again until it lands, so the committed offset covers every delivered record."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer

from lagpilot.testing.consumer import ConsumerProcess, committed, produce
from lagpilot.testing.target import RecordingTarget

pytestmark = pytest.mark.lab

RECORDS = 40


def test_a_failing_final_commit_is_retried_until_it_lands(bootstrap: str, topic_factory: Any, target: RecordingTarget,
                                                          run_consumer: Callable[..., ConsumerProcess]) -> None:
    topic = topic_factory(partitions=1)
    group = f"g-{topic}"
    interloper = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    interloper.subscribe([topic])
    deadline = time.monotonic() + 60
    while not interloper.assignment():  # a member now: the group refuses commits without one
        interloper.poll(0.2)
        assert time.monotonic() < deadline, "the interloper never joined"
    try:
        cp = run_consumer("--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group,
                          "--target-url", target.url, "--assignment", "static", "--partitions", "0",
                          "--commit-interval-ms", "200", "--http-port", "0")
        produce(bootstrap, topic, [(0, f"k{i % 3}".encode(), f"v{i}".encode()) for i in range(RECORDS)])
        target.wait_for(lambda t: len(t.accepted_records()) >= RECORDS, timeout=60)
        assert committed(bootstrap, group, topic, 1) == {}  # every commit so far was refused
        cp.proc.send_signal(15)  # SIGTERM: release everything, final commit (refused while the member stays)
        time.sleep(2.5)
        assert cp.proc.poll() is None, "the worker let the partition go without its final commit"
    finally:
        interloper.close()
    assert cp.proc.wait(60) == 0
    assert committed(bootstrap, group, topic, 1) == {0: RECORDS}
    assert "final commit of a released partition failed: trying again" in cp.tail(20000)
