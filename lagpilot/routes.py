"""Routes: which HTTP requests a record becomes (``spec.routes``).

A route is a match and a target. A record is sent to every route it matches, in route order, one request
after the other, as one unit: the record is done when its last request is done, and a retry resumes at
the request that failed. A record that matches no route is skipped (or dead-lettered).

The same document travels from the ConsumerGroup to the workers (``LAGPILOT_ROUTES``), so the operator
validates it with :func:`parse_routes` and the worker runs what that returns: both sides read one syntax.
Standard library only.

Match conditions (all of those given must hold; an empty match takes every record):

- ``topic``: ``{exact|prefix|regex: ...}`` on the record's topic;
- ``key``: the same on the key (compared as UTF-8 bytes; a record without a key never matches);
- ``header``: ``{name: ..., exact|prefix|regex: ...}``: some Kafka header of that name (case-sensitive, as
  Kafka's are) with such a value; with no value condition, the header being there is enough;
- ``json``: ``{path: "order.items[0].sku", equals|in|exists|prefix|regex: ...}`` on the value parsed as
  JSON; a value that is not JSON, or has nothing at the path, matches no condition but ``exists: false``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

UNMATCHED = ("skip", "deadLetter")
_TEXT_OPS = ("exact", "prefix", "regex")
_JSON_OPS = ("equals", "in", "exists", "prefix", "regex")
_METHODS = ("POST", "PUT", "PATCH")
_MISSING = object()
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
MAX_ROUTES = 32


class RecordView(Protocol):
    """What a match reads of a record (a confluent-kafka Message has all of these)."""

    def topic(self) -> Any: ...
    def key(self) -> Any: ...
    def value(self) -> Any: ...
    def headers(self) -> Any: ...


@dataclass(frozen=True)
class TextMatch:
    """One of exact / prefix / regex (``re.search``) on bytes."""

    op: str
    text: str
    _pattern: re.Pattern[bytes] | None = field(default=None, compare=False, repr=False)

    def test(self, data: bytes) -> bool:
        if self.op == "exact":
            return data == self.text.encode()
        if self.op == "prefix":
            return data.startswith(self.text.encode())
        assert self._pattern is not None
        return self._pattern.search(data) is not None

    def to_doc(self) -> dict[str, str]:
        return {self.op: self.text}


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: TextMatch | None = None

    def test(self, headers: Sequence[tuple[str, bytes | None]] | None) -> bool:
        for name, value in headers or ():
            if name == self.name and (self.value is None or (value is not None and self.value.test(value))):
                return True
        return False

    def to_doc(self) -> dict[str, str]:
        return {"name": self.name, **(self.value.to_doc() if self.value else {})}


@dataclass(frozen=True)
class JsonMatch:
    path: str
    steps: tuple[str | int, ...]
    op: str
    operand: Any
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def test(self, document: Any) -> bool:
        found = _MISSING if document is _MISSING else lookup(document, self.steps)
        if self.op == "exists":
            return (found is not _MISSING) == bool(self.operand)
        if found is _MISSING:
            return False
        if self.op == "equals":
            return _same_json(found, self.operand)
        if self.op == "in":
            return any(_same_json(found, v) for v in self.operand)
        if not isinstance(found, str):
            return False
        if self.op == "prefix":
            return found.startswith(self.operand)
        assert self._pattern is not None
        return self._pattern.search(found) is not None

    def to_doc(self) -> dict[str, Any]:
        return {"path": self.path, self.op: self.operand}


@dataclass(frozen=True)
class Match:
    topic: TextMatch | None = None
    key: TextMatch | None = None
    header: HeaderMatch | None = None
    json: JsonMatch | None = None

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in ("topic", "key", "header", "json"):
            cond = getattr(self, name)
            if cond is not None:
                doc[name] = cond.to_doc()
        return doc


@dataclass(frozen=True)
class RouteTarget:
    """What a route changes of ``spec.target``; None keeps that field of it (TLS, auth, timeouts, codes and
    format are always ``spec.target``'s)."""

    url: str | None = None
    method: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.url is not None:
            doc["url"] = self.url
        if self.method is not None:
            doc["method"] = self.method
        if self.headers:
            doc["headers"] = dict(self.headers)
        return doc


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    target: RouteTarget

    def matches(self, record: RecordView, document: Any = _MISSING) -> bool:
        """``document`` is the value parsed as JSON (or ``_MISSING``); see :func:`routes_for`."""
        m = self.match
        if m.topic is not None and not m.topic.test(str(record.topic() or "").encode()):
            return False
        if m.key is not None:
            key = record.key()
            if key is None or not m.key.test(bytes(key)):
                return False
        if m.header is not None and not m.header.test(record.headers()):
            return False
        return m.json is None or m.json.test(document)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "match": self.match.to_doc(), "target": self.target.to_doc()}


