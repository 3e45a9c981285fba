"""RFC 3339 timestamps as the Kubernetes API writes them (seconds precision, Z suffix), both ways.
Standard library only: the operator, the lab runner and the CLI share it."""

from __future__ import annotations

import datetime as dt
from typing import Any


def rfc3339(moment: float | dt.datetime | None = None) -> str:
    """`moment` (unix seconds or a datetime; default now) in the format metav1.Time round-trips unchanged."""
    if moment is None:
        when = dt.datetime.now(dt.UTC)
    elif isinstance(moment, dt.datetime):
        when = moment
    else:
        when = dt.datetime.fromtimestamp(float(moment), dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: Any) -> float | None:
    """Unix seconds from an RFC 3339 string (or a datetime, as the kubernetes client returns); None when
    absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
