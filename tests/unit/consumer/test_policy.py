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
    record_headers,
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


def test_record_headers() -> None:
    h = record_headers("t", 3, 42, b"k\n", 1700000000000, [("trace id", b"abc"), ("bin", b"\x00")],
                       [("Authorization", "Bearer x"), ("X-Lagpilot-Offset", "nope")])
    assert h["X-Lagpilot-Topic"] == "t"
    assert h["X-Lagpilot-Partition"] == "3"
    assert h["X-Lagpilot-Offset"] == "42"
    assert h["X-Lagpilot-Timestamp"] == "1700000000000"
    assert h["X-Lagpilot-Key-Encoding"] == "base64"
    assert base64.b64decode(h["X-Lagpilot-Key"]) == b"k\n"
    assert h["X-Kafka-Header-trace_id"] == b"abc"
    assert h["X-Lagpilot-Base64-Headers"] == "bin"
    assert h["Authorization"] == "Bearer x"
    assert "X-Lagpilot-Key" not in record_headers("t", 0, 0, None, None, None)
