"""Several topics per ConsumerGroup, through the real operator (assignment mode k8s, worker processes run
by the lab runner, the lab Kafka broker):

- a group of two topics with a key-prefix route and a JSON-field route: every partition of both topics is
  granted and owned as topic:partition; a record matching both routes is two requests in route order, a
  retry resumes at the request that failed, first deliveries keep per-key order; when one topic is
  deleted the group is Degraded TopicNotFound and the other topic goes on being delivered;
- a group named by topicPattern picks up a topic created while it runs, without a new revision.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from lagpilot.lab.kafka import create_topic
from lagpilot.protocol import ANNOTATION_OWNED, AssignmentDoc, PartitionId, parse_owned
from lagpilot.testing.consumer import produce
from lagpilot.testing.operator import Operator, running_operator
from lagpilot.testing.target import Arrival, RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab
# The routes' URL paths on the RecordingTarget (its url ends in /deliver).
VIP, ORDERS, DEFAULT = "/deliver/vip", "/deliver/orders", "/deliver/default"


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    env = {"LAGPILOT_RESYNC_SECONDS": "3", "LAGPILOT_ASSIGNMENT_MODE": "k8s"}
    with running_operator(k8s, namespace, tmp_path / "operator.log", env, delete_timeout=60) as op:
        yield op


def apply(k8s: Any, ns: str, doc: dict[str, Any]) -> None:
    k8s.kubectl("apply", "-f", "-", namespace=ns, input=yaml.safe_dump(doc))


def get_cg(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    return json.loads(k8s.kubectl("get", "consumergroup", name, "-o", "json", namespace=ns).stdout)


def condition(cg: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (cg.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def owned_by_leases(k8s: Any, ns: str, name: str) -> dict[PartitionId, list[str]]:
    leases = json.loads(k8s.kubectl("get", "leases", "-l", f"lagpilot.io/consumergroup={name}", "-o", "json",
                                    namespace=ns).stdout)["items"]
    out: dict[PartitionId, list[str]] = {}
    for lease in leases:
        text = (lease["metadata"].get("annotations") or {}).get(ANNOTATION_OWNED)
        for p in parse_owned(text) or ():
            out.setdefault(p, []).append(lease["metadata"]["name"])
    return out


def assignment(k8s: Any, ns: str, name: str) -> AssignmentDoc:
    cm = json.loads(k8s.kubectl("get", "configmap", f"{name}-assignment", "-o", "json", namespace=ns).stdout)
    return AssignmentDoc.from_json(cm["data"]["assignment.json"])


def everything_owned(k8s: Any, ns: str, name: str, topics: dict[str, int]) -> Callable[[], Any]:
    """Settled on `topics`: every partition of them granted in the assignment document and owned by exactly
    that worker's Lease, nothing in motion, no partition of any other topic owned or granted."""
    wanted = {PartitionId(t, p) for t, n in topics.items() for p in range(n)}

    def check() -> Any:
        owners = owned_by_leases(k8s, ns, name)
        doc = assignment(k8s, ns, name)
        granted = doc.owner_of()
        settled = (set(owners) == wanted and set(granted) == wanted and not doc.revoked
                   and all(w == [granted[p]] for p, w in owners.items()) and dict(doc.topics) == topics)
        return owners if settled else None
    return check


def records(topic: str, partitions: int, n: int) -> list[tuple[int, bytes, bytes]]:
    """n records over the partitions; keys vip-* (the prefix route) and k-*; values {"kind": "order"} (the
    JSON route) for every other record, so some records match both routes, some one, some none."""
    out = []
    for i in range(n):
        key = f"{'vip' if i % 3 == 0 else 'k'}-{i % 7}"
        value = json.dumps({"kind": "order" if i % 2 == 0 else "note", "seq": i, "topic": topic}).encode()
        out.append((i % partitions, key.encode(), value))
    return out


def expected_paths(key: bytes, value: bytes) -> list[str]:
    paths = []
    if key.startswith(b"vip-"):
        paths.append(VIP)
    if json.loads(value)["kind"] == "order":
        paths.append(ORDERS)
    return paths


