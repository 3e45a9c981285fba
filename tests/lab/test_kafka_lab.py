"""The lab broker is a real Kafka: consumer groups, committed offsets, ListOffsets and lag via admin APIs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

pytestmark = pytest.mark.lab


def test_produce_consume_commit_and_read_lag(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=3)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(300):
        producer.produce(topic, key=f"k{i % 17}", value=f"v{i}")
    assert producer.flush(30) == 0

    group = f"g-{topic}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen: list[str] = []
    while len(seen) < 200:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        seen.append(msg.value().decode())
        if len(seen) == 200:
            consumer.commit(message=msg, asynchronous=False)
    committed_positions = consumer.position(consumer.assignment())
    consumer.commit(offsets=committed_positions, asynchronous=False)
    consumer.close()
    assert len(set(seen)) == 200

    admin = AdminClient({"bootstrap.servers": bootstrap})
    groups = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert groups.group_id == group
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=10)
    committed = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    ends = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(3)})
    end = {tp.partition: f.result(timeout=10).offset for tp, f in ends.items()}
    assert sum(end.values()) == 300
    lag = sum(end[p] - committed.get(p, 0) for p in range(3))
    assert lag == 300 - 200


def test_transactions_work(bootstrap: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory(partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed")
    producer.commit_transaction(30)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    for _ in range(30):
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            values.append(msg.value())
        if values:
            break
    consumer.close()
    assert values == [b"committed"]
