"""The topics a group reads and their partition counts: as the last lag round on that connection saw them,
else read from the brokers with a short timeout on the operator's shared AdminClient for that connection
(opening clients per call costs a metadata bootstrap each time). `select_topics` is the pure part: which
topics of a listing a pattern names, and what a missing one means for the group."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException

from lagpilot_operator.brokererrors import classify
from lagpilot_operator.brokers import admin_client, connection_key, forget_clients, recent_errors
from lagpilot_operator.workload.status import BROKER_UNREACHABLE, TOPIC_NOT_FOUND, TopicInfo


def select_topics(listed: Iterable[str], pattern: str, exclude: Iterable[str | None] = ()) -> list[str]:
    """The topics of a cluster's listing that ``pattern`` matches as a whole name; never Kafka's internal
    topics (``__consumer_offsets``...) nor the group's own dead-letter and park topics (reading those
    would deliver a failed record again)."""
    rx, skip = re.compile(pattern), {t for t in exclude if t}
    return sorted(t for t in listed if not t.startswith("__") and t not in skip and rx.fullmatch(t))


def combine(named: Mapping[str, TopicInfo]) -> TopicInfo:
    """One TopicInfo for a group of several named topics: those that exist are read (the group goes on
    with them), and a missing one makes the whole group Degraded TopicNotFound, naming it. A broker that
    cannot be reached wins over a missing topic (the group cannot tell what exists)."""
    found = {t: i.partitions for t, i in named.items() if i.partitions is not None}
    unreachable = [i for i in named.values() if i.reason is not None and i.reason != TOPIC_NOT_FOUND]
    if unreachable:
        return TopicInfo(None, unreachable[0].reason, unreachable[0].message)
    missing = sorted(t for t, i in named.items() if i.reason == TOPIC_NOT_FOUND)
    if not missing:
        return TopicInfo({t: n for t, n in found.items() if n is not None})
    message = "; ".join(named[t].message for t in missing)
    if found:
        message += f" (still reading {', '.join(sorted(found))})"
    return TopicInfo({t: n for t, n in found.items() if n is not None} or None, TOPIC_NOT_FOUND, message)


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

    def known_partitions(self, connection: str | None, topics: Iterable[str]) -> int | None:
        """The latest total count a lag round saw for these topics, however old (None if one was never
        seen; a topic the round found missing counts 0)."""
        total = 0
        for topic in topics:
            entry = self._catalog.get((connection or "", topic))
            if entry is None:
                return None
            total += entry[0]
        return total

    def resolve(self, bootstrap: str, topics: Iterable[str], pattern: str | None, exclude: Iterable[str | None],
                security: Mapping[str, str] | None = None) -> TopicInfo:
        """The group's topics: each named one read (cached), or the pattern over the cluster's listing."""
        if pattern is None:
            return combine({t: self.read(bootstrap, t, security) for t in topics})
        listed = self.list_topics(bootstrap, security)
        if listed.topics is None:
            return listed
        chosen = select_topics(listed.topics, pattern, exclude)
        if not chosen:
            return TopicInfo(None, TOPIC_NOT_FOUND, f"no topic on {bootstrap} matches {pattern!r}")
        return TopicInfo({t: listed.topics[t] for t in chosen})

    def list_topics(self, bootstrap: str, security: Mapping[str, str] | None = None) -> TopicInfo:
        """Every topic of the cluster with its partition count (cached like `read`)."""
        key = connection_key(bootstrap, dict(security or {}))
        cached = self._results.get((key, "\0listing"))
        if cached and time.monotonic() - cached[1] < self.cache_seconds:
            return cached[0]
        try:
            client = admin_client(bootstrap, security)
        except KafkaException as exc:
            return TopicInfo(None, BROKER_UNREACHABLE, f"no client for {bootstrap}: {exc.args[0].str()}")
        try:
            metadata = client.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            return self._unreachable(client, bootstrap, security, f"cannot list topics on {bootstrap}: "
                                                                  f"{exc.args[0]}")
        if not metadata.brokers:
            return self._unreachable(client, bootstrap, security, f"no broker answered at {bootstrap}")
        info = TopicInfo({t: len(m.partitions) for t, m in metadata.topics.items() if m.error is None})
        self._results[(key, "\0listing")] = (info, time.monotonic())
        return info

    def forget(self, bootstrap: str, security: Mapping[str, str] | None = None) -> None:
        forget_clients(bootstrap_servers=bootstrap, security=security)

    def read(self, bootstrap: str, topic: str, security: Mapping[str, str] | None = None) -> TopicInfo:
        """The topic's partition count, answered from a cache younger than `cache_seconds` (bursts of
        reconciles during a rollout do not each wait on the broker)."""
        key = connection_key(bootstrap, dict(security or {}))
        seen = self._catalog.get((key, topic))
        if seen and seen[0] and time.monotonic() - seen[1] < self.catalog_seconds:  # 0: the round missed it
            return TopicInfo({topic: seen[0]})
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
        return TopicInfo({topic: len(meta.partitions)})

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
