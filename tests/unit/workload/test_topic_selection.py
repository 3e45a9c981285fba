"""Which topics a group reads: a pattern over a cluster's listing, several named topics of which some are
missing, and what status and the resync make of them (pure parts of workload/topics, status, resync)."""

from __future__ import annotations

import pytest

from lagpilot_operator.workload.resync import Settled, resync_due
from lagpilot_operator.workload.status import BROKER_UNREACHABLE, TOPIC_NOT_FOUND, Observation, TopicInfo, compute
from lagpilot_operator.workload.topics import combine, select_topics

pytestmark = pytest.mark.unit

LISTING = ["orders-eu", "orders-us", "orders-eu-dlq", "orders-park", "__consumer_offsets", "payments",
           "xorders-eu"]


@pytest.mark.parametrize(("pattern", "exclude", "want"), [
    ("orders-.*", ("orders-eu-dlq", "orders-park"), ["orders-eu", "orders-us"]),
    ("orders-.*", (), ["orders-eu", "orders-eu-dlq", "orders-park", "orders-us"]),
    ("orders-(eu|us)", (None,), ["orders-eu", "orders-us"]),  # whole names only: not orders-eu-dlq
    (".*", ("orders-eu-dlq", "orders-park"), ["orders-eu", "orders-us", "payments", "xorders-eu"]),  # no __*
    ("pay.*", (), ["payments"]),
    ("nothing.*", (), []),
])
def test_a_pattern_matches_whole_names_and_never_internal_or_own_topics(
        pattern: str, exclude: tuple[str | None, ...], want: list[str]) -> None:
    assert select_topics(LISTING, pattern, exclude) == want


def missing(topic: str) -> TopicInfo:
    return TopicInfo(None, TOPIC_NOT_FOUND, f"topic {topic} does not exist on k:9092")


@pytest.mark.parametrize(("named", "topics", "reason", "in_message"), [
    ({"a": TopicInfo({"a": 3}), "b": TopicInfo({"b": 2})}, {"a": 3, "b": 2}, None, ""),
    ({"a": TopicInfo({"a": 3}), "b": missing("b")}, {"a": 3}, TOPIC_NOT_FOUND, "topic b does not exist"),
    ({"a": TopicInfo({"a": 3}), "b": missing("b")}, {"a": 3}, TOPIC_NOT_FOUND, "still reading a"),
    ({"a": missing("a"), "b": missing("b")}, None, TOPIC_NOT_FOUND, "topic a does not exist"),
    ({"a": TopicInfo({"a": 3}), "b": TopicInfo(None, BROKER_UNREACHABLE, "no broker")}, None, BROKER_UNREACHABLE,
     "no broker"),
])
def test_a_missing_topic_of_several_leaves_the_others_read(named: dict[str, TopicInfo], topics: dict | None,
                                                             reason: str | None, in_message: str) -> None:
    got = combine(named)
    assert got.topics == topics and got.reason == reason and in_message in got.message
    assert got.partitions == (None if topics is None else sum(topics.values()))


def obs(topic: TopicInfo) -> Observation:
    return Observation(generation=1, name="cg", desired_workers=1, revision="r", deployment_name="cg-r",
                       deployments=[], topic=topic)


def test_status_names_the_topics_and_drops_a_deleted_one() -> None:
    first = compute(obs(TopicInfo({"orders": 6, "payments": 3})), {}, "2026-01-01T00:00:00Z")
    assert first["topics"] == {"orders": 6, "payments": 3} and first["partitions"] == 9
    assert first["topicNames"] == "orders,payments"
    gone = compute(obs(TopicInfo({"orders": 6}, TOPIC_NOT_FOUND, "topic payments does not exist")), first,
                   "2026-01-01T00:00:10Z")
    assert gone["topics"] == {"orders": 6, "payments": None}  # merge patch: null removes it
    assert gone["partitions"] == 6 and gone["phase"] == "Degraded"
    degraded = next(c for c in gone["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == TOPIC_NOT_FOUND and "payments" in degraded["message"]


@pytest.mark.parametrize(("pattern", "due"), [(False, False), (True, True)])
def test_a_quiet_group_named_by_pattern_is_still_due_every_interval(pattern: bool, due: bool) -> None:
    settled = Settled("1", True, "c", ("orders-eu",), 3, at=0.0, pattern=pattern)
    assert resync_due(settled, "1", 3, now=31.0, interval=30.0, full_every=600.0) is due
    assert resync_due(settled, "1", 3, now=20.0, interval=30.0, full_every=600.0) is False


def test_a_topic_a_lag_round_found_missing_changes_the_known_count_so_the_resync_is_due() -> None:
    from lagpilot_operator.workload.topics import TopicReader

    reader = TopicReader()
    reader.note("c", {"orders": 3, "payments": 2})
    before = reader.known_partitions("c", ("orders", "payments"))
    settled = Settled("1", True, "c", ("orders", "payments"), before, at=0.0)
    reader.note("c", {"orders": 3, "payments": 0})  # the next round: payments deleted
    after = reader.known_partitions("c", ("orders", "payments"))
    assert (before, after) == (5, 3)
    assert resync_due(settled, "1", after, now=31.0, interval=30.0, full_every=600.0)
    assert reader.known_partitions("c", ("orders", "refunds")) is None  # never seen
