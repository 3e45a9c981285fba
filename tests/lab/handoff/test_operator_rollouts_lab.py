"""The hand-off through the real operator: a `lagpilot-operator` process (assignment mode k8s)
reconciling a ConsumerGroup, worker pods run by the lab runner (real `lagpilot-consumer --assignment k8s`
processes with real Leases), the lab Kafka broker, and RecordingTargets. Under steady production a Rolling
rollout completes with nothing lost, per-key order kept and no two workers delivering one partition at
overlapping times; a Canary whose revision's target fails is aborted on the canary workers' own metrics and
its partitions return to the stable revision; a BlueGreen rollout completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.consumer import end_offsets
from lagpilot.testing.handoff import SteadyProducer, duplicates, first_deliveries_in_key_order, overlaps
from lagpilot.testing.operator import Operator, running_operator
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

PARTITIONS = 6


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    env = {"LAGPILOT_RESYNC_SECONDS": "10", "LAGPILOT_ASSIGNMENT_MODE": "k8s"}
    with running_operator(k8s, namespace, tmp_path / "operator.log", env, delete_timeout=60) as op:
        yield op


def cg_doc(bootstrap: str, topic: str, url: str, rollout: dict[str, Any], threads: int = 2) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "cg"},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "groupId": f"g-{topic}", "workers": 2,
                     "threads": threads, "target": {"url": url}, "rollout": rollout}}


def apply(k8s: Any, ns: str, doc: dict[str, Any]) -> None:
    k8s.kubectl("apply", "-f", "-", namespace=ns, input=yaml.safe_dump(doc))


def get_cg(k8s: Any, ns: str) -> dict[str, Any]:
    return json.loads(k8s.kubectl("get", "consumergroup", "cg", "-o", "json", namespace=ns).stdout)


def deployments(k8s: Any, ns: str) -> list[dict[str, Any]]:
    out = k8s.kubectl("get", "deployments", "-l", "lagpilot.io/consumergroup=cg", "-o", "json", namespace=ns)
    return list(json.loads(out.stdout)["items"])


def ready(cg: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in cg.get("status", {}).get("conditions", []))


def settled_on_new_revision(k8s: Any, ns: str, old: str | None) -> Callable[[], Any]:
    """Stable rollout on a revision other than `old`, one Deployment left, every partition owned, Ready."""
    def check() -> Any:
        cg = get_cg(k8s, ns)
        st = cg.get("status") or {}
        rollout, assignment = st.get("rollout") or {}, st.get("assignment") or {}
        deps = deployments(k8s, ns)
        ok = (st.get("observedGeneration") == cg["metadata"]["generation"] and rollout.get("phase") == "Stable"
              and st.get("revision") != old and rollout.get("stableRevision") == st.get("revision")
              and assignment.get("unowned") == [] and not assignment.get("moving")
              and len(assignment.get("owners") or []) == PARTITIONS and len(deps) == 1 and ready(cg))
        return st if ok else None
    return check


def owners_revisions(k8s: Any, ns: str, st: dict[str, Any]) -> set[str]:
    pods = json.loads(k8s.kubectl("get", "pods", "-l", "lagpilot.io/consumergroup=cg", "-o", "json",
                                  namespace=ns).stdout)["items"]
    rev = {p["metadata"]["name"]: p["metadata"]["labels"].get("lagpilot.io/revision") for p in pods}
    return {rev.get(o, "?") for o in st["assignment"]["owners"].values()}


def aborted_and_back_on(k8s: Any, ns: str, stable: str) -> Callable[[], Any]:
    """Rollout Aborted, every partition owned again by the `stable` revision, the canary's Deployment gone."""
    def check() -> Any:
        st = get_cg(k8s, ns).get("status") or {}
        ok = ((st.get("rollout") or {}).get("phase") == "Aborted"
              and (st.get("assignment") or {}).get("unowned") == []
              and not st["assignment"].get("moving")
              and owners_revisions(k8s, ns, st) == {stable}
              and len(deployments(k8s, ns)) == 1)
        return st if ok else None
    return check


