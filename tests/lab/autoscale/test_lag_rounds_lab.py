"""One lag round for many groups (LagReader.read_groups) against the real lab broker: committed offsets
come from the connection's `__consumer_offsets` mirror, the request count does not grow with groups, and
the figures equal the per-group reader's."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from lagpilot.testing.offsets import commit, lags, produce
from lagpilot_operator import brokers
from lagpilot_operator.autoscale.offsets import LagReader, TopicNotFound

pytestmark = pytest.mark.lab


def test_one_round_serves_every_group_with_the_same_requests(bootstrap: str,
                                                             topic_factory: Callable[..., str]) -> None:
    a, b = topic_factory(partitions=3), topic_factory(partitions=2)
    produce(bootstrap, a, {0: 30, 1: 20, 2: 5})
    produce(bootstrap, b, {0: 7, 1: 9})
    groups = {f"g-round-{i}-{a}": [a if i % 2 == 0 else b] for i in range(10)}
    for i, (group, (topic,)) in enumerate(groups.items()):
        commit(bootstrap, group, topic, {0: i, 1: min(i, 5)})
    reader = LagReader(bootstrap)
    one = reader.read_groups({g: ts for g, ts in list(groups.items())[:1]})
    many = reader.read_groups(groups)
    assert len(many) == 10
    assert next(iter(one.values())).requests == next(iter(many.values())).requests  # type: ignore[union-attr]
    for group, (topic,) in groups.items():
        single = LagReader(bootstrap).read(group, [topic])
        assert lags(many[group]) == lags(single), group


def test_a_commit_acknowledged_before_the_round_is_in_it(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=2)
    produce(bootstrap, topic, {0: 10, 1: 10})
    reader = LagReader(bootstrap)
    group = f"g-fresh-{topic}"
    assert lags(reader.read_groups({group: [topic]})[group]) == {0: (0, 10, None, 10), 1: (0, 10, None, 10)}
    for offset in (3, 7, 10):
        commit(bootstrap, group, topic, {0: offset})
        snap = reader.read_groups({group: [topic]})[group]
        assert lags(snap)[0] == (0, 10, offset, 10 - offset)


def test_deleted_offsets_disappear_and_a_missing_topic_fails_only_its_group(
        bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    produce(bootstrap, topic, {0: 4})
    group = f"g-deleted-{topic}"
    commit(bootstrap, group, topic, {0: 4})
    reader = LagReader(bootstrap)
    assert lags(reader.read_groups({group: [topic]})[group]) == {0: (0, 4, 4, 0)}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_consumer_groups([group], request_timeout=30)[group].result(timeout=30)
    out = reader.read_groups({group: [topic], "g-other": [f"{topic}-missing"]})
    assert lags(out[group]) == {0: (0, 4, None, 4)}  # the tombstone removed the commit
    assert isinstance(out["g-other"], TopicNotFound)


def test_a_connections_clients_close_with_its_last_group(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    security = {"client.id": f"close-test-{topic}"}  # a connection of its own for this test
    other = {"client.id": f"close-test-{topic}", "sasl.username": "someone-else"}
    key = brokers.use_connection(("ns", "one"), bootstrap, security)
    assert brokers.use_connection(("ns", "two"), bootstrap, security) == key
    other_key = brokers.use_connection(("ns", "three"), bootstrap, other)
    assert other_key != key  # other credentials on the same brokers: other clients
    reader = LagReader(bootstrap, security)
    reader.read_groups({"g-close": [topic]})
    assert brokers.cached_client_count(key) == 2  # the AdminClient and the commit log
    assert brokers.admin_client(bootstrap, security) is not brokers.admin_client(bootstrap, other)
    brokers.release_group(("ns", "one"))
    assert brokers.cached_client_count(key) == 2  # "two" still reads through it
    brokers.release_group(("ns", "two"))
    assert brokers.cached_client_count(key) == 0
    assert brokers.cached_client_count(other_key) == 1  # untouched
    brokers.release_group(("ns", "three"))
    assert brokers.cached_client_count(other_key) == 0
