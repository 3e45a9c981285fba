"""The request bytes a record becomes (the engine's fast path builds them directly)."""

from __future__ import annotations

import base64

import pytest

from lagpilot_consumer.config import parse
from lagpilot_consumer.engine import RequestBuilder

pytestmark = pytest.mark.unit


class Msg:
    def __init__(self, key: bytes | None, headers: list[tuple[str, bytes | None]] | None,
                 ts: tuple[int, int] = (1, 1700000000000)) -> None:
        self._key, self._headers, self._ts = key, headers, ts

    topic_ = "t"

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return self._ts


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    assert raw.endswith(b"\r\n\r\n")
    line, *rest = raw[:-4].split(b"\r\n")
    return line.decode(), [(n.decode(), v) for n, _, v in (h.partition(b": ") for h in rest)]


def builder(*flags: str, env: dict[str, str] | None = None) -> RequestBuilder:
    cfg = parse(["--bootstrap-servers", "k:1", "--topic", "t", "--group-id", "g", "--target-url",
                 "http://example.test:8080/in?x=1", "--partitions", "0", "--pod-name", "w-1", *flags], env or {})
    return RequestBuilder(cfg)


def test_record_headers_and_configured_ones() -> None:
    b = builder("--headers", '{"X-Lagpilot-Offset": "nope", "Content-Length": "9"}',
                env={"LAGPILOT_HEADER_Authorization": "Bearer x"})
    line, headers = parse_head(b.head(b.line(b.cfg.target_url),
                                      Msg(b"k\n", [("trace id", b"abc"), ("bin", b"\x00")]), 5))
    h = dict(headers)
    assert line == "POST /in?x=1 HTTP/1.1"
    assert h["Host"] == b"example.test:8080"
    assert h["X-Lagpilot-Worker"] == b"w-1"
    assert (h["X-Lagpilot-Topic"], h["X-Lagpilot-Partition"], h["X-Lagpilot-Offset"]) == (b"t", b"3", b"42")
    assert h["X-Lagpilot-Timestamp"] == b"1700000000000"
    assert h["X-Lagpilot-Key-Encoding"] == b"base64" and base64.b64decode(h["X-Lagpilot-Key"]) == b"k\n"
    assert h["X-Kafka-Header-trace_id"] == b"abc"
    assert h["X-Lagpilot-Base64-Headers"] == b"bin" and base64.b64decode(h["X-Kafka-Header-bin"]) == b"\x00"
    assert h["Authorization"] == b"Bearer x"
    names = [n.lower() for n, _ in headers]
    assert len(names) == len(set(names)), "a configured header never duplicates one of ours"
    assert h["Content-Length"] == b"5"


def test_no_key_no_timestamp_no_headers() -> None:
    b = builder()
    _, headers = parse_head(b.head(b.line(b.cfg.target_url), Msg(None, None, (0, 0)), 0))
    names = {n for n, _ in headers}
    assert "X-Lagpilot-Key" not in names and "X-Lagpilot-Timestamp" not in names
    assert not any(n.startswith("X-Kafka-Header-") for n in names)


def test_a_configured_host_header_replaces_ours_and_redirect_targets_keep_it() -> None:
    b = builder("--headers", '{"Host": "api.internal"}')
    line, headers = parse_head(b.head(b.line("http://example.test:8080/moved"), Msg(b"k", None), 1))
    assert line == "POST /moved HTTP/1.1"
    assert dict(headers)["Host"] == b"api.internal"
    assert [n for n, _ in headers].count("Host") == 1
