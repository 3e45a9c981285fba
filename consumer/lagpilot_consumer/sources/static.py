"""``--assignment static``: a fixed partition list, for tests, benches and hand-run workers."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from lagpilot.protocol import PartitionId
from lagpilot_consumer.sources.base import AssignmentSink


class StaticPartitionSource:
    """``--assignment static --partitions orders:0,orders:3``: own exactly these partitions, forever
    (epoch 0)."""

    subscribe = False

    def __init__(self, partitions: Iterable[PartitionId]) -> None:
        self.partitions = frozenset(partitions)
        self._applied = threading.Event()

    def start(self, sink: AssignmentSink) -> None:
        sink.add_applied_listener(self._on_applied)
        sink.set_desired(self.partitions, 0)

    def _on_applied(self, epoch: int, owned: frozenset[PartitionId]) -> None:
        if owned == self.partitions:
            self._applied.set()
        else:
            self._applied.clear()

    def stop(self) -> None:
        self._applied.clear()

    def ready(self) -> bool:
        return self._applied.is_set()


def parse_partitions(text: str) -> frozenset[int]:
    """``"0,3,6"`` or ``"0-3,8"`` -> {0,1,2,3,8}; raises ValueError with a reason on anything else."""
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
            if lo > hi:
                raise ValueError(f"range {part!r} is reversed")
            out.update(range(lo, hi + 1))
        else:
            out.add(int(part))
    if any(p < 0 for p in out):
        raise ValueError("partitions must be >= 0")
    if not out:
        raise ValueError("no partitions given")
    return frozenset(out)


def parse_partition_ids(text: str, topics: Sequence[str]) -> frozenset[PartitionId]:
    """``--partitions``: comma-separated entries, each ``topic:N``, ``topic:N-M``, or a bare ``N`` /
    ``N-M`` meaning those partitions of every topic in ``topics``. A named topic must be one of
    ``topics`` (what ``--topic`` says the worker reads). Raises ValueError with a reason."""
    out: set[PartitionId] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        topic, sep, numbers = part.rpartition(":")
        if sep and topic not in topics:
            raise ValueError(f"{part!r} names topic {topic!r}, which is not in --topic ({','.join(topics)})")
        if not sep and not topics:
            raise ValueError(f"{part!r} names no topic (write topic:partition)")
        try:
            found = parse_partitions(numbers)
        except ValueError as exc:
            raise ValueError(f"{part!r}: {exc}") from None
        out.update(PartitionId(t, n) for t in ((topic,) if sep else topics) for n in found)
    if not out:
        raise ValueError("no partitions given")
    return frozenset(out)
