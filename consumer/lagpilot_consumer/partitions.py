"""What a worker keeps per owned partition, in one object: the generation that tells this ownership from
an earlier one of the same partition, the watermark of done offsets, the release deadline while the
partition is being given up, and the offset last sent in a commit."""

from __future__ import annotations

from dataclasses import dataclass, field

from lagpilot_consumer.watermark import Watermark


@dataclass
class PartitionState:
    """One owned partition. ``generation`` changes each time the partition is (re)assigned, so a delivery
    that started under an earlier ownership never marks an offset done in this one."""

    generation: int
    watermark: Watermark = field(default_factory=Watermark)
    release_deadline: float | None = None  # monotonic; set from the moment the release starts
    committed: int | None = None  # offset last sent in a commit (None: nothing yet, or retry it)
    final_commit_retry_at: float | None = None  # monotonic; a release's final commit failed: try again then

    @property
    def releasing(self) -> bool:
        return self.release_deadline is not None
