"""spec.routes: the syntax both the operator and the workers read, and which routes a record goes to."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot.routes import (
    RouteError,
    load_routes,
    lookup,
    parse_path,
    parse_routes,
    routes_document,
    routes_for,
)


class Rec:
    def __init__(self, key: bytes | None = b"k", value: bytes | None = b"{}", topic: str = "orders",
                 headers: list[tuple[str, bytes | None]] | None = None) -> None:
        self._k, self._v, self._t, self._h = key, value, topic, headers

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._h


def one(match: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "r", "match": match}]


ORDER = json.dumps({"order": {"type": "refund", "total": 12.5, "items": [{"sku": "A-1"}], "vip": True}}).encode()

# (match, record, expected)
MATCH_TABLE: list[tuple[dict[str, Any], Rec, bool]] = [
    ({}, Rec(), True),
    ({"topic": {"exact": "orders"}}, Rec(), True),
    ({"topic": {"exact": "order"}}, Rec(), False),
    ({"topic": {"prefix": "ord"}}, Rec(), True),
    ({"topic": {"regex": "^o.*s$"}}, Rec(), True),
    ({"key": {"exact": "k"}}, Rec(), True),
    ({"key": {"exact": "k"}}, Rec(key=None), False),
    ({"key": {"prefix": "user-"}}, Rec(key=b"user-7"), True),
    ({"key": {"prefix": "user-"}}, Rec(key=b"users-7"), False),
    ({"key": {"regex": "^user-[0-9]+$"}}, Rec(key=b"user-77"), True),
    ({"key": {"regex": "^user-[0-9]+$"}}, Rec(key=b"user-7a"), False),
    ({"key": {"prefix": "\u00e9"}}, Rec(key="\u00e9t\u00e9".encode()), True),  # compared as UTF-8
    ({"key": {"exact": "k"}}, Rec(key=b"\xff\xfe"), False),  # not UTF-8: no match, no error
    ({"header": {"name": "type"}}, Rec(headers=[("type", b"x")]), True),
    ({"header": {"name": "type"}}, Rec(headers=[("Type", b"x")]), False),  # Kafka names are case-sensitive
    ({"header": {"name": "type"}}, Rec(headers=None), False),
    ({"header": {"name": "type", "exact": "x"}}, Rec(headers=[("type", b"y"), ("type", b"x")]), True),
    ({"header": {"name": "type", "exact": "x"}}, Rec(headers=[("type", None)]), False),
    ({"header": {"name": "type", "prefix": "pay"}}, Rec(headers=[("type", b"payment.v2")]), True),
    ({"json": {"path": "order.type", "equals": "refund"}}, Rec(value=ORDER), True),
    ({"json": {"path": "$.order.type", "equals": "refund"}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.type", "equals": "sale"}}, Rec(value=ORDER), False),
    ({"json": {"path": "order.total", "equals": 12.5}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.vip", "equals": 1}}, Rec(value=ORDER), False),  # true is not 1
    ({"json": {"path": "order.vip", "equals": True}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.items[0].sku", "prefix": "A-"}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.items[1].sku", "exists": True}}, Rec(value=ORDER), False),
    ({"json": {"path": "order.items[1].sku", "exists": False}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.type", "in": ["sale", "refund"]}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.type", "regex": "^ref"}}, Rec(value=ORDER), True),
    ({"json": {"path": "order.total", "regex": "1"}}, Rec(value=ORDER), False),  # not a string
    ({"json": {"path": "order", "exists": True}}, Rec(value=b"not json"), False),
    ({"json": {"path": "order", "exists": False}}, Rec(value=b"not json"), True),
    ({"json": {"path": "order", "exists": True}}, Rec(value=None), False),
    ({"json": {"path": "order.type", "equals": "refund"}}, Rec(value=b"[1,2]"), False),
    ({"json": {"path": "a", "exists": True}}, Rec(value=b"[" * 100_000), False),  # too deep: not JSON
    ({"key": {"prefix": "user-"}, "json": {"path": "order.type", "equals": "refund"}},
     Rec(key=b"user-1", value=ORDER), True),
    ({"key": {"prefix": "user-"}, "json": {"path": "order.type", "equals": "refund"}},
     Rec(key=b"admin", value=ORDER), False),
]


@pytest.mark.parametrize(("match", "record", "expected"), MATCH_TABLE)
def test_a_match_takes_exactly_the_records_it_describes(match: dict[str, Any], record: Rec, expected: bool) -> None:
    routes = parse_routes(one(match))
    assert routes_for(routes, record) == ((0,) if expected else ())


def test_a_record_goes_to_every_route_it_matches_in_route_order() -> None:
    routes = parse_routes([
        {"name": "users", "match": {"key": {"prefix": "user-"}}, "target": {"url": "http://a/users"}},
        {"name": "refunds", "match": {"json": {"path": "order.type", "equals": "refund"}}},
        {"name": "everything"},
    ])
    assert routes_for(routes, Rec(key=b"user-1", value=ORDER)) == (0, 1, 2)
    assert routes_for(routes, Rec(key=b"admin", value=ORDER)) == (1, 2)
    assert routes_for(routes, Rec(key=b"user-1", value=b"x")) == (0, 2)


def test_the_value_is_parsed_once_and_only_when_a_route_asks() -> None:
    calls = []

    class Counting(Rec):
        def value(self) -> bytes | None:
            calls.append(1)
            return ORDER

    no_json = parse_routes(one({"key": {"exact": "k"}}))
    assert routes_for(no_json, Counting()) == (0,) and calls == []
    two = parse_routes([{"name": "a", "match": {"json": {"path": "order", "exists": True}}},
                        {"name": "b", "match": {"json": {"path": "order.type", "equals": "refund"}}}])
    assert routes_for(two, Counting()) == (0, 1) and calls == [1]


# (document, path of the error, words in the reason)
BAD_TABLE: list[tuple[Any, str, str]] = [
    ({"a": 1}, "routes", "must be a list"),
    ([1], "routes[0]", "must be an object"),
    ([{"name": "a"}, {"name": "a"}], "routes[1].name", "used by an earlier route"),
    ([{"name": "-a"}], "routes[0].name", "1-63"),
    ([{"match": {"kee": {"exact": "x"}}}], "routes[0].match", "unknown field 'kee'"),
    ([{"match": {"key": {"exact": "x", "prefix": "y"}}}], "routes[0].match.key", "names one of"),
    ([{"match": {"key": {}}}], "routes[0].match.key", "names one of"),
    ([{"match": {"key": {"regex": "("}}}], "routes[0].match.key.regex", "not a valid regular expression"),
    ([{"match": {"key": {"exact": 3}}}], "routes[0].match.key.exact", "must be a string"),
    ([{"match": {"header": {"exact": "x"}}}], "routes[0].match.header", "with a name"),
    ([{"match": {"json": {"path": "a..b", "exists": True}}}], "routes[0].match.json.path", "must follow"),
    ([{"match": {"json": {"path": "a[x]", "exists": True}}}], "routes[0].match.json.path", "expected"),
    ([{"match": {"json": {"path": "a"}}}], "routes[0].match.json", "exactly one of"),
    ([{"match": {"json": {"path": "a", "in": "x"}}}], "routes[0].match.json.in", "a list"),
    ([{"match": {"json": {"path": "a", "exists": "yes"}}}], "routes[0].match.json.exists", "true or false"),
    ([{"target": {"url": "ftp://x"}}], "routes[0].target.url", "http:// or https://"),
    ([{"target": {"method": "GET"}}], "routes[0].target.method", "one of POST"),
    ([{"target": {"headers": {"bad name": "x"}}}], "routes[0].target.headers", "not a valid HTTP header"),
    ([{"target": {"headers": {"X-A": 1}}}], "routes[0].target.headers", "header names to strings"),
    ([{}] * 33, "routes", "at most 32"),
]


@pytest.mark.parametrize(("doc", "path", "words"), BAD_TABLE)
def test_a_bad_route_is_refused_naming_where_and_why(doc: Any, path: str, words: str) -> None:
    with pytest.raises(RouteError) as err:
        parse_routes(doc)
    assert err.value.path == path
    assert words in err.value.reason


def test_the_document_the_workers_get_reads_back_as_the_same_routes() -> None:
    routes = parse_routes([
        {"name": "users", "match": {"key": {"prefix": "user-"}, "header": {"name": "t", "regex": "^p"}},
         "target": {"url": "https://a/u?x=1", "method": "PUT", "headers": {"X-B": "2", "X-A": "1"}}},
        {"match": {"json": {"path": "$.a[0].b", "in": [1, "x", None]}}},
    ])
    text = routes_document(routes)
    assert load_routes(text) == routes
    assert routes_document(load_routes(text)) == text  # stable: the same spec gives the same pod env
    assert [r.name for r in routes] == ["users", "route-1"]
    assert load_routes("") == ()
    with pytest.raises(RouteError, match="not JSON"):
        load_routes("[")


@pytest.mark.parametrize(("path", "steps"), [
    ("a", ("a",)), ("$.a.b", ("a", "b")), ("a[0]", ("a", 0)), ("a[0][12].c", ("a", 0, 12, "c")),
    ("[1]", (1,)), ("a-b.c_d", ("a-b", "c_d")),
])
def test_a_path_is_names_and_indexes(path: str, steps: tuple[str | int, ...]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize("path", ["", "$.", ".a", "a.", "a..b", "a[", "a[x]", "a]b", "a[0]b"])
def test_a_malformed_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


names = st.text(st.characters(blacklist_characters=".[]", blacklist_categories=("Cs",)), min_size=1, max_size=5)
steps_st = st.lists(st.one_of(names, st.integers(0, 20)), min_size=1, max_size=6)


@given(steps_st)
def test_a_written_path_parses_back_and_finds_what_it_names(steps: list[str | int]) -> None:
    text = "".join(f"[{s}]" if isinstance(s, int) else (f".{s}" if i else s) for i, s in enumerate(steps))
    assert parse_path(text) == tuple(steps)
    document: Any = "leaf"
    for s in reversed(steps):
        document = [None] * s + [document] if isinstance(s, int) else {s: document}
    assert lookup(document, steps) == "leaf"
