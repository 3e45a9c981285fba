"""The operator's in-memory view of every watched ConsumerGroup, fed by kopf's watch stream (one handler
for all events), so that periodic work (lag rounds, resyncs, the hand-off's fast ticks) looks at the latest
bodies without an API call per group and per period."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Key = tuple[str, str]  # (namespace, name)


class GroupIndex:
    """Latest body per ConsumerGroup, thread-safe. Bodies are plain dict copies, never kopf's live views,
    without `metadata.managedFields` (nothing here reads them; they are the bulk of a body)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._served: dict[Key, float] = {}  # group -> when this process started serving it (clock)
        self._lock = threading.Lock()
        self._clock = clock

    def serve(self, key: Key, on: bool) -> None:
        """Whether kopf currently serves this group in this process (its daemon runs): kopf stops daemons
        when peering pauses the operator (another one has priority) and when the group is being deleted,
        so the periodic loops never act on a group another operator serves."""
        with self._lock:
            if on:
                self._served.setdefault(key, self._clock())
            else:
                self._served.pop(key, None)

    def served_at(self, key: Key) -> float | None:
        """When this process started serving the group (its clock); None when it does not serve it."""
        with self._lock:
            return self._served.get(key)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            if event_type == "DELETED":
                self._bodies.pop(key, None)
            else:
                kept = {k: v for k, v in body.items() if k != "metadata"}
                kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
                self._bodies[key] = copy.deepcopy(kept)

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            return self._bodies.get(key)

    def items(self) -> list[tuple[Key, dict[str, Any]]]:
        """The groups this process serves, with their latest bodies."""
        with self._lock:
            return [(k, b) for k, b in self._bodies.items() if k in self._served]
