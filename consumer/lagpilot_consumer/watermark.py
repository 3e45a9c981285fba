"""Per-partition commit watermark: the offset to commit is the lowest offset not yet done, so completion
out of order (different keys finish at different times) never moves the commit past a gap."""

from __future__ import annotations

from collections import deque


class Watermark:
    """Tracks the offsets of one partition handed to the scheduler, in fetch (ascending) order.

    ``commit_offset()`` is the Kafka commit position (the *next* offset to read): the lowest offset added
    and not yet done, or one past the highest added offset when everything is done, or None when nothing
    was ever added (nothing to commit -- keep whatever the group has)."""

    __slots__ = ("_done", "_last", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._last: int | None = None

    def add(self, offset: int) -> None:
        """Record that ``offset`` was fetched; offsets must be added in ascending order (gaps allowed)."""
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} added after {self._last}")
        self._pending.append(offset)
        self._last = offset

    def done(self, offset: int) -> None:
        """Mark ``offset`` done (delivered, dead-lettered or deliberately skipped). Idempotent."""
        if not self._pending or offset < self._pending[0]:
            return  # already below the watermark
        if offset == self._pending[0]:
            self._pending.popleft()
            while self._pending and self._pending[0] in self._done:
                self._done.discard(self._pending.popleft())
        else:
            self._done.add(offset)

    def commit_offset(self) -> int | None:
        if self._pending:
            return self._pending[0]
        return None if self._last is None else self._last + 1

    def advance_to(self, position: int) -> bool:
        """Everything fetched is done and the consumer's position is past it (transaction markers, aborted
        records: offsets the application never sees): commit there. Returns whether the commit moved."""
        if self._pending or self._last is None or position <= self._last + 1:
            return False
        self._last = position - 1
        return True

    def outstanding(self) -> int:
        """How many added offsets are not yet below the watermark (done-but-behind-a-gap included)."""
        return len(self._pending)
