"""The history checker on hand-made histories: each violation shown once, allowed and forbidden
duplicates told apart, and (Hypothesis) any history a correct system could produce passes while dropping,
reordering or double-owning a delivery in it is reported."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.testing.history import Fault, Produced, check_history
from lagpilot.testing.target import Arrival

pytestmark = pytest.mark.unit


def req(p: int, o: int, worker: str, start: float, end: float | None = None, key: bytes | None = b"k",
        status: int = 200) -> Arrival:
    return Arrival("t", p, o, key, worker, start, start + 0.1 if end is None else end, status, b"", {})


def produced(*records: tuple[int, int]) -> list[Produced]:
    return [Produced(p, o, b"k") for p, o in records]


def test_clean_history_is_ok() -> None:
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "a", 2.0), req(1, 0, "b", 1.0)]
    v = check_history(reqs, produced((0, 0), (0, 1), (1, 0)))
    assert v.ok, v.details()
    assert (v.produced, v.delivered) == (3, 3)
    assert v.summary().startswith("OK: produced 3, delivered 3, lost 0")


def test_lost_record() -> None:
    v = check_history([req(0, 0, "a", 1.0)], produced((0, 0), (0, 1)))
    assert not v.ok and v.lost == [(0, 1)]


def test_rejected_delivery_does_not_count_as_delivered() -> None:
    v = check_history([req(0, 0, "a", 1.0, status=503)], produced((0, 0)))
    assert v.lost == [(0, 0)]


def test_first_deliveries_out_of_key_order() -> None:
    reqs = [req(0, 1, "a", 1.0), req(0, 0, "a", 2.0)]
    v = check_history(reqs, produced((0, 0), (0, 1)))
    assert not v.ok and len(v.out_of_order) == 1 and "offset 0" in v.out_of_order[0]


def test_other_keys_may_interleave() -> None:
    reqs = [req(0, 1, "a", 1.0, key=b"y"), req(0, 0, "a", 2.0, key=b"x")]
    assert check_history(reqs, produced((0, 0), (0, 1))).ok


def test_a_redelivery_of_an_earlier_offset_is_not_an_order_violation() -> None:
    """After a fault the new owner starts again from the committed offset: first deliveries stay in order."""
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "a", 2.0), req(0, 0, "b", 10.0), req(0, 1, "b", 11.0)]
    v = check_history(reqs, produced((0, 0), (0, 1)), [Fault("freeze", 5.0, 8.0)])
    assert v.out_of_order == [] and v.ok


def test_two_workers_with_requests_open_at_once() -> None:
    reqs = [req(0, 0, "a", 1.0, 3.0), req(0, 1, "b", 2.0, 2.5)]
    v = check_history(reqs, produced((0, 0), (0, 1)))
    assert not v.ok and len(v.overlaps) == 1 and "b opened offset 1" in v.overlaps[0]


def test_sequential_hand_over_is_not_an_overlap() -> None:
    reqs = [req(0, 0, "a", 1.0, 2.0), req(0, 1, "b", 2.0, 3.0)]
    assert check_history(reqs, produced((0, 0), (0, 1))).overlaps == []


def test_zombie_interleaving_after_a_fault() -> None:
    """a is frozen, b takes the partition over, a resumes and delivers, b goes on: never at the same
    instant, but two live owners."""
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "b", 20.0), req(0, 2, "a", 21.0), req(0, 3, "b", 22.0)]
    v = check_history(reqs, produced((0, 0), (0, 1), (0, 2), (0, 3)), [Fault("freeze", 5.0, 19.5)])
    assert not v.ok and any("interleave between b and a" in x for x in v.overlaps), v.overlaps


def test_zombie_redelivering_what_the_new_owner_delivered() -> None:
    """a froze with 0-1 uncommitted, b redelivered them (allowed), then a resumed and delivered them again
    although b had taken over: nothing left for b to deliver, so no A-B-A-B, but a zombie all the same."""
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "a", 2.0), req(0, 0, "b", 20.0), req(0, 1, "b", 21.0),
            req(0, 0, "a", 40.0), req(0, 1, "a", 41.0)]
    v = check_history(reqs, produced((0, 0), (0, 1)), [Fault("freeze", 5.0, 30.0)])
    assert not v.ok
    assert any("delivered again by a worker that had lost the partition" in x for x in v.overlaps), v.overlaps
    assert [d.allowed for d in v.duplicates] == [False, False]


def test_zombie_delivering_its_fetched_records_after_the_new_owner_did() -> None:
    """The frozen-worker lab test with the fence disabled: a resumed, delivering from its buffer records
    b had already delivered during the freeze; every record twice, never three times, no A-B-A-B."""
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "b", 20.0), req(0, 2, "b", 21.0), req(0, 1, "a", 40.0),
            req(0, 2, "a", 41.0)]
    v = check_history(reqs, produced((0, 0), (0, 1), (0, 2)), [Fault("freeze", 5.0, 30.0)])
    assert not v.ok and v.overlaps and not v.allowed_duplicates, v.details()


def test_taking_a_partition_back_at_a_fault_may_redeliver_what_was_uncommitted() -> None:
    """a had p0 first, handed it to b; b froze with 1-2 uncommitted; a took it back and redelivered them."""
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "b", 3.0), req(0, 2, "b", 4.0), req(0, 1, "a", 20.0),
            req(0, 2, "a", 21.0)]
    v = check_history(reqs, produced((0, 0), (0, 1), (0, 2)), [Fault("freeze", 5.0, 30.0)])
    assert v.ok, v.details()
    assert len(v.allowed_duplicates) == 2


def test_a_single_return_is_a_hand_off() -> None:
    """A canary aborted: its partition goes back to the stable worker once."""
    reqs = [req(0, 0, "stable", 1.0), req(0, 1, "canary", 10.0), req(0, 2, "stable", 20.0)]
    assert check_history(reqs, produced((0, 0), (0, 1), (0, 2)), [Fault("canary", 5.0, 15.0)]).ok


def test_duplicates_in_flight_at_the_fault_are_allowed() -> None:
    reqs = [req(0, 0, "a", 1.0), req(0, 1, "a", 4.9), req(0, 1, "b", 12.0), req(0, 2, "b", 13.0)]
    v = check_history(reqs, produced((0, 0), (0, 1), (0, 2)), [Fault("freeze", 5.0, 10.0, committed={0: 1})])
    assert v.ok, v.details()
    assert [(d.offset, d.allowed) for d in v.duplicates] == [(1, True)]
    assert "1 allowed" in v.summary()


def test_duplicate_of_a_committed_record_is_forbidden() -> None:
    reqs = [req(0, 0, "a", 1.0), req(0, 0, "b", 12.0)]
    v = check_history(reqs, produced((0, 0),), [Fault("freeze", 5.0, 10.0, committed={0: 1})])
    assert not v.ok and not v.duplicates[0].allowed and "committed before freeze" in v.duplicates[0].why


def test_duplicate_without_a_fault_is_forbidden() -> None:
    v = check_history([req(0, 0, "a", 1.0), req(0, 0, "a", 2.0)], produced((0, 0),))
    assert not v.ok and v.duplicates[0].why == "delivered again with no fault in between"


def test_duplicate_delivered_first_after_the_fault_is_forbidden() -> None:
    """Both deliveries after the fault was healed: the fault cannot explain it."""
    reqs = [req(0, 0, "b", 12.0), req(0, 0, "b", 13.0)]
    v = check_history(reqs, produced((0, 0),), [Fault("freeze", 5.0, 10.0)])
    assert not v.ok


# --- properties ----------------------------------------------------------------------------------------

@st.composite
def correct_histories(draw: Any) -> tuple[list[Arrival], list[Produced], list[Fault]]:
    """What a correct system may record: per partition, one owner at a time delivering offsets in order;
    at a fault the partition may move to another worker, which starts again from the committed offset
    (so records past it are delivered twice)."""
    reqs: list[Arrival] = []
    prod: list[Produced] = []
    faults: list[Fault] = []
    fault_at, heal_at = 1000.0, 1010.0
    committed: dict[int, int] = {}
    for p in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 12))
        prod += [Produced(p, o, b"k%d" % (o % 3)) for o in range(n)]
        cut = draw(st.integers(0, n))  # offsets [0, cut) delivered before the fault
        commit = draw(st.integers(0, cut))
        committed[p] = commit
        t = 0.0
        for o in range(cut):
            reqs.append(Arrival("t", p, o, b"k%d" % (o % 3), f"a{p}", t, t + 0.5, 200, b"", {}))
            t += 1.0
        new = draw(st.sampled_from([f"a{p}", f"b{p}"]))
        t = heal_at + 1.0
        for o in range(commit, n):
            reqs.append(Arrival("t", p, o, b"k%d" % (o % 3), new, t, t + 0.5, 200, b"", {}))
            t += 1.0
    faults.append(Fault("fault", fault_at, heal_at, committed))
    return reqs, prod, faults


@settings(max_examples=200, deadline=None)
@given(correct_histories())
def test_every_correct_history_passes(h: tuple[list[Arrival], list[Produced], list[Fault]]) -> None:
    reqs, prod, faults = h
    v = check_history(reqs, prod, faults)
    assert v.ok, v.details()


@settings(max_examples=200, deadline=None)
@given(correct_histories(), st.data())
def test_dropping_a_delivery_is_reported_lost(h: tuple[list[Arrival], list[Produced], list[Fault]],
                                              data: Any) -> None:
    reqs, prod, faults = h
    victim = data.draw(st.sampled_from(prod))
    kept = [r for r in reqs if (r.partition, r.offset) != (victim.partition, victim.offset)]
    assert check_history(kept, prod, faults).lost == [(victim.partition, victim.offset)]


@settings(max_examples=200, deadline=None)
@given(correct_histories(), st.data())
def test_a_second_owner_during_a_delivery_is_reported(h: tuple[list[Arrival], list[Produced], list[Fault]],
                                                       data: Any) -> None:
    reqs, prod, faults = h
    victim = data.draw(st.sampled_from(reqs))
    intruder = Arrival("t", victim.partition, victim.offset, victim.key, "zombie", victim.start + 0.1,
                       victim.end, 200, b"", {})
    assert check_history([*reqs, intruder], prod, faults).overlaps


def test_partition_0_of_two_topics_is_two_partitions() -> None:
    """Two workers delivering orders:0 and payments:0 at the same time own different partitions; the same
    key's offsets in two topics are two orders; a record of one topic does not stand in for the other's."""
    reqs = [Arrival("orders", 0, 0, b"k", "a", 1.0, 2.0, 200, b"", {}),
            Arrival("payments", 0, 5, b"k", "b", 1.5, 2.5, 200, b"", {}),
            Arrival("orders", 0, 1, b"k", "a", 3.0, 3.1, 200, b"", {}),
            Arrival("payments", 0, 0, b"k", "b", 3.0, 3.1, 200, b"", {})]
    prod = [Produced(0, 0, b"k", "orders"), Produced(0, 1, b"k", "orders"), Produced(0, 5, b"k", "payments"),
            Produced(0, 0, b"k", "payments"), Produced(0, 1, b"k", "payments")]
    v = check_history(reqs, prod)
    assert v.overlaps == [] and v.duplicates == []
    assert v.lost == [("payments", 0, 1)]
    assert v.out_of_order == ["payments:0 key b'k': offset 0 first delivered after offset 5"]
    assert (v.produced, v.delivered) == (5, 4)
    both = [*reqs, Arrival("orders", 0, 2, b"k", "b", 1.2, 1.3, 200, b"", {})]
    assert len(check_history(both, prod).overlaps) == 1  # b opened orders:0 while a held it
