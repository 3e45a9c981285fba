"""spec.routes against the real lab broker: a key-prefix route and a JSON-field route on one worker, a
record matching both sent as two requests in route order, per-key order kept across retries of the
second request, records matching nothing skipped and still committed."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from lagpilot.testing.consumer import ConsumerProcess, committed, produce
from lagpilot.testing.target import Arrival, RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

PARTITIONS = 4


def orders(n: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value): keys user-0..9 and shop-0..4; every third order a refund; every seventh
    value not JSON at all."""
    out = []
    for i in range(n):
        key = f"user-{i % 10}" if i % 3 else f"shop-{i % 5}"
        value = b"garbage %d" % i if i % 7 == 0 else json.dumps(
            {"order": {"type": "refund" if i % 3 == 1 else "sale", "seq": i}}).encode()
        out.append((i % PARTITIONS, key.encode(), value))
    return out


def expected_paths(key: bytes, value: bytes) -> list[str]:
    paths = []
    if key.startswith(b"user-"):
        paths.append("/users")
    try:
        if json.loads(value)["order"]["type"] == "refund":
            paths.append("/refunds")
    except ValueError:
        pass
    return paths


def test_two_routes_one_record_two_requests_in_route_order_per_key_order_across_retries(
        bootstrap: str, topic_factory: Callable[..., str], target: RecordingTarget,
        run_consumer: Callable[..., ConsumerProcess]) -> None:
    topic = topic_factory(partitions=PARTITIONS, prefix="routes")
    records = orders(600)
    assert produce(bootstrap, topic, records) == 600
    base = target.url.rsplit("/", 1)[0]
    routes = [
        {"name": "users", "match": {"key": {"prefix": "user-"}}, "target": {"url": f"{base}/users"}},
        {"name": "refunds", "match": {"json": {"path": "order.type", "equals": "refund"}},
         "target": {"url": f"{base}/refunds"}},
    ]
    target.reject_path("/refunds", status=503, count=40)  # the second route fails for a while
    cp = run_consumer("--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", f"g-{topic}",
                      "--target-url", f"{base}/unused", "--partitions", f"0-{PARTITIONS - 1}", "--threads", "8",
                      "--commit-interval-ms", "200", "--initial-backoff-ms", "20", "--max-backoff-ms", "200",
                      "--max-attempts", "1000", "--routes", json.dumps(routes), "--log-format", "json")
    cp.wait_ready()
    want: dict[tuple[int, int], list[str]] = {}
    offsets = [0] * PARTITIONS
    for part, key, value in records:
        want[(part, offsets[part])] = expected_paths(key, value)
        offsets[part] += 1
    requests = sum(len(p) for p in want.values())
    unmatched = sum(1 for p in want.values() if not p)
    assert 0 < unmatched < 600 and any(len(p) == 2 for p in want.values())

    def delivered() -> int:
        return sum(1 for a in target.arrivals() if a.accepted)

    wait_for(lambda: delivered() >= requests, timeout=180, what=f"{requests} requests accepted")
    wait_for(lambda: sum(committed(bootstrap, f"g-{topic}", topic, PARTITIONS).values()) == 600, timeout=30,
             what="every offset committed, the skipped records too")
    arrivals = target.arrivals()
    assert not any(a.path == "/unused" for a in arrivals), "with routes, --target-url only gives defaults"
    assert sum(1 for a in arrivals if not a.accepted) == 40

    by_record: dict[tuple[int, int], list[Arrival]] = {}
    for a in arrivals:
        if a.accepted:
            by_record.setdefault((a.partition, a.offset), []).append(a)
    got = {rec: [a.path for a in sorted(reqs, key=lambda a: a.start)] for rec, reqs in by_record.items()}
    assert got == {rec: paths for rec, paths in want.items() if paths}, "each record: its routes, in order, once"

    # Per key (within its partition, as Kafka orders), a record's first request starts only after the
    # previous record's last request ended.
    key_of = {}
    offsets = [0] * PARTITIONS
    for part, key, _ in records:
        key_of[(part, offsets[part])] = key
        offsets[part] += 1
    last_end: dict[tuple[int, bytes], tuple[int, float]] = {}
    for rec in sorted(by_record, key=lambda r: min(a.start for a in by_record[r])):
        reqs = by_record[rec]
        key = (rec[0], key_of[rec])
        if key in last_end:
            prev_offset, prev_end = last_end[key]
            assert prev_offset < rec[1], f"{key!r}: offset {rec[1]} began before {prev_offset}"
            assert min(a.start for a in reqs) >= prev_end, f"{key!r}: offset {rec[1]} overlapped {prev_offset}"
        last_end[key] = (rec[1], max(a.end for a in reqs))
    assert cp.metric("lagpilot_records_unmatched_total") == unmatched
    assert cp.terminate() == 0
