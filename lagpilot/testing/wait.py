"""Polling for tests and benches: one helper, one argument order."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float = 90.0, what: str = "condition", interval: float = 0.2,
             ignore_errors: bool = True) -> T:
    """Call ``check`` until it returns something truthy and return that. Exceptions count as "not yet"
    (transient API or broker errors) unless ``ignore_errors`` is False. On timeout, fail naming ``what``
    and the last value or exception. Timeouts are generous: the machine is shared with the lab."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            if not ignore_errors:
                raise
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
