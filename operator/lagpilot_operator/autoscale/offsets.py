"""Lag straight from the brokers: committed offsets of a group and log-start/log-end of every partition.

`compute_lag` is the pure arithmetic; `LagReader` is the thin I/O shell around the operator's shared
clients (`lagpilot_operator.brokers`). One poll is always the same four calls (describe_topics,
list_offsets earliest, list_offsets latest, committed), whatever the partition count: librdkafka batches
each call per leader, so the broker sees one Metadata, one ListOffsets per spec and leader, and one
OffsetFetch to the group coordinator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from lagpilot_operator.brokers import admin_client, offsets_client

ResetPolicy = Literal["earliest", "latest"]
T = TypeVar("T")

# librdkafka's "no committed offset" sentinel (OFFSET_INVALID) and the other logical offsets (< 0).
_NO_OFFSET = -1001

# The client calls one poll issues; fixed by construction (see module docstring).
REQUESTS_PER_POLL = 4

log = logging.getLogger(__name__)
# librdkafka's log lines arrive here; silent unless the application configures logging (no stderr spam).
logging.getLogger("lagpilot.kafka").addHandler(logging.NullHandler())


class KafkaUnavailable(RuntimeError):
    """The brokers could not be reached or did not answer in time."""


class TopicNotFound(LookupError):
    """A named topic does not exist on the cluster."""


@dataclass(frozen=True)
class PartitionLag:
    """One partition's offsets and the lag derived from them (see `compute_lag` for the rules)."""

    topic: str
    partition: int
    log_start: int
    log_end: int
    committed: int | None  # as stored by the group; None when the group never committed here
    lag: int
    no_commit: bool = False  # lag follows the reset policy, not a committed offset
    behind_log_start: bool = False  # committed < log-start: records were deleted before being consumed
    ahead_of_log_end: bool = False  # committed > log-end (truncated log / recreated topic); lag clamped to 0

    @property
    def position(self) -> int:
        """The offset the group will read next (committed, or where the reset policy puts it)."""
        return self.log_end - self.lag

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "partition": self.partition, "logStart": self.log_start,
            "logEnd": self.log_end, "committed": self.committed, "lag": self.lag,
            "noCommit": self.no_commit, "behindLogStart": self.behind_log_start,
            "aheadOfLogEnd": self.ahead_of_log_end,
        }


def compute_lag(topic: str, partition: int, log_start: int, log_end: int, committed: int | None,
                reset: ResetPolicy = "earliest") -> PartitionLag:
    """Lag = log-end - committed, with the corner cases made explicit rather than negative or huge.

    - no committed offset: the consumer will start where the reset policy says, so lag is
      log-end - log-start for `earliest` and 0 for `latest` (flagged `no_commit`);
    - committed below log-start (retention deleted unread records): the consumer resumes at log-start,
      so lag counts from there (flagged `behind_log_start`, a warning: those records are gone);
    - committed beyond log-end: nothing to read, lag 0 (flagged `ahead_of_log_end`).
    """
    if log_start < 0 or log_end < log_start:
        raise ValueError(f"invalid log range {log_start}..{log_end} for {topic}[{partition}]")
    if committed is None or committed < 0:
        lag = log_end - log_start if reset == "earliest" else 0
        return PartitionLag(topic, partition, log_start, log_end, None, lag, no_commit=True)
    if committed < log_start:
        return PartitionLag(topic, partition, log_start, log_end, committed, log_end - log_start,
                            behind_log_start=True)
    if committed > log_end:
        return PartitionLag(topic, partition, log_start, log_end, committed, 0, ahead_of_log_end=True)
    return PartitionLag(topic, partition, log_start, log_end, committed, log_end - committed)


@dataclass(frozen=True)
class LagSnapshot:
    """Every partition of the group's topics at one instant (`taken_at`, seconds since the epoch)."""

    group: str
    taken_at: float
    partitions: tuple[PartitionLag, ...]
    requests: int = REQUESTS_PER_POLL  # admin calls this snapshot cost
    read_seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def max_partition(self) -> int:
        return max((p.lag for p in self.partitions), default=0)

    @property
    def warnings(self) -> list[str]:
        """Human-readable warning conditions (records lost to retention, offsets past log end)."""
        out = []
        for p in self.partitions:
            if p.behind_log_start:
                out.append(f"{p.topic}[{p.partition}]: committed offset {p.committed} is below log-start "
                           f"{p.log_start}: {p.log_start - (p.committed or 0)} records deleted unread")
            if p.ahead_of_log_end:
                out.append(f"{p.topic}[{p.partition}]: committed offset {p.committed} is beyond log-end "
                           f"{p.log_end}")
        return out


def build_snapshot(group: str, taken_at: float, starts: Mapping[tuple[str, int], int],
                   ends: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int | None],
                   reset: ResetPolicy = "earliest", requests: int = REQUESTS_PER_POLL,
                   read_seconds: float = 0.0) -> LagSnapshot:
    """Join the three offset maps (keyed by (topic, partition)) into a snapshot, sorted by partition."""
    keys = sorted(ends)
    parts = tuple(compute_lag(t, p, starts.get((t, p), 0), ends[(t, p)], committed.get((t, p)), reset)
                  for t, p in keys)
    return LagSnapshot(group, taken_at, parts, requests, read_seconds)


# --- I/O shell -------------------------------------------------------------------------------------------

def _retriable(exc: BaseException) -> bool:
    """librdkafka's retriable flag, plus the coordinator/leader codes it does not always flag."""
    from confluent_kafka import KafkaError

    err = exc.args[0] if exc.args else None
    if not isinstance(err, KafkaError):
        return False
    return err.retriable() or err.code() in (
        KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH)


