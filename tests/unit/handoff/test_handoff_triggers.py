"""When the operator runs a hand-off round early: Lease reports (not plain renewals) and motion."""

from __future__ import annotations

from typing import Any

import pytest

from lagpilot_operator.handoff.triggers import in_motion, lease_changed

pytestmark = pytest.mark.unit


def lease(owned: str | None = "0,1", epoch: str | None = "3", renew: str = "2026-01-01T00:00:00.000000Z",
          duration: int = 27, name: str = "w1") -> dict[str, Any]:
    ann = {k: v for k, v in (("lagpilot.io/owned", owned), ("lagpilot.io/epoch", epoch)) if v is not None}
    return {"metadata": {"name": name, "namespace": "ns", "annotations": ann},
            "spec": {"holderIdentity": name, "renewTime": renew, "leaseDurationSeconds": duration}}


def test_first_sight_is_news_and_a_plain_renewal_is_not() -> None:
    seen: dict[Any, Any] = {}
    assert lease_changed(seen, "ADDED", lease())
    assert not lease_changed(seen, "MODIFIED", lease(renew="2026-01-01T00:00:05.000000Z"))
    assert not lease_changed(seen, None, lease())


@pytest.mark.parametrize("change", [{"owned": "0"}, {"epoch": "4"}, {"owned": ""}, {"duration": 0},
                                    {"owned": None}])
def test_a_report_change_is_news(change: dict[str, Any]) -> None:
    seen: dict[Any, Any] = {}
    lease_changed(seen, "ADDED", lease())
    assert lease_changed(seen, "MODIFIED", lease(**change))
    assert not lease_changed(seen, "MODIFIED", lease(**change))


def test_deletion_is_news_and_forgets() -> None:
    seen: dict[Any, Any] = {}
    lease_changed(seen, "ADDED", lease())
    lease_changed(seen, "ADDED", lease(name="w2"))
    assert lease_changed(seen, "DELETED", lease())
    assert set(seen) == {("ns", "w2")}
    assert lease_changed(seen, "ADDED", lease())


@pytest.mark.parametrize(("status", "moving"), [
    (None, False),
    ({}, False),
    ({"rollout": {"phase": "Progressing"}}, False),  # no hand-off round yet: events start it
    ({"assignment": {"moving": [], "unowned": []}, "rollout": {"phase": "Stable"}}, False),
    ({"assignment": {"moving": [], "unowned": []}, "rollout": {"phase": "Aborted"}}, False),
    ({"assignment": {"moving": [], "unowned": []}}, False),
    ({"assignment": {"moving": [2], "unowned": []}, "rollout": {"phase": "Stable"}}, True),
    ({"assignment": {"moving": [], "unowned": [0]}, "rollout": {"phase": "Aborted"}}, True),
    ({"assignment": {"moving": [], "unowned": [0]}, "rollout": {"phase": "Stable"}, "workers": 2}, True),
    ({"assignment": {"moving": [], "unowned": [0, 1]}, "rollout": {"phase": "Stable"}, "workers": 0}, False),
    ({"assignment": {"moving": [], "unowned": []}, "rollout": {"phase": "Progressing"}}, True),
    ({"assignment": {"moving": [], "unowned": []}, "rollout": {"phase": "Canary"}}, True),
    ({"assignment": {"moving": [], "unowned": []}, "rollout": {"phase": "Promoting"}}, True),
])
def test_in_motion(status: dict[str, Any] | None, moving: bool) -> None:
    assert in_motion(status) is moving
