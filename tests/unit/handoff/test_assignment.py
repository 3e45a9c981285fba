"""Direct tests of the planner's rules and of the balanced, sticky distribution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.protocol import REVOKED_FROM_ALL
from lagpilot_operator.handoff.planner import (
    AssignmentDoc,
    Observed,
    Revocation,
    WorkerReport,
    WorkerView,
    balanced_distribution,
    confirmed_owners,
    limit_moves,
    plan_assignment,
)

pytestmark = pytest.mark.unit

F = frozenset


def alive(name: str, owned: set[int] | None = None, epoch: int = 0, **kw: object) -> WorkerView:
    return WorkerView(name, report=WorkerReport(F(owned or ()), epoch), **kw)  # type: ignore[arg-type]


def obs(doc: AssignmentDoc | None, *views: WorkerView, partitions: int = 4) -> Observed:
    return Observed(doc, {v.name: v for v in views}, partitions)


def test_first_grant_from_nothing() -> None:
    doc = plan_assignment(obs(None, alive("a"), alive("b")), {0: "a", 1: "a", 2: "b", 3: "b"})
    assert doc.epoch == 1
    assert doc.grants == {"a": F({0, 1}), "b": F({2, 3})}
    assert doc.revoked == {}


def test_idempotent_when_nothing_changes() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, 4)
    o = obs(doc, alive("a", {0, 1}, 3), alive("b", {2, 3}, 3))
    assert plan_assignment(o, {0: "a", 1: "a", 2: "b", 3: "b"}) is doc


def test_move_is_revoke_then_grant_after_release() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, 4)
    want = {0: "a", 1: "b", 2: "b", 3: "b"}
    step1 = plan_assignment(obs(doc, alive("a", {0, 1}, 3), alive("b", {2, 3}, 3)), want)
    assert step1.epoch == 4
    assert step1.grants == {"a": F({0}), "b": F({2, 3})}
    assert step1.revoked == {1: Revocation("a", 4)}
    # a has not applied epoch 4 yet (or its report is late): nothing moves, nothing is written.
    assert plan_assignment(obs(step1, alive("a", {0, 1}, 3), alive("b", {2, 3}, 4)), want) is step1
    # A report at an older epoch without the partition does not count either.
    assert plan_assignment(obs(step1, alive("a", {0}, 2), alive("b", {2, 3}, 4)), want) is step1
    step2 = plan_assignment(obs(step1, alive("a", {0}, 4), alive("b", {2, 3}, 4)), want)
    assert step2.epoch == 5
    assert step2.grants == {"a": F({0}), "b": F({1, 2, 3})}
    assert step2.revoked == {}


def test_gone_worker_is_revoked_first_and_granted_elsewhere_next() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, 4)
    want = {0: "b", 1: "b", 2: "b", 3: "b"}
    dead = WorkerView("a", gone=True, report=WorkerReport(F({0, 1}), 3))
    step1 = plan_assignment(obs(doc, dead, alive("b", {2, 3}, 3)), want)
    assert step1.grants == {"b": F({2, 3})}
    assert set(step1.revoked) == {0, 1}
    step2 = plan_assignment(obs(step1, dead, alive("b", {2, 3}, 3)), want)
    assert step2.grants == {"b": F({0, 1, 2, 3})}


def test_missing_worker_counts_as_gone() -> None:
    doc = AssignmentDoc(3, {"b": F({2, 3})}, 4, {0: Revocation("x", 2)})
    step = plan_assignment(obs(doc, alive("b", {2, 3}, 3)), {0: "b", 2: "b", 3: "b"})
    assert step.grants == {"b": F({0, 2, 3})}


def test_moving_back_needs_no_release() -> None:
    doc = AssignmentDoc(4, {"b": F({2, 3})}, 4, {1: Revocation("a", 4)})
    step = plan_assignment(obs(doc, alive("a", {1}, 3), alive("b", {2, 3}, 4)), {1: "a", 2: "b", 3: "b"})
    assert step.grants == {"a": F({1}), "b": F({2, 3})}
    assert step.revoked == {}


def test_never_granted_to_a_pod_without_lease_or_terminating() -> None:
    doc = AssignmentDoc(1, {}, 2)
    o = obs(doc, WorkerView("new"), alive("t", terminating=True), partitions=2)
    assert plan_assignment(o, {0: "new", 1: "t"}) is doc


def test_terminating_worker_is_drained() -> None:
    doc = AssignmentDoc(1, {"t": F({0})}, 1)
    step = plan_assignment(obs(doc, alive("t", {0}, 1, terminating=True), alive("n"), partitions=1), {0: "n"})
    assert step.grants == {} and step.revoked == {0: Revocation("t", 2)}


def test_lost_configmap_with_owners_waits_for_every_worker_to_apply_the_rebuilt_document() -> None:
    """The document was deleted while "a" owned 0 and 1 (and "b" may hold something its report does not
    show yet): the rebuilt document grants nothing, in a new incarnation above every epoch seen, and a
    partition is granted again only when every live worker has applied it."""
    o = obs(None, alive("a", {0, 1}, 7), alive("b"), partitions=2)
    step = plan_assignment(o, {0: "b", 1: "b"}, incarnation="i2")
    assert (step.epoch, step.grants, step.incarnation) == (8, {}, "i2")
    assert step.revoked == {0: Revocation(REVOKED_FROM_ALL, 8), 1: Revocation(REVOKED_FROM_ALL, 8)}
    # "a" applied it (released both), "b" has not yet: still nothing granted.
    assert plan_assignment(obs(step, alive("a", set(), 8), alive("b", set(), 7), partitions=2),
                           {0: "b", 1: "b"}) is step
    done = plan_assignment(obs(step, alive("a", set(), 8), alive("b", set(), 8), partitions=2), {0: "b", 1: "b"})
    assert (done.epoch, done.grants, done.revoked, done.incarnation) == (9, {"b": F({0, 1})}, {}, "i2")


def test_a_new_group_starts_at_epoch_zero_but_a_published_one_is_rebuilt() -> None:
    fresh = obs(None, alive("a"), partitions=2)
    assert plan_assignment(fresh, {0: "a", 1: "a"}).grants == {"a": F({0, 1})}
    lost = Observed(None, {"a": alive("a")}, 2, published_epoch=12)  # status says epoch 12 was published
    rebuilt = plan_assignment(lost, {0: "a", 1: "a"}, incarnation="x")
    assert rebuilt.epoch == 13 and rebuilt.grants == {} and set(rebuilt.revoked) == {0, 1}


def test_partitions_beyond_the_topic_are_not_granted() -> None:
    doc = plan_assignment(obs(None, alive("a"), partitions=2), {0: "a", 1: "a", 5: "a"})
    assert doc.grants == {"a": F({0, 1})}


def test_json_round_trip_and_rejects_garbage() -> None:
    doc = AssignmentDoc(9, {"a": F({0, 2})}, 3, {1: Revocation("b", 9)})
    text = doc.to_json()
    assert '"grants":{"a":[0,2]}' in text and '"epoch":9' in text
    assert AssignmentDoc.from_json(text) == doc
    with pytest.raises(ValueError):
        AssignmentDoc.from_json("{}")
    with pytest.raises(ValueError):
        AssignmentDoc.from_json("not json")


def test_confirmed_owners() -> None:
    doc = AssignmentDoc(2, {"a": F({0, 1})}, 2)
    assert confirmed_owners(obs(doc, alive("a", {0}, 2), partitions=2)) == {0: "a"}
    assert confirmed_owners(obs(doc, alive("a", {0, 1}, 2), partitions=2)) == {0: "a", 1: "a"}


def test_limit_moves_budget() -> None:
    doc = AssignmentDoc(1, {"a": F({0, 1, 2, 3})}, 5)
    desired: dict[int, str | None] = {0: "b", 1: "b", 2: "a", 3: "b", 4: "b"}
    limited = limit_moves(doc, desired, 2)
    # partition 4 is ungranted: always proceeds and uses one slot; then one move, lowest first.
    assert limited == {0: "b", 1: "a", 2: "a", 3: "a", 4: "b"}
    assert limit_moves(doc, desired, 0) == desired


workers_st = st.lists(st.sampled_from([f"w{i}" for i in range(8)]), unique=True, max_size=6)


@settings(max_examples=300)
@given(n=st.integers(0, 40), workers=workers_st, data=st.data())
def test_balanced_is_even_sticky_and_stable(n: int, workers: list[str], data: st.DataObject) -> None:
    owners = [*workers, "gone"]
    current = {p: data.draw(st.sampled_from(owners)) for p in range(n)}
    result = balanced_distribution(n, workers, current)
    if not workers:
        assert result == {}
        return
    assert set(result) == set(range(n))
    sizes = [sum(1 for w in result.values() if w == x) for x in workers]
    assert max(sizes) - min(sizes) <= 1
    # Sticky: nobody gives away partitions while it is at or under its share.
    for w in workers:
        had = {p for p, o in current.items() if o == w}
        kept = {p for p in had if result[p] == w}
        assert len(kept) == min(len(had), sum(1 for o in result.values() if o == w))
    # Minimal moves: a lower bound is what must leave over-quota workers plus what has no live owner.
    moves = sum(1 for p in range(n) if current.get(p) != result[p])
    base, extra = divmod(n, len(workers))
    counts = sorted((sum(1 for o in current.values() if o == w) for w in workers), reverse=True)
    keepable = sum(min(c, base + (1 if i < extra else 0)) for i, c in enumerate(counts))
    assert moves == n - keepable
    # Stable: feeding the result back changes nothing; so does dropping the partitions in motion.
    assert balanced_distribution(n, workers, result) == result
    assert balanced_distribution(n, list(reversed(workers)), current) == result
    # Mid-move (moved partitions revoked, not yet granted) the target does not change.
    kept_only = {p: o for p, o in current.items() if result[p] == o}
    assert balanced_distribution(n, workers, kept_only) == result
