"""A simulated cluster for the rollout and replay planners' tests: Deployments that create and delete pods
honouring the deletion cost, workers that apply assignment documents and report them (late, when a
Hypothesis draw says so, never more than two rounds in a row), and the real rollout step and hand-off
planner in between. It checks, after every worker round, that no partition has two owners. The group may
read several topics, and ``topics`` may change between rounds (a topic created or deleted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from lagpilot.protocol import PartitionId, partitions_of
from lagpilot_operator.handoff.planner import AssignmentDoc, Observed, WorkerReport, WorkerView, plan_assignment
from lagpilot_operator.handoff.rollout import CanaryFigures, Commands, RolloutInput, RolloutStep, next_rollout_step
from lagpilot_operator.resource.spec import RolloutSpec


@dataclass
class Pod:
    name: str
    revision: str
    owned: frozenset[PartitionId] = frozenset()
    applied: int = 0
    report: WorkerReport | None = None
    ready: bool = False
    skipped: int = 0


@dataclass
class Cluster:
    """Just enough of Kubernetes (Deployments per revision, pods, the ConfigMap, the Leases) and of Kafka:
    ``topics``, name -> partition count."""

    topics: dict[str, int]
    pods: dict[str, Pod] = field(default_factory=dict)
    doc: AssignmentDoc | None = None
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Any] = field(default_factory=list)
    seq: int = 0
    max_owners_seen: int = 0

    @property
    def partitions(self) -> tuple[PartitionId, ...]:
        return partitions_of(self.topics)

    def observed(self) -> Observed:
        views = {p.name: WorkerView(p.name, report=p.report, revision=p.revision, ready=p.ready)
                 for p in self.pods.values()}
        return Observed(self.doc, views, dict(self.topics))

    def scale(self, deployments: dict[str, int] | None, costs: dict[str, int]) -> None:
        if deployments is None:
            return
        for rev in {p.revision for p in self.pods.values()} | set(deployments):
            mine = sorted((p for p in self.pods.values() if p.revision == rev),
                          key=lambda p: (costs.get(p.name, 0), p.name))
            want = deployments.get(rev, 0)
            for pod in mine[: max(0, len(mine) - want)]:
                # SIGTERM: the runtime drains (releases everything) before the pod disappears.
                del self.pods[pod.name]
            for _ in range(want - len(mine)):
                self.seq += 1
                name = f"{rev}-{self.seq}"
                self.pods[name] = Pod(name, rev)

    def workers_act(self, data: st.DataObject | None) -> None:
        for pod in sorted(self.pods.values(), key=lambda p: p.name):
            # Late workers: a worker may skip a round, but not more than two in a row (fairness).
            if data is not None and pod.skipped < 2 and not data.draw(st.booleans(), label="acts"):
                pod.skipped += 1
                continue
            pod.skipped = 0
            if self.doc is not None and self.doc.epoch > pod.applied:
                pod.owned = self.doc.grants.get(pod.name, frozenset())
                pod.applied = self.doc.epoch
            pod.report = WorkerReport(pod.owned, pod.applied)
            pod.ready = True
        self.check()

    def check(self) -> None:
        """At most one owner per partition -- also of a topic that no longer exists (a worker may still hold
        it until it applies the revocation)."""
        held = set(self.partitions).union(*(p.owned for p in self.pods.values()))
        for part in sorted(held):
            owners = [p.name for p in self.pods.values() if part in p.owned]
            self.max_owners_seen = max(self.max_owners_seen, len(owners))
            assert len(owners) <= 1, f"partition {part} owned by {owners}"

    def reconcile(self, spec: RolloutSpec, target: str, workers: int, now: float,
                  figures: CanaryFigures | None = None, commands: Commands | None = None) -> RolloutStep:
        observed = self.observed()
        step = next_rollout_step(RolloutInput(spec, target, workers, observed, self.status,
                                              figures=figures, commands=commands or Commands(), now=now))
        self.shape(step, observed, spec, now)
        self.doc = plan_assignment(observed, step.desired)
        self.status = step.status
        self.events += step.events
        self.scale(step.deployments, step.deletion_cost)
        return step

    def shape(self, step: RolloutStep, observed: Observed, spec: RolloutSpec, now: float) -> None:
        """What the operator's round adds to the rollout step before the assignment is planned (nothing
        here; the replay tests hold partitions)."""

    def owners(self) -> dict[PartitionId, str]:
        return {part: p.revision for p in self.pods.values() for part in p.owned}
