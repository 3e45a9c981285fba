"""Who is read in a lag round (pure): each group has a slot (next read, period, connection); a round takes
the groups whose time has come and, on the same connection, those due within half their period."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Slot:
    """When a group is read next, how often, and through which connection (None before its first read)."""

    next_at: float
    period: float
    connection: str | None


def select_due(slots: Mapping[Key, Slot], known: list[Key], now: float) -> list[Key]:
    """Groups to read now: every group whose time has come (and every group never read), plus, on a
    connection that has a round anyway, every group due within half its period. So groups on one
    connection fall into one round after their first reads, and none is read later than its period."""
    due = [k for k in known if k not in slots or slots[k].next_at <= now]
    conns = {slots[k].connection for k in due if k in slots}
    early = [k for k in known if k in slots and k not in due and slots[k].connection in conns
             and math.isfinite(slots[k].next_at) and slots[k].next_at - now <= slots[k].period / 2]
    return due + early
