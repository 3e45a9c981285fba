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
from typing import Any, TypeVar

from lagpilot_operator.autoscale.commits import OFFSETS_TOPIC
from lagpilot_operator.autoscale.snapshot import (
    REQUESTS_PER_POLL,
    KafkaUnavailable,
    LagSnapshot,
    PartitionLag,
    ResetPolicy,
    TopicNotFound,
    build_snapshot,
    compute_lag,
)
from lagpilot_operator.brokers import admin_client, commit_log, offsets_client

__all__ = ["REQUESTS_PER_POLL", "KafkaUnavailable", "LagReader", "LagSnapshot", "PartitionLag", "ResetPolicy",
           "TopicNotFound", "admin_client", "build_snapshot", "compute_lag", "offsets_client"]

T = TypeVar("T")
_FALLBACK_WARNED: set[str] = set()  # connections whose per-group fallback was logged (once each)



log = logging.getLogger(__name__)
# librdkafka's log lines arrive here; silent unless the application configures logging (no stderr spam).
logging.getLogger("lagpilot.kafka").addHandler(logging.NullHandler())


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
    last_partitions: dict[str, int] = field(default_factory=dict)  # partition counts seen by the last round
    fallback_reason: str = ""  # why committed offsets are read per group (no access to __consumer_offsets)

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
        except (KafkaException, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        finally:
            self.polls += 1
        return build_snapshot(group, taken_at, starts, ends, committed, reset, self.requests_total - before,
                              time.monotonic() - t0)

    def read_groups(self, groups: Mapping[str, Iterable[str]], reset: Mapping[str, ResetPolicy] | None = None,
                    catch_up_timeout: float | None = None) -> dict[str, LagSnapshot | Exception]:
        """One lag round for many groups on this connection: one Metadata request for every topic (and
        `__consumer_offsets`), one log-start and one log-end ListOffsets call for all their partitions
        (librdkafka batches each per leader), and every group's committed offsets from the connection's
        `__consumer_offsets` mirror, read up to the log-end taken in this round. The request count grows
        with brokers and topics, never with groups.

        Per group: a LagSnapshot, or TopicNotFound for a group whose topic is missing. Raises
        KafkaUnavailable when the brokers do not answer (every group of the round is affected)."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        wanted = {g: list(dict.fromkeys(ts)) for g, ts in groups.items()}
        topics = sorted({t for ts in wanted.values() for t in ts})
        if not topics:
            return {}
        admin = self.client
        admin.poll(0)
        t0 = time.monotonic()
        taken_at = time.time()
        before = self.requests_total
        partitions: dict[str, list[int]] = {}
        missing: set[str] = set()
        denied: str | None = None  # why __consumer_offsets cannot be read (no ACL): per-group reads then
        try:
            self.requests_total += 1
            futures = admin.describe_topics(TopicCollection([*topics, OFFSETS_TOPIC]), request_timeout=self.timeout)
            for name, fut in futures.items():
                try:
                    desc = fut.result(timeout=self.timeout + 5)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    code = err.code() if isinstance(err, KafkaError) else None
                    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        missing.add(name)
                        continue
                    if name == OFFSETS_TOPIC and code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                        denied = err.str() if isinstance(err, KafkaError) else str(exc)
                        continue
                    raise
                partitions[name] = [p.id for p in desc.partitions]
            tps = [TopicPartition(t, p) for t in topics if t in partitions for p in partitions[t]]
            log_tps = [TopicPartition(OFFSETS_TOPIC, p) for p in partitions.get(OFFSETS_TOPIC, [])]
            starts: dict[tuple[str, int], int] = {}
            ends: dict[tuple[str, int], int] = {}
            if tps or log_tps:
                starts, ends = self._log_bounds(admin, tps, OffsetSpec, extra_latest=log_tps)
        except (KafkaException, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        finally:
            self.polls += 1
        log_ends = {p: ends.pop((OFFSETS_TOPIC, p)) for p in partitions.get(OFFSETS_TOPIC, [])}
        committed_of: Callable[[str, list[tuple[str, int]]], Mapping[tuple[str, int], int | None]]
        if denied is None:
            mirror = commit_log(self.bootstrap_servers, self.security)
            wait = self.timeout if catch_up_timeout is None else catch_up_timeout
            if log_ends and not mirror.caught_up(log_ends, wait):
                denied = mirror.error
                if denied is None:
                    raise KafkaUnavailable(f"cannot read committed offsets from {OFFSETS_TOPIC} at "
                                           f"{self.bootstrap_servers}: not read to its end within {wait:g}s")
            committed_of = mirror.committed
        if denied is not None:
            if self.bootstrap_servers not in _FALLBACK_WARNED:
                _FALLBACK_WARNED.add(self.bootstrap_servers)
                log.warning("%s: cannot read %s (%s): reading each group's committed offsets on its own; grant "
                            "the operator Describe and Read on that topic to batch them", self.bootstrap_servers,
                            OFFSETS_TOPIC, denied)
            self.fallback_reason = denied

            def committed_of(group: str, keys: list[tuple[str, int]]) -> Mapping[tuple[str, int], int | None]:
                from confluent_kafka import TopicPartition as Tp

                try:
                    return self._committed(group, [Tp(t, p) for t, p in keys])
                except KafkaException as exc:
                    raise self._unavailable(exc) from None
        requests = self.requests_total - before
        out: dict[str, LagSnapshot | Exception] = {}
        for group, ts in wanted.items():
            gone = [t for t in ts if t in missing]
            if gone:
                out[group] = TopicNotFound(f"topic {gone[0]!r} not found")
                continue
            keys = [(t, p) for t in ts for p in partitions.get(t, [])]
            try:
                committed = committed_of(group, keys)
            except KafkaUnavailable as exc:
                out[group] = exc
                continue
            out[group] = build_snapshot(group, taken_at, {k: starts[k] for k in keys}, {k: ends[k] for k in keys},
                                        committed, (reset or {}).get(group, "earliest"), requests,
                                        time.monotonic() - t0)
        # A missing topic counts 0 (no topic has 0 partitions): the resync then sees the group's partition
        # count change and reconciles it, so a deleted topic is reported without waiting for a full resync.
        self.last_partitions = {**{t: 0 for t in missing},
                                **{t: len(ps) for t, ps in partitions.items() if t != OFFSETS_TOPIC}}
        return out

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
        except (KafkaException, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        return sorted({tp.topic for tp in res.topic_partitions or []} - {"__lagpilot_probe"})

    def _unavailable(self, exc: Exception) -> KafkaUnavailable:
        """A broker error or a timeout of this reader, as the KafkaUnavailable callers report."""
        if isinstance(exc, TimeoutError):
            return KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap_servers}: no answer within "
                                    f"{self.timeout:g}s")
        return KafkaUnavailable(_describe_error(exc, self.bootstrap_servers, self.timeout))

    def _committed(self, group: str, tps: list[Any]) -> dict[tuple[str, int], int | None]:
        from confluent_kafka import TopicPartition

        consumer = offsets_client(self.bootstrap_servers, group, self.security)
        consumer.poll(0)  # serve its queue (log lines, errors); it is assigned nothing, so no records
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        got = self._retrying(lambda: consumer.committed(wanted, timeout=self.timeout))
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in got}

    def _log_bounds(self, admin: Any, tps: list[Any], offset_spec: Any,
                    extra_latest: list[Any] | None = None) -> tuple[dict[tuple[str, int], int], ...]:
        """Log-start and log-end of every partition: two ListOffsets calls issued together (then awaited),
        so a poll waits for one round trip, not two. `extra_latest` partitions get only their log-end."""

        def call() -> tuple[dict[tuple[str, int], int], ...]:
            latest = {tp: offset_spec.latest() for tp in [*tps, *(extra_latest or [])]}
            pending = [admin.list_offsets({tp: offset_spec.earliest() for tp in tps}, request_timeout=self.timeout)
                       if tps else {}, admin.list_offsets(latest, request_timeout=self.timeout)]
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
