"""The operator as a real process against the lab control plane (real API server, garbage collector,
lab runner running worker pods as processes) and the lab Kafka broker."""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.apiserver import read_write_counts
from lagpilot.testing.kubeobjects import apply, condition, deployments, get
from lagpilot.testing.operator import Operator, running_operator
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def cg_doc(name: str, bootstrap: str, topic: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "topic": topic,
                     "target": {"url": "http://127.0.0.1:9/none"}, **spec}}


def settled_status(k8s: Any, ns: str, name: str) -> Callable[[], Any]:
    def check() -> Any:
        cg = get(k8s, ns, "consumergroup", name)
        st = cg.get("status") or {}
        return cg if st.get("observedGeneration") == cg["metadata"]["generation"] else None
    return check


def test_minimal_example_creates_owned_objects_and_status(k8s: Any, namespace: str, operator: Operator,
                                                          bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(partitions=4)
    doc = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    doc["spec"].update(bootstrapServers=bootstrap, topic=topic)
    apply(k8s, namespace, doc)
    name = doc["metadata"]["name"]
    cg = get(k8s, namespace, "consumergroup", name)
    uid = cg["metadata"]["uid"]

    (dep,) = wait_for(lambda: deployments(k8s, namespace, name), what="worker Deployment")
    for kind, obj_name in (("serviceaccount", f"{name}-worker"), ("role", f"{name}-worker"),
                           ("rolebinding", f"{name}-worker"), ("service", f"{name}-workers"),
                           ("configmap", f"{name}-assignment")):
        obj = wait_for(functools.partial(get, k8s, namespace, kind, obj_name), what=f"{kind} {obj_name}")
        refs = obj["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r.get("controller")) for r in refs] == [("ConsumerGroup", uid, True)]
    assert dep["metadata"]["ownerReferences"][0]["uid"] == uid
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LAGPILOT_TOPIC"] == topic and env["LAGPILOT_GROUP_ID"] == f"{namespace}.{name}"
    doc = wait_for(lambda: json.loads(get(k8s, namespace, "configmap", f"{name}-assignment")["data"][
        "assignment.json"]), what="assignment document")
    assert doc["format"] == 2 and doc["topics"] == {topic: 4} and set(doc) >= {"epoch", "grants", "revoked"}

    cg = wait_for(lambda: (c := get(k8s, namespace, "consumergroup", name)) and
                  (c.get("status") or {}).get("partitions") == 4 and c, what="status.partitions")
    st = cg["status"]
    assert st["observedGeneration"] == cg["metadata"]["generation"]
    assert st["workers"] == 1 and st["selector"] == f"lagpilot.io/consumergroup={name}"
    assert {c["type"] for c in st["conditions"]} >= {"Ready", "Progressing", "Degraded"}
    assert condition(cg, "Degraded")["status"] == "False"
    # printer columns render
    table = k8s.kubectl("get", "cg", name, namespace=namespace).stdout
    assert "TOPIC" in table and "PHASE" in table and topic in table


def test_reconcile_is_idempotent_no_spurious_writes(k8s: Any, namespace: str, crds: None, bootstrap: str,
                                                    topic_factory: Any, tmp_path: Path) -> None:
    """Reconciles of an unchanged world write nothing. (An idle, healthy group is reconciled again only at the
    full resync; here it is 3 s so that reconciles do run.)"""
    with running_operator(k8s, namespace, tmp_path / "operator.log", {"LAGPILOT_FULL_RESYNC_SECONDS": "3"}) as op:
        unchanged_world_writes_nothing(k8s, namespace, op, bootstrap, topic_factory)


def unchanged_world_writes_nothing(k8s: Any, namespace: str, operator: Operator, bootstrap: str,
                                   topic_factory: Any) -> None:
    topic = topic_factory(partitions=2)
    apply(k8s, namespace, cg_doc("idem", bootstrap, topic, workers=0))
    # Ready comes with the first status write; the first lag read is written a poll later (CI run 8 took
    # the resourceVersion in between and saw that write): wait for both before watching for writes.
    wait_for(lambda: (cg := get(k8s, namespace, "consumergroup", "idem")) and
             condition(cg, "Ready").get("status") == "True" and
             ((cg.get("status") or {}).get("lag") or {}).get("updatedAt"),
             what="Ready with 0 workers, and the first lag read written")
    before = {d["metadata"]["name"]: (d["metadata"]["resourceVersion"], d["metadata"]["generation"])
              for d in deployments(k8s, namespace, "idem")}
    cg_rv = get(k8s, namespace, "consumergroup", "idem")["metadata"]["resourceVersion"]
    sa_rv = get(k8s, namespace, "serviceaccount", "idem-worker")["metadata"]["resourceVersion"]
    # at least three more reconciles (periodic resync) run; none may write anything
    start = operator.reconciles()
    wait_for(lambda: operator.reconciles() >= start + 3, what="three more reconciles")
    after = {d["metadata"]["name"]: (d["metadata"]["resourceVersion"], d["metadata"]["generation"])
             for d in deployments(k8s, namespace, "idem")}
    assert after == before
    assert get(k8s, namespace, "consumergroup", "idem")["metadata"]["resourceVersion"] == cg_rv
    assert get(k8s, namespace, "serviceaccount", "idem-worker")["metadata"]["resourceVersion"] == sa_rv


WATCHED = ("deployments", "replicasets", "configmaps", "services", "serviceaccounts", "roles", "rolebindings",
           "events", "consumergroups", "consumergroups/status")


def api_writes(k8s: Any) -> dict[str, float]:
    """Write requests the API server has served, per resource (from its own /metrics)."""
    counts = read_write_counts(k8s.kubectl)
    return {r: float(counts[r]) for r in WATCHED if counts.get(r)}


def test_a_steady_group_with_workers_causes_no_writes_and_no_events(
        k8s: Any, namespace: str, crds: None, bootstrap: str, topic_factory: Any, tmp_path: Path) -> None:
    """Issue 14 item 7: with workers running and nothing changing, several resyncs write nothing to the API
    (counted by the API server itself) and emit no Event. (The full resync is 5 s here so that the
    reconciles run; by default a quiet group waits for ten minutes.)"""
    with running_operator(k8s, namespace, tmp_path / "operator.log",
                          {"LAGPILOT_RESYNC_SECONDS": "5", "LAGPILOT_FULL_RESYNC_SECONDS": "5"}) as op:
        steady_group_writes_nothing(k8s, namespace, op, bootstrap, topic_factory)


def steady_group_writes_nothing(k8s: Any, namespace: str, operator: Operator, bootstrap: str,
                                topic_factory: Any) -> None:
    topic = topic_factory(partitions=4)
    apply(k8s, namespace, cg_doc("steady", bootstrap, topic, workers=2))

    def settled() -> bool:
        cg = get(k8s, namespace, "consumergroup", "steady")
        st = (cg or {}).get("status") or {}
        return (condition(cg, "Ready").get("status") == "True" and st.get("readyWorkers") == 2
                and not (st.get("assignment") or {}).get("moving"))
    wait_for(settled, timeout=180, what="2 workers Ready, every partition owned")
    time.sleep(15)  # let the last transitions (conditions, Events) land
    def group_events() -> dict[str, tuple[int, str]]:
        """Events about the ConsumerGroup (the lab's endpoints controller complains about loopback pod IPs
        on its own): uid -> (count, "reason: message")."""
        return {e["metadata"]["uid"]: (int(e.get("count") or 1), f"{e['reason']}: {e['message']}")
                for e in get(k8s, namespace, "events") or [] if e["involvedObject"].get("kind") == "ConsumerGroup"}
    events_before = group_events()
    writes_before = api_writes(k8s)
    start = operator.reconciles()
    wait_for(lambda: operator.reconciles() >= start + 4, timeout=180, what="four more reconciles")
    writes = {k: v - writes_before.get(k, 0.0) for k, v in api_writes(k8s).items()
              if v - writes_before.get(k, 0.0) > 0}
    new_events = [text for uid, (count, text) in group_events().items()
                  if uid not in events_before or count > events_before[uid][0]]
    assert new_events == []
    # status.lag is written only when a figure changes.
    assert writes == {}, writes


def test_scale_subresource_and_drift_repair(k8s: Any, namespace: str, operator: Operator, bootstrap: str,
                                            topic_factory: Any) -> None:
    topic = topic_factory(partitions=3)
    apply(k8s, namespace, cg_doc("scaled", bootstrap, topic, workers=0))
    (dep,) = wait_for(lambda: deployments(k8s, namespace, "scaled"), what="Deployment")
    name = dep["metadata"]["name"]

    k8s.kubectl("scale", "cg/scaled", "--replicas=2", namespace=namespace)
    assert get(k8s, namespace, "consumergroup", "scaled")["spec"]["workers"] == 2
    wait_for(lambda: get(k8s, namespace, "deployment", name)["spec"]["replicas"] == 2, what="replicas 2")
    wait_for(lambda: get(k8s, namespace, "consumergroup", "scaled")["status"]["workers"] == 2, what="status")
    k8s.kubectl("scale", "cg/scaled", "--replicas=0", namespace=namespace)
    wait_for(lambda: get(k8s, namespace, "deployment", name)["spec"]["replicas"] == 0, what="replicas 0")

    # someone edits the Deployment: template and replicas are put back
    k8s.kubectl("set", "env", f"deployment/{name}", "LAGPILOT_THREADS=99", namespace=namespace)
    k8s.kubectl("scale", f"deployment/{name}", "--replicas=3", namespace=namespace)

    def repaired() -> bool:
        d = get(k8s, namespace, "deployment", name)
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["LAGPILOT_THREADS"] == "4" and d["spec"]["replicas"] == 0
    wait_for(repaired, what="edited Deployment repaired")

    # someone deletes it: recreated (a new object, same name), and exactly one
    old_uid = get(k8s, namespace, "deployment", name)["metadata"]["uid"]
    k8s.kubectl("delete", "deployment", name, namespace=namespace)
    new = wait_for(lambda: (d := get(k8s, namespace, "deployment", name)) and d["metadata"]["uid"] != old_uid
                   and d, what="Deployment recreated")
    assert new["metadata"]["ownerReferences"][0]["kind"] == "ConsumerGroup"
    assert len(deployments(k8s, namespace, "scaled")) == 1

    k8s.kubectl("delete", "role", "scaled-worker", namespace=namespace)
    wait_for(lambda: get(k8s, namespace, "role", "scaled-worker"), what="Role recreated")


def test_a_worker_given_two_cores_runs_as_two_one_core_pods(k8s: Any, namespace: str, operator: Operator,
                                                             bootstrap: str, topic_factory: Any) -> None:
    """One worker process uses one core: a worker given 2 (here a limit of 2 and a request of 1500m) runs as
    2 pods of 1 core (request 750m) with all of its memory; the scale subresource still counts workers, and
    the split adds no pod past the partition count."""
    topic = topic_factory(partitions=3)
    apply(k8s, namespace, cg_doc("cores", bootstrap, topic, workers=1, template={"resources": {
        "limits": {"cpu": "2", "memory": "300Mi"}, "requests": {"cpu": "1500m"}}}))
    (dep,) = wait_for(lambda: deployments(k8s, namespace, "cores"), what="Deployment")
    name = dep["metadata"]["name"]
    wait_for(lambda: get(k8s, namespace, "deployment", name)["spec"]["replicas"] == 2, what="2 pods for 1 worker")
    [c] = get(k8s, namespace, "deployment", name)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {"limits": {"cpu": "1", "memory": "300Mi"}, "requests": {"cpu": "750m"}}
    status = wait_for(lambda: (st := get(k8s, namespace, "consumergroup", "cores").get("status") or {})
                      .get("sizing") and st, what="status.sizing")
    assert status["workers"] == 1 and status["sizing"] == {"podsPerWorker": 2, "pods": 2, "cpuPerPod": "1"}

    k8s.kubectl("scale", "cg/cores", "--replicas=2", namespace=namespace)
    # 2 workers of 2 cores on 3 partitions: 3 pods, not 4 (a fourth would own nothing).
    wait_for(lambda: get(k8s, namespace, "deployment", name)["spec"]["replicas"] == 3, what="3 pods for 2 workers")
    wait_for(lambda: (get(k8s, namespace, "consumergroup", "cores").get("status") or {}).get("sizing", {})
             .get("pods") == 3, what="status.sizing.pods 3")
    scale = json.loads(k8s.kubectl("get", "--raw", f"/apis/lagpilot.io/v1alpha1/namespaces/{namespace}/"
                                   "consumergroups/cores/scale").stdout)
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2), scale

    # Back to one core: one pod per worker, and status.sizing is gone.
    k8s.kubectl("patch", "cg/cores", "--type=merge", "-p",
                json.dumps({"spec": {"template": {"resources": {"limits": {"cpu": "1"}, "requests": None}}}}),
                namespace=namespace)
    wait_for(lambda: (st := get(k8s, namespace, "consumergroup", "cores").get("status") or {})
             .get("workers") == 2 and "sizing" not in st
             and any(d["spec"]["replicas"] == 2 and d["spec"]["template"]["spec"]["containers"][0]["resources"]
                     == {"limits": {"cpu": "1", "memory": "300Mi"}} for d in deployments(k8s, namespace, "cores")),
             timeout=120, what="one pod per worker again")


def test_schema_rejects_invalid_specs(k8s: Any, namespace: str, crds: None) -> None:
    base = cg_doc("bad", "k:9092", "orders")
    cases = [
        ({"threads": 0}, "spec.threads"),
        ({"target": {"url": "ftp://x/y"}}, "spec.target.url"),
        ({"ordering": "global"}, "spec.ordering"),
        ({"retry": {"initialBackoffMs": 500, "maxBackoffMs": 100}}, "maxBackoffMs must be >= initialBackoffMs"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "needs saslMechanism and credentialsSecret"),
        ({"autoscaling": {"minWorkers": 5, "maxWorkers": 2}}, "maxWorkers must be >= minWorkers"),
    ]
    for patch, fragment in cases:
        doc = copy.deepcopy(base)
        doc["spec"].update(patch)
        out = apply(k8s, namespace, doc, check=False)
        assert out.returncode != 0, patch
        assert fragment in out.stderr, out.stderr
    doc = copy.deepcopy(base)
    del doc["spec"]["topic"]
    out = apply(k8s, namespace, doc, check=False)
    assert out.returncode != 0 and "spec.topic" in out.stderr
    long = copy.deepcopy(base)
    long["metadata"]["name"] = "x" * 53
    out = apply(k8s, namespace, long, check=False)
    assert out.returncode != 0 and "at most 52" in out.stderr


def test_semantic_problems_are_reported_in_conditions_and_events(k8s: Any, namespace: str, operator: Operator,
                                                                 bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(partitions=2)
    apply(k8s, namespace, cg_doc("sem", bootstrap, topic,
                                 template={"env": [{"name": "LAGPILOT_TOPIC", "value": "x"}]},
                                 rollout={"strategy": "Canary", "canary": {"partitions": [0, 5]}}))
    cg = wait_for(lambda: (c := get(k8s, namespace, "consumergroup", "sem")) and
                  condition(c, "Degraded").get("reason") == "InvalidSpec" and c, what="InvalidSpec")
    msg = condition(cg, "Degraded")["message"]
    assert "spec.template.env[0].name" in msg and "spec.rollout.canary.partitions" in msg
    assert cg["status"]["phase"] == "Invalid"
    assert deployments(k8s, namespace, "sem") == []  # an invalid spec is never rolled out
    wait_for(lambda: any(e["reason"] == "InvalidSpec" and e["involvedObject"]["name"] == "sem"
                         for e in get(k8s, namespace, "events") or []), what="InvalidSpec Event")

    apply(k8s, namespace, cg_doc("nosuch", bootstrap, "no-such-topic-x"))
    wait_for(lambda: condition(get(k8s, namespace, "consumergroup", "nosuch"), "Degraded").get("reason")
             == "TopicNotFound", what="TopicNotFound")
    apply(k8s, namespace, cg_doc("nobroker", "127.0.0.1:1", topic))
    wait_for(lambda: condition(get(k8s, namespace, "consumergroup", "nobroker"), "Degraded").get("reason")
             == "BrokerUnreachable", what="BrokerUnreachable")

    # fixing the spec clears the condition
    apply(k8s, namespace, cg_doc("sem", bootstrap, topic, workers=0))
    wait_for(lambda: condition(get(k8s, namespace, "consumergroup", "sem"), "Degraded").get("status") == "False",
             what="recovered")
    wait_for(lambda: deployments(k8s, namespace, "sem"), what="Deployment after fix")


def test_full_example_is_accepted_and_planned(k8s: Any, namespace: str, operator: Operator) -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "full.yaml").read_text()))
    apply(k8s, namespace, *docs)
    (dep,) = wait_for(lambda: deployments(k8s, namespace, "orders-to-billing"), what="Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in c
    env = {e["name"]: e for e in c["env"]}
    assert env["LAGPILOT_HEADERS_DIR"]["value"] == "/etc/lagpilot/target-headers"
    assert env["LAGPILOT_KAFKA_SASL_PASSWORD_FILE"]["value"] == "/etc/lagpilot/kafka/kafka-sasl/password"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "kafka-creds"
    assert volumes["target-headers"]["secret"] == {"secretName": "billing-auth", "defaultMode": 0o440}
    assert dep["spec"]["replicas"] == 3
    # the example's brokers do not exist in the lab: the operator says so
    cg = wait_for(lambda: (x := get(k8s, namespace, "consumergroup", "orders-to-billing")) and
                  condition(x, "Degraded").get("status") == "True" and x, what="Degraded")
    assert condition(cg, "Degraded")["reason"] in ("BrokerUnreachable", "WorkersCrashLooping")
    # the Secret's content never appears in the Deployment
    assert "change-me" not in json.dumps(dep)


def test_secure_example_is_accepted_and_planned(k8s: Any, namespace: str, operator: Operator) -> None:
    """The API server accepts secure.yaml (its CEL rules included) and the operator mounts each key."""
    docs = list(yaml.safe_load_all((EXAMPLES / "secure.yaml").read_text()))
    apply(k8s, namespace, *docs)
    for name, volumes in (("payments-to-ledger", {"kafka-ca", "kafka-client-cert", "target-ca",
                                                  "target-client-cert", "target-oauth", "target-oauth-ca"}),
                          ("clicks-to-warehouse", {"kafka-oauth", "kafka-oauth-ca", "target-token"})):
        (dep,) = wait_for(lambda name=name: deployments(k8s, namespace, name), what=f"{name} Deployment")
        pod = dep["spec"]["template"]["spec"]
        assert {v["name"] for v in pod["volumes"]} == {"tmp", *volumes}
        assert all("valueFrom" not in e or "fieldRef" in e["valueFrom"] for e in pod["containers"][0]["env"])
    bad = {**docs[0], "spec": {**docs[0]["spec"], "kafka": {"securityProtocol": "SASL_PLAINTEXT",
                                                            "saslMechanism": "PLAIN", "credentialsSecret": "c"}}}
    out = apply(k8s, namespace, bad, check=False)
    assert out.returncode != 0 and "allowPlaintextCredentials" in out.stderr


def test_delete_cr_removes_everything(k8s: Any, namespace: str, operator: Operator, bootstrap: str,
                                      topic_factory: Any) -> None:
    topic = topic_factory(partitions=1)
    apply(k8s, namespace, cg_doc("gone", bootstrap, topic, workers=0))
    wait_for(lambda: deployments(k8s, namespace, "gone") and get(k8s, namespace, "configmap", "gone-assignment"),
             what="objects")
    k8s.kubectl("delete", "consumergroup", "gone", "--timeout=60s", namespace=namespace)

    def all_gone() -> bool:
        sel = "lagpilot.io/consumergroup=gone"
        return all(not get(k8s, namespace, kind, selector=sel)
                   for kind in ("deployments", "serviceaccounts", "roles", "rolebindings", "services",
                                "configmaps"))
    wait_for(all_gone, timeout=120, what="garbage collection of owned objects")


def test_deleting_the_group_leaves_no_lease(k8s: Any, namespace: str, operator: Operator, bootstrap: str,
                                            topic_factory: Any) -> None:
    """Issue 14 item 8: each worker's Lease is owned by its pod, so deleting the ConsumerGroup (and with it
    the Deployments and pods) garbage-collects the Leases too."""
    topic = topic_factory(partitions=2)
    apply(k8s, namespace, cg_doc("leases", bootstrap, topic, workers=2))
    sel = "lagpilot.io/consumergroup=leases"
    leases = wait_for(lambda: (ls if len(ls := get(k8s, namespace, "leases", selector=sel) or []) == 2 else None),
                      timeout=120, what="two worker Leases")
    assert all(lease["metadata"]["ownerReferences"][0]["kind"] == "Pod" for lease in leases)
    k8s.kubectl("delete", "consumergroup", "leases", "--timeout=60s", namespace=namespace)
    wait_for(lambda: not get(k8s, namespace, "leases", selector=sel) and not get(k8s, namespace, "pods",
                                                                                 selector=sel),
             timeout=180, what="no Lease and no pod of the deleted group")


def test_operator_restart_converges_without_duplicates(k8s: Any, namespace: str, operator: Operator,
                                                       bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(partitions=2)
    apply(k8s, namespace, cg_doc("restart", bootstrap, topic, workers=0))
    (first,) = wait_for(lambda: deployments(k8s, namespace, "restart"), what="Deployment")
    # change the spec and kill the operator at once: the restarted one must finish the job
    apply(k8s, namespace, cg_doc("restart", bootstrap, topic, workers=0, threads=7))
    operator.stop(kill=True)
    k8s.kubectl("delete", "service", "restart-workers", namespace=namespace)
    operator.start()

    def converged() -> Any:
        deps = deployments(k8s, namespace, "restart")
        cg = get(k8s, namespace, "consumergroup", "restart")
        return (len(deps) == 1 and deps[0]["metadata"]["name"] != first["metadata"]["name"]
                and get(k8s, namespace, "service", "restart-workers")
                and cg["status"].get("observedGeneration") == cg["metadata"]["generation"]
                and condition(cg, "Ready").get("status") == "True")
    wait_for(converged, timeout=120, what="converged after restart")
    (dep,) = deployments(k8s, namespace, "restart")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LAGPILOT_THREADS"] == "7"
    for kind in ("serviceaccounts", "roles", "rolebindings", "services", "configmaps"):
        assert len(get(k8s, namespace, kind, selector="lagpilot.io/consumergroup=restart")) == 1, kind


def test_workers_run_consumer_records_reach_target_and_threads_change_rolls(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Any) -> None:
    from confluent_kafka import Producer

    from lagpilot.testing.target import RecordingTarget

    topic = topic_factory(partitions=2)
    with RecordingTarget() as target:
        apply(k8s, namespace, cg_doc("live", bootstrap, topic, workers=1, threads=2,
                                     target={"url": target.url}))
        cg = wait_for(lambda: (c := get(k8s, namespace, "consumergroup", "live")) and
                      condition(c, "Ready").get("status") == "True" and c, timeout=180, what="Ready")
        assert cg["status"]["readyWorkers"] == 1 and cg["status"]["phase"] == "Running"
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(20):
            producer.produce(topic, key=f"k{i % 4}".encode(), value=f"v{i}".encode())
        producer.flush(30)
        target.wait_for(lambda t: len(t.accepted_records()) >= 20, timeout=120)
        assert len(target.accepted_records()) == 20

        (before,) = deployments(k8s, namespace, "live")
        pods_before = {p["metadata"]["name"] for p in get(k8s, namespace, "pods",
                                                          selector="lagpilot.io/consumergroup=live")}
        apply(k8s, namespace, cg_doc("live", bootstrap, topic, workers=1, threads=3,
                                     target={"url": target.url}))

        def rolled() -> Any:
            deps = deployments(k8s, namespace, "live")
            cg = get(k8s, namespace, "consumergroup", "live")
            return (len(deps) == 1 and deps[0]["metadata"]["name"] != before["metadata"]["name"]
                    and condition(cg, "Ready").get("status") == "True"
                    and cg["status"]["observedGeneration"] == cg["metadata"]["generation"])
        wait_for(rolled, timeout=180, what="rolled to new revision")
        pods_after = wait_for(lambda: {p["metadata"]["name"] for p in get(
            k8s, namespace, "pods", selector="lagpilot.io/consumergroup=live")
            if not p["metadata"].get("deletionTimestamp")} - pods_before, what="new pods")
        assert not pods_after & pods_before
        (pod,) = [p for p in get(k8s, namespace, "pods", selector="lagpilot.io/consumergroup=live")
                  if p["metadata"]["name"] in pods_after]
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["LAGPILOT_THREADS"] == "3"
        for i in range(20, 30):
            producer.produce(topic, key=f"k{i % 4}".encode(), value=f"v{i}".encode())
        producer.flush(30)
        target.wait_for(lambda t: len(t.accepted_records()) >= 30, timeout=120)
        assert len(target.accepted_records()) == 30


def test_two_replicas_with_peering_only_one_acts(k8s: Any, namespace: str, crds: None, tmp_path: Path,
                                                 bootstrap: str, topic_factory: Any) -> None:
    """With the kopf peering CRDs installed and no --standalone, the lower-priority replica pauses.

    Steady state only: kopf peering is best-effort; a replica whose watch stream is still (re)listing when
    it learns of a higher-priority peer can process that listing once (seen when the API server answered
    429 during start-up). Reconcile is idempotent, so that overlap repeats identical writes."""
    high = Operator(k8s.kubeconfig, namespace, tmp_path / "high.log", {}, ("--priority", "20")).start()
    wait_for(lambda: "Starting the watch-stream for consumergroups" in high.log(), what="high replica up")
    low = Operator(k8s.kubeconfig, namespace, tmp_path / "low.log", {}, ("--priority", "10")).start()
    try:
        wait_for(lambda: "Pausing operations in favour of" in low.log(), timeout=120, what="low replica pauses")
        assert "Pausing operations" not in high.log()
        assert "created KopfPeering default" in high.log() + low.log()
        topic = topic_factory(partitions=1)
        apply(k8s, namespace, cg_doc("peered", bootstrap, topic, workers=0))
        wait_for(lambda: deployments(k8s, namespace, "peered"), what="Deployment by the active replica")
        wait_for(lambda: high.reconciles() >= 1, what="high replica reconciled")
        assert low.reconciles() == 0
    finally:
        k8s.kubectl("delete", "consumergroups", "--all", "--wait=false", namespace=namespace, check=False)
        wait_for(lambda: not get(k8s, namespace, "consumergroups"), timeout=60, what="deleted")
        high.stop()
        low.stop()
        print(high.log()[-5000:], low.log()[-5000:])
