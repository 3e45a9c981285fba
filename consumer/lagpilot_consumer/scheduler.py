"""Ordering scheduler: decides which fetched records may be delivered now.

Records are grouped into *lanes*; a lane delivers strictly one record at a time, in the order records
were submitted (offset order within a partition). Different lanes proceed in parallel.

Partitions are :class:`~lagpilot.protocol.PartitionId` (topic, partition): ``orders:0`` and ``payments:0``
are two partitions with lanes of their own.

- ``key``: lane = (partition, generation, key). Records without a key (None) each get a lane of their
  own, i.e. they are not ordered (Kafka spreads keyless records anyway).
- ``partition``: lane = (partition, generation): one in flight per partition.
- ``none``: every record is its own lane.

``stream`` 1 marks records read back from the retry park (:mod:`lagpilot_consumer.park`): they get lanes
of their own beside the partition's, so a parked key's records wait only for each other.

``generation`` distinguishes two ownerships of the same partition (released, then assigned again), so a
straggler of the old ownership never blocks or unblocks records of the new one. Pure: no threads, no
I/O; the runtime calls it under its own lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from lagpilot.protocol import PartitionId

Ordering = Literal["key", "partition", "none"]


@dataclass(eq=False)
class Item:
    """One record as the scheduler sees it; ``payload`` is whatever the runtime wants back."""

    partition: PartitionId  # topic and partition: per-key order holds within one (topic, partition)
    offset: int
    key: bytes | None
    generation: int = 0
    size: int = 0
    payload: object = field(default=None, repr=False)
    lane: Hashable = field(default=None, repr=False)
    dispatched: bool = field(default=False, repr=False)
    stream: int = 0  # 0: the source topic; 1: the partition's park (lagpilot_consumer.park)


class Scheduler:
    def __init__(self, ordering: Ordering) -> None:
        if ordering not in ("key", "partition", "none"):
            raise ValueError(f"unknown ordering {ordering!r}")
        self.ordering: Ordering = ordering
        self._lanes: dict[Hashable, deque[Item]] = {}
        self._ready: deque[Item] = deque()
        self._solo = 0

    def lane_of(self, item: Item) -> Hashable:
        if self.ordering == "partition":
            return (item.partition, item.generation, item.stream)
        if self.ordering == "key" and item.key is not None:
            return (item.partition, item.generation, item.stream, item.key)
        self._solo += 1
        return ("solo", self._solo)

    def submit(self, item: Item) -> None:
        lane = item.lane = self.lane_of(item)
        item.dispatched = False
        q = self._lanes.get(lane)
        if q is None:
            self._lanes[lane] = deque((item,))
            self._ready.append(item)
        else:
            q.append(item)

    def take(self) -> Item | None:
        """Next item that may be delivered now (its lane's head), or None."""
        while self._ready:
            item = self._ready.popleft()
            q = self._lanes.get(item.lane)
            if q is None or not q or q[0] is not item:
                continue  # dropped while waiting
            item.dispatched = True
            return item
        return None

    def ready_count(self) -> int:
        return len(self._ready)

    def complete(self, item: Item) -> None:
        """The delivery of ``item`` (a value returned by :meth:`take`) finished, whatever the outcome."""
        if not item.dispatched:
            raise ValueError(f"completing an item that was not dispatched: {item!r}")
        item.dispatched = False
        lane = item.lane
        q = self._lanes.get(lane)
        if q is None or not q or q[0] is not item:
            return
        q.popleft()
        if q:
            self._ready.append(q[0])
        else:
            del self._lanes[lane]

    def drop_queued(self, partition: PartitionId) -> list[Item]:
        """Forget every not-yet-dispatched item of ``partition`` (on release); dispatched items stay until
        completed. Returns the dropped items."""
        dropped: list[Item] = []
        for lane in list(self._lanes):
            q = self._lanes[lane]
            if not q or q[0].partition != partition:
                continue
            head = q[0]
            if head.dispatched:
                dropped.extend(list(q)[1:])
                self._lanes[lane] = deque((head,))
            else:
                dropped.extend(q)
                del self._lanes[lane]
        return dropped

    def dispatched_in(self, partition: PartitionId) -> int:
        """Items of ``partition`` handed out and not completed (their deliveries are running)."""
        return sum(1 for q in self._lanes.values() if q and q[0].partition == partition
                   and q[0].dispatched)

    def pending_in(self, partition: PartitionId) -> int:
        """Items of ``partition`` not completed (queued or dispatched)."""
        return sum(len(q) for q in self._lanes.values() if q and q[0].partition == partition)

    def pending(self) -> int:
        return sum(len(q) for q in self._lanes.values())

    def __iter__(self) -> Iterator[Item]:
        for q in self._lanes.values():
            yield from q