def events(k8s: Any, ns: str) -> list[dict[str, Any]]:
    out = json.loads(k8s.kubectl("get", "events", "-o", "json", namespace=ns).stdout)["items"]
    return [e for e in out if e["involvedObject"].get("name") == "cg"]


def test_rolling_canary_abort_and_blue_green_through_the_operator(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=PARTITIONS, prefix="oproll")
    with RecordingTarget() as good, RecordingTarget() as bad:
        bad.fail(503)
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=100).start()
        try:
            # 1. first revision: every partition owned by a worker, records flow
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}))
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            assert first["phase"] == "Running"
            assert all(first["assignment"]["owners"].values())
            good.wait_for(lambda t: len(t.accepted_records()) >= 100, timeout=60)

            # 2. Rolling: change threads
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}, threads=3))
            rolled = wait_for(settled_on_new_revision(k8s, namespace, first["revision"]), timeout=180,
                              what="Rolling rollout done")
            assert owners_revisions(k8s, namespace, rolled) == {rolled["revision"]}

            # 3. Canary against a target that answers 503: aborted on the canary's error rate, partitions back
            canary = {"strategy": "Canary", "canary": {"partitions": [1, 4], "workers": 1, "analysisSeconds": 20,
                                                       "maxErrorRate": 0.05}}
            apply(k8s, namespace, cg_doc(bootstrap, topic, bad.url, canary, threads=3))

            aborted = wait_for(aborted_and_back_on(k8s, namespace, rolled["revision"]), timeout=180,
                               what="canary aborted and partitions back")
            assert bad.arrivals(), "the canary never delivered to its target"
            cond = {c["type"]: c for c in aborted["conditions"]}
            assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["reason"] == "RolloutAborted"
            assert any(e["reason"] == "RolloutAborted" and "error rate" in e["message"]
                       for e in events(k8s, namespace)), [e["message"] for e in events(k8s, namespace)]
            labels = f'consumergroup="cg",namespace="{namespace}"'
            text = operator.metrics_text()
            assert f"lagpilot_rollouts_aborted_total{{{labels}}} 1.0" in text
            assert f'lagpilot_rollout_phase{{{labels},phase="Aborted"}} 1.0' in text

            # 4. BlueGreen to a fixed spec (good target, threads 4)
            bg = {"strategy": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 2}}
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, bg, threads=4))
            blue_green = wait_for(settled_on_new_revision(k8s, namespace, rolled["revision"]), timeout=180,
                                  what="BlueGreen rollout done")
            assert owners_revisions(k8s, namespace, blue_green) == {blue_green["revision"]}
            cond = {c["type"]: c for c in blue_green["conditions"]}
            assert cond["Degraded"]["status"] == "False"
        finally:
            producer.stop()
        # Everything produced reaches the good target (the canary's 503s were never committed).
        good.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=90)
        assert producer.acked == producer.sent
        assert len(good.accepted_records()) == producer.acked
        assert good.order_violations() == []
        assert duplicates(good.arrivals()) == []
        assert overlaps(good.arrivals() + bad.arrivals()) == []


def test_canary_falling_behind_is_aborted_on_lag_growth(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """A canary revision whose target answers 200 but slowly: no error, no latency limit, but its partitions'
    lag grows while the stable ones keep up; maxLagGrowth aborts it and the partitions return with nothing
    lost."""
    topic = topic_factory(partitions=PARTITIONS, prefix="oplag")
    with RecordingTarget() as good, RecordingTarget(latency_s=0.5) as slow:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=120).start()
        try:
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}))
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            canary = {"strategy": "Canary", "canary": {"partitions": [2, 5], "workers": 1, "analysisSeconds": 600,
                                                       "maxErrorRate": 1.0, "maxLagGrowth": 40}}
            apply(k8s, namespace, cg_doc(bootstrap, topic, slow.url, canary, threads=1))

            aborted = wait_for(aborted_and_back_on(k8s, namespace, first["revision"]), timeout=180,
                               what="canary aborted on lag growth")
            assert "lag growth" in aborted["rollout"]["message"], aborted["rollout"]
            assert "lagBaseline" not in aborted["rollout"]
            assert slow.accepted(), "the canary never delivered"
            assert {a.partition for a in slow.arrivals()} <= {2, 5}
            assert any(e["reason"] == "RolloutAborted" and "maxLagGrowth" in e["message"]
                       for e in events(k8s, namespace))
        finally:
            producer.stop()
        both = lambda: good.accepted_records() | slow.accepted_records()  # noqa: E731
        wait_for(lambda: len(both()) >= producer.acked, timeout=90, what="every record delivered")
        assert producer.acked == producer.sent and len(both()) == producer.acked
        assert first_deliveries_in_key_order(good.arrivals() + slow.arrivals()) == []
        assert overlaps(good.arrivals() + slow.arrivals()) == []