def first_accepted(arrivals: list[Arrival]) -> dict[tuple[str, int, int, str], Arrival]:
    out: dict[tuple[str, int, int, str], Arrival] = {}
    for a in arrivals:
        if a.accepted:
            out.setdefault((a.topic, a.partition, a.offset, a.path), a)
    return out


def test_a_two_topic_group_routes_in_order_and_goes_on_when_one_topic_is_deleted(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Callable[..., str]) -> None:
    t1, t2 = topic_factory(partitions=3, prefix="mt-a"), topic_factory(partitions=2, prefix="mt-b")
    with RecordingTarget() as target:
        target.reject_path(ORDERS, status=503, count=6)  # retries: they resume at /orders, not /vip
        doc = {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "two"},
               "spec": {"bootstrapServers": bootstrap, "topics": [t1, t2], "groupId": f"g-{t1}", "workers": 2,
                        "threads": 2, "target": {"url": target.url + "/default"},
                        "retry": {"initialBackoffMs": 50, "maxBackoffMs": 200},
                        "routes": [
                            {"name": "vip", "match": {"key": {"prefix": "vip-"}},
                             "target": {"url": target.url + "/vip"}},
                            {"name": "orders", "match": {"json": {"path": "kind", "equals": "order"}},
                             "target": {"url": target.url + "/orders"}}],
                        "unmatched": "skip"}}
        apply(k8s, namespace, doc)
        wait_for(everything_owned(k8s, namespace, "two", {t1: 3, t2: 2}), timeout=180,
                 what=f"every partition of {t1} and {t2} owned once")
        cg = get_cg(k8s, namespace, "two")
        assert cg["status"]["topics"] == {t1: 3, t2: 2} and cg["status"]["partitions"] == 5
        assert sorted(cg["status"]["assignment"]["owners"]) == sorted(
            f"{t}:{p}" for t, n in ((t1, 3), (t2, 2)) for p in range(n))

        sent: dict[tuple[str, int], list[tuple[int, bytes, bytes]]] = {}
        for topic, parts in ((t1, 3), (t2, 2)):
            recs = records(topic, parts, 150)
            assert produce(bootstrap, topic, recs) == len(recs)
            for p, k, v in recs:
                sent.setdefault((topic, p), []).append((p, k, v))
        want = {(topic, p, off, path)
                for (topic, p), recs in sent.items()
                for off, (_, k, v) in enumerate(recs) for path in expected_paths(k, v)}
        assert target.wait_for(lambda t: want <= set(first_accepted(t.arrivals())), timeout=180), \
            f"{len(want - set(first_accepted(target.arrivals())))} requests of {len(want)} never accepted"

        arrivals = target.arrivals()
        firsts = first_accepted(arrivals)
        assert not [a for a in arrivals if a.path == DEFAULT], "routes replace the default target"
        extra = {k for k in firsts if k not in want}
        assert not extra, f"requests no route asked for: {sorted(extra)[:5]}"
        both = [(topic, p, off) for (topic, p), recs in sent.items() for off, (_, k, v) in enumerate(recs)
                if len(expected_paths(k, v)) == 2]
        assert both
        for topic, p, off in both:  # route order, and a retried /orders did not repeat /vip
            vip, orders = firsts[(topic, p, off, VIP)], firsts[(topic, p, off, ORDERS)]
            assert vip.end <= orders.start, (topic, p, off)
            assert sum(1 for a in arrivals if (a.topic, a.partition, a.offset, a.path) == (topic, p, off, VIP)
                       and a.accepted) == 1
        assert any(not a.accepted and a.path == ORDERS for a in arrivals), "the target never refused"
        # Per-key order of first deliveries, per topic and route.
        seen: dict[tuple[str, int, bytes | None, str], list[int]] = {}
        for a in sorted(firsts.values(), key=lambda x: x.start):
            seen.setdefault((a.topic, a.partition, a.key, a.path), []).append(a.offset)
        for k, offsets in seen.items():
            assert offsets == sorted(offsets), f"{k}: first deliveries out of order"

        # One topic deleted: Degraded TopicNotFound names it, the other topic is still delivered.
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the deletion is answered
        admin.delete_topics([t2])[t2].result(timeout=30)
        wait_for(lambda: condition(get_cg(k8s, namespace, "two"), "Degraded").get("reason") == "TopicNotFound",
                 timeout=90, what="Degraded TopicNotFound")
        degraded = condition(get_cg(k8s, namespace, "two"), "Degraded")
        assert t2 in degraded["message"] and degraded["status"] == "True", degraded
        more = [(p, b"vip-late", json.dumps({"kind": "order", "seq": 1000 + i}).encode())
                for i, p in enumerate([0, 1, 2] * 10)]
        base = {p: len(sent[(t1, p)]) for p in range(3)}
        assert produce(bootstrap, t1, more) == len(more)
        late = {(t1, p, base[p] + i, path) for p in range(3) for i in range(10) for path in (VIP, ORDERS)}
        assert target.wait_for(lambda t: late <= set(first_accepted(t.arrivals())), timeout=120), \
            f"{len(late - set(first_accepted(target.arrivals())))} of {t1}'s later requests never accepted"
        wait_for(everything_owned(k8s, namespace, "two", {t1: 3}), timeout=120,
                 what=f"{t2}'s partitions let go, {t1}'s still owned")
        status = get_cg(k8s, namespace, "two")["status"]
        assert status["topics"] == {t1: 3} and status["partitions"] == 3, status
        events = json.loads(k8s.kubectl("get", "events", "-o", "json", namespace=namespace).stdout)["items"]
        assert any(e["reason"] == "TopicNotFound" and t2 in e.get("message", "") for e in events)


