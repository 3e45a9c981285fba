"""`__consumer_offsets` records as offset commits (pure). The format is Kafka's: key version 0/1 is an
OffsetCommitKey (group, topic, partition; other versions are group metadata or the new consumer protocol's
records); the value of every version starts with its int16 version and the int64 offset; a null value is a
tombstone (the commit was deleted or expired)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSETS_TOPIC = "__consumer_offsets"


@dataclass(frozen=True)
class Commit:
    group: str
    topic: str
    partition: int
    offset: int | None  # None: the commit was deleted (tombstone, offsets expired or deleted)


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    if n < 0:
        raise ValueError("null string in an offset commit key")
    return buf[pos:pos + n].decode("utf-8"), pos + n


def decode_commit(key: bytes | None, value: bytes | None) -> Commit | None:
    """One `__consumer_offsets` record as an offset commit, or None when it is another kind of record
    (group metadata, the new consumer protocol's records) or unreadable."""
    if not key or len(key) < 2:
        return None
    try:
        (version,) = struct.unpack_from(">h", key, 0)
        if version not in (0, 1):
            return None
        group, pos = _string(key, 2)
        topic, pos = _string(key, pos)
        (partition,) = struct.unpack_from(">i", key, pos)
        if value is None:
            return Commit(group, topic, partition, None)
        (_value_version, offset) = struct.unpack_from(">hq", value, 0)
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    return Commit(group, topic, partition, offset)