def worker_pods(k8s: Any, ns: str) -> list[dict[str, Any]]:
    out = k8s.kubectl("get", "pods", "-l", "lagpilot.io/consumergroup=cg", "-o", "json", namespace=ns)
    return list(json.loads(out.stdout)["items"])


def test_kill_9_of_a_worker_and_operator_restart_mid_rolling_rollout(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """Mid-Rolling: one worker holding partitions is killed with SIGKILL (its container restarts, as a
    kubelet would) and the operator is killed with SIGKILL and started again. The rollout still completes;
    nothing is lost, first deliveries stay in key order, and no two workers deliver one partition at once
    (redeliveries of what was in flight at the kill are allowed)."""
    topic = topic_factory(partitions=PARTITIONS, prefix="opkill")
    with RecordingTarget(latency_s=0.01) as good:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=100).start()
        try:
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling",
                                                                    "maxPartitionsInFlight": 1}))
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling",
                                                                    "maxPartitionsInFlight": 1}, threads=3))

            def moving() -> Any:
                ro = (get_cg(k8s, namespace).get("status") or {}).get("rollout") or {}
                return ro if ro.get("phase") == "Progressing" and int(ro.get("step") or 0) >= 1 else None
            wait_for(moving, timeout=120, what="rollout under way")
            owners = set(get_cg(k8s, namespace)["status"]["assignment"]["owners"].values())
            victim = next(p for p in worker_pods(k8s, namespace) if p["metadata"]["name"] in owners
                          and p["metadata"]["labels"].get("lagpilot.io/revision") == first["revision"])
            cid = victim["status"]["containerStatuses"][0]["containerID"]
            assert cid.startswith("lab://"), cid
            os.kill(int(cid.removeprefix("lab://")), signal.SIGKILL)
            operator.stop(kill=True)
            time.sleep(3)
            operator.start()
            done = wait_for(settled_on_new_revision(k8s, namespace, first["revision"]), timeout=240,
                            what="Rolling rollout done after the kills")
            assert owners_revisions(k8s, namespace, done) == {done["revision"]}
        finally:
            producer.stop()
        good.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=90)
        assert producer.acked == producer.sent
        assert len(good.accepted_records()) == producer.acked
        assert first_deliveries_in_key_order(good.arrivals()) == []
        assert overlaps(good.arrivals()) == []


def lagpilot_cli(k8s: Any, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(k8s.kubeconfig)}
    return subprocess.run([str(Path(sys.executable).parent / "lagpilot"), *args, "-n", ns], capture_output=True,
                          text=True, env=env, timeout=300)


