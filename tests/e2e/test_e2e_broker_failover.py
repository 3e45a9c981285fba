"""Broker failover on kind (issue 15, scenario 4): Kafka in the cluster as 3 KRaft nodes (broker +
controller each; replication factor 3, min.insync.replicas 2, acks=all producer), a ConsumerGroup of two
workers under steady production, then with records in flight: the broker leading a busy partition killed
(its container stopped without grace by the kubelet's runtime; it restarts with its data), and once it is
back, the broker coordinating the group killed the same way. The history checker's verdict: nothing
lost, first deliveries in key order, no overlap; duplicates only among records in flight or uncommitted
at a fault; and commits resume up to the end of every partition.

The 3-node Kafka lives in its own namespace for this module only (the rest of the suite keeps its single
broker). Workers reach it through a headless Service; this process through one NodePort Service per
broker on the infra node's address (a container our scripts created). Needs LAGPILOT_E2E_KAFKA_IMAGE (an
image run like apache/kafka: KAFKA_* variables become properties, /etc/kafka/docker/run)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lagpilot.testing.consumer import committed
from lagpilot.testing.e2e_cluster import GROUP, NAME, PLURAL, VERSION, Cluster, arrivals
from lagpilot.testing.e2e_faults import (
    PARTITIONS,
    RUNS,
    Scenario,
    docker,
    on_new_revision,
    owners,
    owners_by_number,
    report_verdict,
)
from lagpilot.testing.e2e_target import Target
from lagpilot.testing.history import Fault
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kind, pytest.mark.faults, pytest.mark.timeout(1200)]

KAFKA_IMAGE = os.environ.get("LAGPILOT_E2E_KAFKA_IMAGE", "")
INFRA = os.environ.get("LAGPILOT_E2E_INFRA_NODE", "")
BROKERS = 3


@dataclass
class Kafka3:
    namespace: str
    in_cluster: str  # bootstrap for worker pods
    external: str  # bootstrap for this process
    node: str  # the kind node the brokers run on

    def container_id(self, c: Cluster, node_id: int) -> str:
        pod = c.core.read_namespaced_pod(f"kafka3-{node_id - 1}", self.namespace)
        return str(pod.status.container_statuses[0].container_id).split("://", 1)[1]

    def restarts(self, c: Cluster, node_id: int) -> int:
        pod = c.core.read_namespaced_pod(f"kafka3-{node_id - 1}", self.namespace)
        return int(pod.status.container_statuses[0].restart_count)

    def kill(self, c: Cluster, node_id: int) -> None:
        """SIGKILL the broker from outside (crictl stop with no grace); the kubelet restarts the container
        in the same pod, on the same emptyDir data."""
        docker("exec", self.node, "crictl", "stop", "--timeout", "0", self.container_id(c, node_id))


def kafka3_objects(ns: str, image: str, node_selector: dict[str, str], ext_ports: list[int],
                   advertised_host: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Services (one headless, one NodePort per broker) and the StatefulSet."""
    fqdn = f"kafka3.{ns}.svc.cluster.local"
    voters = ",".join(f"{i + 1}@kafka3-{i}.{fqdn}:9093" for i in range(BROKERS))
    services: list[dict[str, Any]] = [{
        "metadata": {"name": "kafka3"},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": "kafka3"},
                 "ports": [{"name": "plaintext", "port": 9092}, {"name": "controller", "port": 9093}]}}]
    for i in range(BROKERS):
        services.append({"metadata": {"name": f"kafka3-{i}-ext"}, "spec": {
            "type": "NodePort", "selector": {"statefulset.kubernetes.io/pod-name": f"kafka3-{i}"},
            "ports": [{"name": "external", "port": 9094, "targetPort": 9094}]}})
    # Node id and advertised addresses from the pod's ordinal (the StatefulSet gives every pod one spec).
    script = (
        'i=${HOSTNAME##*-}; ports=(' + " ".join(str(p) for p in ext_ports) + '); '
        'export KAFKA_NODE_ID=$((i + 1)); '
        f'export KAFKA_ADVERTISED_LISTENERS="PLAINTEXT://$HOSTNAME.{fqdn}:9092,'
        f'EXTERNAL://{advertised_host}:${{ports[$i]}}"; '
        'exec /etc/kafka/docker/run')
    env = {"KAFKA_PROCESS_ROLES": "broker,controller", "CLUSTER_ID": "bGFncGlsb3Qta2Fma2EzAA",
           "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,EXTERNAL://:9094",
           "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
           "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT",
           "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT", "KAFKA_CONTROLLER_QUORUM_VOTERS": voters,
           "KAFKA_DEFAULT_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2",
           "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "3",
           "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "2", "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
           "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false", "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": "false",
           "KAFKA_LOG_DIRS": "/var/lib/kafka/data", "KAFKA_HEAP_OPTS": "-Xms256m -Xmx384m"}
    sts = {"metadata": {"name": "kafka3"}, "spec": {
        "replicas": BROKERS, "serviceName": "kafka3", "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": {"app": "kafka3"}},
        "template": {"metadata": {"labels": {"app": "kafka3"}}, "spec": {
            "enableServiceLinks": False, "nodeSelector": node_selector, "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "kafka", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["bash", "-c", script],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "ports": [{"containerPort": p} for p in (9092, 9093, 9094)],
                "readinessProbe": {"tcpSocket": {"port": 9092}, "periodSeconds": 3},
                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kafka/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]}}}}
    return services, sts


