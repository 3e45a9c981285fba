"""The partition planner: a pure function from what the Kubernetes API says (the assignment ConfigMap, the
workers' Leases and pods) to the next assignment document.

Why a planner at all: Kafka's group rebalancing can let two consumers work one partition for a moment and
cannot give a canary an exact set of partitions. Here the operator decides, and moves a partition in two
epochs -- *revoke* it from the old owner, then *grant* it to the new one only once the old owner has
reported the release (or is gone). See docs/architecture.md, "Partition hand-off protocol".

The only state is the document itself (``revoked`` remembers, per partition in motion, who must confirm
the release and from which epoch on), so an operator restarted at any moment recomputes the same step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from lagpilot.protocol import REVOKED_FROM_ALL, AssignmentDoc, PartitionId, Revocation, partitions_of


@dataclass(frozen=True)
class WorkerReport:
    """What a worker's Lease says: it owns exactly ``owned`` after fully applying ``epoch``."""

    owned: frozenset[PartitionId]
    epoch: int


@dataclass(frozen=True)
class WorkerView:
    """One worker as observed. ``gone``: its Lease expired, or neither its pod nor its Lease exists -- in
    both cases it processes nothing and, if it ever comes back, re-reads the current document first.
    ``report`` is None while the worker has not written its Lease yet (it owns nothing before that).
    ``terminating``: the pod is being deleted (still draining; not eligible for new partitions)."""

    name: str
    gone: bool = False
    report: WorkerReport | None = None
    revision: str = ""
    ready: bool = False
    terminating: bool = False

    @property
    def eligible(self) -> bool:
        """May be given partitions: alive, has published a Lease, not shutting down."""
        return not self.gone and not self.terminating and self.report is not None


@dataclass(frozen=True)
class Observed:
    """``topics``: every topic the group reads now, with its partition count (from the brokers). A topic
    missing here (deleted, or no longer matching the group's pattern) has no partitions to grant."""

    doc: AssignmentDoc | None
    workers: Mapping[str, WorkerView]
    topics: Mapping[str, int] = field(default_factory=dict)
    # The epoch the operator last published (status.assignment.epoch); None: it never published one.
    published_epoch: int | None = None

    @cached_property
    def partitions(self) -> tuple[PartitionId, ...]:
        """Every partition of every topic, sorted (topic, then number)."""
        return partitions_of(self.topics)

    def exists(self, partition: PartitionId) -> bool:
        return 0 <= partition.partition < self.topics.get(partition.topic, 0)

    def is_gone(self, worker: str) -> bool:
        view = self.workers.get(worker)
        return view is None or view.gone


def released(observed: Observed, revocation: Revocation, partition: PartitionId) -> bool:
    """True once the worker a partition was revoked from can no longer be processing it."""
    if revocation.worker == REVOKED_FROM_ALL:
        return all(view.gone or (view.report is not None and view.report.epoch >= revocation.epoch
                                 and partition not in view.report.owned) for view in observed.workers.values())
    if observed.is_gone(revocation.worker):
        return True
    report = observed.workers[revocation.worker].report
    if report is None:
        # No readable report (the Lease was deleted, garbled or forged) is no evidence of a release: the
        # partition stays with its old owner until that worker reports again or is gone.
        return False
    return report.epoch >= revocation.epoch and partition not in report.owned


def initial_doc(observed: Observed, incarnation: str = "") -> AssignmentDoc:
    """The document to start from when there is none (the ConfigMap does not exist or is unreadable).

    A new group (nothing published yet, no worker reporting anything applied) starts at epoch 0 with nothing
    granted. Otherwise the document was lost under running workers: they may own partitions, and a report
    may lag what a worker holds. So every partition is revoked from *all* workers (``REVOKED_FROM_ALL``) in a
    new ``incarnation`` at an epoch above anything published or reported, and granted again only once every
    live worker has applied that document (which grants it nothing) -- workers accept a new incarnation
    whatever epoch they had reached. Partitions a worker reports that no longer exist (their topic went
    away with the document) are revoked the same way, so the revocation is dropped only once released."""
    reports = [v.report for v in observed.workers.values() if v.report is not None]
    topics = dict(observed.topics)
    if observed.published_epoch is None and all(r.epoch == 0 and not r.owned for r in reports):
        return AssignmentDoc(0, {}, topics, {}, incarnation)
    epoch = max([observed.published_epoch or 0, *(r.epoch for r in reports)]) + 1
    held = set(observed.partitions).union(*(r.owned for r in reports))
    revoked = {p: Revocation(REVOKED_FROM_ALL, epoch) for p in sorted(held)}
    return AssignmentDoc(epoch, {}, topics, revoked, incarnation)


