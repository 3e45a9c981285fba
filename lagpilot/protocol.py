"""The wire protocol between the operator, the workers and the CLI, in one place: the CRD's coordinates,
the labels and annotations every party reads or writes, the assignment document the operator publishes in
a ConfigMap, the Lease annotations a worker reports with, and the Lease timing both sides rely on.

Standard library only, and nothing of ours: every other module may import this one, and changing a name
here is a protocol change (operator and workers of different versions must agree on it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

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
ANNOTATION_OWNED = "lagpilot.io/owned"  # "0,3,6": partitions the worker owns, fully applied
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


@dataclass(frozen=True)
class Revocation:
    """Partition revoked from ``worker`` in ``epoch``: nobody else may get it until ``worker`` reports a
    release at an epoch >= ``epoch`` or is gone."""

    worker: str
    epoch: int


@dataclass(frozen=True)
class AssignmentDoc:
    """The content of ``assignment.json``. ``grants`` never holds empty lists (normalised), so two docs
    with the same meaning compare equal."""

    epoch: int = 0
    grants: Mapping[str, frozenset[int]] = field(default_factory=dict)
    partitions: int = 0
    revoked: Mapping[int, Revocation] = field(default_factory=dict)
    # Changes when the document is rebuilt after it was lost or unreadable: epochs are monotonic within one
    # incarnation, so a worker that sees a new incarnation applies it whatever epoch it had reached.
    incarnation: str = ""

    def owner_of(self) -> dict[int, str]:
        """partition -> granted worker."""
        return {p: w for w, ps in self.grants.items() for p in ps}

    def grant_of(self, worker: str) -> frozenset[int]:
        return frozenset(self.grants.get(worker) or ())

    def to_json(self) -> str:
        body = {
            "epoch": self.epoch,
            "grants": {w: sorted(ps) for w, ps in sorted(self.grants.items()) if ps},
            "partitions": self.partitions,
            "revoked": {
                str(p): {"worker": r.worker, "epoch": r.epoch} for p, r in sorted(self.revoked.items())
            },
        }
        if self.incarnation:
            body["incarnation"] = self.incarnation
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AssignmentDoc:
        """Parse ``assignment.json``; raises ValueError on anything malformed (never guesses)."""
        try:
            raw = json.loads(text)
            grants = {
                str(w): frozenset(int(p) for p in ps) for w, ps in (raw.get("grants") or {}).items() if ps
            }
            revoked = {
                int(p): Revocation(str(r["worker"]), int(r["epoch"]))
                for p, r in (raw.get("revoked") or {}).items()
            }
            return cls(int(raw["epoch"]), grants, int(raw.get("partitions", 0)), revoked,
                       str(raw.get("incarnation") or ""))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed {ASSIGNMENT_KEY}: {exc}") from exc


@dataclass(frozen=True)
class Grant:
    """What one worker reads from the document: its partitions as of (incarnation, epoch)."""

    incarnation: str
    epoch: int
    partitions: frozenset[int]


def read_grant(doc_text: str | None, worker: str) -> Grant | None:
    """``worker``'s grant from ``assignment.json``; None if missing or malformed (a worker then keeps what
    it has: the operator will write a valid document)."""
    if not doc_text:
        return None
    try:
        doc = AssignmentDoc.from_json(doc_text)
    except ValueError:
        return None
    return Grant(doc.incarnation, doc.epoch, doc.grant_of(worker))


def format_owned(owned: frozenset[int]) -> str:
    """The ``lagpilot.io/owned`` annotation value."""
    return ",".join(str(p) for p in sorted(owned))


def parse_owned(text: str | None) -> frozenset[int] | None:
    """``lagpilot.io/owned`` back to partitions; None when absent or unreadable (never a guess)."""
    if text is None:
        return None
    try:
        return frozenset(int(p) for p in text.split(",") if p.strip())
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
