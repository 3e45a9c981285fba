"""The k8s assignment source's pure rules.

Watch events as the Kubernetes client yields them: typed objects for ADDED/MODIFIED/DELETED, raw dicts for
BOOKMARK and ERROR. The assignment watch read `obj.metadata` of every event, so each bookmark (sent about
once a minute with allow_watch_bookmarks) broke the watch, logged a warning and forced a LIST. And when a
fence is late (the process was frozen), its release must not commit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client, watch

from lagpilot_consumer.sources.k8s import WatchError, event_resource_version

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
