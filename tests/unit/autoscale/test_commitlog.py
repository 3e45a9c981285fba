"""`__consumer_offsets` records decoded as Kafka writes them (key versions 0/1 = OffsetCommitKey; value
versions 0-4 all start with the int16 version and the int64 offset), table-driven."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.autoscale.commits import Commit, decode_commit


def kstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def key(version: int, group: str, topic: str, partition: int) -> bytes:
    return struct.pack(">h", version) + kstr(group) + kstr(topic) + struct.pack(">i", partition)


def value(version: int, offset: int) -> bytes:
    tail = {0: kstr("") + struct.pack(">q", 1), 1: kstr("m") + struct.pack(">qq", 1, 2),
            2: kstr("") + struct.pack(">q", 1), 3: struct.pack(">i", 5) + kstr("") + struct.pack(">q", 1),
            4: struct.pack(">i", 5) + b"\x01" + struct.pack(">q", 1) + b"\x00"}[version]
    return struct.pack(">hq", version, offset) + tail


@pytest.mark.parametrize(("k", "v", "expected"), [
    (key(0, "g", "t", 3), value(0, 42), Commit("g", "t", 3, 42)),
    (key(1, "g", "t", 0), value(1, 7), Commit("g", "t", 0, 7)),
    (key(1, "shop.orders", "orders", 11), value(3, 123456789012), Commit("shop.orders", "orders", 11, 123456789012)),
    (key(1, "g", "t", 1), value(4, 9), Commit("g", "t", 1, 9)),
    (key(1, "g", "t", 1), value(2, 0), Commit("g", "t", 1, 0)),
    (key(1, "g", "t", 2), None, Commit("g", "t", 2, None)),  # tombstone: the commit was deleted
    (struct.pack(">h", 2) + kstr("g"), b"\x00\x03...", None),  # group metadata, not an offset commit
    (struct.pack(">h", 3) + kstr("g"), b"", None),  # the new consumer protocol's records
    (None, value(3, 1), None),
    (b"\x00", value(3, 1), None),
    (key(1, "g", "t", 1)[:-2], value(3, 1), None),  # truncated key
    (key(1, "g", "t", 1), b"\x00\x03\x00", None),  # truncated value
    (struct.pack(">h", 1) + b"\x00\x05ab", value(3, 1), None),  # string longer than the key
    (struct.pack(">h", 1) + b"\xff\xff", value(3, 1), None),  # null group
    (struct.pack(">h", 1) + kstr("g") + b"\x00\x02\xff\xfe" + struct.pack(">i", 0), value(3, 1), None),  # bad utf-8
])
def test_decode_commit(k: bytes | None, v: bytes | None, expected: Commit | None) -> None:
    assert decode_commit(k, v) == expected


@given(st.binary(max_size=64), st.one_of(st.none(), st.binary(max_size=64)))
def test_hostile_bytes_never_raise(k: bytes, v: bytes | None) -> None:
    decode_commit(k, v)  # whatever a compacted topic holds, the mirror never stops on a record


@given(st.text(max_size=40), st.text(max_size=40), st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1),
       st.sampled_from([0, 1, 2, 3, 4]))
def test_round_trip(group: str, topic: str, partition: int, offset: int, version: int) -> None:
    assert decode_commit(key(1, group, topic, partition), value(version, offset)) == \
        Commit(group, topic, partition, offset)
