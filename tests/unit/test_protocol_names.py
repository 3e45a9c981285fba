"""How partitions are written on the wire (lagpilot.protocol): topic:partition, bare numbers only with the
group's single topic (format 1), and the human summary used in Events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot.protocol import PartitionId, format_owned, format_partitions, parse_owned, parse_partition_id

pytestmark = pytest.mark.unit

TOPIC = st.from_regex(r"[a-zA-Z0-9._-]{1,40}", fullmatch=True)


@pytest.mark.parametrize(("text", "default", "want"), [
    ("orders:3", None, PartitionId("orders", 3)),
    ("orders.eu-1:0", None, PartitionId("orders.eu-1", 0)),
    ("3", "orders", PartitionId("orders", 3)),
    (7, "orders", PartitionId("orders", 7)),
    ("payments:2", "orders", PartitionId("payments", 2)),  # a named topic wins over the default
])
def test_partition_ids_read(text: str | int, default: str | None, want: PartitionId) -> None:
    assert parse_partition_id(text, default) == want


@pytest.mark.parametrize(("text", "default"), [("3", None), (":3", None), ("orders:x", None), ("orders:-1", None),
                                                ("orders:", None), ("", "orders")])
def test_partition_ids_refused(text: str, default: str | None) -> None:
    with pytest.raises(ValueError):
        parse_partition_id(text, default)


@given(st.sets(st.tuples(TOPIC, st.integers(0, 5000)), max_size=30))
def test_owned_round_trips(parts: set[tuple[str, int]]) -> None:
    owned = frozenset(PartitionId(t, p) for t, p in parts)
    assert parse_owned(format_owned(owned)) == owned


def test_owned_from_a_format_1_worker_needs_the_groups_topic() -> None:
    assert parse_owned("0,3", "orders") == {PartitionId("orders", 0), PartitionId("orders", 3)}
    assert parse_owned("0,3") is None and parse_owned(None) is None and parse_owned("") == frozenset()


@pytest.mark.parametrize(("parts", "want"), [
    ([("a", 0), ("a", 1), ("a", 2), ("a", 5), ("b", 1), ("b", 3)], "a:0-2,5 b:1,3"),
    ([("orders", 4)], "orders:4"),
    ([], ""),
])
def test_partitions_for_people(parts: list[tuple[str, int]], want: str) -> None:
    assert format_partitions(PartitionId(t, p) for t, p in parts) == want
