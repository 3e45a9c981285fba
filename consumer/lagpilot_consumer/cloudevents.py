"""CloudEvents 1.0 over HTTP from Kafka records (pure). The Kafka protocol binding carries attributes as
``ce_<name>`` headers and the data's media type as ``content-type``; the HTTP binding wants them as
``ce-<name>`` headers (binary mode) or inside one JSON document (structured mode). Attributes a record
does not carry are derived: ``id`` from topic/partition/offset (unique and stable across redeliveries,
so a target can deduplicate), ``source`` from the topic, ``type`` a fixed name, ``time`` from the record
timestamp. A record that already is a structured CloudEvent (``content-type:
application/cloudevents+json``) is sent as it is, in either mode."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Sequence
from urllib.parse import quote

SPECVERSION = "1.0"
DEFAULT_TYPE = "io.lagpilot.kafka.record"
STRUCTURED = "application/cloudevents+json"
# The HTTP binding: header values are percent-encoded outside printable ASCII, and space, '"' and '%'.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def attributes(topic: str, partition: int, offset: int, timestamp_ms: int | None,
               headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[dict[str, str], str | None]:
    """The event's context attributes and its data content type (None: not known)."""
    attrs: dict[str, str] = {}
    content_type: str | None = None
    for name, value in headers or ():
        low = name.lower()
        text = (value or b"").decode("utf-8", "replace")
        if low.startswith("ce_") and len(low) > 3:
            attrs[low[3:]] = text
        elif low == "content-type":
            content_type = text
    attrs.setdefault("specversion", SPECVERSION)
    attrs.setdefault("id", f"{topic}/{partition}/{offset}")
    attrs.setdefault("source", f"/topics/{topic}")
    attrs.setdefault("type", DEFAULT_TYPE)
    if timestamp_ms is not None and "time" not in attrs:
        when = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
        attrs["time"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if content_type is None and "datacontenttype" in attrs:
        content_type = attrs["datacontenttype"]
    attrs.pop("datacontenttype", None)
    return attrs, content_type


def is_structured(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() == STRUCTURED


def binary_headers(attrs: dict[str, str], content_type: str | None) -> list[tuple[bytes, bytes]]:
    out = [(f"ce-{name}".encode(), quote(value, safe=_SAFE).encode()) for name, value in attrs.items()]
    if content_type:
        out.append((b"Content-Type", quote(content_type, safe=_SAFE + " ").encode()))
    return out


def structured_body(attrs: dict[str, str], content_type: str | None, value: bytes | None) -> bytes:
    """The JSON event: ``data`` when the data is JSON (a JSON media type and a JSON value), else
    ``data_base64`` so any bytes arrive exactly."""
    doc: dict[str, object] = dict(attrs)
    if content_type:
        doc["datacontenttype"] = content_type
    if value is not None:
        mt = (content_type or "").split(";")[0].strip().lower()
        data: object = None
        if mt == "application/json" or mt.endswith("+json") or mt == "text/json":
            try:
                data = json.loads(value)
            except ValueError:
                data = None
        elif mt.startswith("text/"):
            try:
                data = value.decode("utf-8")
            except UnicodeDecodeError:
                data = None
        if data is not None:
            doc["data"] = data
        else:
            doc["data_base64"] = base64.b64encode(value).decode()
    return json.dumps(doc, separators=(",", ":")).encode()