@dataclass
class LagReader:
    """Reads a `LagSnapshot` for a group in REQUESTS_PER_POLL client calls, on cached clients.

    `requests_total` counts every call this reader issued (a retried call counts again), so tests and the
    bench can check that a poll costs the same for 1 or 1 000 partitions.
    """

    bootstrap_servers: str
    security: Mapping[str, Any] = field(default_factory=dict)  # librdkafka settings (security, ...)
    timeout: float = 10.0
    requests_total: int = 0
    polls: int = 0

    @property
    def client(self) -> Any:
        return admin_client(self.bootstrap_servers, self.security)

    def read(self, group: str, topics: Iterable[str], reset: ResetPolicy = "earliest") -> LagSnapshot:
        """Offsets of every partition of `topics` and the group's commits on them.

        Raises TopicNotFound for a missing topic and KafkaUnavailable when the brokers do not answer.
        """
        from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        topics = list(dict.fromkeys(topics))
        if not topics:
            raise ValueError("no topic to read")
        admin = self.client
        admin.poll(0)  # serve queued librdkafka log lines (routed to the `lagpilot.kafka` logger)
        t0 = time.monotonic()
        taken_at = time.time()
        before = self.requests_total
        try:
            # 1. partitions of each topic: one Metadata request for all topics.
            self.requests_total += 1
            futures = admin.describe_topics(TopicCollection(topics), request_timeout=self.timeout)
            tps: list[Any] = []
            for name, fut in futures.items():
                try:
                    desc = fut.result(timeout=self.timeout + 5)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise TopicNotFound(f"topic {name!r} not found") from None
                    raise
                tps.extend(TopicPartition(name, p.id) for p in desc.partitions)
            # 2./3. log-start and log-end of every partition: one call each (batched per leader).
            starts, ends = self._log_bounds(admin, tps, OffsetSpec)
            # 4. the group's committed offsets on exactly these partitions: one OffsetFetch.
            committed = self._committed(group, tps)
        except KafkaException as exc:
            raise KafkaUnavailable(_describe_error(exc, self.bootstrap_servers, self.timeout)) from None
        except TimeoutError:
            raise KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap_servers}: no answer within "
                                   f"{self.timeout:g}s") from None
        finally:
            self.polls += 1
        return build_snapshot(group, taken_at, starts, ends, committed, reset, self.requests_total - before,
                              time.monotonic() - t0)

    def committed_topics(self, group: str) -> list[str]:
        """Topics the group has committed offsets on, for callers that name no topic (the CLI).

        Asks the group's coordinator through the offsets consumer first (so that it is found and loaded,
        see offsets_client), then lists every committed offset of the group with the AdminClient."""
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

        admin = self.client
        try:
            self._committed(group, [TopicPartition("__lagpilot_probe", 0)])
            self.requests_total += 1
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                    request_timeout=self.timeout)[group].result(
                timeout=self.timeout + 5)
        except KafkaException as exc:
            raise KafkaUnavailable(_describe_error(exc, self.bootstrap_servers, self.timeout)) from None
        except TimeoutError:
            raise KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap_servers}: no answer within "
                                   f"{self.timeout:g}s") from None
        return sorted({tp.topic for tp in res.topic_partitions or []} - {"__lagpilot_probe"})

    def _committed(self, group: str, tps: list[Any]) -> dict[tuple[str, int], int | None]:
        from confluent_kafka import TopicPartition

        consumer = offsets_client(self.bootstrap_servers, group, self.security)
        consumer.poll(0)  # serve its queue (log lines, errors); it is assigned nothing, so no records
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        got = self._retrying(lambda: consumer.committed(wanted, timeout=self.timeout))
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in got}

    def _log_bounds(self, admin: Any, tps: list[Any],
                    offset_spec: Any) -> tuple[dict[tuple[str, int], int], ...]:
        """Log-start and log-end of every partition: two ListOffsets calls issued together (then awaited),
        so a poll waits for one round trip, not two."""

        def call() -> tuple[dict[tuple[str, int], int], ...]:
            pending = [admin.list_offsets({tp: spec for tp in tps}, request_timeout=self.timeout)
                       for spec in (offset_spec.earliest(), offset_spec.latest())]
            self.requests_total += 1  # the second call (_retrying counts the first)
            return tuple({(tp.topic, tp.partition): fut.result(timeout=self.timeout + 5).offset
                          for tp, fut in futures.items()} for futures in pending)

        return self._retrying(call)

    def _retrying(self, call: Callable[[], T]) -> T:
        """One call; repeated (and counted again) only on retriable errors, such as NOT_COORDINATOR while
        the group coordinator loads or a leader not yet elected right after a topic is created, for at
        most `timeout` seconds."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + self.timeout
        backoff = 0.1
        while True:
            self.requests_total += 1
            try:
                return call()
            except KafkaException as exc:
                if not _retriable(exc) or time.monotonic() + backoff > deadline:
                    raise
                log.debug("retrying after %s", exc)
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)


def _describe_error(exc: Exception, bootstrap: str, timeout: float) -> str:
    from confluent_kafka import KafkaError

    err = exc.args[0] if exc.args else exc
    if isinstance(err, KafkaError) and err.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
                                                      KafkaError._ALL_BROKERS_DOWN):
        return f"cannot reach Kafka at {bootstrap}: no answer within {timeout:g}s"
    text = err.str() if isinstance(err, KafkaError) else str(err)
    return f"cannot read offsets from Kafka at {bootstrap}: {text}"