def test_blue_green_waits_for_lagpilot_promote(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """autoPromote false: the new revision's workers come up idle and wait; `lagpilot promote` moves every
    partition; nothing is lost on the way."""
    topic = topic_factory(partitions=PARTITIONS, prefix="oppromote")
    with RecordingTarget() as good:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=100).start()
        try:
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}))
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            bg = {"strategy": "BlueGreen", "blueGreen": {"autoPromote": False, "scaleDownDelaySeconds": 0}}
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, bg, threads=3))

            def waiting() -> Any:
                ro = (get_cg(k8s, namespace).get("status") or {}).get("rollout") or {}
                return ro if "waiting for lagpilot.io/promote" in str(ro.get("message")) else None
            wait_for(waiting, timeout=180, what="blue/green waiting for promotion")
            st = get_cg(k8s, namespace)["status"]
            assert owners_revisions(k8s, namespace, st) == {first["revision"]}  # nothing moved yet
            out = lagpilot_cli(k8s, namespace, "promote", "cg")
            assert out.returncode == 0, out.stderr
            done = wait_for(settled_on_new_revision(k8s, namespace, first["revision"]), timeout=180,
                            what="promoted blue/green done")
            assert owners_revisions(k8s, namespace, done) == {done["revision"]}
            assert any(e["reason"] == "Promoting" for e in events(k8s, namespace))
            # promote with no rollout in progress: a clear error, exit 1
            again = lagpilot_cli(k8s, namespace, "promote", "cg")
            assert again.returncode == 1 and "no rollout in progress" in again.stderr
        finally:
            producer.stop()
        good.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=90)
        assert len(good.accepted_records()) == producer.acked == producer.sent
        assert good.order_violations() == []
        assert overlaps(good.arrivals()) == []


def pod_names(k8s: Any, ns: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in worker_pods(k8s, ns) if not p["metadata"].get("deletionTimestamp"))


def settled(k8s: Any, ns: str, workers: int) -> Callable[[], Any]:
    """Stable, every partition owned and confirmed, nothing moving, `workers` ready."""
    def check() -> Any:
        st = get_cg(k8s, ns).get("status") or {}
        a = st.get("assignment") or {}
        ok = (a.get("unowned") == [] and not a.get("moving") and len(a.get("owners") or []) == PARTITIONS
              and all(a["owners"]) and st.get("readyWorkers") == workers and st.get("workers") == workers)
        return st if ok else None
    return check


def test_assignment_configmap_deleted_under_load_then_a_worker_pod_deleted(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """Issue 14 item 1: the assignment ConfigMap is deleted under load, then one worker pod. The operator
    rebuilds the document from what the workers report (nothing granted until every live worker applied the
    rebuilt one), so nothing is stuck, nothing is lost and no partition has two workers at once."""
    topic = topic_factory(partitions=PARTITIONS, prefix="oplost")
    with RecordingTarget(latency_s=0.02) as good:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=100, keys=120).start()
        try:
            doc = cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"})
            doc["spec"]["workers"] = 3
            apply(k8s, namespace, doc)
            wait_for(settled(k8s, namespace, 3), timeout=180, what="3 workers owning every partition")
            good.wait_for(lambda t: len(t.accepted_records()) >= 200, timeout=60)
            epoch_before = get_cg(k8s, namespace)["status"]["assignment"]["epoch"]
            k8s.kubectl("delete", "configmap", "cg-assignment", namespace=namespace)
            time.sleep(2)
            k8s.kubectl("delete", "pod", pod_names(k8s, namespace)[0], "--wait=false", namespace=namespace)
            time.sleep(10)
            st = wait_for(settled(k8s, namespace, 3), timeout=180, what="every partition owned again")
            assert st["assignment"]["epoch"] > epoch_before
            cm = json.loads(k8s.kubectl("get", "configmap", "cg-assignment", "-o", "json",
                                        namespace=namespace).stdout)
            assert json.loads(cm["data"]["assignment.json"]).get("incarnation"), "rebuilt in a new incarnation"
        finally:
            producer.stop()
        wait_for(lambda: len(good.accepted_records()) >= producer.acked, timeout=120, what="every record delivered")
        assert producer.acked == producer.sent
        assert len(good.accepted_records()) == producer.acked
        assert first_deliveries_in_key_order(good.arrivals()) == []
        assert overlaps(good.arrivals()) == []


