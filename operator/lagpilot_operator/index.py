"""The operator's in-memory view of every watched ConsumerGroup, fed by kopf's watch stream (one handler
for all events), so that periodic work (lag rounds, resyncs, the hand-off's fast ticks) looks at the latest
bodies without an API call per group and per period."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]  # (namespace, name)


class GroupIndex:
    """Latest body per ConsumerGroup, thread-safe. Bodies are plain dict copies, never kopf's live views."""

    def __init__(self) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._served: set[Key] = set()
        self._lock = threading.Lock()

    def serve(self, key: Key, on: bool) -> None:
        """Whether kopf currently serves this group in this process (its daemon runs): kopf stops daemons
        when peering pauses the operator (another one has priority) and when the group is being deleted,
        so the periodic loops never act on a group another operator serves."""
        with self._lock:
            if on:
                self._served.add(key)
            else:
                self._served.discard(key)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            if event_type == "DELETED":
                self._bodies.pop(key, None)
            else:
                self._bodies[key] = copy.deepcopy(dict(body))

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._bodies.get(key)

    def items(self) -> list[tuple[Key, dict[str, Any]]]:
        """The groups this process serves, with their latest bodies."""
        with self._lock:
            return [(k, b) for k, b in self._bodies.items() if k in self._served]
