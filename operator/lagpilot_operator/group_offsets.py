"""A group's committed offsets as the hand-off reads and sets them: the checkpoint taken when a rollout
starts, and a replay's rewind (while no worker owns the partitions: lagpilot_operator.handoff.replay). Thin
admin-API calls on the connection's cached AdminClient, keyed by PartitionId over every topic the group
reads; every failure is a ``GroupOffsetsError`` whose message says what could not be done."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lagpilot.protocol import PartitionId
from lagpilot_operator.brokers import admin_client


class GroupOffsetsError(Exception):
    """The brokers did not read or set the offsets."""


@dataclass
class GroupOffsets:
    bootstrap_servers: str
    group: str
    topics: Sequence[str]
    security: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 10.0

    def _admin(self) -> Any:
        return admin_client(self.bootstrap_servers, self.security)

    def positions(self) -> dict[PartitionId, int]:
        """Where the group reads next on every partition of its topics: its committed offset, or where its
        reset policy puts a partition it never committed (the log start)."""
        from lagpilot_operator.autoscale.offsets import LagReader

        if not self.topics:
            return {}
        try:
            snap = LagReader(self.bootstrap_servers, self.security, timeout=self.timeout).read(
                self.group, list(self.topics))
        except Exception as exc:
            raise GroupOffsetsError(f"committed offsets of {self.group} not read: {exc}") from None
        return {PartitionId(p.topic, p.partition): p.position for p in snap.partitions}

    def committed(self, partitions: Iterable[PartitionId]) -> dict[PartitionId, int | None]:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        tps = [TopicPartition(p.topic, p.partition) for p in sorted(partitions)]
        if not tps:
            return {}
        try:
            fut = self._admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group, tps)],
                                                            request_timeout=self.timeout)[self.group]
            got = fut.result(timeout=self.timeout + 5)
        except Exception as exc:
            raise GroupOffsetsError(f"committed offsets of {self.group} not read: {exc}") from None
        return {PartitionId(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
                for tp in got.topic_partitions}

    def at_time(self, partitions: Iterable[PartitionId], when: float) -> dict[PartitionId, int]:
        """The first offset at or after ``when`` (unix seconds) per partition; the log end where no record
        is that recent."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        parts = sorted(partitions)
        if not parts:
            return {}
        admin = self._admin()
        try:
            by_time = admin.list_offsets({TopicPartition(p.topic, p.partition):
                                          OffsetSpec.for_timestamp(round(when * 1000)) for p in parts},
                                         request_timeout=self.timeout)
            ends = admin.list_offsets({TopicPartition(p.topic, p.partition): OffsetSpec.latest() for p in parts},
                                      request_timeout=self.timeout)
            end_of = {PartitionId(tp.topic, tp.partition): fut for tp, fut in ends.items()}
            out: dict[PartitionId, int] = {}
            for tp, fut in by_time.items():
                pid = PartitionId(tp.topic, tp.partition)
                found = fut.result(timeout=self.timeout + 5).offset
                if found < 0:
                    found = end_of[pid].result(timeout=self.timeout + 5).offset
                out[pid] = found
        except Exception as exc:
            raise GroupOffsetsError(f"offsets of {', '.join(sorted({p.topic for p in parts}))} at time {when} "
                                    f"not read: {exc}") from None
        return out

    def commit(self, offsets: Mapping[PartitionId, int]) -> None:
        """Set the group's committed offsets (the group must have no member consuming these partitions:
        lagpilot's workers commit without joining the group, and the hand-off has made sure none owns
        them)."""
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        tps = [TopicPartition(p.topic, p.partition, o) for p, o in sorted(offsets.items())]
        if not tps:
            return
        try:
            fut = self._admin().alter_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group, tps)],
                                                             request_timeout=self.timeout)[self.group]
            done = fut.result(timeout=self.timeout + 5)
        except Exception as exc:
            raise GroupOffsetsError(f"offsets of {self.group} not set: {exc}") from None
        bad = [tp for tp in done.topic_partitions if tp.error is not None]
        if bad:
            raise GroupOffsetsError(f"offsets of {self.group} not set on partition "
                                    f"{PartitionId(bad[0].topic, bad[0].partition)}: {bad[0].error}")
