"""When a periodic resync of a ConsumerGroup is worth a reconcile (pure).

Every change the reconcile depends on in the API server (the CR, its Deployments, its workers' Leases and
pods) arrives as a watch event that triggers a reconcile by itself. The periodic resync is the safety net
for what has no event: the brokers (a topic created or given more partitions), a Secret that appears, a
missed watch event. So an idle, healthy group whose last reconcile changed nothing is not reconciled again
until one of those may have changed; 1 000 idle groups then cost no API call per resync period.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Settled:
    """What the last reconcile of a group saw and did."""

    resource_version: str  # of the CR it reconciled
    quiet: bool  # it changed nothing (no write, no Event) and the group is not Degraded
    connection: str | None  # the brokers' connection key (to look up partition counts the lag rounds saw)
    topics: tuple[str, ...]
    partitions: int | None  # of all those topics
    at: float  # monotonic time it finished
    pattern: bool = False  # topics named by spec.topicPattern: a topic created under it has no event


def full_resync_seconds(base: float, key: tuple[str, str]) -> float:
    """The safety-net period for one group: `base` spread over [0.75, 1.25) x base by a stable hash of the
    group, so that groups reconciled together at start-up do not all come due in the same second."""
    spread = zlib.crc32(f"{key[0]}/{key[1]}".encode()) % 1000 / 2000
    return base * (0.75 + spread)


def resync_due(settled: Settled | None, resource_version: str, partitions: int | None, now: float,
               interval: float, full_every: float, served_at: float = float("-inf")) -> bool:
    """Whether the periodic resync should reconcile the group now.

    - never reconciled in this process: only once it has been served for `interval` (since `served_at`)
      without a reconcile. kopf's resume/create handler reconciles every group it starts serving; a resync
      queued beside it doubled the start-up work (1 000 groups reconciled twice) and the memory held by
      the backlog;
    - reconciled less than `interval` ago (by any trigger): no;
    - the last reconcile was not quiet (it wrote, emitted, or left the group Degraded), or the CR changed
      since (its resourceVersion), or the lag rounds saw another partition count, or the group's topics
      are a pattern (re-read every `interval`: a new topic under it raises no event): yes;
    - otherwise only once `full_every` has passed since it: the safety net against a missed event.
    """
    if settled is None:
        return now - served_at >= interval
    age = now - settled.at
    if age < interval:
        return False
    if not settled.quiet or resource_version != settled.resource_version or settled.pattern:
        return True
    if partitions is not None and partitions != settled.partitions:
        return True
    return age >= full_every
