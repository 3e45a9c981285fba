"""Pure delivery policy: what an HTTP answer means (success / retry / give up), how long to wait before
the next attempt, and which request headers a record becomes."""

from __future__ import annotations

import base64
import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import Literal

from lagpilot.protocol import parse_status_codes

Verdict = Literal["success", "retry", "fatal"]


@dataclass(frozen=True)
class CodeSet:
    """A set of HTTP status codes written as ``"200-299,304"``."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, text: str) -> CodeSet:
        return cls(parse_status_codes(text))

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and any(lo <= code <= hi for lo, hi in self.ranges)


DEFAULT_SUCCESS = "200-299"
DEFAULT_RETRY = "408,429,500-599"
DEFAULT_UNAVAILABLE = "429,502,503,504"


def classify(status: int | None, success: CodeSet, retry: CodeSet) -> Verdict:
    """``status`` None means no HTTP answer (connection error, timeout): always retried."""
    if status is None:
        return "retry"
    if status in success:
        return "success"
    if status in retry:
        return "retry"
    return "fatal"


def backoff_seconds(attempt: int, initial_ms: int, max_ms: int, rng: random.Random | None = None,
                    retry_after: float | None = None) -> float:
    """Delay before attempt ``attempt + 1`` after ``attempt`` (>= 1) failed: full jitter, i.e. uniform in
    [0, min(max, initial * 2**(attempt-1))]; a ``Retry-After`` from the server is a lower bound (capped
    at 10 minutes so a bogus header cannot stall a key for ever)."""
    cap = min(float(max_ms), float(initial_ms) * (2.0 ** min(attempt - 1, 62))) / 1000.0
    delay = (rng or random).uniform(0.0, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, 600.0))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_SAFE = re.compile(rb"[\x20-\x7e\x80-\xff]*")
_TOKEN_BAD = re.compile(r"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")


def header_value(raw: bytes) -> tuple[bytes, bool]:
    """Header bytes for a key or Kafka header value, and whether it had to be base64-encoded.

    Valid UTF-8 without control characters is sent as is (UTF-8 bytes); anything else (binary, CR/LF,
    NUL, invalid UTF-8, leading/trailing whitespace that HTTP would strip) is base64 (standard alphabet,
    padded) and flagged, so the value always survives the trip exactly."""
    if _SAFE.fullmatch(raw) and raw == raw.strip(b" \t"):
        try:
            raw.decode("utf-8")
            return raw, False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(raw), True


def header_name(name: str) -> str:
    """A Kafka header name made into a valid HTTP token (invalid characters become ``_``)."""
    return _TOKEN_BAD.sub("_", name) or "_"



Action = Literal["done", "retry", "dead_letter", "hold"]


@dataclass(frozen=True)
class Step:
    """What to do with a record after one attempt. ``counted``: the attempt used up one of
    ``--max-attempts``; ``overload``: the answer says the target as a whole is overloaded or away (the
    concurrency limit is cut); ``delay``: seconds until the next attempt (retry and hold)."""

    action: Action
    verdict: Verdict
    counted: bool = False
    overload: bool = False
    delay: float = 0.0


def next_step(status: int | None, retry_after: float | None, attempt: int, counted: int, *,
              success: CodeSet, retry: CodeSet, unavailable: CodeSet, max_attempts: int,
              initial_ms: int, max_ms: int, dead_letter: bool, rng: random.Random | None = None) -> Step:
    """The retry rules, in one place. ``attempt`` counts every attempt of the record so far (this one
    included), ``counted`` those that used up an attempt before this one.

    - success: done.
    - "the target is unavailable" (no answer, or a code in ``unavailable``: 429/502/503/504 by default):
      retried with backoff, **never** counted, so an outage or a restart of the target dead-letters
      nothing; it also cuts the concurrency limit.
    - another retryable code (500, 408, ...): counted; after ``max_attempts`` of them the record is final.
    - anything else (4xx, a redirect not followed): final at once.
    - final: dead-lettered, or, without a dead-letter topic, held: retried at the max backoff for ever."""
    verdict = classify(status, success, retry)
    if verdict == "success":
        return Step("done", verdict)
    if status is None or (verdict == "retry" and status in unavailable):
        return Step("retry", "retry", counted=False, overload=True,
                    delay=backoff_seconds(attempt, initial_ms, max_ms, rng, retry_after))
    if verdict == "retry" and counted + 1 < max_attempts:
        return Step("retry", verdict, counted=True,
                    delay=backoff_seconds(counted + 1, initial_ms, max_ms, rng, retry_after))
    if dead_letter:
        return Step("dead_letter", verdict, counted=verdict == "retry")
    delay = max(backoff_seconds(1, max_ms, max_ms, rng, retry_after), max_ms / 1000.0)
    return Step("hold", verdict, counted=verdict == "retry", delay=delay)
