"""Direct tests of the planner's rules and of the balanced, sticky distribution. Partitions are
``PartitionId``s; most tables use one topic "t" (``P(n)``), the multi-topic ones two or three."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.protocol import REVOKED_FROM_ALL, PartitionId, partitions_of
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

def P(n: int, topic: str = "t") -> PartitionId:
    return PartitionId(topic, n)


def F(numbers: object = (), topic: str = "t") -> frozenset[PartitionId]:
    """Partitions of one topic by number (``F({0, 1})``); PartitionIds are kept as they are."""
    return frozenset(p if isinstance(p, PartitionId) else P(p, topic) for p in numbers)  # type: ignore[attr-defined]


def D(table: dict[int, str | None]) -> dict[PartitionId, str | None]:
    return {P(n): w for n, w in table.items()}


def T(n: int) -> dict[str, int]:
    return {"t": n}


def alive(name: str, owned: object = None, epoch: int = 0, **kw: object) -> WorkerView:
    return WorkerView(name, report=WorkerReport(F(owned or ()), epoch), **kw)  # type: ignore[arg-type]


def obs(doc: AssignmentDoc | None, *views: WorkerView, partitions: int = 4,
        topics: dict[str, int] | None = None) -> Observed:
    return Observed(doc, {v.name: v for v in views}, topics if topics is not None else T(partitions))


def test_first_grant_from_nothing() -> None:
    doc = plan_assignment(obs(None, alive("a"), alive("b")), D({0: "a", 1: "a", 2: "b", 3: "b"}))
    assert doc.epoch == 1
    assert doc.grants == {"a": F({0, 1}), "b": F({2, 3})}
    assert doc.revoked == {}


def test_idempotent_when_nothing_changes() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, T(4))
    o = obs(doc, alive("a", {0, 1}, 3), alive("b", {2, 3}, 3))
    assert plan_assignment(o, D({0: "a", 1: "a", 2: "b", 3: "b"})) is doc


def test_move_is_revoke_then_grant_after_release() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, T(4))
    want = D({0: "a", 1: "b", 2: "b", 3: "b"})
    step1 = plan_assignment(obs(doc, alive("a", {0, 1}, 3), alive("b", {2, 3}, 3)), want)
    assert step1.epoch == 4
    assert step1.grants == {"a": F({0}), "b": F({2, 3})}
    assert step1.revoked == {P(1): Revocation("a", 4)}
    # a has not applied epoch 4 yet (or its report is late): nothing moves, nothing is written.
    assert plan_assignment(obs(step1, alive("a", {0, 1}, 3), alive("b", {2, 3}, 4)), want) is step1
    # A report at an older epoch without the partition does not count either.
    assert plan_assignment(obs(step1, alive("a", {0}, 2), alive("b", {2, 3}, 4)), want) is step1
    step2 = plan_assignment(obs(step1, alive("a", {0}, 4), alive("b", {2, 3}, 4)), want)
    assert step2.epoch == 5
    assert step2.grants == {"a": F({0}), "b": F({1, 2, 3})}
    assert step2.revoked == {}


def test_gone_worker_is_revoked_first_and_granted_elsewhere_next() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, T(4))
    want = D({0: "b", 1: "b", 2: "b", 3: "b"})
    dead = WorkerView("a", gone=True, report=WorkerReport(F({0, 1}), 3))
    step1 = plan_assignment(obs(doc, dead, alive("b", {2, 3}, 3)), want)
    assert step1.grants == {"b": F({2, 3})}
    assert set(step1.revoked) == F({0, 1})
    step2 = plan_assignment(obs(step1, dead, alive("b", {2, 3}, 3)), want)
    assert step2.grants == {"b": F({0, 1, 2, 3})}


def test_missing_worker_counts_as_gone() -> None:
    doc = AssignmentDoc(3, {"b": F({2, 3})}, T(4), {P(0): Revocation("x", 2)})
    step = plan_assignment(obs(doc, alive("b", {2, 3}, 3)), D({0: "b", 2: "b", 3: "b"}))
    assert step.grants == {"b": F({0, 2, 3})}


def test_moving_back_needs_no_release() -> None:
    doc = AssignmentDoc(4, {"b": F({2, 3})}, T(4), {P(1): Revocation("a", 4)})
    step = plan_assignment(obs(doc, alive("a", {1}, 3), alive("b", {2, 3}, 4)), D({1: "a", 2: "b", 3: "b"}))
    assert step.grants == {"a": F({1}), "b": F({2, 3})}
    assert step.revoked == {}


def test_never_granted_to_a_pod_without_lease_or_terminating() -> None:
    doc = AssignmentDoc(1, {}, T(2))
    o = obs(doc, WorkerView("new"), alive("t", terminating=True), partitions=2)
    assert plan_assignment(o, D({0: "new", 1: "t"})) is doc


def test_terminating_worker_is_drained() -> None:
    doc = AssignmentDoc(1, {"t": F({0})}, T(1))
    step = plan_assignment(obs(doc, alive("t", {0}, 1, terminating=True), alive("n"), partitions=1), D({0: "n"}))
    assert step.grants == {} and step.revoked == {P(0): Revocation("t", 2)}


def test_lost_configmap_with_owners_waits_for_every_worker_to_apply_the_rebuilt_document() -> None:
    """The document was deleted while "a" owned 0 and 1 (and "b" may hold something its report does not
    show yet): the rebuilt document grants nothing, in a new incarnation above every epoch seen, and a
    partition is granted again only when every live worker has applied it."""
    o = obs(None, alive("a", {0, 1}, 7), alive("b"), partitions=2)
    step = plan_assignment(o, D({0: "b", 1: "b"}), incarnation="i2")
    assert (step.epoch, step.grants, step.incarnation) == (8, {}, "i2")
    assert step.revoked == {P(0): Revocation(REVOKED_FROM_ALL, 8), P(1): Revocation(REVOKED_FROM_ALL, 8)}
    # "a" applied it (released both), "b" has not yet: still nothing granted.
    assert plan_assignment(obs(step, alive("a", set(), 8), alive("b", set(), 7), partitions=2),
                           D({0: "b", 1: "b"})) is step
    done = plan_assignment(obs(step, alive("a", set(), 8), alive("b", set(), 8), partitions=2), D({0: "b", 1: "b"}))
    assert (done.epoch, done.grants, done.revoked, done.incarnation) == (9, {"b": F({0, 1})}, {}, "i2")


def test_a_new_group_starts_at_epoch_zero_but_a_published_one_is_rebuilt() -> None:
    fresh = obs(None, alive("a"), partitions=2)
    assert plan_assignment(fresh, D({0: "a", 1: "a"})).grants == {"a": F({0, 1})}
    lost = Observed(None, {"a": alive("a")}, T(2), published_epoch=12)  # status says epoch 12 was published
    rebuilt = plan_assignment(lost, D({0: "a", 1: "a"}), incarnation="x")
    assert rebuilt.epoch == 13 and rebuilt.grants == {} and set(rebuilt.revoked) == F({0, 1})


def test_partitions_beyond_the_topic_are_not_granted() -> None:
    doc = plan_assignment(obs(None, alive("a"), partitions=2), {**D({0: "a", 1: "a", 5: "a"}), P(0, "gone"): "a"})
    assert doc.grants == {"a": F({0, 1})}


def test_json_round_trip_and_rejects_garbage() -> None:
    doc = AssignmentDoc(9, {"a": F({0, 2}) | F({1}, "u")}, {"t": 3, "u": 2}, {P(1): Revocation("b", 9)})
    text = doc.to_json()
    assert '"grants":{"a":["t:0","t:2","u:1"]}' in text and '"epoch":9' in text and '"format":2' in text
    assert AssignmentDoc.from_json(text) == doc
    with pytest.raises(ValueError):
        AssignmentDoc.from_json("{}")
    with pytest.raises(ValueError):
        AssignmentDoc.from_json("not json")


def test_confirmed_owners() -> None:
    doc = AssignmentDoc(2, {"a": F({0, 1})}, T(2))
    assert confirmed_owners(obs(doc, alive("a", {0}, 2), partitions=2)) == {P(0): "a"}
    assert confirmed_owners(obs(doc, alive("a", {0, 1}, 2), partitions=2)) == {P(0): "a", P(1): "a"}


def test_limit_moves_budget() -> None:
    doc = AssignmentDoc(1, {"a": F({0, 1, 2, 3})}, T(5))
    desired = D({0: "b", 1: "b", 2: "a", 3: "b", 4: "b"})
    limited = limit_moves(doc, desired, 2)
    # partition 4 is ungranted: always proceeds and uses one slot; then one move, lowest first.
    assert limited == D({0: "b", 1: "a", 2: "a", 3: "a", 4: "b"})
    assert limit_moves(doc, desired, 0) == desired


workers_st = st.lists(st.sampled_from([f"w{i}" for i in range(8)]), unique=True, max_size=6)


@settings(max_examples=300)
@given(topics=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 15), max_size=3),
       workers=workers_st, data=st.data())
def test_balanced_is_even_sticky_and_stable(topics: dict[str, int], workers: list[str], data: st.DataObject) -> None:
    parts = partitions_of(topics)
    n = len(parts)
    owners = [*workers, "gone"]
    current = {p: data.draw(st.sampled_from(owners)) for p in parts}
    result = balanced_distribution(parts, workers, current)
    if not workers:
        assert result == {}
        return
    assert set(result) == set(parts)
    sizes = [sum(1 for w in result.values() if w == x) for x in workers]
    assert max(sizes) - min(sizes) <= 1
    # Sticky: nobody gives away partitions while it is at or under its share.
    for w in workers:
        had = {p for p, o in current.items() if o == w}
        kept = {p for p in had if result[p] == w}
        assert len(kept) == min(len(had), sum(1 for o in result.values() if o == w))
    # Minimal moves: a lower bound is what must leave over-quota workers plus what has no live owner.
    moves = sum(1 for p in parts if current.get(p) != result[p])
    base, extra = divmod(n, len(workers))
    counts = sorted((sum(1 for o in current.values() if o == w) for w in workers), reverse=True)
    keepable = sum(min(c, base + (1 if i < extra else 0)) for i, c in enumerate(counts))
    assert moves == n - keepable
    # Stable: feeding the result back changes nothing; so does dropping the partitions in motion.
    assert balanced_distribution(parts, workers, result) == result
    assert balanced_distribution(list(reversed(parts)), list(reversed(workers)), current) == result
    # Mid-move (moved partitions revoked, not yet granted) the target does not change.
    kept_only = {p: o for p, o in current.items() if result[p] == o}
    assert balanced_distribution(parts, workers, kept_only) == result


# ---- several topics: a topic appears or disappears between rounds -----------------------------------------


def test_a_new_topic_is_granted_and_nothing_else_moves() -> None:
    doc = AssignmentDoc(3, {"a": F({0, 1}), "b": F({2, 3})}, T(4))
    before = {"t": 4}
    after = {"t": 4, "u": 2}
    a, b = alive("a", {0, 1}, 3), alive("b", {2, 3}, 3)
    current = {p: w for p, w in doc.owner_of().items()}
    desired = balanced_distribution(partitions_of(after), ["a", "b"], current)
    # Adding partitions to a balanced distribution moves none of the existing ones.
    assert {p: desired[p] for p in partitions_of(before)} == current
    step = plan_assignment(obs(doc, a, b, topics=after), desired)
    assert step.epoch == 4 and step.revoked == {} and step.topics == after
    assert step.grants == {"a": F({0, 1}) | F({0}, "u"), "b": F({2, 3}) | F({1}, "u")}


def test_a_vanished_topic_is_revoked_the_others_stay_and_its_revocation_goes_once_released() -> None:
    u = F({0, 1}, "u")
    doc = AssignmentDoc(5, {"a": F({0, 1}) | {P(0, "u")}, "b": F({2, 3}) | {P(1, "u")}}, {"t": 4, "u": 2})
    desired = {**D({0: "a", 1: "a", 2: "b", 3: "b"}), P(0, "u"): "a", P(1, "u"): "b"}  # stale: still names u
    a, b = alive("a", {0, 1} | {P(0, "u")}, 5), alive("b", {2, 3} | {P(1, "u")}, 5)
    step = plan_assignment(obs(doc, a, b, topics=T(4)), desired)
    assert step.epoch == 6 and step.topics == T(4)
    assert step.grants == {"a": F({0, 1}), "b": F({2, 3})}
    assert step.revoked == {P(0, "u"): Revocation("a", 6), P(1, "u"): Revocation("b", 6)}
    # "a" released its u partition, "b" has not applied epoch 6 yet: only a's revocation is forgotten.
    later = plan_assignment(obs(step, alive("a", {0, 1}, 6), b, topics=T(4)), desired)
    assert later.epoch == 6 and later.grants == step.grants
    assert later.revoked == {P(1, "u"): Revocation("b", 6)}
    # u is created again (both its partitions now wanted on "a") before "b" let go: u:0 is granted, u:1
    # waits for b's release.
    to_a = {**desired, P(1, "u"): "a"}
    back = plan_assignment(obs(later, alive("a", {0, 1}, 6), b, topics={"t": 4, "u": 2}), to_a)
    assert back.grants == {"a": F({0, 1}) | {P(0, "u")}, "b": F({2, 3})}
    assert back.revoked == {P(1, "u"): Revocation("b", 6)}
    done = plan_assignment(obs(back, alive("a", {0, 1} | {P(0, "u")}, 7), alive("b", {2, 3}, 7),
                               topics={"t": 4, "u": 2}), to_a)
    assert done.grants == {"a": F({0, 1}) | u, "b": F({2, 3})} and done.revoked == {}


def test_a_lost_document_revokes_what_workers_report_even_of_a_vanished_topic() -> None:
    o = obs(None, alive("a", {0} | {P(0, "u")}, 4), topics=T(2))
    step = plan_assignment(o, D({0: "a", 1: "a"}), incarnation="i9")
    assert set(step.revoked) == F({0, 1}) | {P(0, "u")} and step.grants == {}
    # once "a" applied the rebuilt document the vanished partition is forgotten and t is granted
    done = plan_assignment(obs(step, alive("a", set(), 5), topics=T(2)), D({0: "a", 1: "a"}))
    assert done.grants == {"a": F({0, 1})} and done.revoked == {}


def test_a_format_1_document_is_read_with_the_groups_topic() -> None:
    text = '{"epoch": 4, "grants": {"a": [0, 2]}, "partitions": 3, "revoked": {"1": {"worker": "b", "epoch": 4}}}'
    doc = AssignmentDoc.from_json(text, "orders")
    assert doc == AssignmentDoc(4, {"a": F({0, 2}, "orders")}, {"orders": 3},
                                {P(1, "orders"): Revocation("b", 4)})
    with pytest.raises(ValueError):
        AssignmentDoc.from_json(text)  # several topics: no topic to read bare numbers as


TOPIC_NAMES = ("a", "b", "c")


@settings(max_examples=100, deadline=None)
@given(counts=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)), workers=st.integers(1, 3),
       data=st.data())
def test_topics_coming_and_going_keep_one_owner_and_move_nothing_else(
        counts: tuple[int, int, int], workers: int, data: st.DataObject) -> None:
    """Rounds of the planner over two or three topics, a topic created or deleted between rounds, workers
    applying documents late (sticky balanced desire, as the rollout's stable step asks). Checked every
    round: at most one worker owns a partition; a partition is granted only once its revocation was
    released; a topic change revokes exactly the vanished topic's partitions, grants only the new topic's
    and leaves every other grant where it was."""
    universe = dict(zip(TOPIC_NAMES, counts, strict=True))
    topics = {t: universe[t] for t in TOPIC_NAMES[:data.draw(st.integers(2, 3), label="topics")]}
    names = [f"w{i}" for i in range(workers)]
    owned: dict[str, frozenset[PartitionId]] = {w: frozenset() for w in names}
    applied: dict[str, int] = {w: 0 for w in names}
    doc: AssignmentDoc | None = None

    def observed(now: dict[str, int]) -> Observed:
        return Observed(doc, {w: WorkerView(w, report=WorkerReport(owned[w], applied[w])) for w in names}, now)

    for _ in range(15):
        change = data.draw(st.sampled_from(["none", "none", "appear", "vanish"]), label="change")
        now = dict(topics)
        if change == "appear" and len(now) < 3:
            added = next(t for t in TOPIC_NAMES if t not in now)
            now[added] = universe[added]
        elif change == "vanish" and len(now) > 1:
            del now[data.draw(st.sampled_from(sorted(now)), label="vanished")]
        current = doc.owner_of() if doc else {}
        desired: dict[PartitionId, str | None] = dict(balanced_distribution(partitions_of(now), names, current))
        if now != topics:
            # The topic change alone: the rest of the desire stays as granted (a vanished topic's partitions
            # would make a balanced desire move others; that is the rollout's choice, not the planner's).
            desired.update({p: w for p, w in current.items() if p.topic in now})
        o = observed(now)
        new = plan_assignment(o, desired)
        before, after = (doc.owner_of() if doc else {}), new.owner_of()
        for p, w in after.items():
            if before.get(p) != w and doc is not None and p in doc.revoked:
                rev = doc.revoked[p]
                assert rev.worker == w or (applied[rev.worker] >= rev.epoch and p not in owned[rev.worker]), \
                    f"{p} granted to {w} before {rev.worker} released it"
        if doc is not None and now != topics:
            gone = set(topics) - set(now)
            # every grant of a topic that stays is where it was; nothing of those is revoked
            assert {p: after.get(p) for p in before if p.topic not in gone} == \
                {p: w for p, w in before.items() if p.topic not in gone}
            assert all(p.topic in gone for p in set(new.revoked) - set(doc.revoked))
            # the vanished topic's grants are revoked (from their owner, in this epoch)
            for p, w in before.items():
                if p.topic in gone:
                    assert p not in after and new.revoked[p] == Revocation(w, new.epoch)
        assert all(o.exists(p) for p in after), "a partition of a topic that does not exist is granted"
        doc, topics = new, now
        for w in names:  # each worker applies the latest document, or not yet
            if data.draw(st.booleans(), label=f"{w} applies"):
                owned[w], applied[w] = doc.grant_of(w), doc.epoch
        holders: dict[PartitionId, list[str]] = {}
        for w in names:
            for p in owned[w]:
                holders.setdefault(p, []).append(w)
        assert all(len(ws) == 1 for ws in holders.values()), holders
    # Liveness: once everyone applies, every partition of the topics that exist is owned as desired.
    for _ in range(4):
        desired = balanced_distribution(partitions_of(topics), names, doc.owner_of() if doc else {})
        doc = plan_assignment(observed(topics), desired)
        for w in names:
            owned[w], applied[w] = doc.grant_of(w), doc.epoch
    assert doc is not None and doc.owner_of() == desired and doc.revoked == {}
