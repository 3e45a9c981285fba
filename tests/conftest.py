"""Shared fixtures: the lab's real Kafka broker and Kubernetes control plane, started once per test session
in a private directory (so tests never touch a lab a person started with `lagpilot lab up`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lagpilot.lab.kafka import KafkaBroker, create_topic, start_kafka, stop_kafka


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="session")
def kafka(lab_root: Path) -> Iterator[KafkaBroker]:
    """A real single-node KRaft broker for the whole session (or the one named by LAGPILOT_TEST_BOOTSTRAP)."""
    external = os.environ.get("LAGPILOT_TEST_BOOTSTRAP")
    if external:
        host, port = external.rsplit(":", 1)
        yield KafkaBroker(workdir="", port=int(port), controller_port=0, pid=-1)
        return
    broker = start_kafka(lab_root / "kafka")
    yield broker
    stop_kafka(broker, remove=True)


@pytest.fixture
def bootstrap(kafka: KafkaBroker) -> str:
    return kafka.bootstrap_servers


@pytest.fixture
def topic_factory(kafka: KafkaBroker) -> Callable[..., str]:
    """make_topic(partitions=N, prefix="t") -> a fresh topic name, created and with leaders elected."""

    def make(partitions: int = 1, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        create_topic(kafka.bootstrap_servers, name, partitions, config)
        return name

    return make


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    return topic_factory(partitions=6)
