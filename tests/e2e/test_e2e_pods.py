"""Pod-level claims on a real cluster (kind: real kubelets, containers, Services, the scheduler): rollouts
Rolling, Canary and BlueGreen under steady production; a worker pod killed without grace and the operator's
pod deleted in the middle of a rollout; a worker pod stopped within its grace period; the worker
ServiceAccount's permissions; the worker pods spread over nodes. Each run checks that nothing produced is
lost, that first deliveries keep per-key order, and that no two pods deliver one partition at overlapping
times (by the target's own clock)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from lagpilot.protocol import assignment_configmap_name
from lagpilot.testing.e2e_cluster import GROUP, NAME, VERSION, Cluster, arrivals, ready
from lagpilot.testing.e2e_target import Target
from lagpilot.testing.handoff import SteadyProducer, first_deliveries_in_key_order, overlaps
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kind]

PARTITIONS = 6
OPERATOR_NS = os.environ.get("LAGPILOT_E2E_OPERATOR_NAMESPACE", "lagpilot-system")


def cg_doc(bootstrap: str, topic: str, url: str, rollout: dict[str, Any], threads: int = 2,
           workers: int = 2) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ConsumerGroup", "metadata": {"name": NAME},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "groupId": f"g-{topic}", "workers": workers,
                     "threads": threads, "target": {"url": url}, "rollout": rollout}}


def settled_on_new_revision(c: Cluster, old: str | None) -> Callable[[], Any]:
    """Stable on a revision other than `old`: one Deployment, every partition owned by a pod of it, Ready."""
    def check() -> Any:
        cg = c.cg()
        st = cg.get("status") or {}
        rollout, assignment = st.get("rollout") or {}, st.get("assignment") or {}
        ok = (st.get("observedGeneration") == cg["metadata"]["generation"] and rollout.get("phase") == "Stable"
              and st.get("revision") != old and rollout.get("stableRevision") == st.get("revision")
              and assignment.get("unowned") == [] and not assignment.get("moving")
              and len(assignment.get("owners") or []) == PARTITIONS and len(c.deployments()) == 1 and ready(cg))
        return st if ok and owner_revisions(c, st) == {st["revision"]} else None
    return check


def owner_revisions(c: Cluster, st: dict[str, Any]) -> set[str | None]:
    rev = {p.metadata.name: (p.metadata.labels or {}).get("lagpilot.io/revision") for p in c.pods()}
    return {rev.get(o, "?") for o in st["assignment"]["owners"].values()}  # topic:partition -> pod


def phase(c: Cluster) -> str | None:
    return ((c.cg().get("status") or {}).get("rollout") or {}).get("phase")


def check_deliveries(records: list[dict[str, Any]], acked: int) -> None:
    """Nothing lost; first deliveries in offset order per key; no partition delivered by two pods at once."""
    delivered = {(r["partition"], r["offset"]) for r in records}
    assert len(delivered) == acked, f"{len(delivered)} distinct records delivered, {acked} produced"
    seen = arrivals(records)
    assert first_deliveries_in_key_order(seen)[:10] == []
    assert overlaps(seen)[:10] == []


@pytest.fixture
def steady(test_bootstrap: str, topic_factory: Callable[[int], str]) -> Iterator[tuple[str, SteadyProducer]]:
    topic = topic_factory(PARTITIONS)
    producer = SteadyProducer(test_bootstrap, topic, PARTITIONS, rate=60)
    yield topic, producer
    producer.stop()


def wait_all_delivered(target: Target, producer: SteadyProducer) -> list[dict[str, Any]]:
    producer.stop()
    assert producer.acked == producer.sent, f"{producer.sent - producer.acked} records not acknowledged by Kafka"

    def complete() -> list[dict[str, Any]] | None:
        records = target.records()
        return records if len({(x["partition"], x["offset"]) for x in records}) >= producer.acked else None
    return cast(list[dict[str, Any]], wait_for(complete, 180, what=f"{producer.acked} records delivered",
                                               interval=2))


def test_rolling_canary_and_blue_green_under_load(cluster: Cluster, worker_bootstrap: str, target: Target,
                                                  steady: tuple[str, SteadyProducer]) -> None:
    topic, producer = steady
    producer.start()
    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, {"strategy": "Rolling"}))
    first = wait_for(settled_on_new_revision(cluster, None), 300, what="first revision", interval=2)
    nodes = {p.spec.node_name for p in cluster.pods()}
    assert len(nodes) == 2, f"2 workers on nodes {nodes}: not spread over the 2 worker nodes"

    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, {"strategy": "Rolling"}, threads=3))
    rolled = wait_for(settled_on_new_revision(cluster, first["revision"]), 300, what="Rolling rollout done",
                      interval=2)

    # Canary: exactly the named partitions go to the canary's pods while it is judged, then all of them.
    canary = {"strategy": "Canary", "canary": {"partitions": [1, 4], "workers": 1, "analysisSeconds": 30}}
    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, canary, threads=4))
    wait_for(lambda: phase(cluster) == "Canary", 240, what="canary analysis under way", interval=1)
    # Pods of the canary revision: neither the first nor the rolled one (pods of the first revision may
    # still be terminating).
    earlier = {first["revision"], rolled["revision"]}

    def canary_pod_names() -> set[str]:
        return {p.metadata.name for p in cluster.pods()
                if (p.metadata.labels or {}).get("lagpilot.io/revision") not in earlier}
    canary_pods = wait_for(canary_pod_names, 120, what="a canary pod")
    wait_for(lambda: any(r["worker"] in canary_pods for r in target.records()), 120,
             what="the canary pod delivering", interval=2)
    promoted = wait_for(settled_on_new_revision(cluster, rolled["revision"]), 300, what="canary promoted",
                        interval=2)

    cluster.apply(cg_doc(worker_bootstrap, topic, target.url,
                         {"strategy": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 2}}, threads=2))
    wait_for(settled_on_new_revision(cluster, promoted["revision"]), 300, what="BlueGreen rollout done",
             interval=2)
    records = wait_all_delivered(target, producer)
    check_deliveries(records, producer.acked)
    # While it was judged, the canary held only partitions 1 and 4; after promotion its pods may own more,
    # so look at its deliveries before the first record of another partition reached it.
    canary_records = sorted((r for r in records if r["worker"] in canary_pods), key=lambda r: r["start"])
    during = []
    for r in canary_records:
        if r["partition"] not in (1, 4):
            break
        during.append(r)
    assert during, ("no canary delivery on its own partitions came first: "
                    f"{[(r['worker'], r['partition'], r['offset']) for r in canary_records[:10]]}")
    assert {r["partition"] for r in during} == {1, 4}


def test_worker_pod_killed_and_operator_pod_deleted_mid_rollout(
        api: Any, cluster: Cluster, worker_bootstrap: str, target: Target,
        steady: tuple[str, SteadyProducer]) -> None:
    """A worker pod that owns partitions is deleted with grace 0 (the kubelet kills its container) and the
    operator's pod is deleted, in the middle of a Rolling rollout that moves one partition at a time."""
    topic, producer = steady
    producer.start()
    rollout = {"strategy": "Rolling", "maxPartitionsInFlight": 1}
    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, rollout))
    first = wait_for(settled_on_new_revision(cluster, None), 300, what="first revision", interval=2)
    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, rollout, threads=3))

    def moving() -> Any:
        ro = (cluster.cg().get("status") or {}).get("rollout") or {}
        return ro if ro.get("phase") == "Progressing" and int(ro.get("step") or 0) >= 1 else None
    wait_for(moving, 180, what="rollout under way", interval=1)
    owners = set(cluster.cg()["status"]["assignment"]["owners"].values())
    victim = next(p for p in cluster.pods() if p.metadata.name in owners
                  and (p.metadata.labels or {}).get("lagpilot.io/revision") == first["revision"])
    cluster.core.delete_namespaced_pod(victim.metadata.name, cluster.ns, grace_period_seconds=0)
    operator_pods = cluster.core.list_namespaced_pod(OPERATOR_NS, label_selector="app.kubernetes.io/name=lagpilot")
    assert operator_pods.items, f"no operator pod in {OPERATOR_NS}"
    for pod in operator_pods.items:
        cluster.core.delete_namespaced_pod(pod.metadata.name, OPERATOR_NS)
    wait_for(settled_on_new_revision(cluster, first["revision"]), 360, what="rollout done after the kills",
             interval=2)
    check_deliveries(wait_all_delivered(target, producer), producer.acked)