@pytest.fixture(scope="module")
def kafka3(api: Any) -> Iterator[Kafka3]:
    from confluent_kafka.admin import AdminClient
    from kubernetes import client

    if not (KAFKA_IMAGE and INFRA):
        pytest.skip("needs LAGPILOT_E2E_KAFKA_IMAGE and LAGPILOT_E2E_INFRA_NODE (scripts/e2e-kind.sh sets them)")
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"e2e-kafka3-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"lagpilot.io/e2e": "true"}}})
    try:
        key, _, value = INFRA.partition("=")
        node = core.list_node(label_selector=f"{key}={value}").items[0]
        address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
        services, _ = kafka3_objects(ns, KAFKA_IMAGE, {key: value}, [0] * BROKERS, address)
        ports = []
        for svc in services:
            made = core.create_namespaced_service(ns, svc)
            if svc["spec"].get("type") == "NodePort":
                ports.append(int(made.spec.ports[0].node_port))
        _, sts = kafka3_objects(ns, KAFKA_IMAGE, {key: value}, ports, address)
        apps.create_namespaced_stateful_set(ns, sts)
        external = ",".join(f"{address}:{p}" for p in ports)
        admin = AdminClient({"bootstrap.servers": external})

        def up() -> bool:
            try:
                return len(admin.list_topics(timeout=5).brokers) == BROKERS
            except Exception:
                return False
        wait_for(up, 300, what="3 KRaft brokers up", interval=3)
        in_cluster = ",".join(f"kafka3-{i}.kafka3.{ns}.svc.cluster.local:9092" for i in range(BROKERS))
        yield Kafka3(ns, in_cluster, external, node.metadata.name)
    finally:
        core.delete_namespace(ns)


@pytest.fixture
def topic3(kafka3: Kafka3) -> Callable[[int], str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    def make(partitions: int) -> str:
        name = f"e2e-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": kafka3.external})
        for fut in admin.create_topics([NewTopic(name, partitions, 3)]).values():
            fut.result(60)
        wait_for(lambda: all(len(p.isrs) == BROKERS for p in admin.list_topics(name, timeout=10)
                             .topics[name].partitions.values()), 60, what=f"{name} fully replicated")
        return name
    return make


