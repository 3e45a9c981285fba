"""A frozen worker comes back as a zombie: the real operator, worker pods run by the lab runner (real
`lagpilot-consumer` processes with real Leases), the lab broker, a recording target, steady production.

The lab node freezes: the worker process that owns partitions and the lab runner (the node's kubelet, so
no liveness probe restarts the worker meanwhile) are stopped with SIGSTOP — what a frozen node or a VM
pause does: no renewals, no fence timer, the clock runs on — for as long as it takes the operator to see
the worker's Lease expire and grant its partitions to the other worker, which delivers them. Then
SIGCONT: the resumed process still believes it owns them, and must not deliver any of them again. The history checker
gives the verdict: nothing lost, first deliveries in key order, no two workers holding one partition
(at once or interleaved after the freeze), duplicates only of records in flight or uncommitted at it.

The same scenario on kind (docker pause of a node) is issue 15's; this is the process-level freeze on
the lab."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.consumer import committed
from lagpilot.testing.handoff import SteadyProducer
from lagpilot.testing.history import Fault, check_history
from lagpilot.testing.operator import Operator, running_operator
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.faults]

PARTITIONS = 4


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    env = {"LAGPILOT_RESYNC_SECONDS": "5", "LAGPILOT_ASSIGNMENT_MODE": "k8s"}
    with running_operator(k8s, namespace, tmp_path / "operator.log", env, delete_timeout=60) as op:
        yield op


def status(k8s: Any, ns: str) -> dict[str, Any]:
    out = k8s.kubectl("get", "consumergroup", "cg", "-o", "json", namespace=ns)
    return dict(json.loads(out.stdout).get("status") or {})


def pods(k8s: Any, ns: str) -> list[dict[str, Any]]:
    out = k8s.kubectl("get", "pods", "-l", "lagpilot.io/consumergroup=cg", "-o", "json", namespace=ns)
    return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]


def owners_of(st: dict[str, Any]) -> dict[int, str]:
    """status.assignment.owners (topic:partition -> pod) by partition number: the group reads one topic."""
    owners = (st.get("assignment") or {}).get("owners") or {}
    return {int(k.rpartition(":")[2]): v for k, v in owners.items() if v}


def owned_by(st: dict[str, Any], worker: str) -> list[int]:
    return sorted(p for p, o in owners_of(st).items() if o == worker)


def test_frozen_worker_resumes_without_delivering_what_it_lost(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=PARTITIONS, prefix="frozen")
    group = f"g-{topic}"
    doc = {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "cg"},
           "spec": {"bootstrapServers": bootstrap, "topic": topic, "groupId": group, "workers": 2,
                    "threads": 2, "target": {"url": ""}, "rollout": {"strategy": "Rolling"}}}
    with RecordingTarget(latency_s=0.005) as target:  # its clock: time.monotonic()
        doc["spec"]["target"]["url"] = target.url
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=80).start()
        frozen: list[int] = []
        try:
            k8s.kubectl("apply", "-f", "-", namespace=namespace, input=yaml.safe_dump(doc))

            def settled() -> Any:
                st = status(k8s, namespace)
                owners = owners_of(st)
                return st if len(owners) == PARTITIONS and len(set(owners.values())) == 2 else None
            before = wait_for(settled, 180, what="4 partitions owned by the 2 workers")
            assert target.wait_for(lambda t: len(t.accepted_records()) >= 200, timeout=60)
            victim = next(p for p in pods(k8s, namespace) if owned_by(before, p["metadata"]["name"]))
            name = victim["metadata"]["name"]
            lost = owned_by(before, name)
            frozen = [k8s.runner_pid, int(victim["status"]["containerStatuses"][0]["containerID"].removeprefix("lab://"))]
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            frozen_at = time.monotonic()

            def moved() -> Any:
                st = status(k8s, namespace)
                owners = owners_of(st)
                return st if all(owners.get(p) not in (None, name) for p in lost) else None
            after = wait_for(moved, 240, what=f"partitions {lost} of the frozen {name} granted to the other worker",
                             interval=1)
            new_owner = owners_of(after)[lost[0]]
            assert target.wait_for(lambda t: any(a.worker == new_owner and a.partition in lost and a.start > frozen_at
                                                 for a in t.arrivals()), timeout=120), "new owner never delivered"
            # Production stops and the new owner delivers and commits everything before the node resumes, so a
            # stale commit by the resumed worker would stay visible (nothing newer would overwrite it).
            producer.stop()
            assert target.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=120)
            ends = {p: 1 + max(r.offset for r in producer.log if r.partition == p) for p in range(PARTITIONS)}
            wait_for(lambda: committed(bootstrap, group, topic, PARTITIONS) == ends, 60,
                     what="every delivered record committed by the live workers")
            for pid in reversed(frozen):
                os.kill(pid, signal.SIGCONT)
            resumed_at = time.monotonic()
            frozen = []
            time.sleep(20)  # the resumed worker's chance to deliver or commit
        finally:
            for pid in reversed(frozen):
                os.kill(pid, signal.SIGCONT)
            producer.stop()
        assert producer.acked == producer.sent
        zombie = [a for a in target.arrivals() if a.worker == name and a.start > resumed_at]
        # The one window no HTTP target can close without a fencing token of its own: a delivery thread
        # frozen after its last ownership check and before its request was written sends that request on
        # resume. At most one per delivery thread, at once; every request begun after the resume is
        # checked (the Lease must have been renewed within the fence timeout) and cancelled.
        on_the_wire = {(a.partition, a.offset) for a in zombie if a.start - resumed_at < 1.0}
        assert len(zombie) == len(on_the_wire) <= doc["spec"]["threads"], (
            f"the resumed worker delivered {len(zombie)} records after the freeze: "
            f"{[(a.partition, a.offset, round(a.start - resumed_at, 3)) for a in zombie][:10]}")
        verdict = check_history(target.arrivals(), producer.log, [Fault("freeze", frozen_at, resumed_at)])
        print(f"frozen {resumed_at - frozen_at:.0f}s; requests on the wire at the freeze {len(on_the_wire)}; "
              f"{verdict.summary()}")
        assert verdict.lost == [] and verdict.out_of_order == [], verdict.details()
        unexplained = [d for d in verdict.forbidden_duplicates if (d.partition, d.offset) not in on_the_wire]
        assert unexplained == [], verdict.details()
        assert len(verdict.overlaps) <= len(on_the_wire), verdict.details()
        assert committed(bootstrap, group, topic, PARTITIONS) == ends, "committed offsets went back after the resume"
