"""The k8s assignment source's pure rules.

Watch events as the Kubernetes client yields them: typed objects for ADDED/MODIFIED/DELETED, raw dicts for
BOOKMARK and ERROR. The assignment watch read `obj.metadata` of every event, so each bookmark (sent about
once a minute with allow_watch_bookmarks) broke the watch, logged a warning and forced a LIST. And when a
fence is late (the process was frozen), its release must not commit."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from kubernetes import client, watch

from lagpilot.protocol import ANNOTATION_EPOCH, ANNOTATION_OWNED, ASSIGNMENT_KEY, PartitionId, parse_owned
from lagpilot_consumer.sources.k8s import K8sPartitionSource, WatchError, event_resource_version

pytestmark = pytest.mark.unit


def unmarshal(line: dict[str, Any]) -> dict[str, Any]:
    """The real client's decoding of one watch line into an event."""
    w = watch.Watch()
    w._api_client = client.ApiClient()
    return dict(w.unmarshal_event(json.dumps(line), "V1ConfigMap"))


@pytest.mark.parametrize(("line", "expected"), [
    ({"type": "MODIFIED", "object": {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"name": "cg-assignment", "resourceVersion": "41"}}}, "41"),
    ({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"resourceVersion": "57"}}}, "57"),
    ({"type": "BOOKMARK", "object": {"kind": "ConfigMap"}}, None),
])
def test_resource_version_of_every_event_shape(line: dict[str, Any], expected: str | None) -> None:
    assert event_resource_version(unmarshal(line)) == expected


def test_error_event_carries_its_status_code() -> None:
    event = unmarshal({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                   "message": "too old resource version: 1 (57)"}})
    err = WatchError(event["object"])
    assert err.status == 410 and "Expired" in str(err)
    assert WatchError("garbage").status == 0


@pytest.mark.parametrize(("silent", "late"), [
    (15.0, False),   # noticed on time: the fence loop checks every 0.5 s
    (15.4, False),
    (19.9, False),   # a renew period of slack (renewal calls may take a while)
    (20.0, True),    # the process was not running: frozen node, SIGSTOP, VM pause
    (165.0, True),
])
def test_a_fence_noticed_late_does_not_commit(silent: float, late: bool) -> None:
    """Fence timeout 15 s, renew every 5 s: the operator re-grants only after the Lease duration (>= 27 s),
    so a timely fence may still commit; a late one may not (its commit could move offsets back behind the
    new owner's; the frozen-worker lab test saw exactly that)."""
    from lagpilot_consumer.sources.k8s import fence_is_late

    assert fence_is_late(silent, 15.0, 5.0) is late


class RecordingSink:
    """Just what K8sPartitionSource._handle passes on."""

    def __init__(self) -> None:
        self.desired: list[tuple[int, frozenset[PartitionId]]] = []

    def set_desired(self, partitions: frozenset[PartitionId], epoch: int) -> None:
        self.desired.append((epoch, partitions))


def grant_seen(doc: dict[str, Any], default_topic: str | None) -> list[tuple[int, frozenset[PartitionId]]]:
    sink = RecordingSink()
    source = K8sPartitionSource("ns", "w-0", "g-assignment", sink=cast(Any, sink), default_topic=default_topic)
    source._handle(client.V1ConfigMap(data={ASSIGNMENT_KEY: json.dumps(doc)}), fresh=True)
    return sink.desired


def test_a_grant_names_partitions_of_several_topics() -> None:
    doc = {"format": 2, "epoch": 7, "grants": {"w-0": ["orders:0", "payments:0"], "w-1": ["orders:1"]},
           "topics": {"orders": 2, "payments": 1}, "revoked": {}}
    expected = [(7, frozenset({PartitionId("orders", 0), PartitionId("payments", 0)}))]
    assert grant_seen(doc, None) == expected
    assert grant_seen(doc, "orders") == expected  # a default topic never renames named partitions


def test_an_older_operators_bare_numbers_need_the_one_configured_topic() -> None:
    doc = {"epoch": 3, "partitions": 4, "grants": {"w-0": [1, 3]}, "revoked": {}}
    assert grant_seen(doc, "orders") == [(3, frozenset({PartitionId("orders", 1), PartitionId("orders", 3)}))]
    assert grant_seen(doc, None) == []  # several or no --topic: such a document is not guessed at


def test_the_lease_reports_owned_partitions_as_topic_partition() -> None:
    source = K8sPartitionSource("ns", "w-0", "g-assignment")
    owned = frozenset({PartitionId("payments", 0), PartitionId("orders", 3), PartitionId("orders", 0)})
    lease = source._lease_body(owned, 5, expired=False)
    assert lease.metadata.annotations == {ANNOTATION_OWNED: "orders:0,orders:3,payments:0", ANNOTATION_EPOCH: "5"}
    assert parse_owned(lease.metadata.annotations[ANNOTATION_OWNED]) == owned
