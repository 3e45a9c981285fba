"""Which owned objects (ServiceAccount, Role, RoleBinding, Service) are known to match their plan, so that
a reconcile skips reading them back: four GETs of fourteen on the path from a spec change to its Deployment.

An entry is trusted for `ttl` seconds (the full-resync period: an edit someone makes to one of these objects
is repaired at the latest by then, as with the resync before), and dropped at once when the object is
deleted (the operator watches deletions of these kinds) or its planned content changes. A deletion that
lands while a reconcile is between its read and `remember` would leave an entry for a missing object, so
each key counts its invalidations and `remember` stores only if none came since `check`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class _Entry:
    digest: str
    at: float


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(obj["kind"]), str(meta["namespace"]), str(meta["name"]))


def _digest(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class AppliedCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._invalidations: dict[Key, int] = {}
        self._lock = threading.Lock()

    def check(self, obj: Mapping[str, Any]) -> tuple[bool, int]:
        """(whether `obj` is known to be in place as planned, a token for `remember`)."""
        key = _key(obj)
        with self._lock:
            entry = self._entries.get(key)
            token = self._invalidations.get(key, 0)
            fresh = entry is not None and entry.digest == _digest(obj) and self.clock() - entry.at < self.ttl
            return fresh, token

    def remember(self, obj: Mapping[str, Any], token: int) -> None:
        """`obj` was read back equal to the plan, or applied: trust it until the TTL, unless it was
        invalidated since the `check` that gave `token`."""
        key = _key(obj)
        with self._lock:
            if self._invalidations.get(key, 0) == token:
                self._entries[key] = _Entry(_digest(obj), self.clock())

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        with self._lock:
            self._entries.pop(key, None)
            self._invalidations[key] = self._invalidations.get(key, 0) + 1
