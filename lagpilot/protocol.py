"""The wire protocol between the operator, the workers and the CLI, in one place: the CRD's coordinates,
the labels and annotations every party reads or writes, the assignment document the operator publishes in
a ConfigMap, the Lease annotations a worker reports with, and the Lease timing both sides rely on.

Standard library only, and nothing of ours: every other module may import this one, and changing a name
here is a protocol change (operator and workers of different versions must agree on it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# ---- the ConsumerGroup resource -----------------------------------------------------------------------
GROUP = "lagpilot.io"
VERSION = "v1alpha1"
PLURAL = "consumergroups"
KIND = "ConsumerGroup"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"

# ---- labels on every object of a group ---------------------------------------------------------------
MANAGER = "lagpilot-operator"
WORKER_APP = "lagpilot-worker"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CG = "lagpilot.io/consumergroup"
LABEL_REVISION = "lagpilot.io/revision"
LABEL_WORKER = "lagpilot.io/worker"  # on a worker's Lease: the pod it reports for

# ---- commands: annotations a user (or `lagpilot promote|abort|pause`) sets on the ConsumerGroup ----------
ANNOTATION_PROMOTE = "lagpilot.io/promote"
ANNOTATION_ABORT = "lagpilot.io/abort"
ANNOTATION_PAUSE = "lagpilot.io/pause"
# `lagpilot replay`: a JSON request {"id", "to": checkpoint|time|offsets, "time", "offsets", "partitions"}; run
# once per id (remembered in status.rollout.handled), refused while a rollout runs.
ANNOTATION_REPLAY = "lagpilot.io/replay"

# ---- the hand-off: what a worker reports on its Lease, and which pod a scale-down removes first -------
ANNOTATION_OWNED = "lagpilot.io/owned"  # "orders:0,orders:3": partitions the worker owns, fully applied
ANNOTATION_EPOCH = "lagpilot.io/epoch"  # the assignment epoch those partitions were applied at
ANNOTATION_DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

# ---- the assignment document: ConfigMap <group>-assignment, key assignment.json -----------------------
ASSIGNMENT_KEY = "assignment.json"
ASSIGNMENT_CONFIGMAP_SUFFIX = "-assignment"
# In `revoked`: the partition may have a live owner the operator cannot name (the document was lost); it is
# granted only once every live worker has applied this document's incarnation at that epoch or later.
REVOKED_FROM_ALL = "*"


# ---- the retry park: headers of a record a worker moved to spec.retry.park.topic ----------------------
# The record keeps its key, value and Kafka headers, goes to the park topic's partition of the same number,
# and carries where it came from, so whichever worker owns that partition next delivers it as the original
# (its partition/offset/timestamp in the request, its idempotency key) and knows its key is parked.
PARK_HEADER_PREFIX = "lagpilot-park-"
PARK_ORIGINAL_TOPIC = "lagpilot-park-original-topic"
PARK_ORIGINAL_PARTITION = "lagpilot-park-original-partition"
PARK_ORIGINAL_OFFSET = "lagpilot-park-original-offset"
PARK_ORIGINAL_TIMESTAMP = "lagpilot-park-original-timestamp"  # ms; absent when the record had none
PARK_ATTEMPTS = "lagpilot-park-attempts"  # attempts made before it was parked
PARK_ROUTE_STEP = "lagpilot-park-route-step"  # with routes: requests of the record already delivered
PARK_REASON = "lagpilot-park-reason"  # failing | key-parked (an earlier record of its key is parked)


def flag_set(annotations: Mapping[str, str] | None, key: str) -> bool:
    """An annotation command is on when present and not false-like ("false", "0", "no")."""
    value = (annotations or {}).get(key)
    return value is not None and str(value).strip().lower() not in ("false", "0", "no")


def assignment_configmap_name(group: str) -> str:
    return f"{group}{ASSIGNMENT_CONFIGMAP_SUFFIX}"


class PartitionId(NamedTuple):
    """One partition of one topic of a group: the unit the operator grants, a worker owns, fences and
    commits. Written ``topic:partition`` (Kafka topic names cannot hold a colon); sorts by topic, then by
    partition number."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}"


