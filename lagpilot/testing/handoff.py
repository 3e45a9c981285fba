"""The hand-off without the rest of the operator, for lab tests and the bench: real
``lagpilot-consumer --assignment k8s`` processes (one per "pod", named like pods, each with its own Lease
through the real API server), the real ConfigMap, the real Kafka broker, and each round the operator's own
hand-off round (``handoff.shell.plan_round`` and ``write_assignment``) over what the API server holds. What
it fakes is only the Deployment controller and the kubelet: it starts a process per wanted replica and
SIGTERMs the cheapest ones (pod-deletion-cost) on scale-down, and it reports those processes as pod objects.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from lagpilot.protocol import (
    ASSIGNMENT_KEY,
    LABEL_CG,
    LABEL_REVISION,
    AssignmentDoc,
    PartitionId,
    assignment_configmap_name,
    lease_duration_for,
)
from lagpilot.testing.consumer import ConsumerProcess
from lagpilot.testing.history import Produced, concurrent_owners, first_deliveries_out_of_key_order
from lagpilot.testing.target import Arrival
from lagpilot_operator.handoff.observe import LeaseClock, observe
from lagpilot_operator.handoff.planner import Observed
from lagpilot_operator.handoff.rollout import CanaryFigures, Commands, RolloutStep
from lagpilot_operator.handoff.shell import plan_round, write_assignment
from lagpilot_operator.resource.spec import RolloutSpec


@dataclass
class Worker:
    name: str
    revision: str
    proc: ConsumerProcess
    deleting: bool = False
    target_url: str = ""


@dataclass
class Move:
    """One epoch change seen by the harness, with wall-clock (monotonic) time."""

    t: float
    epoch: int
    grants: dict[str, list[PartitionId]]


@dataclass
class LocalCluster:
    api: Any
    namespace: str
    bootstrap: str
    topic: str
    partitions: int
    group: str
    log_dir: Path
    kubeconfig: str = ""
    cg: str = "cg"
    fence_timeout: float = 6.0
    lease_renew: float = 1.0
    threads: int = 4
    extra_args: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    history: list[Move] = field(default_factory=list)
    seq: int = 0
    target_urls: dict[str, str] = field(default_factory=dict)  # revision -> URL (a "bad version" per rev)

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.clock = LeaseClock()  # the harness is one operator: it keeps its own Lease observations
        self.coord = client.CoordinationV1Api(self.api)
        self.lock = threading.Lock()

    @property
    def lease_duration(self) -> float:
        """What the workers it starts declare (their default 10 s target timeout)."""
        return float(lease_duration_for(self.fence_timeout, self.lease_renew, 10.0))

    @property
    def topics(self) -> dict[str, int]:
        """The group's topics with their partition counts (the harness runs a single-topic group)."""
        return {self.topic: self.partitions}

    @property
    def configmap(self) -> str:
        return assignment_configmap_name(self.cg)

    # ---- "kubelet" -------------------------------------------------------------------------------
    def start_worker(self, revision: str) -> Worker:
        self.seq += 1
        name = f"{self.cg}-{revision}-{self.seq}"
        url = self.target_urls[revision]
        env = {
            "POD_NAME": name, "POD_NAMESPACE": self.namespace,
            "KUBECONFIG": self.kubeconfig or os.environ.get("KUBECONFIG", ""),
            "LAGPILOT_FENCE_TIMEOUT_SECONDS": str(self.fence_timeout),
            "LAGPILOT_LEASE_RENEW_SECONDS": str(self.lease_renew),
        }
        args = ["--bootstrap-servers", self.bootstrap, "--topic", self.topic, "--group-id", self.group,
                "--target-url", url, "--threads", str(self.threads), "--assignment", "k8s",
                "--assignment-configmap", self.configmap, "--drain-seconds", "10", *self.extra_args]
        proc = ConsumerProcess(args, self.log_dir / f"{name}.log", env=env)
        w = Worker(name, revision, proc, target_url=url)
        self.workers[name] = w
        return w

    def pods(self) -> list[dict[str, Any]]:
        out = []
        for w in list(self.workers.values()):
            if w.proc.proc.poll() is not None and w.deleting:
                continue  # exited after SIGTERM: the pod object is gone (a crashed one stays, not ready)
            ready = w.proc.proc.poll() is None and w.proc.get("/readyz")[0] == 200
            meta: dict[str, Any] = {"name": w.name, "labels": {LABEL_REVISION: w.revision}}
            if w.deleting:
                meta["deletionTimestamp"] = "2000-01-01T00:00:00Z"
            out.append({"metadata": meta, "status": {
                "phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}})
        return out

    def scale(self, deployments: dict[str, int] | None, costs: dict[str, int]) -> None:
        if deployments is None:
            return
        revs = {w.revision for w in self.workers.values()} | set(deployments)
        for rev in sorted(revs):
            live = sorted((w for w in self.workers.values() if w.revision == rev and not w.deleting),
                          key=lambda w: (costs.get(w.name, 0), w.name))
            want = deployments.get(rev, 0)
            for w in live[: max(0, len(live) - want)]:
                w.deleting = True
                w.proc.proc.send_signal(15)
            for _ in range(want - len(live)):
                self.start_worker(rev)

    # ---- API state -------------------------------------------------------------------------------
    def read(self) -> tuple[dict[str, Any] | None, AssignmentDoc | None, list[dict[str, Any]]]:
        try:
            cm = self.api.sanitize_for_serialization(
                self.core.read_namespaced_config_map(self.configmap, self.namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            cm = None
        doc = AssignmentDoc.from_json(cm["data"][ASSIGNMENT_KEY], self.topic) if cm and cm.get("data") else None
        leases = [self.api.sanitize_for_serialization(x) for x in self.coord.list_namespaced_lease(
            self.namespace, label_selector=f"{LABEL_CG}={self.cg}").items]
        return cm, doc, leases

    def observed(self) -> Observed:
        _, doc, leases = self.read()
        return observe(doc, self.pods(), leases, self.topics, self.clock, self.lease_duration,
                       default_topic=self.topic)

    def write(self, cm: dict[str, Any] | None, doc: AssignmentDoc) -> bool:
        body = {"metadata": {"name": self.configmap, "namespace": self.namespace},
                "data": {ASSIGNMENT_KEY: doc.to_json()}}
        if not write_assignment(self.core, self.namespace, cm, body):
            return False
        self.history.append(Move(time.monotonic(), doc.epoch,
                                 {w: sorted(ps) for w, ps in doc.grants.items()}))
        return True

    # ---- the operator's round ----------------------------------------------------------------------
    def round(self, spec: RolloutSpec, revision: str, workers: int, figures: CanaryFigures | None = None,
              commands: Commands | None = None, paused: bool = False) -> RolloutStep:
        cm, doc, leases = self.read()
        rnd = plan_round(spec, paused, revision, workers, self.topics, doc, self.pods(), leases, self.status,
                         commands or Commands(), figures, time.time(), self.clock, self.lease_duration,
                         published_epoch=self.history[-1].epoch if self.history else None,
                         default_topic=self.topic)
        step, new = rnd.step, rnd.doc
        if cm is None or new != doc:
            self.write(cm, new)
        self.status = step.status
        self.scale(step.deployments, step.deletion_cost)
        return step

    def run_until(self, spec: RolloutSpec, revision: str, workers: int, done: Any, timeout: float = 120.0,
                  interval: float = 0.2, figures: Any = None, commands: Commands | None = None) -> float:
        """Run rounds until ``done(self)``; returns the seconds it took."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            figs = figures(self) if callable(figures) else figures
            self.round(spec, revision, workers, figures=figs, commands=commands)
            if done(self):
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"timed out: status={self.status} doc={self.read()[1]} "
                             f"workers={[(w.name, w.proc.proc.poll()) for w in self.workers.values()]}\n"
                             + "\n".join(f"--- {w.name}\n{w.proc.tail(1500)}" for w in self.workers.values()))

    def stable_on(self, revision: str) -> Any:
        def check(c: LocalCluster) -> bool:
            o = c.observed()
            owners = {p: o.workers[w].revision for w, ps in (o.doc.grants if o.doc else {}).items()
                      for p in ps if o.workers.get(w) and o.workers[w].report
                      and p in o.workers[w].report.owned}  # type: ignore[union-attr]
            return (c.status.get("phase") == "Stable" and c.status.get("stableRevision") == revision
                    and len(owners) == c.partitions and set(owners.values()) == {revision}
                    and not any(w.revision != revision and w.proc.proc.poll() is None
                                for w in c.workers.values()))
        return check

    def close(self) -> None:
        for w in self.workers.values():
            if w.proc.proc.poll() is None:
                w.proc.proc.send_signal(15)
        deadline = time.monotonic() + 30
        for w in self.workers.values():
            try:
                w.proc.proc.wait(max(0.1, deadline - time.monotonic()))
            except Exception:
                pass
            w.proc.close()


# ---- checks over what the target recorded ------------------------------------------------------------


# The history checker's rules (lagpilot.testing.history), under the names these tests have used.
overlaps = concurrent_owners
first_deliveries_in_key_order = first_deliveries_out_of_key_order


def duplicates(arrivals: list[Arrival]) -> list[tuple[int, int]]:
    """(partition, offset) of records accepted more than once (told apart by topic too; the harnesses that
    use it read one topic, so the topic is left out of what is returned)."""
    seen: set[tuple[str, int, int]] = set()
    dups = []
    for a in arrivals:
        if a.accepted:
            k = (a.topic, a.partition, a.offset)
            if k in seen:
                dups.append((a.partition, a.offset))
            seen.add(k)
    return dups


def handover_gaps(arrivals: list[Arrival], old: set[str], new: set[str]) -> dict[int, float]:
    """Per partition: first delivery by a new worker minus the last delivery by an old one (seconds)."""
    out: dict[int, float] = {}
    by_part: dict[int, list[Arrival]] = {}
    for a in arrivals:
        by_part.setdefault(a.partition, []).append(a)
    for p, arrs in by_part.items():
        last_old = max((a.end for a in arrs if a.worker in old), default=None)
        first_new = min((a.start for a in arrs if a.worker in new), default=None)
        if last_old is not None and first_new is not None:
            out[p] = first_new - last_old
    return out


class SteadyProducer:
    """Keyed records at a steady rate on every partition until stopped; values carry key and sequence."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, rate: float = 200.0, keys: int = 60) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self.topic, self.partitions, self.rate, self.keys = topic, partitions, rate, keys
        self.sent = 0
        self.acked = 0
        self.log: list[Produced] = []  # every acknowledged record, for the history checker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err: object, msg: Any) -> None:
        if err is None:
            self.acked += 1
            self.log.append(Produced(msg.partition(), msg.offset(), msg.key()))

    def _run(self) -> None:
        seq: dict[int, int] = {}
        i = 0
        while not self._stop.is_set():
            k = i % self.keys
            n = seq.get(k, 0)
            seq[k] = n + 1
            self.producer.produce(self.topic, key=f"key-{k}".encode(), value=json.dumps([k, n]).encode(),
                                  partition=k % self.partitions, on_delivery=self._cb)
            self.producer.poll(0)
            self.sent += 1
            i += 1
            time.sleep(1.0 / self.rate)
        self.producer.flush(30)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