def test_leases_deleted_while_partitions_move(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """Issue 14 item 2: while a scale-up moves partitions off the running workers, their Leases are deleted
    again and again. A missing Lease is no release: a partition is granted to the new worker only after its
    old owner reports the release (its Lease comes back), so no two workers deliver one partition at once."""
    import threading

    topic = topic_factory(partitions=PARTITIONS, prefix="oplease")
    with RecordingTarget(latency_s=0.3) as good:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=60, keys=120).start()
        stop = threading.Event()
        try:
            doc = cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}, threads=4)
            apply(k8s, namespace, doc)
            wait_for(settled(k8s, namespace, 2), timeout=180, what="2 workers owning every partition")
            good.wait_for(lambda t: len(t.accepted_records()) >= 50, timeout=60)
            old = pod_names(k8s, namespace)

            def delete_leases() -> None:
                while not stop.is_set():
                    k8s.kubectl("delete", "lease", *old, "--ignore-not-found", "--wait=false",
                                namespace=namespace, check=False)
                    stop.wait(0.3)

            deleter = threading.Thread(target=delete_leases, daemon=True)
            doc["spec"]["workers"] = 3
            apply(k8s, namespace, doc)
            deleter.start()
            time.sleep(20)
            stop.set()
            deleter.join(10)
            wait_for(settled(k8s, namespace, 3), timeout=180, what="3 workers owning every partition")
        finally:
            stop.set()
            producer.stop()
        wait_for(lambda: len(good.accepted_records()) >= producer.acked, timeout=120, what="every record delivered")
        assert len(good.accepted_records()) == producer.acked == producer.sent
        assert first_deliveries_in_key_order(good.arrivals()) == []
        assert overlaps(good.arrivals()) == []


