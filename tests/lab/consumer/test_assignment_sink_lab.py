"""The AssignmentSink contract the k8s partition source codes against, exercised in-process against the
real broker: release before grant, commits on release, on_applied reports, fence."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lagpilot.protocol import PartitionId
from lagpilot.testing.consumer import committed, produce
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for
from lagpilot_consumer.config import parse
from lagpilot_consumer.runtime import ConsumerRuntime
from lagpilot_consumer.sources.base import AssignmentSink, PartitionSource

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]


class ManualSource:
    """A partition source driven by the test."""

    subscribe = False

    def __init__(self) -> None:
        self.sink: AssignmentSink | None = None
        self.reports: list[tuple[int, frozenset[PartitionId]]] = []
        self.started = threading.Event()

    def start(self, sink: AssignmentSink) -> None:
        self.sink = sink
        sink.add_applied_listener(lambda e, owned: self.reports.append((e, owned)))
        self.started.set()

    def stop(self) -> None:
        pass

    def ready(self) -> bool:
        return bool(self.reports)


def parts(topic: str, *numbers: int) -> frozenset[PartitionId]:
    return frozenset(PartitionId(topic, n) for n in numbers)


def start_runtime(bootstrap: str, topic: str, group: str, url: str, *extra: str
                  ) -> tuple[ConsumerRuntime, ManualSource, threading.Thread]:
    """A real ConsumerRuntime (k8s assignment) in this process, fed by a ManualSource, its poll loop running."""
    cfg = parse(["--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group, "--target-url", url,
                 "--assignment", "k8s", "--namespace", "n", "--pod-name", "w-0", "--assignment-configmap", "cm",
                 *extra], {})
    source = ManualSource()
    rt = ConsumerRuntime(cfg, source)
    t = threading.Thread(target=rt.run, daemon=True)
    t.start()
    source.started.wait(30)
    return rt, source, t


def test_set_desired_releases_commits_assigns_and_reports(bootstrap: str,
                                                          topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3, prefix="c-sink")
    group = f"g-{topic}"
    produce(bootstrap, topic, [(p, f"k{i}".encode(), f"k{i}:0".encode()) for i in range(300) for p in (i % 3,)])
    with RecordingTarget() as target:
        cfg = parse(["--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group, "--target-url",
                     target.url, "--assignment", "k8s", "--namespace", "n", "--pod-name", "w-0",
                     "--assignment-configmap", "cm", "--commit-interval-ms", "100000", "--drain-seconds", "10"],
                    {})
        source = ManualSource()
        assert isinstance(source, PartitionSource)
        rt = ConsumerRuntime(cfg, source)
        assert isinstance(rt, AssignmentSink)
        t = threading.Thread(target=rt.run, daemon=True)
        t.start()
        try:
            source.started.wait(30)
            rt.set_desired(parts(topic, 0, 1), 7)
            wait_for(lambda: (7, parts(topic, 0, 1)) in source.reports)
            assert rt.applied() == (7, parts(topic, 0, 1))
            wait_for(lambda: len(target.accepted_records()) == 200)
            assert {p for p, _ in target.accepted_records()} == {0, 1}
            # move: drop 0, add 2 -> partition 0 is drained and committed before the report
            rt.set_desired(parts(topic, 1, 2), 8)
            wait_for(lambda: (8, parts(topic, 1, 2)) in source.reports)
            assert committed(bootstrap, group, topic, 3).get(0) == 100
            wait_for(lambda: len(target.accepted_records()) == 300)
            # fence: everything released and committed, reported as owning nothing at the last epoch
            rt.fence()
            wait_for(lambda: source.reports[-1] == (8, frozenset()))
            assert committed(bootstrap, group, topic, 3) == {0: 100, 1: 100, 2: 100}
            produce(bootstrap, topic, [(0, b"late", b"late:0")])
            time.sleep(1.5)
            assert len(target.accepted_records()) == 300, "fenced worker kept delivering"
            # a new grant lifts the fence and resumes from the committed offset
            rt.set_desired(parts(topic, 0), 9)
            wait_for(lambda: (0, 100) in target.accepted_records())
            assert source.reports[-1] == (9, parts(topic, 0))
            assert len(target.accepted_records()) == 301
        finally:
            rt.request_stop()
            t.join(60)
        assert source.reports[-1] == (9, frozenset())
        assert committed(bootstrap, group, topic, 3) == {0: 101, 1: 100, 2: 100}


def test_fence_cuts_a_drain_short_and_stops_every_partition(bootstrap: str,
                                                            topic_factory: Callable[..., str]) -> None:
    """A worker draining a released partition (slow target, long drain) is fenced: it stops at once on every
    partition, draining or not; no delivery starts after the fence, the one on the wire ends, and what
    was delivered is committed."""
    topic = topic_factory(partitions=2, prefix="c-fence")
    group = f"g-{topic}"
    produce(bootstrap, topic, [(p, f"k{i}".encode(), f"k{i}:0".encode()) for i in range(200) for p in (i % 2,)])
    with RecordingTarget(latency_s=0.2) as target:
        rt, source, t = start_runtime(bootstrap, topic, group, target.url, "--threads", "1", "--ordering",
                                      "partition", "--drain-seconds", "120", "--timeout-seconds", "5")
        try:
            rt.set_desired(parts(topic, 0, 1), 1)
            wait_for(lambda: len({p for p, _ in target.accepted_records()}) == 2)
            rt.set_desired(parts(topic, 1), 2)  # partition 0 drains (100 records at 0.2 s: far beyond 2 s)
            time.sleep(2)
            assert source.reports[-1] == (1, parts(topic, 0, 1)), "drain finished early: the test proves nothing"
            rt.fence()
            fenced_at = time.monotonic()
            wait_for(lambda: source.reports[-1][1] == frozenset(), timeout=10)
            stopped_after = time.monotonic() - fenced_at
            time.sleep(1)
            late = [a for a in target.arrivals() if a.start > fenced_at + 0.05]
            assert late == [], f"{len(late)} deliveries started after the fence"
            assert stopped_after < 5, f"fence took {stopped_after:.1f} s: the drain deadline was kept"
            done = committed(bootstrap, group, topic, 2)
            delivered = target.accepted_records()
            for p in (0, 1):
                assert done.get(p, 0) == 1 + max(o for q, o in delivered if q == p)
        finally:
            rt.request_stop()
            t.join(60)


def test_fence_stops_deliveries_at_once_while_the_poll_loop_is_blocked(tmp_path: Path) -> None:
    """Issue 14 item 4: the fence acts from the caller's thread. Here the poll loop is stuck in a
    synchronous commit (the broker is frozen, so the group coordinator does not answer) while queued records
    of another partition are being delivered; fence() stops those deliveries at once -- no request starts
    after it -- instead of when the poll loop comes back."""
    import os
    import signal

    from lagpilot.lab.kafka import create_topic, start_kafka, stop_kafka

    broker = start_kafka(tmp_path / "kafka", heap="512m")
    try:
        bootstrap = broker.bootstrap_servers
        topic = "c-fence-blocked"
        create_topic(bootstrap, topic, 2)
        produce(bootstrap, topic, [(p, f"k{p}".encode(), f"k{p}:{i}".encode()) for p in (0, 1) for i in range(150)])
        with RecordingTarget(latency_s=0.1) as target:
            rt, source, t = start_runtime(bootstrap, topic, "g-blocked", target.url, "--threads", "2",
                                          "--ordering", "partition", "--drain-seconds", "1", "--timeout-seconds",
                                          "5", "--commit-interval-ms", "100000")
            try:
                rt.set_desired(parts(topic, 0, 1), 1)
                # A fresh broker: its group coordinator may still be loading on a loaded machine.
                wait_for(lambda: len({p for p, _ in target.accepted_records()}) == 2, timeout=150)
                os.kill(broker.pid, signal.SIGSTOP)  # the coordinator stops answering
                rt.set_desired(parts(topic, 1), 2)  # release 0: drain 1 s, then a sync commit that hangs
                time.sleep(3)
                assert source.reports[-1][0] == 1, "the release finished: the poll loop is not blocked"
                before = len(target.arrivals())
                rt.fence()
                fenced_at = time.monotonic()
                time.sleep(3)
                late = [a for a in target.arrivals() if a.start > fenced_at + 0.05]
                assert len(target.arrivals()) > before - 1
                assert late == [], f"{len(late)} deliveries started after the fence"
            finally:
                os.kill(broker.pid, signal.SIGCONT)
                rt.request_stop()
                t.join(60)
    finally:
        stop_kafka(broker, remove=True)
