from __future__ import annotations

import base64
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_consumer.policy import (
    DEFAULT_RETRY,
    DEFAULT_SUCCESS,
    CodeSet,
    backoff_seconds,
    classify,
    header_value,
    parse_retry_after,
)

pytestmark = pytest.mark.unit

OK, RETRY = CodeSet.parse(DEFAULT_SUCCESS), CodeSet.parse(DEFAULT_RETRY)


@pytest.mark.parametrize(("status", "verdict"), [
    (200, "success"), (204, "success"), (None, "retry"), (429, "retry"), (500, "retry"), (503, "retry"),
    (408, "retry"), (400, "fatal"), (404, "fatal"), (301, "fatal"),
])
def test_classify_defaults(status: int | None, verdict: str) -> None:
    assert classify(status, OK, RETRY) == verdict


def test_codes_are_configurable() -> None:
    assert classify(409, CodeSet.parse("200-299,409"), RETRY) == "success"
    assert classify(503, OK, CodeSet.parse("429")) == "fatal"


@pytest.mark.parametrize("bad", ["abc", "99", "600", "300-200"])
def test_codeset_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        CodeSet.parse(bad)


@given(st.integers(1, 80), st.integers(1, 5000), st.integers(0, 100000), st.integers(0, 2**32))
def test_backoff_is_full_jitter_within_the_cap(attempt: int, initial: int, extra: int, seed: int) -> None:
    max_ms = initial + extra
    d = backoff_seconds(attempt, initial, max_ms, random.Random(seed))
    assert 0.0 <= d <= min(max_ms, initial * 2 ** (attempt - 1)) / 1000.0


def test_retry_after_is_a_lower_bound() -> None:
    assert backoff_seconds(1, 10, 20, random.Random(1), retry_after=3.0) == 3.0
    assert backoff_seconds(1, 10, 20, random.Random(1), retry_after=10_000) == 600.0


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


@given(st.binary(max_size=40))
def test_header_values_survive_exactly(raw: bytes) -> None:
    v, encoded = header_value(raw)
    assert (base64.b64decode(v) if encoded else v) == raw
    assert b"\r" not in v and b"\n" not in v and b"\x00" not in v


def test_utf8_keys_are_sent_as_is() -> None:
    assert header_value("clé-1".encode()) == ("clé-1".encode(), False)
    assert header_value(b"\xff\xfe")[1] is True


# ---- next_step: the retry rules (issue 13) ------------------------------------------------------------
from lagpilot_consumer.policy import DEFAULT_UNAVAILABLE, next_step  # noqa: E402

_CODES = {"success": CodeSet.parse("200-299"), "retry": CodeSet.parse("408,429,500-599"),
          "unavailable": CodeSet.parse(DEFAULT_UNAVAILABLE)}


def _step(status: int | None, counted: int = 0, dead_letter: bool = True, attempt: int = 1,
          retry_after: float | None = None):  # type: ignore[no-untyped-def]
    return next_step(status, retry_after, attempt, counted, max_attempts=3, initial_ms=100, max_ms=1000,
                     dead_letter=dead_letter, **_CODES)


@pytest.mark.parametrize(("status", "counted", "dead_letter", "action", "uses_attempt", "overload"), [
    (200, 0, True, "done", False, False),
    (204, 2, False, "done", False, False),
    (None, 0, True, "retry", False, True),      # no answer: the target is away, attempts are not used up
    (None, 50, True, "retry", False, True),     # ... however long it lasts
    (503, 2, True, "retry", False, True),
    (429, 2, True, "retry", False, True),
    (502, 9, False, "retry", False, True),
    (500, 0, True, "retry", True, False),       # this record failed: one of --max-attempts
    (500, 1, True, "retry", True, False),
    (500, 2, True, "dead_letter", True, False),  # the third counted attempt was the last
    (500, 2, False, "hold", True, False),       # no dead-letter topic: held, retried at the max backoff
    (400, 0, True, "dead_letter", False, False),  # rejected: final at once
    (404, 0, False, "hold", False, False),
    (302, 0, True, "dead_letter", False, False),  # a redirect not followed is an answer, not a success
])
def test_next_step_table(status: int | None, counted: int, dead_letter: bool, action: str, uses_attempt: bool,
                         overload: bool) -> None:
    step = _step(status, counted, dead_letter)
    assert (step.action, step.counted, step.overload) == (action, uses_attempt, overload)


def test_retry_after_is_a_lower_bound_of_the_wait() -> None:
    assert _step(503, retry_after=7.0).delay >= 7.0
    assert _step(500, retry_after=600.0).delay >= 600.0
    assert _step(400, dead_letter=False).delay >= 1.0  # held: at least the max backoff


def test_a_code_the_user_took_out_of_the_retry_codes_is_final_even_if_it_says_unavailable() -> None:
    step = next_step(503, None, 1, 0, success=CodeSet.parse("200-299"), retry=CodeSet.parse("500"),
                     unavailable=CodeSet.parse(DEFAULT_UNAVAILABLE), max_attempts=3, initial_ms=100,
                     max_ms=1000, dead_letter=True)
    assert step.action == "dead_letter"


@given(st.lists(st.sampled_from([None, 500, 502, 503, 429, 408]), min_size=1, max_size=60))
def test_a_record_is_dead_lettered_only_after_max_attempts_counted_failures(answers: list[int | None]) -> None:
    """Replaying a run of failed answers: the record is final exactly when the counted ones reach 3; the
    unavailable ones never bring it closer."""
    counted = 0
    for attempt, status in enumerate(answers, 1):
        step = _step(status, counted, attempt=attempt)
        if step.action == "dead_letter":
            assert counted + 1 == 3 and status in (500, 408)
            return
        assert step.action == "retry"
        counted += step.counted
    assert counted < 3