class RouteError(ValueError):
    """A route that cannot be used; ``path`` is where (``routes[1].match.key``), ``str()`` says why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def routes_for(routes: Sequence[Route], record: RecordView) -> tuple[int, ...]:
    """The indexes of the routes ``record`` goes to, in route order. The value is parsed as JSON at most
    once, and only when some route asks about it; a value that is not JSON matches no JSON condition."""
    document: Any = _MISSING
    parsed = False
    chosen: list[int] = []
    for i, route in enumerate(routes):
        if route.match.json is not None and not parsed:
            parsed = True
            document = parse_json(record.value())
        if route.matches(record, document):
            chosen.append(i)
    return tuple(chosen)


def parse_json(value: Any) -> Any:
    if value is None:
        return _MISSING
    try:
        return json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return _MISSING


def lookup(document: Any, steps: Sequence[str | int]) -> Any:
    """The value at ``steps`` (object keys and list indexes), or ``_MISSING``."""
    here = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(here, list) or step >= len(here):
                return _MISSING
            here = here[step]
        else:
            if not isinstance(here, dict) or step not in here:
                return _MISSING
            here = here[step]
    return here


def parse_path(path: str) -> tuple[str | int, ...]:
    """``order.items[0].sku`` (a leading ``$.`` is allowed) into ``("order", "items", 0, "sku")``. A name
    is anything but ``.``, ``[`` and ``]``; names holding those cannot be reached."""
    text = path[2:] if path.startswith("$.") else path
    if not text:
        raise ValueError("is empty")
    steps: list[str | int] = []
    pos = 0
    while pos < len(text):
        if steps:
            if text[pos] == ".":
                pos += 1
                if pos >= len(text) or text[pos] in ".[]":
                    raise ValueError(f"{path!r}: a name must follow '.'")
            elif text[pos] != "[":
                raise ValueError(f"{path!r}: expected '.' or '[' at position {pos}")
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise ValueError(f"{path!r}: expected a name or [index] at position {pos}")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return tuple(steps)


def parse_routes(raw: Any, path: str = "routes") -> tuple[Route, ...]:
    """Routes from their document (a list of ``{name?, match?, target?}``), or :class:`RouteError`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RouteError(path, "must be a list of routes")
    if len(raw) > MAX_ROUTES:
        raise RouteError(path, f"at most {MAX_ROUTES} routes, got {len(raw)}")
    routes: list[Route] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise RouteError(where, "must be an object with match and target")
        _only(item, ("name", "match", "target"), where)
        name = item.get("name", f"route-{i}")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
            raise RouteError(f"{where}.name", "must be 1-63 of [A-Za-z0-9._-], starting with a letter or digit")
        if name in names:
            raise RouteError(f"{where}.name", f"{name!r} is used by an earlier route")
        names.add(name)
        routes.append(Route(name, _parse_match(item.get("match"), f"{where}.match"),
                            _parse_target(item.get("target"), f"{where}.target")))
    return tuple(routes)


def routes_document(routes: Sequence[Route]) -> str:
    """The canonical JSON the operator hands the workers (stable, so an unchanged spec changes no pod)."""
    return json.dumps([r.to_doc() for r in routes], sort_keys=True, separators=(",", ":"))


def load_routes(text: str) -> tuple[Route, ...]:
    """Routes from ``LAGPILOT_ROUTES`` / ``--routes`` (JSON text)."""
    if not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RouteError("routes", f"is not JSON ({exc})") from None
    return parse_routes(raw)


