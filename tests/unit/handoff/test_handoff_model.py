"""Stateful model check of the hand-off protocol: the pure planner driven against a faithful model of the
workers and the API server, under random worker deaths, additions, pod deletions, network partitions with
fencing, container restarts, late / skipped epoch application, delayed and stale Lease reads, and arbitrary
desired owner maps (what rollouts produce), with the operator being stateless (a restart is free: every
reconcile recomputes from the ConfigMap and the Leases only).

Safety, checked after every step: no partition is ever owned or granted by two live workers at once (a
worker owns p from when it applies a document granting p until it applies one without p, fences, or dies).
Liveness, checked at the end: once the network heals and reports flow, every partition ends up owned by
its desired owner."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from lagpilot_operator.handoff.planner import (
    AssignmentDoc,
    Observed,
    WorkerReport,
    WorkerView,
    balanced_distribution,
    plan_assignment,
)

pytestmark = pytest.mark.unit


@dataclass
class SimWorker:
    name: str
    alive: bool = True  # the process runs
    connected: bool = True  # can reach the API server
    fenced: bool = False  # released everything because it could not renew its Lease
    relist_needed: bool = True  # (re)started or fenced: must write its Lease and re-list the doc first
    owned: frozenset[int] = frozenset()
    applied: int = 0
    min_epoch: int = 0  # oldest doc it may still apply (set by a fresh LIST)
    max_received: int = 1 << 30  # docs received before it lost the API server
    pod_exists: bool = True
    terminating: bool = False
    lease_exists: bool = False
    lease_expired: bool = False
    lease_history: list[WorkerReport] = field(default_factory=list)


class HandoffModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.docs: list[AssignmentDoc] = []
        self.workers: dict[str, SimWorker] = {}
        self.partitions = 1
        self.next_id = 0

    # ---- helpers -------------------------------------------------------------------------------------
    @property
    def doc(self) -> AssignmentDoc | None:
        return self.docs[-1] if self.docs else None

    @property
    def epoch(self) -> int:
        return self.doc.epoch if self.doc else 0

    def names(self) -> list[str]:
        return sorted(self.workers)

    def observe(self, data: st.DataObject | None) -> Observed:
        views = {}
        for w in self.workers.values():
            gone = w.lease_expired or (not w.lease_exists and not w.pod_exists)
            report = None
            if w.lease_exists and w.lease_history:
                hist = w.lease_history
                # Stale reads: the operator may see any report from the last few writes.
                back = data.draw(st.integers(0, min(3, len(hist) - 1)), label="stale") if data else 0
                report = hist[len(hist) - 1 - back]
            if not w.lease_exists and not w.pod_exists:
                continue  # neither pod nor Lease: the operator does not even see the name
            views[w.name] = WorkerView(w.name, gone=gone, report=report, terminating=w.terminating)
        return Observed(self.doc, views, self.partitions)

    def write(self, doc: AssignmentDoc) -> None:
        if self.doc is None or doc != self.doc:
            assert self.doc is None or doc.epoch == self.doc.epoch + 1 or doc.grants == self.doc.grants
            self.docs.append(doc)

    def apply_doc(self, w: SimWorker, doc: AssignmentDoc) -> None:
        # Release first, then start: ownership never includes both the old and the new set.
        w.owned = doc.grants.get(w.name, frozenset())
        w.applied = doc.epoch
        w.fenced = False

    # ---- world ---------------------------------------------------------------------------------------
    @initialize(partitions=st.integers(1, 7), workers=st.integers(0, 3))
    def setup(self, partitions: int, workers: int) -> None:
        self.partitions = partitions
        for _ in range(workers):
            self.add_worker()

    @rule()
    def add_worker(self) -> None:
        name = f"w{self.next_id}"
        self.next_id += 1
        self.workers[name] = SimWorker(name)

    @rule(data=st.data())
    def operator_reconcile_balanced(self, data: st.DataObject) -> None:
        observed = self.observe(data)
        eligible = [v.name for v in observed.workers.values() if v.eligible]
        current = self.doc.owner_of() if self.doc else {}
        desired = balanced_distribution(self.partitions, eligible, current)
        self.write(plan_assignment(observed, desired))

    @rule(data=st.data())
    def operator_reconcile_arbitrary(self, data: st.DataObject) -> None:
        """Rollouts ask for arbitrary maps, including moving a partition back mid-move."""
        observed = self.observe(data)
        choices = [*sorted(observed.workers), None]
        desired = {p: data.draw(st.sampled_from(choices), label=f"owner{p}") for p in range(self.partitions)}
        self.write(plan_assignment(observed, desired))

    @rule(data=st.data())
    def operator_crashes_before_write(self, data: st.DataObject) -> None:
        observed = self.observe(data)
        plan_assignment(observed, balanced_distribution(self.partitions, sorted(observed.workers)))

    @rule()
    def more_partitions(self) -> None:
        self.partitions = min(self.partitions + 1, 9)

    @rule(data=st.data())
    def worker_connects(self, data: st.DataObject) -> None:
        """A (re)started or fenced worker writes its Lease, then LISTs the ConfigMap (a consistent read)."""
        cands = [w for w in self.workers.values() if w.alive and w.relist_needed]
        if not cands:
            return
        w = data.draw(st.sampled_from(cands))
        w.connected = True
        w.max_received = 1 << 30
        if not w.lease_exists:
            w.lease_exists = True
            w.lease_history = []
        w.lease_expired = False
        w.lease_history.append(WorkerReport(w.owned, w.applied))
        w.min_epoch = self.epoch
        w.relist_needed = False

    @rule(data=st.data())
    def worker_applies(self, data: st.DataObject) -> None:
        """Apply some later document it has received (late, possibly skipping epochs)."""
        cands = [w for w in self.workers.values() if w.alive and not w.relist_needed]
        if not cands:
            return
        w = data.draw(st.sampled_from(cands))
        docs = [
            d for d in self.docs
            if d.epoch >= w.min_epoch and d.epoch <= w.max_received
            and (d.epoch > w.applied or (w.fenced and d.epoch >= w.applied))
        ]
        if docs:
            self.apply_doc(w, data.draw(st.sampled_from(docs)))

    @rule(data=st.data())
    def worker_publishes(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.alive and w.connected and w.lease_exists
                 and not w.relist_needed]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.lease_history.append(WorkerReport(w.owned, w.applied))
            w.lease_expired = False

    @rule(data=st.data())
    def network_partition(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.alive and w.connected]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.connected = False
            w.max_received = self.epoch

    @rule(data=st.data())
    def network_heals(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.alive and not w.connected and not w.fenced]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.connected = True  # the watch resumes in order from its resourceVersion
            w.max_received = 1 << 30

    @rule(data=st.data())
    def fence_timeout(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.alive and not w.connected]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.owned = frozenset()
            w.fenced = True
            w.relist_needed = True

    @rule(data=st.data())
    def lease_expires(self, data: st.DataObject) -> None:
        """The lease duration exceeds the fence timeout: by the time the operator can see the Lease
        expired, the worker has fenced or is dead. A fenced worker that reached the API server again renews
        its Lease (rule 2 writes it first), so its Lease no longer runs out."""
        cands = [w for w in self.workers.values()
                 if w.lease_exists and (not w.alive or (w.fenced and not w.connected))]
        if cands:
            data.draw(st.sampled_from(cands)).lease_expired = True

    @rule(data=st.data())
    def kill_9(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.alive]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.alive = False
            w.connected = False
            w.owned = frozenset()

    @rule(data=st.data())
    def container_restarts(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if not w.alive and w.pod_exists and not w.terminating]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.alive = True
            w.connected = False
            w.relist_needed = True
            w.owned = frozenset()
            w.applied = 0

    @rule(data=st.data())
    def pod_deleted(self, data: st.DataObject) -> None:
        cands = [w for w in self.workers.values() if w.pod_exists and not w.terminating]
        if cands:
            data.draw(st.sampled_from(cands)).terminating = True

    @rule(data=st.data())
    def pod_finishes_termination(self, data: st.DataObject) -> None:
        """SIGTERM path: drain, report nothing owned, delete the Lease, exit; the pod object disappears."""
        cands = [w for w in self.workers.values() if w.terminating and w.pod_exists]
        if cands:
            w = data.draw(st.sampled_from(cands))
            w.owned = frozenset()
            if w.alive and w.connected and w.lease_exists:
                w.lease_history.append(WorkerReport(frozenset(), w.applied))
                w.lease_exists = w.lease_expired = False
                w.lease_history = []
            w.alive = False
            w.pod_exists = False

    # ---- properties ----------------------------------------------------------------------------------
    @invariant()
    def never_two_owners(self) -> None:
        holders: dict[int, set[str]] = {}
        for w in self.workers.values():
            if not w.alive:
                assert not w.owned
                continue
            for p in w.owned:
                holders.setdefault(p, set()).add(w.name)
            if self.doc is not None:
                for p in self.doc.grants.get(w.name, frozenset()):
                    holders.setdefault(p, set()).add(w.name)
        for p, ws in holders.items():
            assert len(ws) <= 1, f"partition {p} owned/granted by {sorted(ws)} at epoch {self.epoch}"

    @invariant()
    def document_is_consistent(self) -> None:
        if self.doc is None:
            return
        seen: set[int] = set()
        for ps in self.doc.grants.values():
            assert not (seen & ps)
            seen |= ps
        assert not (seen & set(self.doc.revoked))
        assert AssignmentDoc.from_json(self.doc.to_json()) == self.doc

    def teardown(self) -> None:
        """Liveness: heal the world, deliver everything, and every partition ends up owned."""
        for w in self.workers.values():
            if w.terminating and w.pod_exists:
                w.owned, w.alive, w.pod_exists = frozenset(), False, False
                w.lease_exists, w.lease_history = False, []
            elif not w.alive and w.lease_exists:
                w.lease_expired = True
            elif w.alive and not w.connected and not w.fenced:
                w.connected, w.max_received = True, 1 << 30
            elif w.alive and w.fenced:
                w.owned = frozenset()
                w.relist_needed = True  # healed: a fenced worker writes its Lease and re-LISTs (rule 2)
        if not any(w.alive for w in self.workers.values()):
            self.add_worker()
        desired: dict[int, str] = {}
        for _ in range(8):
            observed = self.observe(None)
            eligible = [v.name for v in observed.workers.values() if v.eligible]
            desired = balanced_distribution(self.partitions, eligible, self.doc.owner_of() if self.doc else {})
            self.write(plan_assignment(observed, desired))
            self.never_two_owners()
            for w in self.workers.values():
                if not w.alive:
                    continue
                if w.relist_needed:
                    w.connected, w.relist_needed, w.max_received = True, False, 1 << 30
                    if not w.lease_exists:
                        w.lease_exists, w.lease_history = True, []
                    w.lease_expired = False
                    w.min_epoch = self.epoch
                if self.doc is not None and (self.doc.epoch > w.applied or w.fenced):
                    self.apply_doc(w, self.doc)
                w.lease_history.append(WorkerReport(w.owned, w.applied))
                self.never_two_owners()
        assert desired, "some worker is alive and eligible"
        assert self.doc is not None
        assert dict(self.doc.owner_of()) == desired
        for p, owner in desired.items():
            assert p in self.workers[owner].owned, f"partition {p} not owned by {owner}"


HandoffModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=40, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_handoff_model = HandoffModel.TestCase
