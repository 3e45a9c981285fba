"""Watch events as the Kubernetes client yields them: typed objects for ADDED/MODIFIED/DELETED, raw dicts
for BOOKMARK and ERROR. The assignment watch read `obj.metadata` of every event, so each bookmark (sent
about once a minute with allow_watch_bookmarks) broke the watch, logged a warning and forced a LIST."""

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