def parse_partition_id(text: str | int, default_topic: str | None = None) -> PartitionId:
    """``topic:partition`` back to a PartitionId. A bare number (format version 1: one topic per group)
    means that partition of ``default_topic``, and is refused when there is none. Raises ValueError."""
    raw = str(text).strip()
    topic, sep, number = raw.rpartition(":")
    if not sep:
        if default_topic is None:
            raise ValueError(f"{raw!r} names no topic (expected topic:partition)")
        topic = default_topic
    if not topic:
        raise ValueError(f"{raw!r} names no topic (expected topic:partition)")
    try:
        partition = int(number)
    except ValueError:
        raise ValueError(f"{raw!r} is not topic:partition") from None
    if partition < 0:
        raise ValueError(f"{raw!r}: a partition number is never negative")
    return PartitionId(topic, partition)


def partitions_of(topics: Mapping[str, int]) -> tuple[PartitionId, ...]:
    """Every partition of topics given as name -> partition count, sorted."""
    return tuple(PartitionId(t, p) for t in sorted(topics) for p in range(topics[t]))


def format_partitions(parts: Iterable[PartitionId]) -> str:
    """Partitions for people: ``orders:0-2,5 payments:1`` (ranges per topic, topics in order)."""
    by_topic: dict[str, list[int]] = {}
    for pid in sorted(set(parts)):
        by_topic.setdefault(pid.topic, []).append(pid.partition)
    out = []
    for topic, numbers in by_topic.items():
        runs: list[list[int]] = []
        for n in numbers:
            if runs and n == runs[-1][1] + 1:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        out.append(f"{topic}:{','.join(str(a) if a == b else f'{a}-{b}' for a, b in runs)}")
    return " ".join(out)


@dataclass(frozen=True)
class Revocation:
    """Partition revoked from ``worker`` in ``epoch``: nobody else may get it until ``worker`` reports a
    release at an epoch >= ``epoch`` or is gone."""

    worker: str
    epoch: int


ASSIGNMENT_FORMAT = 2  # 1: partitions were bare numbers of the group's only topic


@dataclass(frozen=True)
class AssignmentDoc:
    """The content of ``assignment.json``. ``grants`` never holds empty lists (normalised), so two docs
    with the same meaning compare equal. ``topics``: every topic the group reads, with its partition
    count, as the operator last saw them."""

    epoch: int = 0
    grants: Mapping[str, frozenset[PartitionId]] = field(default_factory=dict)
    topics: Mapping[str, int] = field(default_factory=dict)
    revoked: Mapping[PartitionId, Revocation] = field(default_factory=dict)
    # Changes when the document is rebuilt after it was lost or unreadable: epochs are monotonic within one
    # incarnation, so a worker that sees a new incarnation applies it whatever epoch it had reached.
    incarnation: str = ""

    @property
    def partitions(self) -> tuple[PartitionId, ...]:
        return partitions_of(self.topics)

    def owner_of(self) -> dict[PartitionId, str]:
        """partition -> granted worker."""
        return {p: w for w, ps in self.grants.items() for p in ps}

    def grant_of(self, worker: str) -> frozenset[PartitionId]:
        return frozenset(self.grants.get(worker) or ())

    def to_json(self) -> str:
        body = {
            "format": ASSIGNMENT_FORMAT,
            "epoch": self.epoch,
            "grants": {w: [str(p) for p in sorted(ps)] for w, ps in sorted(self.grants.items()) if ps},
            "topics": {t: n for t, n in sorted(self.topics.items())},
            "revoked": {
                str(p): {"worker": r.worker, "epoch": r.epoch} for p, r in sorted(self.revoked.items())
            },
        }
        if self.incarnation:
            body["incarnation"] = self.incarnation
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, default_topic: str | None = None) -> AssignmentDoc:
        """Parse ``assignment.json``; raises ValueError on anything malformed (never guesses). A format-1
        document (bare partition numbers, ``partitions``: a count) is read as ``default_topic``'s, and
        refused without one."""
        try:
            raw = json.loads(text)
            fmt = int(raw.get("format", 1))
            if fmt > ASSIGNMENT_FORMAT:
                raise ValueError(f"format {fmt} is newer than this reader's {ASSIGNMENT_FORMAT}")
            legacy = default_topic if fmt == 1 else None
            if fmt == 1 and default_topic is None:
                raise ValueError("a format-1 document needs the group's topic to be read")
            grants = {
                str(w): frozenset(parse_partition_id(p, legacy) for p in ps)
                for w, ps in (raw.get("grants") or {}).items() if ps
            }
            revoked = {
                parse_partition_id(p, legacy): Revocation(str(r["worker"]), int(r["epoch"]))
                for p, r in (raw.get("revoked") or {}).items()
            }
            if fmt == 1:
                count = int(raw.get("partitions", 0))
                topics = {str(default_topic): count} if count else {}
            else:
                topics = {str(t): int(n) for t, n in (raw.get("topics") or {}).items()}
            return cls(int(raw["epoch"]), grants, topics, revoked, str(raw.get("incarnation") or ""))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed {ASSIGNMENT_KEY}: {exc}") from exc


