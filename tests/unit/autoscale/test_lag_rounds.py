"""Who is read in a lag round (`select_due`), table-driven and as properties: every group is read no later
than its period, groups on one connection fall into one round, and a round in flight is never doubled."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.autoscale.schedule import Slot, select_due

pytestmark = pytest.mark.unit
A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


@pytest.mark.parametrize(("slots", "now", "expected"), [
    ({}, 0.0, [A, B, C]),  # never read: all now
    ({A: Slot(10, 15, "k1"), B: Slot(20, 15, "k1"), C: Slot(30, 15, "k2")}, 5.0, []),
    ({A: Slot(10, 15, "k1"), B: Slot(20, 15, "k1"), C: Slot(30, 15, "k2")}, 10.0, [A]),  # B 10 s away: > 7.5
    ({A: Slot(10, 15, "k1"), B: Slot(17, 15, "k1"), C: Slot(17, 15, "k2")}, 10.0, [A, B]),  # B joins A's round
    ({A: Slot(math.inf, 15, "k1"), B: Slot(10, 15, "k1"), C: Slot(12, 15, "k1")}, 10.0, [B, C]),  # A in flight
    ({A: Slot(10, 60, "k1"), B: Slot(35, 60, "k1")}, 10.0, [A, B]),  # half of B's own period
    ({A: Slot(10, 15, None), B: Slot(12, 15, "k1")}, 10.0, [A]),  # A's connection unknown yet
])
def test_select_due(slots: dict[tuple[str, str], Slot], now: float, expected: list[tuple[str, str]]) -> None:
    known = [k for k in (A, B, C) if k in slots] if slots else [A, B, C]
    assert select_due(slots, known, now) == expected


slot = st.builds(Slot, st.floats(0, 100), st.sampled_from([5.0, 15.0, 60.0]), st.sampled_from(["k1", "k2", None]))


@given(st.dictionaries(st.sampled_from([A, B, C, ("x", "d"), ("x", "e")]), slot), st.floats(0, 200))
def test_every_group_whose_time_came_is_read_and_none_twice(slots: dict[tuple[str, str], Slot], now: float) -> None:
    known = sorted(slots)
    due = select_due(slots, known, now)
    assert len(due) == len(set(due))
    assert {k for k in known if slots[k].next_at <= now} <= set(due)  # never later than its period
    for k in due:  # and never more than half a period early
        assert slots[k].next_at - now <= slots[k].period / 2


@given(st.dictionaries(st.sampled_from([A, B, C]), slot))
def test_a_group_in_flight_is_never_selected(slots: dict[tuple[str, str], Slot]) -> None:
    flying = {k: Slot(math.inf, s.period, s.connection) for k, s in slots.items()}
    assert select_due(flying, sorted(flying), 1e9) == []
