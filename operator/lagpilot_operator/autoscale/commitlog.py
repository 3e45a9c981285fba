"""Every group's committed offsets on one cluster, mirrored from `__consumer_offsets` (as Burrow does).

The brokers write each offset commit to that compacted topic; one consumer reading it serves the committed
offsets of every ConsumerGroup on the connection, so a lag round costs the same Fetch requests for 1 or
1 000 groups instead of an OffsetFetch (and a Consumer with its own librdkafka threads) per group. A round
first reads the topic's log-end offsets, then waits until the mirror has read that far, so a commit the
brokers acknowledged before the round began is always in it.

`autoscale.commits.decode_commit` is the pure part (the record format); `CommitLog` is the I/O shell, one
class with one job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from lagpilot_operator.autoscale.commits import OFFSETS_TOPIC, decode_commit

log = logging.getLogger("lagpilot.operator.lag")


class CommitLog:
    """A background reader of `__consumer_offsets` holding the latest commit of every (group, topic,
    partition) on one connection. Thread-safe; `close` stops it."""

    def __init__(self, conf: Mapping[str, Any], poll_timeout: float = 0.5) -> None:
        from confluent_kafka import Consumer

        # group.id is required by librdkafka's consumer; this one never joins, subscribes or commits.
        self._consumer = Consumer({**conf, "group.id": "lagpilot-operator-commit-log",
                                   "enable.auto.commit": False, "enable.auto.offset.store": False,
                                   "enable.partition.eof": False, "isolation.level": "read_committed",
                                   "fetch.wait.max.ms": 500})
        self._offsets: dict[tuple[str, str, int], int] = {}
        self._positions: dict[int, int] = {}  # next offset to read per __consumer_offsets partition
        self._assigned: set[int] = set()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._poll_timeout = poll_timeout
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="commit-log", daemon=True)
        self._thread.start()

    def assign(self, partitions: Iterable[int]) -> None:
        """Read these partitions of `__consumer_offsets` from their beginning (new ones only)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        with self._lock:
            new = sorted(set(partitions) - self._assigned)
            if not new:
                return
            self._assigned.update(new)
            for p in new:
                self._positions.setdefault(p, 0)
        self._consumer.incremental_assign([TopicPartition(OFFSETS_TOPIC, p, OFFSET_BEGINNING) for p in new])

    def caught_up(self, ends: Mapping[int, int], timeout: float) -> bool:
        """Wait until every partition in `ends` has been read up to its end offset; False on timeout (the
        round then uses what was read, and says so)."""
        self.assign(ends)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                behind = [p for p, end in ends.items() if self._positions.get(p, 0) < end]
                if not behind:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._lock.wait(min(left, 0.2))

    def committed(self, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        with self._lock:
            return {(t, p): self._offsets.get((group, t, p)) for t, p in partitions}

    @property
    def error(self) -> str | None:
        """The last fatal read error (e.g. not authorized to read __consumer_offsets), else None."""
        return self._error

    def _run(self) -> None:
        from confluent_kafka import KafkaError, TopicPartition

        while not self._stop.is_set():
            if not self._assigned:
                self._stop.wait(0.1)
                continue
            try:
                messages = self._consumer.consume(1000, timeout=self._poll_timeout)
            except Exception as exc:  # a closed consumer at shutdown
                if not self._stop.is_set():
                    log.warning("commit log read failed: %s", exc)
                    self._stop.wait(1.0)
                continue
            tracked = [TopicPartition(OFFSETS_TOPIC, p) for p in sorted(self._assigned)]
            try:
                # The consumer's position also moves past what is never delivered (transaction markers).
                positions = {tp.partition: tp.offset for tp in self._consumer.position(tracked) if tp.offset >= 0}
            except Exception:
                positions = {}
            with self._lock:
                for part, off in positions.items():
                    self._positions[part] = max(self._positions.get(part, 0), off)
                for m in messages:
                    err = m.error()
                    if err is not None:
                        if err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED):
                            self._error = err.str()
                        continue
                    where, offset = m.partition(), m.offset()
                    if where is None or offset is None:
                        continue
                    commit = decode_commit(m.key(), m.value())
                    if commit is not None:
                        key = (commit.group, commit.topic, commit.partition)
                        if commit.offset is None:
                            self._offsets.pop(key, None)
                        else:
                            self._offsets[key] = commit.offset
                    self._positions[where] = max(self._positions.get(where, 0), offset + 1)
                self._lock.notify_all()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()
