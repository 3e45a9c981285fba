"""The retry park's pure parts: which key a parked record holds back, the parked-key counts (a key is free
only after its last parked record is done, whatever the interleaving), the headers a parked record carries
and how a record read back is seen as its original."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot import protocol
from lagpilot_consumer.park import WHOLE_PARTITION, ParkedKeys, ParkedMessage, park_headers, park_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("ordering", "key", "held"), [
    ("key", b"k", b"k"),
    ("key", None, None),  # keyless records are not ordered: nothing to hold back
    ("partition", b"k", WHOLE_PARTITION),
    ("partition", None, WHOLE_PARTITION),
    ("none", b"k", None),
])
def test_what_a_parked_record_holds_back(ordering: str, key: bytes | None, held: object) -> None:
    assert park_key(ordering, key) == held


def test_a_key_is_parked_until_its_last_parked_record_is_done() -> None:
    keys = ParkedKeys()
    assert not keys.holds(b"a") and not keys.holds(None)
    keys.add(b"a")
    keys.add(b"a")
    keys.add(None)  # ignored
    assert keys.holds(b"a") and len(keys) == 1
    keys.done(b"a")
    assert keys.holds(b"a")
    keys.done(b"a")
    assert not keys.holds(b"a") and len(keys) == 0
    keys.done(b"a")  # a straggler of an earlier ownership: no negative count
    keys.add(b"a")
    assert keys.holds(b"a")


@given(st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.booleans()), max_size=60))
def test_parked_counts_match_a_model(ops: list[tuple[bytes, bool]]) -> None:
    """Any interleaving of parks and completions: a key is held exactly while it has more parks than
    completions (completions with nothing parked are ignored)."""
    keys, model = ParkedKeys(), dict.fromkeys([b"a", b"b", b"c"], 0)
    for key, park in ops:
        if park:
            keys.add(key)
            model[key] += 1
        else:
            keys.done(key)
            model[key] = max(0, model[key] - 1)
        assert {k for k in model if keys.holds(k)} == {k for k, n in model.items() if n > 0}


class Msg:
    def __init__(self, headers: list[tuple[str, bytes | None]] | None, key: bytes | None = b"k",
                 value: bytes | None = b"v") -> None:
        self._headers = headers
        self._key, self._value = key, value

    def headers(self) -> Any:
        return self._headers

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "orders.park"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 7

    def timestamp(self) -> tuple[int, int]:
        return (2, 99)


def test_a_parked_record_reads_back_as_its_original() -> None:
    ours = park_headers("orders", 3, 1234, 1_700_000_000_000, attempts=9, route_step=1, reason="failing")
    msg = ParkedMessage.of(Msg([*ours, ("traceparent", b"00-abc-def-01"), ("empty", None)]))
    assert isinstance(msg, ParkedMessage)
    assert (msg.topic(), msg.partition(), msg.offset(), msg.timestamp()) == ("orders", 3, 1234,
                                                                             (1, 1_700_000_000_000))
    assert (msg.key(), msg.value(), msg.attempts, msg.route_step) == (b"k", b"v", 9, 1)
    assert msg.headers() == [("traceparent", b"00-abc-def-01"), ("empty", None)], "only the record's own"
    assert all(name.startswith(protocol.PARK_HEADER_PREFIX) for name, _ in ours)


def test_without_a_timestamp_or_routes_those_headers_are_left_out() -> None:
    ours = dict(park_headers("orders", 0, 5, None, attempts=1, route_step=0, reason="key-parked"))
    assert protocol.PARK_ORIGINAL_TIMESTAMP not in ours and protocol.PARK_ROUTE_STEP not in ours
    msg = ParkedMessage.of(Msg(list(ours.items())))
    assert msg.timestamp() == (0, -1) and msg.headers() is None and msg.route_step == 0


@pytest.mark.parametrize("headers", [
    None,  # not written by a worker: delivered as it is
    [("lagpilot-park-original-topic", b"orders")],  # ours but incomplete
    [("lagpilot-park-original-topic", b"orders"), ("lagpilot-park-original-partition", b"x"),
     ("lagpilot-park-original-offset", b"1")],  # hostile
])
def test_a_park_record_that_is_not_ours_is_delivered_as_it_is(headers: list[tuple[str, bytes]] | None) -> None:
    raw = Msg(headers)
    assert ParkedMessage.of(raw) is raw


def test_unreadable_headers_leave_the_message_to_fail_the_usual_way() -> None:
    class Broken(Msg):
        def headers(self) -> Any:
            raise SystemError("header name is not UTF-8")

    raw = Broken(None)
    assert ParkedMessage.of(raw) is raw
