"""HeadersOnce: a message's ``headers()`` reaches confluent-kafka at most once. Its second call for a
header name that is not UTF-8 returns a list holding a NULL (reading it crashes the interpreter), so the
first outcome, a value or an error, is what every attempt sees."""

from __future__ import annotations

import pytest

from lagpilot_consumer.engine import HeadersOnce, UnreadableHeaders

pytestmark = pytest.mark.unit


class BrokenHeaders:
    """Like confluent-kafka 2.16.1 for a header name ``b"\\xff"``: raises once, then returns garbage."""

    def __init__(self) -> None:
        self.calls = 0

    def headers(self) -> list[tuple[str, bytes]]:
        self.calls += 1
        if self.calls == 1:
            try:
                b"\xff".decode()
            except UnicodeDecodeError as exc:
                raise SystemError("headers returned a result with an exception set") from exc
        return [("garbage", b"")]

    def key(self) -> bytes:
        return b"k"


def test_an_unreadable_header_is_the_same_error_on_every_call_and_names_the_cause() -> None:
    msg = BrokenHeaders()
    wrapped = HeadersOnce(msg)
    for _ in range(3):
        with pytest.raises(UnreadableHeaders, match=r"not readable \(UnicodeDecodeError: 'utf-8' codec"):
            wrapped.headers()
    assert msg.calls == 1
    assert wrapped.key() == b"k"


def test_readable_headers_are_read_once_and_given_back() -> None:
    class Fine(BrokenHeaders):
        def headers(self) -> list[tuple[str, bytes]]:
            self.calls += 1
            return [("a", b"1")]

    msg = Fine()
    wrapped = HeadersOnce(msg)
    assert wrapped.headers() == wrapped.headers() == [("a", b"1")]
    assert msg.calls == 1
