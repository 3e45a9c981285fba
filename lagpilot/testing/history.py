"""The history checker: one verdict over everything a fault test recorded.

Inputs are the target's record of every request (`Arrival`: topic, partition, offset, key, worker, when it
started and ended, the status answered) and the producer's log of acknowledged records (`Produced`), plus
the faults injected (`Fault`: when, and optionally each partition's committed offset when it began).
A partition is a (topic, partition) pair: a worker may own ``orders:0`` and ``payments:0`` at once, and
every rule below holds per pair. Producer logs without topics (single-topic tests) are matched on the
partition alone. The verdict reports:

- lost: a record the broker acknowledged that no request delivered with a 2xx;
- out of key order: per (partition, key), first deliveries whose offsets go backwards in time;
- duplicates: records delivered with a 2xx more than once, each marked allowed only when it was in
  flight or uncommitted at a fault (delivered before the fault ended, redelivered after it began, and at
  or above the partition's committed offset at the fault when that is known) — at-least-once permits
  those, nothing else;
- overlap: two workers with requests of one partition open at the same time; after a fault began,
  interleaving: a partition taken over by another worker and then delivered again by the one it was
  taken from while the new owner goes on (A B A B); and records delivered by A, then by B, then by A
  again — the zombie that resumes after a freeze and delivers what it no longer owns, even when the new
  owner has nothing more to deliver.

A verdict is `ok` when nothing is lost, out of order or overlapping and every duplicate is allowed.
`Verdict.summary()` is the one line a fault test prints per run."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Request(Protocol):
    """What the checker needs of one recorded request (lagpilot.testing.target.Arrival, a frozen
    dataclass, has it: hence read-only members)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def worker(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...

    @property
    def accepted(self) -> bool: ...


@dataclass(frozen=True)
class Produced:
    partition: int
    offset: int
    key: bytes | None
    topic: str = ""  # "": a single-topic log, matched against requests of any topic by partition alone


Where = tuple[str, int]  # (topic, partition) of a request


def _where(r: Request) -> Where:
    return (r.topic, r.partition)


def _label(where: Where) -> str:
    topic, partition = where
    return f"{topic}:{partition}" if topic else f"p{partition}"


@dataclass(frozen=True)
class Fault:
    """A fault from `start` until it was healed at `end`; `committed` is each partition's committed offset
    (the next to read) when it began, if the test read it."""

    name: str
    start: float
    end: float
    # partition number (one topic) or (topic, partition), e.g. a PartitionId -> committed offset
    committed: Mapping[Any, int] | None = None

    def committed_at(self, where: Where) -> int | None:
        if self.committed is None:
            return None
        found = self.committed.get(where)
        return self.committed.get(where[1]) if found is None else found


@dataclass(frozen=True)
class Duplicate:
    partition: int
    offset: int
    deliveries: int
    allowed: bool
    why: str
    topic: str = ""


@dataclass
class Verdict:
    produced: int
    delivered: int
    # (partition, offset); (topic, partition, offset) when the producer's log names topics
    lost: list[tuple[Any, ...]] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)

    @property
    def allowed_duplicates(self) -> list[Duplicate]:
        return [d for d in self.duplicates if d.allowed]

    @property
    def forbidden_duplicates(self) -> list[Duplicate]:
        return [d for d in self.duplicates if not d.allowed]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.out_of_order or self.overlaps or self.forbidden_duplicates)

    def summary(self) -> str:
        return (f"{'OK' if self.ok else 'VIOLATED'}: produced {self.produced}, delivered {self.delivered}, "
                f"lost {len(self.lost)}, out of key order {len(self.out_of_order)}, overlap {len(self.overlaps)}, "
                f"duplicates {len(self.duplicates)} ({len(self.allowed_duplicates)} allowed: in flight or "
                f"uncommitted at a fault)")

    def details(self, limit: int = 10) -> str:
        """The first violations of each kind, for an assertion message."""
        lines = [self.summary()]
        lines += [f"lost {_label((str(x[0]), x[1]) if len(x) == 3 else ('', x[0]))}@{x[-1]}" for x in self.lost[:limit]]
        lines += [f"order: {x}" for x in self.out_of_order[:limit]]
        lines += [f"overlap: {x}" for x in self.overlaps[:limit]]
        lines += [f"duplicate {_label((d.topic, d.partition))}@{d.offset} x{d.deliveries}: {d.why}"
                  for d in self.forbidden_duplicates[:limit]]
        return "\n".join(lines)


