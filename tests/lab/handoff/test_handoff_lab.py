"""The hand-off protocol end to end: real lagpilot-consumer processes in k8s assignment mode (their
K8sPartitionSource watching the real ConfigMap and writing real Leases on the lab API server), the real
Kafka broker, a recording HTTP target, and the real planners each round. Under steady production, rollouts
must lose nothing, keep per-key order, deliver nothing twice, and never let two workers deliver one
partition at overlapping times."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lagpilot.testing.handoff import LocalCluster, SteadyProducer, duplicates, overlaps
from lagpilot.testing.target import RecordingTarget
from lagpilot_operator.handoff.rollout import CanaryFigures
from lagpilot_operator.resource.spec import BlueGreenSpec, CanarySpec, RolloutSpec

pytestmark = pytest.mark.lab


@pytest.fixture
def cluster(k8s, namespace: str, bootstrap: str, topic_factory: Callable[..., str],
            tmp_path: Path) -> Iterator[LocalCluster]:
    topic = topic_factory(partitions=6, prefix="coord")
    api = k8s.api_client()
    c = LocalCluster(api=api, namespace=namespace, bootstrap=bootstrap, topic=topic, partitions=6,
                     group=f"g-{topic}", log_dir=tmp_path, kubeconfig=k8s.kubeconfig)
    try:
        yield c
    finally:
        c.close()
        api.close()


def check_delivery(target: RecordingTarget, producer: SteadyProducer) -> None:
    accepted = target.accepted_records()
    assert producer.acked == producer.sent
    assert len(accepted) == producer.acked, f"lost {producer.acked - len(accepted)} records"
    assert target.order_violations() == []
    assert duplicates(target.arrivals()) == []
    assert overlaps(target.arrivals()) == []


def test_rolling_then_blue_green_then_canary_abort(cluster: LocalCluster) -> None:
    with RecordingTarget() as good, RecordingTarget() as bad:
        bad.fail(503)
        cluster.target_urls = {"a": good.url, "b": good.url, "c": good.url, "d": bad.url}
        producer = SteadyProducer(cluster.bootstrap, cluster.topic, cluster.partitions, rate=150).start()
        try:
            cluster.run_until(RolloutSpec(), "a", 2, cluster.stable_on("a"), timeout=90)

            rolling = RolloutSpec(strategy="Rolling")
            cluster.run_until(rolling, "b", 2, cluster.stable_on("b"), timeout=150)

            bg = RolloutSpec(strategy="BlueGreen", blue_green=BlueGreenSpec(scale_down_delay_seconds=2))
            cluster.run_until(bg, "c", 2, cluster.stable_on("c"), timeout=150)

            # Canary against a target version that fails: judged from the canary workers' metrics.
            canary = RolloutSpec(strategy="Canary", canary=CanarySpec(partitions=(1, 4), analysis_seconds=30))

            def figures(c: LocalCluster) -> CanaryFigures | None:
                procs = [w.proc for w in c.workers.values() if w.revision == "d" and w.proc.proc.poll() is None]
                total = sum(p.metric("lagpilot_deliveries_total") for p in procs)
                failed = sum(p.metric("lagpilot_deliveries_total", outcome=o) for p in procs
                             for o in ("retry", "dead_letter", "error"))
                return CanaryFigures(int(total), failed / total, 0, 0) if total else None

            def aborted_and_back(c: LocalCluster) -> bool:
                return (c.status.get("phase") == "Aborted" and _all_owned_by(c, "c") and all(
                    w.revision != "d" or w.proc.proc.poll() is not None for w in c.workers.values()))

            cluster.run_until(canary, "d", 2, aborted_and_back, timeout=150, figures=figures)
            assert "error rate" in cluster.status["message"]
            bad.recover()  # the canary's failed records must now be delivered by the stable workers
            good.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=5)
        finally:
            producer.stop()
        # Everything produced reaches the good target (the canary's 503s were never committed).
        good.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=60)
        check_delivery(good, producer)
        assert not bad.accepted() and bad.arrivals(), "the canary delivered (and failed) on its partitions"
        assert {a.partition for a in bad.arrivals()} <= {1, 4}  # only canary partitions reached it
        revisions = {a.worker.split("-")[1] for a in good.accepted()}
        assert revisions == {"a", "b", "c"}, revisions
        assert len(cluster.history) >= 8  # every rollout moved partitions through revoke + grant epochs


def _all_owned_by(c: LocalCluster, revision: str) -> bool:
    o = c.observed()
    if o.doc is None:
        return False
    owned = {p for w, ps in o.doc.grants.items() for p in ps
             if w in o.workers and o.workers[w].revision == revision and o.workers[w].report
             and p in o.workers[w].report.owned}  # type: ignore[union-attr]
    return len(owned) == c.partitions


def test_kill_9_and_operator_outage_mid_rollout(cluster: LocalCluster) -> None:
    """kill -9 of a worker that owns partitions in the middle of a Rolling rollout, and the operator down
    for a while (workers keep processing, only changes wait): nothing lost, order kept, no overlapping
    owners; duplicates allowed only for what the killed worker had in flight (not committed)."""
    import time

    with RecordingTarget() as target:
        cluster.target_urls = {"a": target.url, "b": target.url}
        producer = SteadyProducer(cluster.bootstrap, cluster.topic, cluster.partitions, rate=150).start()
        try:
            cluster.run_until(RolloutSpec(), "a", 3, cluster.stable_on("a"), timeout=90)
            rolling = RolloutSpec(strategy="Rolling")
            # Start the rollout until the first partitions are on "b".
            cluster.run_until(rolling, "b", 3, lambda c: c.status.get("step", 0) >= 1, timeout=90)
            # The operator goes away; records keep flowing to the current owners.
            before = len(target.accepted_records())
            time.sleep(3)
            assert len(target.accepted_records()) > before
            # kill -9 an old worker that still owns partitions.
            victim = next(w for w in cluster.workers.values() if w.revision == "a" and not w.deleting
                          and w.proc.proc.poll() is None and any(
                              a.worker == w.name for a in target.accepted()[-200:]))
            victim.proc.kill()
            # A restarted operator: nothing but what the API holds (status.rollout is the CR status).
            cluster.run_until(rolling, "b", 3, cluster.stable_on("b"), timeout=180)
        finally:
            producer.stop()
        target.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=60)
        assert producer.acked == producer.sent
        assert len(target.accepted_records()) == producer.acked
        assert target.order_violations() == []
        assert overlaps(target.arrivals()) == []
        dups = duplicates(target.arrivals())
        assert len(dups) <= cluster.threads * 50, f"{len(dups)} duplicates"
