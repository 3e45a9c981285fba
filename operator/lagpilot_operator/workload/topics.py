"""Partition count of a topic, read from the brokers with a short timeout; one AdminClient per connection
config, reused across reconciles (opening clients per call costs a metadata bootstrap each time)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

TOPIC_NOT_FOUND = "TopicNotFound"
BROKER_UNREACHABLE = "BrokerUnreachable"

_quiet = logging.getLogger("lagpilot.operator.librdkafka")
_quiet.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class TopicInfo:
    """Either `partitions` is known, or `reason` (TopicNotFound | BrokerUnreachable) says why not."""

    partitions: int | None
    reason: str | None = None
    message: str = ""


def client_config(bootstrap: str, security: Mapping[str, str] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
                                 "logger": _quiet, "client.id": "lagpilot-operator"}
    config.update(security or {})
    return config


class TopicReader:
    """Thread-safe cache of AdminClients keyed by bootstrap + security settings (secrets only as a hash)."""

    def __init__(self, timeout: float = 3.0, idle_seconds: float = 600.0, cache_seconds: float = 5.0) -> None:
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.cache_seconds = cache_seconds
        self._clients: dict[str, tuple[AdminClient, float]] = {}
        self._results: dict[tuple[str, str], tuple[TopicInfo, float]] = {}
        self._lock = threading.Lock()

    def _key(self, bootstrap: str, security: Mapping[str, str] | None) -> str:
        blob = repr(sorted((security or {}).items()))
        return bootstrap + "|" + hashlib.sha256(blob.encode()).hexdigest()

    def _client(self, key: str, bootstrap: str, security: Mapping[str, str] | None) -> AdminClient:
        now = time.monotonic()
        with self._lock:
            for k, (_, used) in list(self._clients.items()):
                if now - used > self.idle_seconds:
                    del self._clients[k]
            client = self._clients.get(key, (None, 0.0))[0] or AdminClient(client_config(bootstrap, security))
            self._clients[key] = (client, now)
            return client

    def forget(self, bootstrap: str, security: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._clients.pop(self._key(bootstrap, security), None)

    def read(self, bootstrap: str, topic: str, security: Mapping[str, str] | None = None) -> TopicInfo:
        """The topic's partition count, answered from a cache younger than `cache_seconds` (bursts of
        reconciles during a rollout do not each wait on the broker)."""
        key = self._key(bootstrap, security)
        cached = self._results.get((key, topic))
        if cached and time.monotonic() - cached[1] < self.cache_seconds:
            return cached[0]
        info = self._read(key, bootstrap, topic, security)
        self._results[(key, topic)] = (info, time.monotonic())
        return info

    def _read(self, key: str, bootstrap: str, topic: str, security: Mapping[str, str] | None) -> TopicInfo:
        client = self._client(key, bootstrap, security)
        try:
            metadata = client.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            # A broken client (bad address, auth failure) is rebuilt next time rather than kept retrying.
            self.forget(bootstrap, security)
            return TopicInfo(None, BROKER_UNREACHABLE, f"cannot read metadata from {bootstrap}: {exc.args[0]}")
        if not metadata.brokers:
            self.forget(bootstrap, security)
            return TopicInfo(None, BROKER_UNREACHABLE, f"no broker answered at {bootstrap}")
        meta = metadata.topics.get(topic)
        if meta is None or (meta.error is not None and meta.error.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)):
            return TopicInfo(None, TOPIC_NOT_FOUND, f"topic {topic} does not exist on {bootstrap}")
        if meta.error is not None:
            return TopicInfo(None, BROKER_UNREACHABLE, f"metadata error for topic {topic}: {meta.error.str()}")
        return TopicInfo(len(meta.partitions))