def plan_assignment(observed: Observed, desired: Mapping[PartitionId, str | None],
                    incarnation: str = "") -> AssignmentDoc:
    """The next assignment document, moving towards ``desired`` (partition -> worker, or None / missing
    for "nobody") without ever letting two live workers own a partition.

    - A partition granted to a worker that is gone, or whose desired owner differs, is revoked (recorded
      in ``revoked`` with the new epoch).
    - An ungranted partition is granted to its desired owner (eligible: has a Lease, alive, not
      terminating -- a pod that never starts must not sit on partitions) only when it is not
      in ``revoked``, or its revocation is released (see :func:`released`), or the desired owner is the
      very worker it was revoked from (moving back needs no release).
    - A partition that no longer exists (its topic was deleted or left the group) is revoked like any
      other; its revocation is dropped once released, so a topic that comes back starts clean but never
      while an old owner may still hold it. A new topic's partitions are granted like any other.
    - The epoch bumps by one if and only if the grants change; otherwise the input document is returned
      as is (or with only its topics and settled revocations updated), so reconciling twice on the same
      observation writes nothing.
    """
    doc = observed.doc if observed.doc is not None else initial_doc(observed, incarnation)
    new_epoch = doc.epoch + 1
    grants: dict[str, set[PartitionId]] = {w: set(ps) for w, ps in doc.grants.items()}
    revoked: dict[PartitionId, Revocation] = dict(doc.revoked)

    def wanted(p: PartitionId) -> str | None:
        owner = desired.get(p)
        if owner is None or not observed.exists(p):
            return None
        view = observed.workers.get(owner)
        return owner if view is not None and view.eligible else None

    # Revoke: from gone workers, from workers no longer desired, and partitions that no longer exist.
    for worker, ps in grants.items():
        gone = observed.is_gone(worker)
        for p in sorted(ps):
            if gone or wanted(p) != worker:
                ps.discard(p)
                revoked[p] = Revocation(worker, new_epoch)

    # Grant: ungranted partitions whose previous owner has let go.
    owner = {p: w for w, ps in grants.items() for p in ps}
    for p in observed.partitions:
        target = wanted(p)
        if target is None or p in owner:
            continue
        rev = revoked.get(p)
        if rev is not None and rev.worker != target and not released(observed, rev, p):
            continue
        if rev is not None and rev.epoch == new_epoch and rev.worker != target:
            continue  # revoked in this very epoch: the release cannot have been seen yet
        grants.setdefault(target, set()).add(p)
        revoked.pop(p, None)

    # A vanished partition's revocation, once released, is forgotten: nobody holds it any more.
    revoked = {p: r for p, r in revoked.items() if observed.exists(p) or not released(observed, r, p)}
    new_grants = {w: frozenset(ps) for w, ps in grants.items() if ps}
    topics = dict(observed.topics)
    if new_grants == dict(doc.grants):
        # Nothing granted or revoked: at most the topics changed or a revocation was forgotten. Same
        # epoch: the workers' grants are what they were.
        if dict(doc.topics) == topics and revoked == dict(doc.revoked):
            return doc
        return AssignmentDoc(doc.epoch, doc.grants, topics, revoked, doc.incarnation)
    return AssignmentDoc(new_epoch, new_grants, topics, revoked, doc.incarnation)


def confirmed_owners(observed: Observed) -> dict[PartitionId, str]:
    """partition -> worker that is both granted it and reports owning it (the move is complete)."""
    doc = observed.doc
    if doc is None:
        return {}
    out: dict[PartitionId, str] = {}
    for worker, ps in doc.grants.items():
        view = observed.workers.get(worker)
        if view is None or view.gone or view.report is None:
            continue
        for p in ps & view.report.owned:
            out[p] = worker
    return out


def balanced_distribution(
    partitions: Iterable[PartitionId], workers: Iterable[str], current: Mapping[PartitionId, str] | None = None
) -> dict[PartitionId, str]:
    """Spread partitions over workers as evenly as possible (sizes differ by at most one) while moving as
    few partitions as possible away from their ``current`` owner. Deterministic: the extra partitions go
    to the workers currently holding the most (ties by name), each worker keeps its lowest partitions
    (topic, then number), and the rest are dealt in that order to the least-loaded worker (ties by name)
    -- topic by topic, so each topic spreads over the workers too. Returns {} when there are no workers."""
    parts = sorted(set(partitions))
    names = sorted(set(workers))
    if not names:
        return {}
    current = current or {}
    held: dict[str, list[PartitionId]] = {w: [] for w in names}
    for p in parts:
        w = current.get(p)
        if w in held:
            held[w].append(p)
    base, extra = divmod(len(parts), len(names))
    by_load = sorted(names, key=lambda w: (-len(held[w]), w))
    quota = {w: base + (1 if i < extra else 0) for i, w in enumerate(by_load)}
    result: dict[PartitionId, str] = {}
    for w in names:
        for p in held[w][: quota[w]]:
            result[p] = w
    load = {w: min(len(held[w]), quota[w]) for w in names}
    for p in parts:
        if p in result:
            continue
        w = min((n for n in names if load[n] < quota[n]), key=lambda n: (load[n], n))
        result[p] = w
        load[w] += 1
    return result


def limit_moves(
    doc: AssignmentDoc, desired: Mapping[PartitionId, str | None], budget: int
) -> dict[PartitionId, str | None]:
    """Cap how many partitions are in motion at once (Rolling's maxPartitionsInFlight). A partition is in
    motion when its desired owner differs from its grantee. Partitions already ungranted (revoked, new, or
    from a gone worker) always proceed -- holding them back would only leave them unowned -- and count
    against the budget first; then moves of granted partitions are admitted lowest partition first. The
    rest keep their current grantee. ``budget <= 0`` means no limit."""
    if budget <= 0:
        return dict(desired)
    owner = doc.owner_of()
    out: dict[PartitionId, str | None] = {}
    moving = [p for p, w in desired.items() if p in owner and owner[p] != w]
    in_flight = sum(1 for p, w in desired.items() if p not in owner and w is not None)
    allowed = set(sorted(moving)[: max(0, budget - in_flight)])
    for p, w in desired.items():
        out[p] = w if (p not in owner or owner[p] == w or p in allowed) else owner[p]
    return out