@dataclass(frozen=True)
class Grant:
    """What one worker reads from the document: its partitions as of (incarnation, epoch)."""

    incarnation: str
    epoch: int
    partitions: frozenset[PartitionId]


def read_grant(doc_text: str | None, worker: str, default_topic: str | None = None) -> Grant | None:
    """``worker``'s grant from ``assignment.json``; None if missing or malformed (a worker then keeps what
    it has: the operator will write a valid document)."""
    if not doc_text:
        return None
    try:
        doc = AssignmentDoc.from_json(doc_text, default_topic)
    except ValueError:
        return None
    return Grant(doc.incarnation, doc.epoch, doc.grant_of(worker))


def format_owned(owned: Iterable[PartitionId]) -> str:
    """The ``lagpilot.io/owned`` annotation value: ``orders:0,orders:3,payments:1``."""
    return ",".join(str(p) for p in sorted(owned))


def parse_owned(text: str | None, default_topic: str | None = None) -> frozenset[PartitionId] | None:
    """``lagpilot.io/owned`` back to partitions; None when absent or unreadable (never a guess). Bare
    numbers (a worker of format 1) are read as ``default_topic``'s."""
    if text is None:
        return None
    try:
        return frozenset(parse_partition_id(p, default_topic) for p in text.split(",") if p.strip())
    except ValueError:
        return None


def parse_epoch(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def lease_duration_for(fence_timeout_s: float, lease_renew_s: float, delivery_timeout_s: float = 0.0) -> int:
    """The Lease duration the operator waits before treating a silent worker as gone: longer than the
    worst case before the worker has stopped (fence timeout + one renew period + one API request timeout
    until the fence, then the HTTP request already on the wire: at most the target timeout), with a
    margin, so that by the time the Lease looks expired no delivery of the worker can reach the target."""
    return math.ceil(fence_timeout_s + 2 * lease_renew_s + delivery_timeout_s + 2)


def parse_status_codes(text: str) -> tuple[tuple[int, int], ...]:
    """HTTP status codes written as ``"200-299,304"`` (the CRD's ``target.*Codes`` fields, passed to the
    worker as they are): inclusive ranges. Raises ValueError naming the bad part."""
    ranges: list[tuple[int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        try:
            lo, hi = int(lo_s), int(hi_s or lo_s)
        except ValueError:
            raise ValueError(f"{part!r} is not a status code or range like 500-599") from None
        if not (100 <= lo <= hi <= 599):
            raise ValueError(f"{part!r} is not a status code or range within 100-599")
        ranges.append((lo, hi))
    return tuple(ranges)