def _by_partition(requests: Iterable[Request]) -> dict[Where, list[Request]]:
    out: dict[Where, list[Request]] = {}
    for r in requests:
        out.setdefault(_where(r), []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: (r.start, r.end))
    return out


def lost_records(requests: Iterable[Request], produced: Iterable[Produced]) -> list[tuple[Any, ...]]:
    """Acknowledged records no request delivered with a 2xx: (partition, offset), or (topic, partition,
    offset) when the producer's log names topics."""
    produced = list(produced)
    if any(p.topic for p in produced):
        got = {(r.topic, r.partition, r.offset) for r in requests if r.accepted}
        return sorted({(p.topic, p.partition, p.offset) for p in produced} - got)
    delivered = {(r.partition, r.offset) for r in requests if r.accepted}
    return sorted({(p.partition, p.offset) for p in produced} - delivered)


def first_deliveries_out_of_key_order(requests: Iterable[Request]) -> list[str]:
    """Per (topic, partition, key), the first accepted delivery of each record, in start order, must have
    increasing offsets."""
    first: dict[tuple[Where, int], Request] = {}
    for r in sorted((r for r in requests if r.accepted), key=lambda r: r.start):
        first.setdefault((_where(r), r.offset), r)
    last: dict[tuple[Where, bytes | None], int] = {}
    out = []
    for r in sorted(first.values(), key=lambda r: r.start):
        k = (_where(r), r.key)
        if k in last and r.offset < last[k]:
            out.append(f"{_label(_where(r))} key {r.key!r}: offset {r.offset} first delivered after offset "
                       f"{last[k]}")
        last[k] = max(r.offset, last.get(k, -1))
    return out


def concurrent_owners(requests: Iterable[Request]) -> list[str]:
    """Requests of one (topic, partition) by two workers open at the same time."""
    out: list[str] = []
    for p, rs in _by_partition(requests).items():
        open_until: dict[str, tuple[float, int]] = {}
        for r in rs:
            for w, (end, off) in open_until.items():
                if w != r.worker and end > r.start:
                    out.append(f"{_label(p)}: {r.worker} opened offset {r.offset} at {r.start:.3f} while {w} held "
                               f"offset {off} open until {end:.3f}")
            prev = open_until.get(r.worker)
            if prev is None or r.end > prev[0]:
                open_until[r.worker] = (r.end, r.offset)
    return out


def interleavings(requests: Iterable[Request], since: float) -> list[str]:
    """A partition whose deliveries go A, B, A, B by worker, the return to A at or after `since` (the
    fault): it was taken over, the old worker delivered it again, and the new one went on — two live
    owners, even if their requests never overlap in time. A single return (A, B, A: a canary aborted, its
    partitions back on the stable revision) is a hand-off, not an interleaving."""
    out = []
    for p, rs in _by_partition(requests).items():
        runs: list[tuple[str, float]] = []  # (worker, start of its run)
        for r in rs:
            if not runs or runs[-1][0] != r.worker:
                runs.append((r.worker, r.start))
        workers = [w for w, _ in runs]
        for i in range(len(runs) - 3):
            a, b = workers[i], workers[i + 1]
            if workers[i + 2] == a and runs[i + 2][1] >= since and b in workers[i + 3:]:
                out.append(f"{_label(p)}: deliveries interleave between {b} and {a} after the fault "
                           f"({' > '.join(workers)})")
                break
    return out


def _first_seen(requests: Iterable[Request]) -> dict[tuple[Where, str], float]:
    """When each worker first delivered each partition."""
    out: dict[tuple[Where, str], float] = {}
    for r in requests:
        k = (_where(r), r.worker)
        out[k] = min(out.get(k, r.start), r.start)
    return out


