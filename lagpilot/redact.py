"""Credentials out of text that leaves the process (log lines, Events, status, DLQ headers, CLI output):
the userinfo of any URL (``https://user:pass@host/`` -> ``https://***@host/``). Standard library only;
every part may import it."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@?#]+@")


def redact_url(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)