def test_worker_pod_stops_cleanly_within_its_grace_period(cluster: Cluster, worker_bootstrap: str,
                                                          target: Target,
                                                          steady: tuple[str, SteadyProducer]) -> None:
    """Deleting a worker pod sends SIGTERM: the worker drains, commits and exits 0 before the kubelet would
    SIGKILL it (exit 137); its partitions move to the other worker with nothing lost or redelivered out of
    order."""
    from kubernetes import watch

    topic, producer = steady
    producer.start()
    cluster.apply(cg_doc(worker_bootstrap, topic, target.url, {"strategy": "Rolling"}))
    wait_for(settled_on_new_revision(cluster, None), 300, what="workers up", interval=2)
    wait_for(lambda: len(target.records()) >= 100, 120, what="records flowing", interval=1)
    victim = cluster.pods()[0]
    grace = victim.spec.termination_grace_period_seconds
    final: dict[str, Any] = {}
    w = watch.Watch()
    cluster.core.delete_namespaced_pod(victim.metadata.name, cluster.ns)
    for ev in w.stream(cluster.core.list_namespaced_pod, cluster.ns,
                       field_selector=f"metadata.name={victim.metadata.name}", timeout_seconds=grace + 60):
        for cs in ev["object"].status.container_statuses or []:
            if cs.state and cs.state.terminated:
                final = {"exit": cs.state.terminated.exit_code, "reason": cs.state.terminated.reason}
        if ev["type"] == "DELETED":
            break
    w.stop()
    assert final, "the pod's terminated state was never reported"
    assert final["exit"] == 0, f"worker ended with {final} (137 = killed when the grace period ran out)"
    wait_for(lambda: (cluster.cg().get("status") or {}).get("readyWorkers") == 2, 240,
             what="the replacement worker ready", interval=2)
    check_deliveries(wait_all_delivered(target, producer), producer.acked)


