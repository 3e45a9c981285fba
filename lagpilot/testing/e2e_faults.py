"""The kind fault tests' shared run (tests/e2e/test_e2e_faults.py, test_e2e_broker_failover.py): a fresh
topic under steady production, a ConsumerGroup of two workers spread over the two kind worker nodes, and
the group settled with the worker on the spare node (LAGPILOT_E2E_SPARE_NODE) owning partitions; plus
`docker` for the faults themselves. LAGPILOT_E2E_WORKER_IMAGE runs the workers from another image (the
mutation check)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any, cast

from lagpilot.testing.consumer import committed
from lagpilot.testing.e2e_cluster import NAME, Cluster, arrivals
from lagpilot.testing.e2e_target import Target
from lagpilot.testing.handoff import SteadyProducer
from lagpilot.testing.history import Fault, Verdict, check_history
from lagpilot.testing.wait import wait_for

PARTITIONS = 4
THREADS = 2
WORKER_IMAGE = os.environ.get("LAGPILOT_E2E_WORKER_IMAGE", "")
RUNS = int(os.environ.get("LAGPILOT_E2E_FAULT_RUNS", "3"))  # runs of each scenario in a row


VERDICTS = os.environ.get("LAGPILOT_E2E_VERDICTS", "")  # a file each run's verdict line is appended to


def report_verdict(line: str) -> None:
    """Print a run's verdict line, and append it to LAGPILOT_E2E_VERDICTS (scripts/e2e-kind.sh shows that
    file at the end, so the figures of passing runs, whose output pytest keeps, are seen too)."""
    print(line)
    if VERDICTS:
        with open(VERDICTS, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def docker(*args: str, timeout: float = 60) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def spare_node(c: Cluster) -> str:
    key, _, value = os.environ.get("LAGPILOT_E2E_SPARE_NODE", "").partition("=")
    nodes = [n.metadata.name for n in c.core.list_node(label_selector=f"{key}={value}").items]
    assert len(nodes) == 1, f"expected one node labelled {key}={value}, found {nodes}"
    return nodes[0]


def group_doc(bootstrap: str, topic: str, url: str, image: str = "") -> dict[str, Any]:
    """Two workers, one per kind worker node."""
    # One revision's pods on distinct nodes (matchLabelKeys: pods of the same ReplicaSet only), so a
    # rollout's new pods are not kept off a node by the old ones (required anti-affinity is symmetric).
    spread = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "kubernetes.io/hostname", "matchLabelKeys": ["pod-template-hash"],
        "labelSelector": {"matchLabels": {"lagpilot.io/consumergroup": NAME}}}]}}
    doc: dict[str, Any] = {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": NAME},
           "spec": {"bootstrapServers": bootstrap, "topic": topic, "groupId": f"g-{topic}", "workers": 2,
                    "threads": THREADS, "target": {"url": url}, "rollout": {"strategy": "Rolling"},
                    "template": {"affinity": spread}}}
    if image or WORKER_IMAGE:
        doc["spec"]["image"] = image or WORKER_IMAGE
    return doc


def owners_by_number(status: dict[str, Any]) -> list[str]:
    """status.assignment.owners (topic:partition -> pod) as a list indexed by partition number, "" where
    nothing is granted: the e2e groups read one topic."""
    granted = ((status.get("assignment") or {}).get("owners") or {})
    by_number = {int(str(k).rpartition(":")[2]): str(v) for k, v in granted.items() if v}
    return [by_number.get(p, "") for p in range(max(by_number, default=-1) + 1)]


def owners(c: Cluster) -> list[str]:
    return owners_by_number(c.cg().get("status") or {})


def on_new_revision(c: Cluster, old: str | None) -> str | None:
    """The new revision, once the rollout is Stable on it and a pod of it owns every partition."""
    st = c.cg().get("status") or {}
    rollout, owners_ = st.get("rollout") or {}, owners_by_number(st)
    revision = {p.metadata.name: (p.metadata.labels or {}).get("lagpilot.io/revision") for p in c.pods()}
    new = st.get("revision")
    if (new and new != old and rollout.get("phase") == "Stable" and rollout.get("stableRevision") == new
            and len(owners_) == PARTITIONS and all(revision.get(o) == new for o in owners_)):
        return str(new)
    return None


class Scenario:
    """One run: a fresh topic under steady production, the group settled with a worker on the spare node
    owning partitions; the fault is the caller's."""

    def __init__(self, c: Cluster, worker_bootstrap: str, test_bootstrap: str, target: Target,
                 topic_factory: Callable[[int], str], image: str = "") -> None:
        self.c, self.target, self.test_bootstrap = c, target, test_bootstrap
        self.topic = topic_factory(PARTITIONS)
        self.group = f"g-{self.topic}"
        self.producer = SteadyProducer(test_bootstrap, self.topic, PARTITIONS, rate=60).start()
        c.apply(group_doc(worker_bootstrap, self.topic, target.url, image))
        self.node = spare_node(c)

        def settled() -> tuple[str, list[int]] | None:
            own = owners(c)
            on_node = {p.metadata.name for p in c.pods() if p.spec.node_name == self.node
                       and p.metadata.deletion_timestamp is None}
            if len(own) != PARTITIONS or not all(own) or len(set(own)) != 2:
                return None
            victim = next((w for w in set(own) if w in on_node), None)
            return (victim, [p for p, o in enumerate(own) if o == victim]) if victim else None
        found = cast(tuple[str, list[int]], wait_for(settled, 240, interval=2,
                                                     what="2 workers on 2 nodes owning every partition"))
        self.victim, self.lost = found
        wait_for(lambda: len(self.target.records()) >= 200, 120, what="200 records delivered", interval=2)

    def pod(self) -> Any:
        return next(p for p in self.c.pods() if p.metadata.name == self.victim)

    def wait_moved(self, since: float) -> str:
        def moved() -> str | None:
            own = owners(self.c)
            return own[self.lost[0]] if len(own) == PARTITIONS and all(
                own[p] and own[p] != self.victim for p in self.lost) else None
        new_owner = cast(str, wait_for(moved, 240, interval=1,
                                       what=f"partitions {self.lost} of {self.victim} granted elsewhere"))
        wait_for(lambda: any(a.worker == new_owner and a.partition in self.lost and a.start > since
                             for a in arrivals(self.target.records())), 120,
                 what=f"{new_owner} delivering {self.lost}", interval=2)
        return new_owner

    def ends(self) -> dict[int, int]:
        return {p: 1 + max(r.offset for r in self.producer.log if r.partition == p) for p in range(PARTITIONS)}

    def drain(self) -> None:
        """Production stops; every acknowledged record delivered and committed."""
        self.producer.stop()
        assert self.producer.acked == self.producer.sent, "records not acknowledged by Kafka"
        acked = {(r.partition, r.offset) for r in self.producer.log}
        wait_for(lambda: acked <= {(r["partition"], r["offset"]) for r in self.target.records()}, 240,
                 what=f"{len(acked)} records delivered", interval=2)
        ends = self.ends()
        wait_for(lambda: committed(self.test_bootstrap, self.group, self.topic, PARTITIONS) == ends, 120,
                 what=f"offsets {ends} committed", interval=2)

    def verdict(self, faults: list[Fault]) -> Verdict:
        requests = cast(list[Any], arrivals(self.target.records()))  # Arrival is a frozen Request
        return check_history(requests, self.producer.log, faults)
