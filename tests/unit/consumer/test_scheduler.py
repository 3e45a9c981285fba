from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.protocol import PartitionId
from lagpilot_consumer.scheduler import Item, Scheduler

pytestmark = pytest.mark.unit


def P(n: int, topic: str = "t") -> PartitionId:
    return PartitionId(topic, n)


def items(spec: list[tuple[int, bytes | None]]) -> list[Item]:
    offsets: dict[int, int] = {}
    out = []
    for p, k in spec:
        offsets[p] = offsets.get(p, -1) + 1
        out.append(Item(P(p), offsets[p], k))
    return out


def drain_ready(s: Scheduler) -> list[Item]:
    out = []
    while (it := s.take()) is not None:
        out.append(it)
    return out


def test_same_key_waits_for_the_previous_record() -> None:
    s = Scheduler("key")
    a0, b0, a1 = items([(0, b"a"), (0, b"b"), (0, b"a")])
    for it in (a0, b0, a1):
        s.submit(it)
    assert drain_ready(s) == [a0, b0]
    s.complete(a0)
    assert drain_ready(s) == [a1]


def test_partition_mode_is_one_in_flight_per_partition() -> None:
    s = Scheduler("partition")
    recs = items([(0, b"a"), (0, b"b"), (1, b"a"), (1, b"c")])
    for it in recs:
        s.submit(it)
    assert drain_ready(s) == [recs[0], recs[2]]
    s.complete(recs[2])
    assert drain_ready(s) == [recs[3]]


def test_none_mode_and_keyless_records_are_free() -> None:
    for mode, key in (("none", b"a"), ("key", None)):
        s = Scheduler(mode)  # type: ignore[arg-type]
        recs = items([(0, key)] * 5)
        for it in recs:
            s.submit(it)
        assert drain_ready(s) == recs


def test_same_key_in_different_partitions_is_independent() -> None:
    s = Scheduler("key")
    recs = [Item(P(0), 0, b"k"), Item(P(1), 0, b"k")]
    for it in recs:
        s.submit(it)
    assert drain_ready(s) == recs


def test_partition_0_of_two_topics_are_two_partitions() -> None:
    """A worker owning orders:0 and payments:0: one key's records in each run side by side, and releasing
    one of them drops nothing of the other."""
    s = Scheduler("key")
    o0, o1 = Item(P(0, "orders"), 0, b"k"), Item(P(0, "orders"), 1, b"k")
    p0, p1 = Item(P(0, "payments"), 0, b"k"), Item(P(0, "payments"), 1, b"k")
    for it in (o0, o1, p0, p1):
        s.submit(it)
    assert drain_ready(s) == [o0, p0]
    dropped = s.drop_queued(P(0, "orders"))
    assert dropped == [o1] and s.pending_in(P(0, "payments")) == 2 and s.dispatched_in(P(0, "orders")) == 1
    s.complete(p0)
    assert drain_ready(s) == [p1]


def test_drop_queued_keeps_dispatched_and_forgets_the_rest() -> None:
    s = Scheduler("key")
    a0, a1, b0, c0 = Item(P(0), 0, b"a"), Item(P(0), 1, b"a"), Item(P(0), 2, b"b"), Item(P(1), 0, b"a")
    for it in (a0, a1, b0, c0):
        s.submit(it)
    assert s.take() is a0
    dropped = s.drop_queued(P(0))
    assert set(map(id, dropped)) == {id(a1), id(b0)}
    assert s.dispatched_in(P(0)) == 1
    assert drain_ready(s) == [c0]
    s.complete(a0)
    assert s.take() is None
    assert s.dispatched_in(P(0)) == 0


def test_old_generation_never_blocks_the_new_one() -> None:
    s = Scheduler("key")
    old = Item(P(0), 5, b"a", generation=1)
    s.submit(old)
    assert s.take() is old
    s.drop_queued(P(0))
    new = Item(P(0), 5, b"a", generation=2)
    s.submit(new)
    assert s.take() is new
    s.complete(old)
    s.complete(new)
    assert s.pending() == 0


def test_completing_twice_is_an_error() -> None:
    s = Scheduler("key")
    it = Item(P(0), 0, b"a")
    s.submit(it)
    assert s.take() is it
    s.complete(it)
    with pytest.raises(ValueError):
        s.complete(it)


records = st.lists(st.tuples(st.integers(0, 2), st.sampled_from([b"a", b"b", b"c", None])), max_size=60)


@settings(max_examples=300)
@given(records, st.sampled_from(["key", "partition", "none"]), st.data())
def test_random_completion_keeps_lane_order_and_delivers_everything(
        spec: list[tuple[int, bytes | None]], mode: str, data: st.DataObject) -> None:
    s = Scheduler(mode)  # type: ignore[arg-type]
    recs = items(spec)
    to_submit = list(recs)
    running: list[Item] = []
    delivered: list[Item] = []
    while to_submit or running or s.pending():
        choices = []
        if to_submit:
            choices.append("submit")
        if running:
            choices.append("complete")
        choices.append("take")
        op = data.draw(st.sampled_from(choices))
        if op == "submit":
            s.submit(to_submit.pop(0))
        elif op == "take":
            it = s.take()
            if it is not None:
                # never two in flight in one lane
                if mode == "key" and it.key is not None:
                    assert all((r.partition, r.key) != (it.partition, it.key) for r in running)
                if mode == "partition":
                    assert all(r.partition != it.partition for r in running)
                running.append(it)
            elif not to_submit and not running:
                pytest.fail("pending records but nothing ready and nothing running")
        else:
            it = running.pop(data.draw(st.integers(0, len(running) - 1)))
            s.complete(it)
            delivered.append(it)
    assert sorted((d.partition, d.offset) for d in delivered) == sorted((r.partition, r.offset) for r in recs)
    # per-lane order = offset order
    for lane_of in ({"key": lambda r: (r.partition, r.key) if r.key is not None else None,
                     "partition": lambda r: r.partition, "none": lambda r: None}[mode],):
        lanes: dict[object, list[int]] = {}
        for d in delivered:
            lane = lane_of(d)
            if lane is not None:
                lanes.setdefault(lane, []).append(d.offset)
        assert all(v == sorted(v) for v in lanes.values())
