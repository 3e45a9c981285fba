"""LagReader and `lagpilot lag` against the real lab broker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from lagpilot.testing.offsets import commit, lags, produce
from lagpilot_operator.autoscale.offsets import (
    REQUESTS_PER_POLL,
    LagReader,
    TopicNotFound,
    admin_client,
    offsets_client,
)

pytestmark = pytest.mark.lab

LAGPILOT = str(Path(sys.executable).parent / "lagpilot")


def test_group_with_committed_offsets(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3)
    produce(bootstrap, topic, {0: 30, 1: 20, 2: 5})
    commit(bootstrap, "g-committed", topic, {0: 10, 1: 20})
    snap = LagReader(bootstrap).read("g-committed", [topic])
    assert lags(snap) == {0: (0, 30, 10, 20), 1: (0, 20, 20, 0), 2: (0, 5, None, 5)}
    assert snap.total == 25 and snap.max_partition == 20
    assert snap.partitions[2].no_commit and not snap.partitions[0].no_commit
    assert snap.requests == REQUESTS_PER_POLL


def test_retention_deleted_records_count_from_log_start_and_warn(bootstrap: str,
                                                                 topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    produce(bootstrap, topic, {0: 100})
    commit(bootstrap, "g-deleted", topic, {0: 10})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_records([TopicPartition(topic, 0, 60)], operation_timeout=30).values():
        fut.result(timeout=30)
    snap = LagReader(bootstrap).read("g-deleted", [topic])
    (p,) = snap.partitions
    assert (p.log_start, p.log_end, p.committed, p.lag) == (60, 100, 10, 40)
    assert p.behind_log_start
    assert snap.warnings == [f"{topic}[0]: committed offset 10 is below log-start 60: 50 records deleted unread"]


def test_topic_without_commits_follows_the_reset_policy(bootstrap: str,
                                                        topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    produce(bootstrap, topic, {0: 7, 1: 3})
    reader = LagReader(bootstrap)
    earliest = reader.read("g-never", [topic], "earliest")
    latest = reader.read("g-never", [topic], "latest")
    assert lags(earliest) == {0: (0, 7, None, 7), 1: (0, 3, None, 3)}
    assert lags(latest) == {0: (0, 7, None, 0), 1: (0, 3, None, 0)}
    assert all(p.no_commit for p in earliest.partitions + latest.partitions)


def test_empty_topic_has_zero_lag(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    snap = LagReader(bootstrap).read("g-empty", [topic])
    assert lags(snap) == {0: (0, 0, None, 0), 1: (0, 0, None, 0)}


def test_added_partition_appears_without_commit(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    produce(bootstrap, topic, {0: 4})
    commit(bootstrap, "g-grow", topic, {0: 4})
    reader = LagReader(bootstrap)
    assert lags(reader.read("g-grow", [topic])) == {0: (0, 4, 4, 0)}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(topic, 2)])[topic].result(timeout=30)
    produce(bootstrap, topic, {1: 6})
    snap = reader.read("g-grow", [topic])
    assert lags(snap) == {0: (0, 4, 4, 0), 1: (0, 6, None, 6)}
    assert snap.partitions[1].no_commit


def test_requests_per_poll_constant_from_1_to_300_partitions(bootstrap: str,
                                                             topic_factory: Callable[..., str]) -> None:
    small, large = topic_factory(partitions=1), topic_factory(partitions=300)
    produce(bootstrap, large, {p: 1 for p in range(0, 300, 7)})
    reader = LagReader(bootstrap)
    counts = {}
    for topic in (small, large):
        before = reader.requests_total
        snap = reader.read("g-count", [topic])
        counts[topic] = (reader.requests_total - before, len(snap.partitions))
    assert counts[small] == (REQUESTS_PER_POLL, 1)
    assert counts[large] == (REQUESTS_PER_POLL, 300)


def test_clients_are_reused_across_polls_and_readers(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    a, b = LagReader(bootstrap), LagReader(bootstrap)
    a.read("g", [topic])
    b.read("g", [topic])
    assert a.client is b.client is admin_client(bootstrap)
    assert admin_client(bootstrap, {"client.rack": "x"}) is not a.client  # other settings: own client
    assert offsets_client(bootstrap, "g") is offsets_client(bootstrap, "g") is not offsets_client(bootstrap, "h")


def test_unknown_topic_is_reported(bootstrap: str) -> None:
    with pytest.raises(TopicNotFound, match="no-such-topic"):
        LagReader(bootstrap).read("g", ["no-such-topic"])


# --- the CLI as a user runs it -----------------------------------------------------------------------------

def lag_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAGPILOT, "lag", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_json_matches_the_reader(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    produce(bootstrap, topic, {0: 12, 1: 3})
    commit(bootstrap, "g-cli", topic, {0: 2, 1: 3})
    r = lag_cli("-b", bootstrap, "-g", "g-cli", "-o", "json")  # topic found from the group's commits
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["total"] == 10 and out["maxPartition"] == 10 and out["status"] == "OK" and out["requests"] == 4
    assert [(p["partition"], p["committed"], p["lag"], p["status"]) for p in out["partitions"]] == \
        [(0, 2, 10, "OK"), (1, 3, 0, "OK")]


def test_cli_table_lists_every_partition(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3)
    produce(bootstrap, topic, {1: 5})
    r = lag_cli("-b", bootstrap, "-g", "g-table", "-t", topic)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if topic in line]
    assert len(rows) == 3
    assert ("no commit" in rows[1] and "│   5 │" in rows[1].replace(" 5 │", "   5 │", 0)) or " 5 " in rows[1]
    assert "total lag 5, max partition 5, status OK" in r.stdout


def test_cli_watch_reports_stall_and_exits_1(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    produce(bootstrap, topic, {0: 9})
    commit(bootstrap, "g-stall", topic, {0: 4})
    r = lag_cli("-b", bootstrap, "-g", "g-stall", "-t", topic, "-o", "json", "--count", "4", "--interval", "0.5",
                "--window", "1")
    assert r.returncode == 1, r.stderr
    polls = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(polls) == 4
    assert polls[0]["status"] == "OK" and polls[-1]["status"] == "STALL"
    assert "committed offset 4 unchanged" in polls[-1]["partitions"][0]["reason"]


def test_cli_exit_1_when_records_were_deleted_unread(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    produce(bootstrap, topic, {0: 20})
    commit(bootstrap, "g-cli-deleted", topic, {0: 1})
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.delete_records([TopicPartition(topic, 0, 15)], operation_timeout=30).values():
        fut.result(timeout=30)
    r = lag_cli("-b", bootstrap, "-g", "g-cli-deleted", "-t", topic)
    assert r.returncode == 1
    assert "14 records deleted unread" in r.stdout


def test_cli_unreachable_broker_one_clear_line_exit_3() -> None:
    r = lag_cli("-b", "127.0.0.1:1", "-g", "g", "-t", "x", "--timeout", "2", timeout=60)
    assert r.returncode == 3
    assert r.stdout == ""
    assert r.stderr.splitlines() == ["lagpilot lag: cannot reach Kafka at 127.0.0.1:1: no answer within 2s"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["-t", "no-such-topic"], "topic 'no-such-topic' not found", id="unknown-topic"),
        pytest.param([], "has no committed offsets; name the topic with --topic", id="no-topic-no-commits"),
        pytest.param(["-t", "x", "-o", "yaml"], "Invalid value for '--output'", id="bad-option"),
    ],
)
def test_cli_bad_usage_exit_2(bootstrap: str, args: list[str], message: str) -> None:
    r = lag_cli("-b", bootstrap, "-g", "g-nothing", *args)
    assert r.returncode == 2
    assert message in r.stderr