def _zombie_delivery(deliveries: Sequence[Request], first_seen: Mapping[tuple[Where, str], float],
                     faults: Sequence[Fault] = ()) -> bool:
    """Whether a record was delivered again by a worker that had the partition *before* the worker that
    delivered it previously: the partition had moved on, and the old owner went back to it and delivered
    what the new one had already delivered. A redelivery by the next owner (records uncommitted at a
    fault) is the other way round; a planned hand-back starts after what the interim owner committed."""
    ds = sorted(deliveries, key=lambda r: r.start)
    for prev, cur in itertools.pairwise(ds):
        returned = cur.worker != prev.worker and (first_seen[(_where(cur), cur.worker)]
                                                  < first_seen[(_where(prev), prev.worker)])
        # A worker taking a partition back at a fault redelivers what the failed owner left uncommitted:
        # that delivery began before the fault, the redelivery after it began.
        explained = any(prev.start < f.start <= cur.start for f in faults)
        if returned and not explained:
            return True
    return False


def zombie_redeliveries(requests: Sequence[Request], faults: Sequence[Fault] = ()) -> list[str]:
    """Partitions where a worker delivered again what a later owner had delivered (see _zombie_delivery):
    the resumed zombie, even when the new owner had nothing more to deliver by then."""
    first_seen = _first_seen(requests)
    by_record: dict[tuple[Where, int], list[Request]] = {}
    for r in requests:
        if r.accepted:
            by_record.setdefault((_where(r), r.offset), []).append(r)
    parts: dict[Where, list[int]] = {}
    for (p, o), rs in sorted(by_record.items()):
        if len(rs) > 1 and _zombie_delivery(rs, first_seen, faults):
            parts.setdefault(p, []).append(o)
    return [f"{_label(p)}: {len(offs)} records delivered again by a worker that had lost the partition to the one "
            f"that delivered them (first offset {offs[0]})" for p, offs in sorted(parts.items())]


def classify_duplicates(requests: Sequence[Request], faults: Sequence[Fault]) -> list[Duplicate]:
    first_seen = _first_seen(requests)
    accepted: dict[tuple[Where, int], list[Request]] = {}
    for r in requests:
        if r.accepted:
            accepted.setdefault((_where(r), r.offset), []).append(r)
    out = []
    for (where, o), rs in sorted(accepted.items()):
        topic, p = where
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: r.start)
        first, again = rs[0], rs[1:]
        why = "delivered again with no fault in between"
        allowed = False
        if _zombie_delivery(rs, first_seen, faults):
            out.append(Duplicate(p, o, len(rs), False,
                                 "delivered again by a worker that had lost the partition to the one that "
                                 "delivered it", topic))
            continue
        for f in faults:
            in_flight = first.start <= f.end and all(r.start >= f.start for r in again)
            at_fault = f.committed_at(where)
            uncommitted = f.committed is None or o >= (at_fault or 0)
            if in_flight and uncommitted:
                allowed, why = True, f"in flight or uncommitted at {f.name}"
                break
            if in_flight:
                why = f"committed before {f.name} (committed offset {'?' if at_fault is None else at_fault})"
        out.append(Duplicate(p, o, len(rs), allowed, why, topic))
    return out


def check_history(requests: Sequence[Request], produced: Sequence[Produced],
                  faults: Sequence[Fault] = ()) -> Verdict:
    """The verdict over one run (see the module docstring)."""
    since = min((f.start for f in faults), default=float("inf"))
    return Verdict(
        produced=len({(p.topic, p.partition, p.offset) for p in produced}),
        delivered=len({(_where(r), r.offset) for r in requests if r.accepted}),
        lost=lost_records(requests, produced),
        out_of_order=first_deliveries_out_of_key_order(requests),
        duplicates=classify_duplicates(requests, faults),
        overlaps=concurrent_owners(requests) + interleavings(requests, since) + zombie_redeliveries(requests, faults),
    )