def _only(raw: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    extra = sorted(set(raw) - set(allowed))
    if extra:
        raise RouteError(where, f"unknown field {extra[0]!r} (allowed: {', '.join(allowed)})")


def _text_match(raw: Mapping[str, Any], where: str, extra: Sequence[str] = ()) -> TextMatch | None:
    _only(raw, (*_TEXT_OPS, *extra), where)
    ops = [op for op in _TEXT_OPS if op in raw]
    if len(ops) > 1:
        raise RouteError(where, f"names one of {', '.join(_TEXT_OPS)}, got {', '.join(ops)}")
    if not ops:
        return None
    op = ops[0]
    text = raw[op]
    if not isinstance(text, str):
        raise RouteError(f"{where}.{op}", "must be a string")
    pattern = None
    if op == "regex":
        try:
            pattern = re.compile(text.encode())
        except re.error as exc:
            raise RouteError(f"{where}.regex", f"is not a valid regular expression ({exc})") from None
    return TextMatch(op, text, pattern)


def _parse_match(raw: Any, where: str) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, Mapping):
        raise RouteError(where, "must be an object")
    _only(raw, ("topic", "key", "header", "json"), where)
    conds: dict[str, Any] = {}
    for name in ("topic", "key"):
        if name in raw:
            sub = raw[name]
            if not isinstance(sub, Mapping):
                raise RouteError(f"{where}.{name}", "must be an object with exact, prefix or regex")
            tm = _text_match(sub, f"{where}.{name}")
            if tm is None:
                raise RouteError(f"{where}.{name}", "names one of exact, prefix, regex")
            conds[name] = tm
    if "header" in raw:
        sub = raw["header"]
        hw = f"{where}.header"
        if not isinstance(sub, Mapping) or not isinstance(sub.get("name"), str) or not sub["name"]:
            raise RouteError(hw, "must be an object with a name (and optionally exact, prefix or regex)")
        conds["header"] = HeaderMatch(sub["name"], _text_match(sub, hw, extra=("name",)))
    if "json" in raw:
        conds["json"] = _parse_json_match(raw["json"], f"{where}.json")
    return Match(**conds)


def _parse_json_match(raw: Any, where: str) -> JsonMatch:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("path"), str):
        raise RouteError(where, "must be an object with a path and one of " + ", ".join(_JSON_OPS))
    _only(raw, ("path", *_JSON_OPS), where)
    try:
        steps = parse_path(raw["path"])
    except ValueError as exc:
        raise RouteError(f"{where}.path", str(exc)) from None
    ops = [op for op in _JSON_OPS if op in raw]
    if len(ops) != 1:
        raise RouteError(where, f"names exactly one of {', '.join(_JSON_OPS)}" + (f", got {', '.join(ops)}"
                                                                                  if ops else ""))
    op = ops[0]
    operand = raw[op]
    pattern = None
    if op == "in" and not isinstance(operand, list):
        raise RouteError(f"{where}.in", "must be a list of values")
    if op == "exists" and not isinstance(operand, bool):
        raise RouteError(f"{where}.exists", "must be true or false")
    if op in ("prefix", "regex") and not isinstance(operand, str):
        raise RouteError(f"{where}.{op}", "must be a string")
    if op == "regex":
        try:
            pattern = re.compile(operand)
        except re.error as exc:
            raise RouteError(f"{where}.regex", f"is not a valid regular expression ({exc})") from None
    return JsonMatch(raw["path"], steps, op, operand, pattern)


def _parse_target(raw: Any, where: str) -> RouteTarget:
    if raw is None:
        return RouteTarget()
    if not isinstance(raw, Mapping):
        raise RouteError(where, "must be an object")
    _only(raw, ("url", "method", "headers"), where)
    url = raw.get("url")
    if url is not None and (not isinstance(url, str) or not _URL.match(url)):
        raise RouteError(f"{where}.url", "must be an http:// or https:// URL")
    method = raw.get("method")
    if method is not None and method not in _METHODS:
        raise RouteError(f"{where}.method", f"must be one of {', '.join(_METHODS)}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise RouteError(f"{where}.headers", "must map header names to strings")
    for name in headers:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise RouteError(f"{where}.headers", f"{name!r} is not a valid HTTP header name")
    return RouteTarget(url, method, tuple(sorted(headers.items())))


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)
