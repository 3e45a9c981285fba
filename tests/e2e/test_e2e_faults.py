"""Faults a production cluster sees, on kind (real nodes, kubelets, containers, Services), each judged by
the history checker (`lagpilot.testing.history`) over everything the in-cluster target recorded and
everything the producer had acknowledged:

1. frozen node: `docker pause` of the kind node running a worker that owns partitions (its kubelet, its
   containers, their clocks keep running), for as long as it takes the operator to move those partitions
   and the other worker to deliver and commit everything; then `docker unpause`. The resumed pod must not
   deliver what it no longer owns, nor commit over the new owner's commits.
2. API black-hole: one worker pod cut off from the API server (iptables in the pod's network namespace,
   entered with nsenter on its node), Kafka and the target still reachable. It must stop delivering
   within its fence timeout, and the operator must grant its partitions to the other worker only after
   that. The other worker delivers and commits everything before the heal; once healed, the worker must
   deliver nothing and commit nothing over the other's commits.
3. clock skew: scenario 2 with the cut-off worker's wall clock stepped 15 s behind or ahead first (the
   test image of scripts/images/clockskew; its Lease renewTime shows the skew before the cut).
5. (first half) a Rolling rollout started while the node of a worker that owns partitions is frozen: it
   completes on the new revision, and the resumed (by then deleted) pod delivers and commits nothing.

The worker pods are spread over the two kind worker nodes (required pod anti-affinity); Kafka, the
operator, CoreDNS and the target run on the node labelled LAGPILOT_E2E_INFRA_NODE, so only consumer
workers sit on the one labelled LAGPILOT_E2E_SPARE_NODE that the faults hit (kind-config.yaml).

LAGPILOT_E2E_FAULT_RUNS (default 3) runs each scenario that many times in a row; each run prints its
verdict line (lost, out of order, duplicates allowed and not, overlaps). LAGPILOT_E2E_WORKER_IMAGE runs
the workers from another image: the mutation check (docs/architecture.md, "Fault model") builds one with
the fence disabled and shows scenario 1 failing on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from lagpilot.testing.consumer import committed
from lagpilot.testing.e2e_cluster import GROUP, NAME, PLURAL, VERSION, Cluster, arrivals
from lagpilot.testing.e2e_faults import (
    PARTITIONS,
    RUNS,
    THREADS,
    Scenario,
    docker,
    on_new_revision,
    report_verdict,
)
from lagpilot.testing.e2e_target import Target
from lagpilot.testing.history import Fault, Verdict
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kind, pytest.mark.faults]

FENCE_S, TARGET_TIMEOUT_S = 15.0, 10.0  # the defaults the ConsumerGroup below keeps
SPARE = os.environ.get("LAGPILOT_E2E_SPARE_NODE", "")
INFRA = os.environ.get("LAGPILOT_E2E_INFRA_NODE", "lagpilot-e2e-node=infra")
CLOCKSKEW_IMAGE = os.environ.get("LAGPILOT_E2E_CLOCKSKEW_IMAGE", "")


@pytest.fixture(autouse=True)
def _needs_spare_node() -> None:
    if not SPARE:
        pytest.skip("LAGPILOT_E2E_SPARE_NODE not set: no node the fault tests may freeze (kind-config.yaml)")


def print_verdict(what: str, run: int, figures: str, verdict: Verdict) -> None:
    report_verdict(f"{what} run {run}/{RUNS}: {figures}; {verdict.summary()}")


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_frozen_node_resumes_without_delivering_what_it_lost(
        run: int, cluster: Cluster, worker_bootstrap: str, test_bootstrap: str, target: Target,
        topic_factory: Callable[[int], str]) -> None:
    s = Scenario(cluster, worker_bootstrap, test_bootstrap, target, topic_factory)
    paused = False
    try:
        docker("pause", s.node)
        paused, frozen_at = True, time.time()
        s.wait_moved(frozen_at)
        # Everything delivered and committed by the live worker before the node resumes, so a stale commit
        # by the resumed one would stay visible (nothing newer would overwrite it).
        s.drain()
        docker("unpause", s.node)
        paused, resumed_at = False, time.time()
        time.sleep(25)  # the resumed worker's chance to deliver or commit
    finally:
        if paused:
            docker("unpause", s.node)
        s.producer.stop()
    judge_resumed(s, "frozen node", run, frozen_at, resumed_at, "")


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_rolling_rollout_while_a_node_is_frozen(
        run: int, cluster: Cluster, worker_bootstrap: str, test_bootstrap: str, target: Target,
        topic_factory: Callable[[int], str]) -> None:
    """Scenario 5, first half: a Rolling rollout starts while the node of a worker that owns partitions is
    frozen. The rollout must finish on the new revision (the frozen worker counts as gone once its Lease
    is a duration old, on the operator's clock), and the resumed pod, by then deleted and owning nothing,
    must deliver and commit nothing."""
    s = Scenario(cluster, worker_bootstrap, test_bootstrap, target, topic_factory)
    old_revision = (cluster.cg().get("status") or {}).get("revision")
    infra_key, _, infra_value = INFRA.partition("=")
    paused = False
    try:
        docker("pause", s.node)
        paused, frozen_at = True, time.time()
        # The new revision runs on the infra node only (the spare one is frozen).
        cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, NAME, {
            "spec": {"template": {"affinity": None, "nodeSelector": {infra_key: infra_value}}}})
        rolled = wait_for(lambda: on_new_revision(cluster, old_revision), 300, interval=2,
                          what="the Rolling rollout done on the new revision while the node is frozen")
        done_at = time.time()
        s.drain()
        docker("unpause", s.node)
        paused, resumed_at = False, time.time()
        time.sleep(25)
    finally:
        if paused:
            docker("unpause", s.node)
        s.producer.stop()
    judge_resumed(s, "rolling rollout, node frozen", run, frozen_at, resumed_at,
                  f", rollout to {rolled} done {done_at - frozen_at:.0f}s after the freeze")


def judge_resumed(s: Scenario, what: str, run: int, frozen_at: float, resumed_at: float, extra: str) -> None:
    """After a freeze: the resumed worker delivered nothing but what was already on the wire, the history
    is clean, and the committed offsets did not move back."""
    records = arrivals(s.target.records())
    zombie = [a for a in records if a.worker == s.victim and a.start > resumed_at]
    # A delivery frozen after its last ownership check and before its request was written goes out on
    # resume (no HTTP target can refuse it without a fencing token of its own): at most one per delivery
    # slot, in the first moment; every request begun after that is checked against the Lease and cancelled.
    on_the_wire = {(a.partition, a.offset) for a in zombie if a.start - resumed_at < 1.0}
    verdict = s.verdict([Fault("freeze", frozen_at, resumed_at)])
    print_verdict(what, run, f"{s.node} paused {resumed_at - frozen_at:.0f}s, {s.victim} lost "
                  f"{s.lost}, requests on the wire at the freeze {len(on_the_wire)}{extra}", verdict)
    assert len(zombie) == len(on_the_wire) <= THREADS, (
        f"the resumed worker delivered {len(zombie)} records after the freeze: "
        f"{[(a.partition, a.offset, round(a.start - resumed_at, 3)) for a in zombie][:10]}")
    assert verdict.lost == [] and verdict.out_of_order == [], verdict.details()
    unexplained = [d for d in verdict.forbidden_duplicates if (d.partition, d.offset) not in on_the_wire]
    assert unexplained == [], verdict.details()
    assert len(verdict.overlaps) <= len(on_the_wire), verdict.details()
    assert committed(s.test_bootstrap, s.group, s.topic, PARTITIONS) == s.ends(), \
        "committed offsets went back after the resume"


def pod_netns_iptables(node: str, container_id: str, *rule: str) -> None:
    """iptables inside a pod's network namespace: nsenter on its kind node, by the container's pid."""
    pid = docker("exec", node, "crictl", "inspect", "--output", "go-template", "--template", "{{.info.pid}}",
                 container_id)
    docker("exec", node, "nsenter", "-t", pid, "-n", "iptables", *rule)


def crictl_exec(node: str, container_id: str, *command: str) -> str:
    return docker("exec", node, "crictl", "exec", container_id, *command)


def lease_skew(c: Cluster, name: str) -> float | None:
    """How far the worker's last renewTime is from now on this host's clock (None: no Lease yet)."""
    from kubernetes import client

    lease = client.CoordinationV1Api(c.core.api_client).read_namespaced_lease(name, c.ns)
    renewed = lease.spec.renew_time
    return None if renewed is None else renewed.timestamp() - time.time()


def cut_off_run(s: Scenario, what: str, run: int, skew_s: float = 0.0) -> None:
    """Scenario 2 (and 3 with ``skew_s``): the victim loses the API server, its partitions move, it is healed."""
    c = s.c
    api_ip = c.core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    cid = s.pod().status.container_statuses[0].container_id.split("://", 1)[1]
    if skew_s:
        crictl_exec(s.node, cid, "sh", "-c", f"echo {skew_s} > /tmp/lagpilot-clock-skew")
        wait_for(lambda: (d := lease_skew(c, s.victim)) is not None and abs(d - skew_s) < 3, 30,
                 what=f"{s.victim}'s Lease renewed with its clock {skew_s:+.0f}s off", interval=1)
    rule = ("OUTPUT", "-p", "tcp", "-d", api_ip, "--dport", "443", "-j", "DROP")
    cut = False
    try:
        pod_netns_iptables(s.node, cid, "-I", *rule)
        cut, cut_at = True, time.time()
        new_owner = s.wait_moved(cut_at)
        granted_at = min(a.start for a in arrivals(s.target.records())
                         if a.worker == new_owner and a.partition in s.lost and a.start > cut_at)
        # Everything delivered and committed by the other worker while this one is still cut off, so that
        # anything it delivers once healed is a zombie's (the partitions it may get back hold nothing new).
        s.drain()
        pod_netns_iptables(s.node, cid, "-D", *rule)
        cut, healed_at = False, time.time()
        time.sleep(20)  # the healed worker renews, may be given partitions back, and must deliver nothing
    finally:
        if cut:
            pod_netns_iptables(s.node, cid, "-D", *rule)
        s.producer.stop()
    records = arrivals(s.target.records())
    last_cut_off = max((a.end for a in records if a.worker == s.victim and cut_at < a.start < healed_at),
                       default=cut_at)
    verdict = s.verdict([Fault(what, cut_at, healed_at)])
    skewed = f" with its clock {skew_s:+.0f}s off" if skew_s else ""
    print_verdict(what, run, f"{s.victim} on {s.node}{skewed} cut off {healed_at - cut_at:.0f}s; its last "
                  f"delivery {last_cut_off - cut_at:.1f}s after the cut, partitions {s.lost} granted to "
                  f"{new_owner} after {granted_at - cut_at:.1f}s", verdict)
    # Fenced within its fence timeout (plus the request already on the wire), and granted only after.
    assert last_cut_off - cut_at <= FENCE_S + TARGET_TIMEOUT_S, verdict.details()
    assert granted_at > last_cut_off, (granted_at, last_cut_off)
    assert granted_at - cut_at >= FENCE_S, "partitions granted before the cut-off worker's fence timeout"
    assert verdict.ok, verdict.details()
    assert not [a for a in records if a.worker == s.victim and a.start > healed_at], "delivered after the heal"
    assert committed(s.test_bootstrap, s.group, s.topic, PARTITIONS) == s.ends(), "committed offsets went back"


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_worker_cut_off_from_the_api_server_fences_before_its_partitions_move(
        run: int, cluster: Cluster, worker_bootstrap: str, test_bootstrap: str, target: Target,
        topic_factory: Callable[[int], str]) -> None:
    cut_off_run(Scenario(cluster, worker_bootstrap, test_bootstrap, target, topic_factory), "API black-hole", run)


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_worker_with_a_skewed_clock_cut_off_never_overlaps(
        run: int, cluster: Cluster, worker_bootstrap: str, test_bootstrap: str, target: Target,
        topic_factory: Callable[[int], str]) -> None:
    """Scenario 3: the cut-off worker's wall clock 15 s behind (odd runs) or ahead (even runs) of the
    operator's. Lease expiry is measured on the operator's clock from when it saw the last renewal, and the
    fence on the worker's monotonic clock, so neither direction may move a partition early."""
    if not CLOCKSKEW_IMAGE:
        pytest.skip("LAGPILOT_E2E_CLOCKSKEW_IMAGE not set (scripts/images.sh clockskew builds it)")
    skew = -15.0 if run % 2 else 15.0
    s = Scenario(cluster, worker_bootstrap, test_bootstrap, target, topic_factory, image=CLOCKSKEW_IMAGE)
    cut_off_run(s, "clock skew + API black-hole", run, skew_s=skew)
