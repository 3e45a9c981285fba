"""A group's lag at one moment, from offsets the brokers reported (pure): per partition the log start,
log end and committed offset, the lag between them, and the snapshot of every partition of a poll.
`offsets.LagReader` fills it from the brokers; the window, the autoscaler and the CLI read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ResetPolicy = Literal["earliest", "latest"]

# librdkafka's "no committed offset" sentinel (OFFSET_INVALID) and the other logical offsets (< 0).
_NO_OFFSET = -1001

# The client calls one poll issues (offsets.LagReader); fixed by construction, whatever the partition count.
REQUESTS_PER_POLL = 4


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