def test_a_topic_created_under_the_pattern_is_read_without_a_new_revision(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str) -> None:
    prefix = f"mtp-{uuid.uuid4().hex[:8]}"
    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    create_topic(bootstrap, a, 2)
    create_topic(bootstrap, b, 2)
    create_topic(bootstrap, f"{prefix}-a-dlq", 1)  # matched by the pattern, yet the group's own DLQ: not read
    with RecordingTarget() as target:
        doc = {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": "pat"},
               "spec": {"bootstrapServers": bootstrap, "topicPattern": f"{prefix}-.*", "groupId": f"g-{prefix}",
                        "deadLetterTopic": f"{prefix}-a-dlq", "workers": 2, "threads": 2,
                        "target": {"url": target.url}}}
        apply(k8s, namespace, doc)
        wait_for(everything_owned(k8s, namespace, "pat", {a: 2, b: 2}), timeout=180, what="a and b owned")
        revision = get_cg(k8s, namespace, "pat")["status"]["revision"]
        for topic in (a, b):
            produce(bootstrap, topic, [(i % 2, f"k{i % 5}".encode(), b"x") for i in range(40)])
        assert target.wait_for(lambda t: {(x.topic, x.partition, x.offset) for x in t.accepted()}
                               >= {(topic, p, o) for topic in (a, b) for p in range(2) for o in range(20)},
                               timeout=120), "records of a and b not all delivered"

        # Let the group go idle first (its last lag figures written, its reconciles quiet): then nothing but
        # the pattern's own re-read can find the new topic (no event comes from the brokers).
        time.sleep(25)
        create_topic(bootstrap, c, 2)
        produce(bootstrap, c, [(i % 2, f"k{i % 5}".encode(), b"new") for i in range(40)])
        started = time.monotonic()
        assert target.wait_for(lambda t: {(x.topic, x.partition, x.offset) for x in t.accepted() if x.topic == c}
                               >= {(c, p, o) for p in range(2) for o in range(20)}, timeout=120), \
            "records of the topic created under the pattern not delivered"
        print(f"records of a topic created under the pattern delivered {time.monotonic() - started:.1f} s "
              f"after it was created")
        wait_for(everything_owned(k8s, namespace, "pat", {a: 2, b: 2, c: 2}), timeout=60, what="c owned")
        status = get_cg(k8s, namespace, "pat")["status"]
        assert status["revision"] == revision, "a new topic under the pattern made a new revision"
        assert status["topics"] == {a: 2, b: 2, c: 2} and status["partitions"] == 6
        assert condition(get_cg(k8s, namespace, "pat"), "Degraded").get("status") != "True"
