"""Which owned objects a reconcile may skip reading back (`AppliedCache`): trusted until the TTL, dropped on
a deletion or a change of plan, and never stored over an invalidation that came between check and remember."""

from __future__ import annotations

import pytest

from lagpilot_operator.workload.applied import AppliedCache

pytestmark = pytest.mark.unit


def role(rules: str = "get") -> dict[str, object]:
    return {"kind": "Role", "metadata": {"namespace": "ns", "name": "g-worker"}, "rules": [rules]}


def test_trusted_after_remember_until_the_ttl() -> None:
    now = [0.0]
    cache = AppliedCache(ttl=100.0, clock=lambda: now[0])
    fresh, token = cache.check(role())
    assert not fresh  # never seen: read it
    cache.remember(role(), token)
    assert cache.check(role())[0]
    now[0] = 99.0
    assert cache.check(role())[0]
    now[0] = 100.0
    assert not cache.check(role())[0]  # the full-resync period: read it again (someone may have edited it)


def test_a_changed_plan_is_not_trusted() -> None:
    cache = AppliedCache(ttl=100.0, clock=lambda: 0.0)
    cache.remember(role("get"), cache.check(role("get"))[1])
    assert not cache.check(role("list"))[0]


def test_deleted_or_changed_objects_are_read_again() -> None:
    cache = AppliedCache(ttl=100.0, clock=lambda: 0.0)
    cache.remember(role(), cache.check(role())[1])
    cache.forget("Role", "ns", "g-worker")
    assert not cache.check(role())[0]
    cache.remember(role(), cache.check(role())[1])
    cache.forget("Role", "ns", "other")  # another object: no effect
    assert cache.check(role())[0]


def test_an_invalidation_between_check_and_remember_wins() -> None:
    cache = AppliedCache(ttl=100.0, clock=lambda: 0.0)
    _, token = cache.check(role())  # a reconcile reads the Role: it exists
    cache.forget("Role", "ns", "g-worker")  # ... and someone deletes it before the reconcile remembers
    cache.remember(role(), token)
    assert not cache.check(role())[0]  # the next reconcile reads it (and recreates it)
