"""`lagpilot replay`: the request it writes for each form, and the usage errors (exit 2, one line)."""

from __future__ import annotations

import click
import pytest

from lagpilot.cli.replay import build_request, moved_table
from lagpilot_operator.handoff.replay import ReplayRequest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("args", "want"), [
    ((True, None, (), None), {"to": "checkpoint"}),
    ((True, None, (), "3,0,3"), {"to": "checkpoint", "partitions": [0, 3]}),
    ((False, "2026-01-31T00:00:00Z", (), None), {"to": "time", "time": "2026-01-31T00:00:00Z"}),
    ((False, None, ("0:10", "2:5"), None), {"to": "offsets", "offsets": {"0": 10, "2": 5}}),
])
def test_the_request_is_one_the_operator_reads(args: tuple, want: dict) -> None:
    request = build_request(*args)
    assert {k: v for k, v in request.items() if k != "id"} == want
    import json

    parsed = ReplayRequest.from_annotation(json.dumps(request), "orders")  # bare numbers: the single topic
    assert parsed.id == request["id"] and parsed.to == want["to"]


@pytest.mark.parametrize(("args", "why"), [
    ((False, None, (), None), "exactly one of"),
    ((True, "2026-01-31T00:00:00Z", (), None), "exactly one of"),
    ((False, "noon", (), None), "RFC 3339"),
    ((False, None, ("3",), None), "PARTITION:OFFSET"),
    ((False, None, ("a:1",), None), "PARTITION:OFFSET"),
    ((False, None, ("1:2",), "1"), "--partitions goes with"),
    ((True, None, (), "x"), "partitions such as"),
])
def test_usage_errors(args: tuple, why: str) -> None:
    with pytest.raises(click.UsageError) as e:
        build_request(*args)
    assert why in e.value.format_message()


def test_the_moved_table_counts_records_delivered_again() -> None:
    table = moved_table({"moved": {"10": {"from": 50, "to": 20}, "2": {"from": None, "to": 0}}})
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == ["2", "10"] and cells[1] == ["-", "50"] and cells[3] == ["", "30"]


@pytest.mark.parametrize("args,expected", [
    ((False, None, ("orders:3:1200", "payments:0:7"), None),
     {"to": "offsets", "offsets": {"orders:3": 1200, "payments:0": 7}}),
    ((True, None, (), "payments:1,orders:10,orders:2"),
     {"to": "checkpoint", "partitions": ["orders:2", "orders:10", "payments:1"]}),
])
def test_topic_partitions_are_named_topic_colon_partition(args: tuple, expected: dict) -> None:
    import json

    request = build_request(*args)
    assert {k: v for k, v in request.items() if k != "id"} == expected
    parsed = ReplayRequest.from_annotation(json.dumps(request))  # a group of several topics reads it too
    assert parsed.id == request["id"]


@pytest.mark.parametrize("args", [
    (False, None, ("orders:x:3",), None),
    (False, None, (":3:4",), None),
    (True, None, (), "orders:-1"),
])
def test_bad_topic_partitions_are_refused(args: tuple) -> None:
    with pytest.raises(click.UsageError):
        build_request(*args)
