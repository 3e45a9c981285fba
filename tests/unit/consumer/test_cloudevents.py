"""Records as CloudEvents, judged by the CloudEvents SDK's own HTTP parser (``cloudevents`` from PyPI):
binary and structured mode, attributes from ``ce_*`` Kafka headers or derived, W3C trace context and
mapped headers forwarded as themselves, the idempotency header."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from lagpilot_consumer.config import parse
from lagpilot_consumer.engine import RequestBuilder

pytestmark = pytest.mark.unit

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Msg:
    def __init__(self, value: bytes | None, headers: list[tuple[str, bytes | None]] | None = None,
                 offset: int = 42) -> None:
        self._value, self._headers, self._offset = value, headers, offset

    topic_ = "orders"

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"order-7"

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_123)


def builder(*flags: str) -> RequestBuilder:
    cfg = parse(["--bootstrap-servers", "k:1", "--topic", "orders", "--group-id", "g", "--target-url",
                 "http://t.test/in", "--partitions", "0", *flags], {})
    return RequestBuilder(cfg)


def http_message(b: RequestBuilder, msg: Msg) -> tuple[dict[str, str], bytes]:
    body, extra = b.body(msg)
    head = b.head(b.line(b.cfg.target_url), msg, len(body), extra)
    lines = head[:-4].split(b"\r\n")[1:]
    headers: dict[str, str] = {}
    for ln in lines:
        name, _, value = ln.partition(b": ")
        assert name.decode().lower() not in {h.lower() for h in headers}, f"duplicate header {name!r}"
        headers[name.decode()] = value.decode("latin-1")
    assert int(headers["Content-Length"]) == len(body)
    return headers, body


def test_binary_mode_attributes_from_ce_headers_and_derived_ones() -> None:
    b = builder("--format", "cloudevents-binary")
    msg = Msg(b'{"total": 9.5}', [("ce_type", b"com.shop.order.created"), ("ce_source", b"/shop/orders"),
                                  ("content-type", b"application/json"), ("ce_subject", b"caf\xc3\xa9 \"7\"")])
    headers, body = http_message(b, msg)
    event = from_http(HTTPMessage(headers, body), JSONFormat())
    a = event.get_attributes()
    assert (a["type"], a["source"], a["specversion"]) == ("com.shop.order.created", "/shop/orders", "1.0")
    assert a["id"] == "orders/3/42"  # derived: stable across redeliveries
    assert a["subject"] == 'café "7"'  # percent-encoded on the wire, decoded by the SDK
    assert event.get_data() == {"total": 9.5}
    assert a["time"] == dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC)  # the record's timestamp


def test_structured_mode_json_and_binary_data() -> None:
    b = builder("--format", "cloudevents-structured")
    headers, body = http_message(b, Msg(b'{"a": 1}', [("content-type", b"application/json")]))
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    event = from_http(HTTPMessage(headers, body), JSONFormat())
    assert event.get_data() == {"a": 1} and event.get_attributes()["source"] == "/topics/orders"
    assert event.get_attributes()["type"] == "io.lagpilot.kafka.record"

    headers, body = http_message(b, Msg(b"\x00\xffbin"))
    doc = json.loads(body)
    assert base64.b64decode(doc["data_base64"]) == b"\x00\xffbin"
    event = from_http(HTTPMessage(headers, body), JSONFormat())
    assert event.get_data() == b"\x00\xffbin"


def test_a_record_that_is_already_a_structured_cloudevent_goes_as_it_is() -> None:
    doc = b'{"specversion":"1.0","id":"x-1","source":"/s","type":"t","data":{"k":1}}'
    for mode in ("cloudevents-binary", "cloudevents-structured"):
        headers, body = http_message(builder("--format", mode),
                                     Msg(doc, [("content-type", b"application/cloudevents+json")]))
        assert body == doc and headers["Content-Type"] == "application/cloudevents+json"
        assert from_http(HTTPMessage(headers, body), JSONFormat()).get_attributes()["id"] == "x-1"


def test_trace_context_mapped_headers_and_idempotency_key() -> None:
    b = builder("--header-mapping", "X-Tenant", "--idempotency-header", "Idempotency-Key",
                "--headers", '{"Content-Type": "application/json"}')
    headers, body = http_message(b, Msg(b"v", [("traceparent", TRACEPARENT), ("tracestate", b"rojo=00f067aa"),
                                               ("X-Tenant", b"acme"), ("other", b"x")]))
    assert headers["traceparent"] == TRACEPARENT.decode() and headers["tracestate"] == "rojo=00f067aa"
    assert headers["X-Tenant"] == "acme" and "other" not in headers
    assert headers["X-Kafka-Header-traceparent"] == TRACEPARENT.decode()  # still there as before
    assert headers["Idempotency-Key"] == "orders/3/42"
    assert headers["Content-Type"] == "application/json" and body == b"v"


def test_one_builder_serves_records_of_several_topics_each_named_by_its_own() -> None:
    """A worker reading orders and payments: the topic header, the CloudEvents id and source and the
    idempotency key come from each record's topic, not from the configuration."""
    cfg = parse(["--bootstrap-servers", "k:1", "--topic", "orders,payments", "--group-id", "g", "--target-url",
                 "http://t.test/in", "--partitions", "0", "--format", "cloudevents-binary",
                 "--idempotency-header", "Idempotency-Key"], {})
    b = RequestBuilder(cfg)
    seen = {}
    for topic in ("orders", "payments"):
        msg = Msg(b"{}", [("content-type", b"application/json")])
        msg.topic_ = topic
        headers, body = http_message(b, msg)
        event = from_http(HTTPMessage(headers, body), JSONFormat())
        seen[topic] = (headers["X-Lagpilot-Topic"], headers["Idempotency-Key"], event.get_attributes()["source"],
                       event.get_attributes()["id"])
    assert seen == {"orders": ("orders", "orders/3/42", "/topics/orders", "orders/3/42"),
                    "payments": ("payments", "payments/3/42", "/topics/payments", "payments/3/42")}


def test_raw_mode_is_unchanged_and_sends_no_cloudevents_headers() -> None:
    headers, body = http_message(builder(), Msg(b"v", [("ce_type", b"t")]))
    assert body == b"v" and not any(h.lower().startswith("ce-") for h in headers)
    assert "Idempotency-Key" not in headers


def test_bad_header_names_are_refused_at_start() -> None:
    from lagpilot_consumer.config import ConfigError

    with pytest.raises(ConfigError, match="not an HTTP token"):
        builder("--idempotency-header", "Idempotency Key")
