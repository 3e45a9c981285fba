"""Partition count of a topic: as the last lag round on that connection saw it, else read from the
brokers with a short timeout on the operator's shared AdminClient for that connection (opening clients per
call costs a metadata bootstrap each time)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException

from lagpilot_operator.brokererrors import classify
from lagpilot_operator.brokers import admin_client, connection_key, forget_clients, recent_errors
from lagpilot_operator.workload.status import BROKER_UNREACHABLE, TOPIC_NOT_FOUND, TopicInfo


class TopicReader:
    """Thread-safe partition counts on the operator's shared broker clients (lagpilot_operator.brokers),
    with a short result cache."""

    def __init__(self, timeout: float = 3.0, cache_seconds: float = 5.0, catalog_seconds: float = 45.0) -> None:
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.catalog_seconds = catalog_seconds
        self._results: dict[tuple[str, str], tuple[TopicInfo, float]] = {}
        self._catalog: dict[tuple[str, str], tuple[int, float]] = {}

    def note(self, connection: str, counts: Mapping[str, int]) -> None:
        """Partition counts a lag round just read on `connection`: reconciles within `catalog_seconds` use
        them instead of a metadata request of their own (a count only grows, and a stale lower count only
        leaves new partitions unassigned until the next round)."""
        now = time.monotonic()
        for topic, partitions in counts.items():
            self._catalog[(connection, topic)] = (partitions, now)

    def known_partitions(self, connection: str | None, topic: str | None) -> int | None:
        """The latest count a lag round saw, however old (None if never seen)."""
        entry = self._catalog.get((connection or "", topic or ""))
        return entry[0] if entry else None

    def forget(self, bootstrap: str, security: Mapping[str, str] | None = None) -> None:
        forget_clients(bootstrap_servers=bootstrap, security=security)

    def read(self, bootstrap: str, topic: str, security: Mapping[str, str] | None = None) -> TopicInfo:
        """The topic's partition count, answered from a cache younger than `cache_seconds` (bursts of
        reconciles during a rollout do not each wait on the broker)."""
        key = connection_key(bootstrap, dict(security or {}))
        seen = self._catalog.get((key, topic))
        if seen and time.monotonic() - seen[1] < self.catalog_seconds:
            return TopicInfo(seen[0])
        cached = self._results.get((key, topic))
        if cached and time.monotonic() - cached[1] < self.cache_seconds:
            return cached[0]
        info = self._read(bootstrap, topic, security)
        self._results[(key, topic)] = (info, time.monotonic())
        return info

    def _read(self, bootstrap: str, topic: str, security: Mapping[str, str] | None) -> TopicInfo:
        try:
            client = admin_client(bootstrap, security)
        except KafkaException as exc:  # settings librdkafka refuses (a CA file that is not PEM, ...)
            return TopicInfo(None, BROKER_UNREACHABLE, f"no client for {bootstrap}: {exc.args[0].str()}")
        try:
            metadata = client.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            return self._unreachable(client, bootstrap, security, f"cannot read metadata from {bootstrap}: "
                                                                  f"{exc.args[0]}")
        if not metadata.brokers:
            return self._unreachable(client, bootstrap, security, f"no broker answered at {bootstrap}")
        meta = metadata.topics.get(topic)
        if meta is None or (meta.error is not None and meta.error.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)):
            return TopicInfo(None, TOPIC_NOT_FOUND, f"topic {topic} does not exist on {bootstrap}")
        if meta.error is not None:
            return TopicInfo(None, BROKER_UNREACHABLE, f"metadata error for topic {topic}: {meta.error.str()}")
        return TopicInfo(len(meta.partitions))

    def _unreachable(self, client: object, bootstrap: str, security: Mapping[str, str] | None,
                     fallback: str) -> TopicInfo:
        """Why, from the client's error events (served by a poll), then the broken client (bad address,
        rejected credentials) is dropped, to be rebuilt next time rather than kept retrying."""
        try:
            client.poll(0)  # type: ignore[attr-defined]
        except Exception:  # only serves callbacks
            pass
        reason, message = classify(recent_errors(connection_key(bootstrap, dict(security or {}))), fallback)
        self.forget(bootstrap, security)
        return TopicInfo(None, reason, message)