def test_a_canary_that_never_comes_up_is_aborted_after_analysis_and_grace(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """Issue 14 item 5: a canary revision whose workers never start (its headers Secret does not exist, so
    its containers cannot be created) never takes its partitions; instead of waiting for ever it is aborted
    analysisSeconds + 60 s in, with a reason, and the stable revision keeps every partition."""
    topic = topic_factory(partitions=PARTITIONS, prefix="opdead")
    with RecordingTarget() as good:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=30).start()
        try:
            apply(k8s, namespace, cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"}))
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            canary = {"strategy": "Canary", "canary": {"partitions": [0], "workers": 1, "analysisSeconds": 5}}
            doc = cg_doc(bootstrap, topic, good.url, canary)
            doc["spec"]["target"]["headersFromSecret"] = "no-such-secret"
            apply(k8s, namespace, doc)
            aborted = wait_for(aborted_and_back_on(k8s, namespace, first["revision"]), timeout=240,
                               what="canary aborted after analysisSeconds + grace")
            assert "did not take its partitions" in aborted["rollout"]["message"], aborted["rollout"]
            assert any(e["reason"] == "RolloutAborted" and "did not take its partitions" in e["message"]
                       for e in events(k8s, namespace))
        finally:
            producer.stop()
        wait_for(lambda: len(good.accepted_records()) >= producer.acked, timeout=90, what="every record delivered")
        assert overlaps(good.arrivals()) == []


def test_an_aborted_canary_replays_from_the_checkpoint_and_lagpilot_replay_rewinds_to_a_time(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    """A canary (onAbort: replayFromCheckpoint) takes partitions 1 and 4 and delivers to its own target; it is
    aborted; the stable revision then delivers again exactly the records after status.rollout.checkpoint on
    those partitions, and nothing again on the others. Back on the stable spec, `lagpilot replay --to-time`
    rewinds every partition to a time: exactly the records from that time on are delivered again. No two
    workers ever deliver one partition at overlapping times."""
    topic = topic_factory(partitions=PARTITIONS, prefix="opreplay")
    with RecordingTarget() as good, RecordingTarget() as canary_target:
        producer = SteadyProducer(bootstrap, topic, PARTITIONS, rate=60).start()
        try:
            stable_doc = cg_doc(bootstrap, topic, good.url, {"strategy": "Rolling"})
            apply(k8s, namespace, stable_doc)
            first = wait_for(settled_on_new_revision(k8s, namespace, None), timeout=180, what="first revision")
            out = lagpilot_cli(k8s, namespace, "replay", "cg", "--to-checkpoint")
            assert out.returncode == 1 and "no checkpoint yet" in out.stderr, out.stderr

            chosen = [1, 4]
            rollout = {"strategy": "Canary", "onAbort": "replayFromCheckpoint",
                       "canary": {"partitions": chosen, "workers": 1, "analysisSeconds": 600, "maxErrorRate": 1.0}}
            apply(k8s, namespace, cg_doc(bootstrap, topic, canary_target.url, rollout, threads=3))
            canary_target.wait_for(lambda t: {a.partition for a in t.accepted()} == set(chosen), timeout=180)
            out = lagpilot_cli(k8s, namespace, "replay", "cg", "--to-time", "2026-01-01T00:00:00Z")
            assert out.returncode == 1 and "a rollout is running" in out.stderr, out.stderr
            checkpoint = get_cg(k8s, namespace)["status"]["rollout"]["checkpoint"]
            assert checkpoint["revision"] == first["revision"]
            marked = {int(p.rpartition(":")[2]): int(o) for p, o in checkpoint["offsets"].items()}  # topic:p
            assert any(e["reason"] == "CheckpointTaken" for e in events(k8s, namespace))

            mark = len(good.arrivals())
            out = lagpilot_cli(k8s, namespace, "abort", "cg")
            assert out.returncode == 0, out.stderr
            aborted = wait_for(aborted_and_back_on(k8s, namespace, first["revision"]), timeout=180,
                               what="canary aborted and partitions back")
            replay = aborted["rollout"]["replay"]
            assert replay["phase"] == "Done" and sorted(replay["moved"]) == [f"{topic}:{p}" for p in chosen], replay
            assert {int(p.rpartition(":")[2]): m["to"] for p, m in replay["moved"].items()} == {
                p: marked[p] for p in chosen}
            assert any(e["reason"] == "Replayed" for e in events(k8s, namespace))

            # Back on the stable spec (the rollout is cancelled), then a replay to a time.
            apply(k8s, namespace, stable_doc)
            wait_for(lambda: (get_cg(k8s, namespace)["status"].get("rollout") or {}).get("phase") == "Stable",
                     timeout=120, what="rollout back to Stable")
            time.sleep(3)
            since_ms = int((time.time() - 2) * 1000)  # the replay time, to the millisecond records carry
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_ms // 1000)) + f".{since_ms % 1000:03d}Z"
            mark2 = len(good.arrivals())
            out = lagpilot_cli(k8s, namespace, "replay", "cg", "--to-time", when)
            assert out.returncode == 0, out.stdout + out.stderr
            assert "offsets moved" in out.stdout and "records again" in out.stdout, out.stdout
        finally:
            producer.stop()
        end = end_offsets(bootstrap, topic, PARTITIONS)
        good.wait_for(lambda t: all((p, end[p] - 1) in t.accepted_records() for p in range(PARTITIONS)
                                    if end[p]), timeout=300)
        time.sleep(2)
    arrivals = good.arrivals()
    # The abort's replay: on the canary partitions exactly the records from the checkpoint on came again
    # (up to where the --to-time replay began); on the others nothing came twice before that.
    after_abort = arrivals[mark:mark2]
    for p in chosen:
        again = {a.offset for a in after_abort if a.accepted and a.partition == p}
        assert again and min(again) == marked[p], (p, marked[p], sorted(again)[:5])
        assert again == set(range(marked[p], max(again) + 1)), f"partition {p}: a gap in the replayed records"
    assert duplicates([a for a in arrivals[:mark2] if a.partition not in chosen]) == []
    # The time replay: per partition, the first record re-delivered is the first one stamped at or after it.
    first_after: dict[int, int] = {}
    stamps: dict[tuple[int, int], int] = {}
    for a in arrivals:
        if a.accepted and "X-Lagpilot-Timestamp" in a.headers:
            stamps[(a.partition, a.offset)] = int(a.headers["X-Lagpilot-Timestamp"])
    for p in range(PARTITIONS):
        expected = min((o for (q, o), ts in stamps.items() if q == p and ts >= since_ms), default=None)
        again = [a.offset for a in arrivals[mark2:] if a.accepted and a.partition == p]
        if expected is not None:
            first_after[p] = min(again)
            assert min(again) == expected, (p, expected, sorted(again)[:5])
    assert first_after, "records were produced after the replay time"
    assert len(good.accepted_records() | canary_target.accepted_records()) >= producer.acked
    assert first_deliveries_in_key_order(arrivals + canary_target.arrivals()) == []
    assert overlaps(arrivals + canary_target.arrivals()) == []
