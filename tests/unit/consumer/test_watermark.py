from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_consumer.watermark import Watermark

pytestmark = pytest.mark.unit


def test_nothing_added_commits_nothing() -> None:
    assert Watermark().commit_offset() is None


def test_commit_stops_at_the_first_unfinished_offset() -> None:
    w = Watermark()
    for o in (10, 11, 12, 13):
        w.add(o)
    w.done(12)
    w.done(13)
    assert w.commit_offset() == 10
    w.done(10)
    assert w.commit_offset() == 11
    w.done(11)
    assert w.commit_offset() == 14
    assert w.outstanding() == 0


def test_gaps_in_offsets_are_fine() -> None:
    w = Watermark()
    for o in (5, 9, 20):
        w.add(o)
    w.done(9)
    assert w.commit_offset() == 5
    w.done(5)
    assert w.commit_offset() == 20
    w.done(20)
    assert w.commit_offset() == 21


def test_offsets_must_be_added_in_order() -> None:
    w = Watermark()
    w.add(3)
    with pytest.raises(ValueError):
        w.add(3)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=60).map(
    lambda steps: [sum(steps[: i + 1]) for i in range(len(steps))]), st.data())
def test_random_completion_order_never_commits_past_an_unfinished_offset(offsets: list[int],
                                                                         data: st.DataObject) -> None:
    w = Watermark()
    for o in offsets:
        w.add(o)
    order = data.draw(st.permutations(offsets))
    done: set[int] = set()
    for o in order:
        w.done(o)
        if data.draw(st.booleans()):
            w.done(o)  # idempotent
        done.add(o)
        c = w.commit_offset()
        assert c is not None
        # everything below the commit position is done ...
        assert all(x in done for x in offsets if x < c)
        # ... and the commit position is either an unfinished offset or one past the last.
        assert c in set(offsets) - done or (c == offsets[-1] + 1 and done == set(offsets))
    assert w.commit_offset() == offsets[-1] + 1


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=80))
def test_interleaved_adds_and_completions(ops: list[tuple[bool, bool]]) -> None:
    """Fetching continues while deliveries finish: adds and dones interleave arbitrarily."""
    w = Watermark()
    added: list[int] = []
    done: set[int] = set()
    nxt = 0
    for add, pick_last in ops:
        if add or not (set(added) - done):
            w.add(nxt)
            added.append(nxt)
            nxt += 1
        else:
            open_ = sorted(set(added) - done)
            o = open_[-1] if pick_last else open_[0]
            w.done(o)
            done.add(o)
        c = w.commit_offset()
        unfinished = [x for x in added if x not in done]
        assert c == (min(unfinished) if unfinished else (added[-1] + 1 if added else None))


def test_advance_to_the_position_only_when_everything_fetched_is_done() -> None:
    """Transaction markers and aborted records take offsets the application never sees: when every fetched
    offset is done, the consumer's position is the commit (not the last record + 1)."""
    wm = Watermark()
    assert wm.advance_to(7) is False and wm.commit_offset() is None  # nothing fetched yet: keep the group's
    for o in range(0, 3):
        wm.add(o)
    wm.done(0)
    assert wm.advance_to(10) is False and wm.commit_offset() == 1  # 1 and 2 are not done
    wm.done(1)
    wm.done(2)
    assert wm.commit_offset() == 3
    assert wm.advance_to(4) is True and wm.commit_offset() == 4  # the commit marker at 3 is passed
    assert wm.advance_to(2) is False and wm.commit_offset() == 4  # never backwards
    wm.add(4)
    assert wm.commit_offset() == 4
