"""Issue 13: any exception while delivering is a failed attempt, retried with backoff like an HTTP error,
so a record is never completed unfinished (its key's next record would overtake it and the commit would
freeze). The seam is the HTTP client handed to `deliver` (one raising once, then answering)."""

from __future__ import annotations

import pytest

from lagpilot_consumer.config import parse
from lagpilot_consumer.delivery import Attempt, Record, deliver
from lagpilot_consumer.metrics import Metrics

pytestmark = pytest.mark.unit


class FlakyClient:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def send(self, rec: Record) -> Attempt:
        self.calls += 1
        if self.calls <= self.failures:
            raise UnicodeEncodeError("latin-1", "\u2603", 0, 1, "ordinal not in range")
        return Attempt(200, "", 0.001)


def test_an_exception_is_a_failed_attempt_and_the_record_is_retried() -> None:
    cfg = parse(["--bootstrap-servers", "k:1", "--topic", "t", "--group-id", "g", "--target-url", "http://x/y",
                 "--initial-backoff-ms", "1", "--max-backoff-ms", "2", "--max-attempts", "5"], {})
    client = FlakyClient(failures=2)
    outcome = deliver(Record("t", 0, 3, b"k", b"v"), client, cfg, Metrics(), None, lambda: False)  # type: ignore[arg-type]
    assert outcome == "success" and client.calls == 3


def test_without_a_dead_letter_topic_a_crashing_record_keeps_its_place() -> None:
    """Exhausted attempts and no DLQ: it keeps retrying (never completed), until cancelled."""
    cfg = parse(["--bootstrap-servers", "k:1", "--topic", "t", "--group-id", "g", "--target-url", "http://x/y",
                 "--initial-backoff-ms", "1", "--max-backoff-ms", "1", "--max-attempts", "2"], {})
    client = FlakyClient(failures=10**9)
    calls = iter(range(10**6))
    outcome = deliver(Record("t", 0, 3, b"k", b"v"), client, cfg, Metrics(), None,  # type: ignore[arg-type]
                      lambda: next(calls) > 40)
    assert outcome == "cancelled" and client.calls >= 3
