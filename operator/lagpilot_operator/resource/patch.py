"""JSON merge-patch (RFC 7386) bodies for status sub-objects this operator owns whole."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(old: Any, new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge-patch that makes the object equal ``new``: keys that ``old`` had and ``new`` lacks are sent
    as null (a merge-patch would otherwise keep them, e.g. a stale desiredWorkers)."""
    out: dict[str, Any] = dict(new)
    if isinstance(old, Mapping):
        for key in old:
            if key not in new:
                out[key] = None
    return out
