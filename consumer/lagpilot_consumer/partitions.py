"""What a worker keeps per owned partition (keyed by topic and partition, a PartitionId), in one object:
the generation that tells this ownership from
an earlier one of the same partition, the watermark of done offsets, the release deadline while the
partition is being given up, the offset last sent in a commit, and (with a retry park) the partition's park stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from lagpilot_consumer.park import ParkedKeys
from lagpilot_consumer.watermark import Watermark


@dataclass
class ParkStream:
    """An owned partition's park partition (``--park-topic``): its own watermark and commit, and the keys
    parked there that are not done yet."""

    keys: ParkedKeys = field(default_factory=ParkedKeys)
    watermark: Watermark = field(default_factory=Watermark)
    committed: int | None = None
    inflight: int = 0  # its records fetched and not yet done (bounded by --park-window)


@dataclass
class PartitionState:
    """One owned partition. ``generation`` changes each time the partition is (re)assigned, so a delivery
    that started under an earlier ownership never marks an offset done in this one."""

    generation: int
    watermark: Watermark = field(default_factory=Watermark)
    release_deadline: float | None = None  # monotonic; set from the moment the release starts
    committed: int | None = None  # offset last sent in a commit (None: nothing yet, or retry it)
    final_commit_retry_at: float | None = None  # monotonic; a release's final commit failed: try again then
    park: ParkStream | None = None  # with --park-topic

    @property
    def releasing(self) -> bool:
        return self.release_deadline is not None