def leader_of(kafka3: Kafka3, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": kafka3.external}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[partition].leader)


def coordinator_of(kafka3: Kafka3, group: str) -> int:
    """The broker coordinating ``group``. After a kill, FindCoordinator can fail for a long while (the
    group's __consumer_offsets partition moving and loading; one CI run saw 120 s): asked with a fresh
    client each time (a client holding a connection to the killed broker's old incarnation can keep failing)
    for up to 300 s, and a timeout names the last error."""
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []

    def find() -> int | None:
        try:  # NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE while the coordinator moves after the last kill
            admin = AdminClient({"bootstrap.servers": kafka3.external})
            return int(admin.describe_consumer_groups([group], request_timeout=10)[group].result(15).coordinator.id)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return None

    try:
        return int(wait_for(find, 300, what=f"the coordinator of {group}", interval=2))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last errors: {errors[-3:]}") from exc


def kill_and_wait(kafka3: Kafka3, c: Cluster, node_id: int, s: Scenario, partition: int, what: str) -> Fault:
    """Kill broker `node_id` with records in flight; the fault lasts until it is back in every ISR and
    the partition delivers again."""
    from confluent_kafka.admin import AdminClient

    restarts = kafka3.restarts(c, node_id)
    start = time.time()
    kafka3.kill(c, node_id)
    wait_for(lambda: any(a.partition == partition and a.start > start + 1 for a in arrivals(s.target.records())),
             120, what=f"partition {partition} delivering again after {what}", interval=1)
    wait_for(lambda: kafka3.restarts(c, node_id) > restarts, 120, what=f"broker {node_id} restarted", interval=2)
    admin = AdminClient({"bootstrap.servers": kafka3.external})
    wait_for(lambda: all(node_id in p.isrs for p in admin.list_topics(s.topic, timeout=10)
                         .topics[s.topic].partitions.values()), 180, what=f"broker {node_id} back in sync",
             interval=2)
    return Fault(what, start, time.time())


def drain_or_explain(s: Scenario, kafka3: Kafka3, faults: list[Fault]) -> None:
    """Scenario.drain, and when it times out, the verdict so far, the commits and the group's status."""
    try:
        s.drain()
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {s.verdict(faults).details()}; committed "
                             f"{committed(kafka3.external, s.group, s.topic, PARTITIONS)} of {s.ends()}; "
                             f"status {s.c.cg().get('status')}") from exc


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_leader_and_coordinator_killed_mid_delivery(
        run: int, cluster: Cluster, kafka3: Kafka3, target: Target, topic3: Callable[[int], str]) -> None:
    c = cluster
    s = Scenario(c, kafka3.in_cluster, kafka3.external, target, topic3)
    assert len(set(owners(c))) == 2
    faults: list[Fault] = []
    try:
        leader = leader_of(kafka3, s.topic, 0)
        faults.append(kill_and_wait(kafka3, c, leader, s, 0, f"leader of p0 (broker {leader}) killed"))
        coordinator = coordinator_of(kafka3, s.group)
        faults.append(kill_and_wait(kafka3, c, coordinator, s, 0,
                                    f"group coordinator (broker {coordinator}) killed"))
        drain_or_explain(s, kafka3, faults)  # commits resume: every partition committed to its end
    finally:
        s.producer.stop()
    verdict = s.verdict(faults)
    report_verdict(f"broker failover run {run}/{RUNS}: "
          + "; ".join(f"{f.name}, back in sync {f.end - f.start:.0f}s later" for f in faults)
          + f"; {verdict.summary()}")
    assert verdict.ok, verdict.details()


CANARY_PARTITIONS = [1]


@pytest.mark.parametrize("run", range(1, RUNS + 1))
def test_canary_while_the_group_coordinator_moves(
        run: int, cluster: Cluster, kafka3: Kafka3, target: Target, topic3: Callable[[int], str]) -> None:
    """Scenario 5, second half: a Canary rollout under steady production, and while the canary holds its
    partition the broker coordinating the group is killed. While the canary is judged exactly the named
    partition is on the new revision; the rollout completes; nothing lost, order kept, no overlap, and
    commits resume up to the end of every partition."""
    c = cluster
    s = Scenario(c, kafka3.in_cluster, kafka3.external, target, topic3)
    old_revision = (c.cg().get("status") or {}).get("revision")
    faults: list[Fault] = []
    seen_on_canary: set[int] = set()

    def canary_holds() -> bool:
        st = c.cg().get("status") or {}
        if (st.get("rollout") or {}).get("phase") != "Canary":
            return False
        revision = {p.metadata.name: (p.metadata.labels or {}).get("lagpilot.io/revision") for p in c.pods()}
        owners_ = owners_by_number(st)
        on_new = {p for p, o in enumerate(owners_) if o and revision.get(o) not in (None, old_revision)}
        seen_on_canary.update(on_new)
        return on_new == set(CANARY_PARTITIONS)

    try:
        c.custom.patch_namespaced_custom_object(GROUP, VERSION, c.ns, PLURAL, NAME, {"spec": {
            "rollout": {"strategy": "Canary", "canary": {"partitions": CANARY_PARTITIONS, "workers": 1,
                                                         "analysisSeconds": 45}},
            "template": {"podAnnotations": {"lagpilot.io/e2e-canary": str(run)}}}})
        wait_for(canary_holds, 240, what=f"the canary holding partitions {CANARY_PARTITIONS}", interval=1)
        coordinator = coordinator_of(kafka3, s.group)
        faults.append(kill_and_wait(kafka3, c, coordinator, s, CANARY_PARTITIONS[0],
                                    f"group coordinator (broker {coordinator}) killed during the canary"))
        canary_holds()
        rolled = wait_for(lambda: on_new_revision(c, old_revision), 360, interval=2,
                          what="the canary promoted and the rollout done")
        drain_or_explain(s, kafka3, faults)
    finally:
        s.producer.stop()
    verdict = s.verdict(faults)
    report_verdict(f"canary + coordinator failover run {run}/{RUNS}: " + "; ".join(
        f"{f.name}, back in sync {f.end - f.start:.0f}s later" for f in faults)
        + f"; rolled to {rolled}; {verdict.summary()}")
    assert seen_on_canary == set(CANARY_PARTITIONS), f"partitions on the canary: {sorted(seen_on_canary)}"
    assert verdict.ok, verdict.details()
