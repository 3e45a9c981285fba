"""``--assignment kafka``: Kafka's group protocol decides (the fallback without the operator's hand-off)."""

from __future__ import annotations

import threading

from lagpilot.protocol import PartitionId
from lagpilot_consumer.sources.base import AssignmentSink


class KafkaGroupSource:
    """``--assignment kafka``: Kafka's own group protocol (``subscribe`` with cooperative-sticky
    rebalancing) decides. The runtime sees ``subscribe = True`` and subscribes instead of assigning; the
    rebalance callbacks drain and commit revoked partitions before they are given away. The sink is not
    fed: Kafka is the source of truth, so :meth:`start` only listens."""

    subscribe = True

    def __init__(self) -> None:
        self._owned: frozenset[PartitionId] = frozenset()
        self._seen = threading.Event()

    def start(self, sink: AssignmentSink) -> None:
        sink.add_applied_listener(self._on_applied)

    def _on_applied(self, epoch: int, owned: frozenset[PartitionId]) -> None:
        self._owned = owned
        self._seen.set()

    def stop(self) -> None:
        self._seen.clear()

    def ready(self) -> bool:
        # Joined the group and got an assignment (possibly empty: more members than partitions).
        return self._seen.is_set()
