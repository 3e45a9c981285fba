"""reconcile_handoff (the hand-off's I/O shell) against the real API server: a real ConsumerGroup,
real Pod objects (bound to a node that does not exist, so nothing runs them) whose names the harness's
real lagpilot-consumer processes use, real Leases, the real ConfigMap. Checks that the shell alone brings
every partition to a worker, records are delivered, the status patch is sane, and a gone worker's
partitions move on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from lagpilot.testing.consumer import committed
from lagpilot.testing.handoff import LocalCluster, SteadyProducer, duplicates, overlaps
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for
from lagpilot_operator.handoff.shell import reconcile_handoff
from lagpilot_operator.kube import Kube
from lagpilot_operator.resource.spec import parse

pytestmark = pytest.mark.lab

CRD = Path(__file__).resolve().parents[3] / "crds" / "consumergroups.lagpilot.io.yaml"


def test_reconcile_handoff_shell(k8s, namespace: str, bootstrap: str, topic_factory: Callable[..., str],
                                    tmp_path: Path) -> None:
    k8s.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/consumergroups.lagpilot.io")
    topic = topic_factory(partitions=4, prefix="shell")
    api = k8s.api_client()
    kube = Kube(api)
    custom = client.CustomObjectsApi(api)
    with RecordingTarget() as target:
        body = custom.create_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups", {
            "apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "cg"},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "target": {"url": target.url},
                     "workers": 2, "groupId": f"g-{topic}"}})
        spec, problems = parse(body, "lagpilot/consumer:test")
        assert spec is not None and not problems, problems
        cluster = LocalCluster(api=api, namespace=namespace, bootstrap=bootstrap, topic=topic, partitions=4,
                               group=spec.group_id, log_dir=tmp_path, kubeconfig=k8s.kubeconfig)
        cluster.target_urls = {"r1": target.url}
        core = client.CoreV1Api(api)
        producer = SteadyProducer(bootstrap, topic, 4, rate=100).start()
        node = f"harness-{namespace}"[:63]
        try:
            workers = [cluster.start_worker("r1") for _ in range(3)]
            # The pod objects of the harness's processes, bound to a Node of their own that no kubelet runs
            # (a pod bound to a Node that does not exist is deleted by the pod GC after 40 s).
            core.create_node({"metadata": {"name": node}})
            for w in workers:
                core.create_namespaced_pod(namespace, {
                    "metadata": {"name": w.name, "labels": {"lagpilot.io/consumergroup": "cg",
                                                            "lagpilot.io/revision": "r1"}},
                    "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
            # Like the operator, which reconciles again whenever a Lease appears, start once every worker has
            # written its Lease: a plan made while only one had (a slow start on a busy machine) settles with
            # every partition on it, a valid plan but not the balanced one this test checks.
            coord = client.CoordinationV1Api(api)
            wait_for(lambda: {w.name for w in workers} <= {
                lease.metadata.name for lease in coord.list_namespaced_lease(namespace).items}, 60,
                what="the three workers' Leases")
            status: dict = {}

            def step() -> object:
                nonlocal status
                fresh = custom.get_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace,
                                                            "consumergroups", "cg")
                fresh["status"] = status
                r = reconcile_handoff(kube, fresh, spec, "r1", 3, {topic: 4}, time.time(), 15,
                                      manage_deployments=False)
                patch = r.status_patch(status)
                status = {k: {kk: ({o: w for o, w in vv.items() if w is not None} if isinstance(vv, dict) else vv)
                              for kk, vv in v.items() if vv is not None} for k, v in patch.items()}
                return r

            deadline = time.monotonic() + 90
            result = step()
            while not result.settled and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.3)
                result = step()
            assert result.settled, (status, [w.proc.tail(800) for w in workers])  # type: ignore[attr-defined]
            cm = core.read_namespaced_config_map("cg-assignment", namespace)
            assert cm.metadata.owner_references[0].uid == body["metadata"]["uid"]
            assert status["rollout"]["phase"] == "Stable" and status["assignment"]["unowned"] == []
            owners = list(status["assignment"]["owners"].values())  # by topic:partition
            assert sorted(status["assignment"]["owners"]) == [f"{topic}:{p}" for p in range(4)]
            assert sorted(owners.count(w.name) for w in workers) == [1, 1, 2]
            # kill -9 one owning worker: once its Lease expires the shell moves its partitions on.
            victim = next(w for w in workers if w.name in owners)
            victim.proc.kill()
            at_kill = committed(bootstrap, spec.group_id, topic, 4)  # a dead worker commits nothing more
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                result = step()
                if result.settled and victim.name not in status["assignment"]["owners"].values():  # type: ignore
                    break
                time.sleep(0.3)
            assert victim.name not in status["assignment"]["owners"].values()
            assert result.settled  # type: ignore[attr-defined]
            producer.stop()
            target.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=60)
        finally:
            producer.stop()
            cluster.close()
            with contextlib.suppress(client.ApiException):
                core.delete_node(node)
            api.close()
        assert len(target.accepted_records()) == producer.acked
        assert target.order_violations() == []
        assert overlaps(target.arrivals()) == []
        # Delivered twice: only what the killed worker had delivered and not committed when it died.
        allowed = {(a.partition, a.offset) for a in target.arrivals()
                   if a.worker == victim.name and a.offset >= at_kill.get(a.partition, 0)}
        assert set(duplicates(target.arrivals())) <= allowed
