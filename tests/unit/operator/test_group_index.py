"""The operator's group index: latest bodies from the watch, visible to the periodic loops only while kopf
serves the group here (its daemon runs: not while peering pauses this operator, not once deleting)."""

from __future__ import annotations

import pytest

from lagpilot_operator.index import GroupIndex

pytestmark = pytest.mark.unit


def body(name: str, rv: str) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}, "spec": {"workers": 1},
            "status": {"phase": "Idle"}}


def test_latest_body_wins_and_deletion_removes() -> None:
    idx = GroupIndex()
    idx.serve(("ns", "a"), True)
    idx.observe(None, body("a", "1"))
    idx.observe("MODIFIED", body("a", "2"))
    assert [(k, b["metadata"]["resourceVersion"]) for k, b in idx.items()] == [(("ns", "a"), "2")]
    idx.observe("DELETED", body("a", "3"))
    assert idx.items() == [] and idx.get(("ns", "a")) is None


def test_only_served_groups_reach_the_loops() -> None:
    idx = GroupIndex()
    idx.observe(None, body("a", "1"))
    idx.observe(None, body("b", "1"))
    assert idx.items() == []  # kopf has started no daemon yet (or another operator has priority)
    idx.serve(("ns", "b"), True)
    assert [k for k, _ in idx.items()] == [("ns", "b")]
    idx.serve(("ns", "b"), False)  # paused by peering, or being deleted
    assert idx.items() == [] and idx.get(("ns", "b")) is not None  # still known to the event triggers


def test_stored_bodies_are_copies() -> None:
    idx = GroupIndex()
    idx.serve(("ns", "a"), True)
    raw = body("a", "1")
    idx.observe(None, raw)
    raw["status"]["phase"] = "Changed"  # type: ignore[index]
    assert idx.items()[0][1]["status"]["phase"] == "Idle"


def test_managed_fields_are_not_kept_and_serving_is_timed() -> None:
    now = [100.0]
    idx = GroupIndex(clock=lambda: now[0])
    raw = body("a", "1")
    raw["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]  # type: ignore[index]
    idx.observe(None, raw)
    assert "managedFields" not in idx.get(("ns", "a"))["metadata"]  # type: ignore[index]
    assert "managedFields" in raw["metadata"]  # type: ignore[operator]  # the caller's body is untouched
    assert idx.served_at(("ns", "a")) is None
    idx.serve(("ns", "a"), True)
    now[0] = 130.0
    idx.serve(("ns", "a"), True)  # kopf restarting the daemon keeps the first time
    assert idx.served_at(("ns", "a")) == 100.0
    idx.serve(("ns", "a"), False)
    assert idx.served_at(("ns", "a")) is None