def test_worker_service_account_may_do_only_its_job(api: Any, cluster: Cluster, worker_bootstrap: str,
                                                    target: Target, topic_factory: Callable[[int], str]) -> None:
    """The API server's own RBAC decision for the workers' ServiceAccount: Leases and the group's ConfigMap
    in its namespace, nothing else (no Secrets, no Deployments, nothing in other namespaces)."""
    cluster.apply(cg_doc(worker_bootstrap, topic_factory(2), target.url, {"strategy": "Rolling"}, workers=1))
    wait_for(lambda: cluster.pods() and cluster.pods()[0].spec.service_account_name, 180, what="a worker pod")
    sa = cluster.pods()[0].spec.service_account_name
    user = f"system:serviceaccount:{cluster.ns}:{sa}"

    def allowed(verb: str, resource: str, group: str = "", namespace: str | None = None, name: str = "") -> bool:
        review = cluster.authz.create_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{cluster.ns}"],
                     "resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                            "namespace": namespace or cluster.ns, "name": name}}})
        return bool(review.status.allowed)

    mine = assignment_configmap_name(NAME)
    assert allowed("get", "configmaps", name=mine) and allowed("watch", "configmaps", name=mine)
    assert not allowed("get", "configmaps", name="another-groups-assignment")
    assert allowed("update", "leases", "coordination.k8s.io") and allowed("create", "leases", "coordination.k8s.io")
    for verb, resource, group in (("get", "secrets", ""), ("list", "secrets", ""), ("update", "configmaps", ""),
                                  ("delete", "leases", "coordination.k8s.io"), ("create", "pods", ""),
                                  ("patch", "deployments", "apps"), ("update", "consumergroups", GROUP)):
        assert not allowed(verb, resource, group), f"{sa} may {verb} {resource}"
    assert not allowed("get", "configmaps", namespace="kube-system", name=mine)
    assert not allowed("update", "leases", "coordination.k8s.io", namespace="kube-system")
