"""The consumer runtime: one poll-loop thread owning the ``confluent_kafka.Consumer`` (it is not
thread-safe, so assign/pause/resume/commit happen only there) and the delivery engine's event-loop thread
(:mod:`lagpilot_consumer.engine`) fed by the ordering scheduler. Shared state (scheduler, watermarks,
in-flight counters) lives under one condition lock; the HTTP work happens outside it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from lagpilot.protocol import PartitionId, format_partitions
from lagpilot_consumer.config import Config, subscription
from lagpilot_consumer.delivery import DeadLetterWriter
from lagpilot_consumer.engine import DeliveryEngine
from lagpilot_consumer.metrics import Metrics, labels_of
from lagpilot_consumer.park import MAIN, PARK, park_key
from lagpilot_consumer.park_kafka import ParkScanError, ParkWriter, check_park_topic, scan_parked_keys
from lagpilot_consumer.partitions import ParkStream, PartitionState
from lagpilot_consumer.scheduler import Item, Ordering, Scheduler
from lagpilot_consumer.sources.base import AppliedListener, DesiredState, PartitionSource

log = logging.getLogger("lagpilot.consumer")

BATCH = 500
HEALTHY_LOOP_SECONDS = 60.0
# A release's final commit that fails (coordinator moving, UNKNOWN_MEMBER_ID) is tried again this long past
# the drain deadline before the partition is let go uncommitted (then its next owner re-delivers from the
# last commit): released without it, every record delivered since that commit would reach the target twice.
RELEASE_COMMIT_GRACE = 10.0
RELEASE_COMMIT_RETRY = 0.5
WARN_EVERY_SECONDS = 30.0  # a topic that is missing or deleted is reported this often, not every poll
# librdkafka's code for a topic or partition the brokers do not know (RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
# Kafka error codes meaning the brokers do not know the topic (deleted, or not created yet):
# UNKNOWN_TOPIC_OR_PART from a broker, librdkafka's local _UNKNOWN_TOPIC and _UNKNOWN_PARTITION.
TOPIC_GONE = frozenset({3, -188, -190})


def consumer_conf(cfg: Config, **extra: Any) -> dict[str, Any]:
    """librdkafka settings: ours (manual commits of watermarks only; bounded prefetch memory), then the
    user's extra properties from env/file (which may override the prefetch bounds, not the commit mode)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers,
        "group.id": cfg.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "latest" if cfg.start_from == "latest" else "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        # librdkafka prefetches up to queued.min.messages *per partition* (default 100k) and each queued
        # message costs a few hundred bytes of overhead beyond its payload: cap both so a large backlog
        # over many partitions cannot balloon the process (bench: 1M-record backlog, 12 partitions).
        "queued.min.messages": 2000,
        "queued.max.messages.kbytes": 8192,
        # Fetch sizes bound the rest (measured, bench/consumer: a 1M-record lz4 backlog on 12 partitions
        # read at ~10 000 records/s jumped to 433 MB RSS with 8 MiB / 1 MiB, and stayed at ~135-145 MB
        # with 2 MiB / 256 KiB at the same rate).
        "fetch.max.bytes": 2 * 1024 * 1024,
        "max.partition.fetch.bytes": 256 * 1024,
        "client.id": f"lagpilot-consumer-{cfg.pod_name or 'local'}",
    }
    conf.update(dict(cfg.kafka_config))
    conf.update(extra)
    return conf


class ConsumerRuntime:
    """Implements :class:`lagpilot_consumer.sources.base.AssignmentSink` for partition sources."""

    def __init__(self, cfg: Config, source: PartitionSource, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.metrics = metrics or Metrics()
        self.subscribe = source.subscribe
        self._cond = threading.Condition()
        ordering: Ordering = cfg.ordering  # type: ignore[assignment]  # validated by config.parse
        self._sched = Scheduler(ordering)
        self._parts: dict[PartitionId, PartitionState] = {}  # every owned partition, releasing ones included
        self._gen_counter = 0
        self._inflight = 0
        self._inflight_bytes = 0
        self._paused = False
        self._desired = DesiredState()
        self._applied_version = -1
        self._applied_epoch = 0
        self._applied: tuple[int, frozenset[PartitionId]] | None = None
        self._listeners: list[AppliedListener] = []
        self._stop = threading.Event()
        self._abandon_all = False
        self._fence_now = threading.Event()  # set by fence(); cleared by the poll loop once all is released
        self._fence_uncommitted = threading.Event()  # set by fence(commit=False): releases do not commit
        self._may_deliver: Callable[[], bool] = lambda: True  # the source's last-moment ownership check
        self._heartbeat = time.monotonic()
        self._connected = False
        self._running = False
        self._consumer: Any = None
        self._dlq: DeadLetterWriter | None = None
        self._engine: DeliveryEngine | None = None
        self._held: set[PartitionId] = set()  # partitions not fetching: too many offsets outstanding
        self._held_park: set[PartitionId] = set()  # the same for park partitions
        self._parker: ParkWriter | None = None
        self._scanner: Any = None  # a consumer of its own for scanning park partitions
        self._next_gauges = 0.0
        self._checked_topics: set[str] = set()  # topics found to exist since they were first assigned
        self._warned: dict[str, float] = {}  # warning key -> monotonic time it may be logged again

    # ---- AssignmentSink ----------------------------------------------------------------------------
    def set_desired(self, partitions: frozenset[PartitionId], epoch: int) -> None:
        self._desired.set(partitions, epoch)

    def fence(self, commit: bool = True) -> None:
        """Stop at once, from the caller's thread: delivery threads start no request and no retry from now
        on, whatever the poll loop is doing (a blocked commit, a drain); the poll loop then releases every
        partition. Cancelled records are not done, so they are fetched again from the committed offset.
        ``commit=False`` (a late fence): the release commits nothing, since a commit from a worker that
        lost its partitions could move the group's offsets back behind the new owner's."""
        if not commit:
            self._fence_uncommitted.set()
        self._fence_now.set()
        self._desired.fence()
        with self._cond:
            self._cond.notify_all()
        if self._engine is not None:
            self._engine.wake()

    def set_delivery_guard(self, may_deliver: Callable[[], bool]) -> None:
        """A check made right before every HTTP attempt and every periodic commit (the k8s source: the
        Lease was renewed within the fence timeout). After a freeze it is false at once, before the fence
        loop has run, so a delivery thread that resumes between two records cancels instead of sending,
        and the poll loop does not commit offsets of partitions it may have lost."""
        self._may_deliver = may_deliver

    def add_applied_listener(self, listener: AppliedListener) -> None:
        self._listeners.append(listener)

    def applied(self) -> tuple[int, frozenset[PartitionId]] | None:
        return self._applied

    def _report(self, epoch: int, owned: frozenset[PartitionId]) -> None:
        self._applied = (epoch, owned)
        self._applied_epoch = epoch
        self.metrics.assignment_epoch.set(epoch)
        self.metrics.assigned_partitions.set(len(owned))
        log.info("assignment applied", extra={"epoch": epoch, "owned": format_partitions(owned)})
        for listener in list(self._listeners):
            try:
                listener(epoch, owned)
            except Exception:
                log.exception("applied listener failed")

    # ---- partitions ----------------------------------------------------------------------------------
    def _owned(self) -> frozenset[PartitionId]:
        return frozenset(self._parts)

    def _releasing(self) -> frozenset[PartitionId]:
        return frozenset(p for p, st in self._parts.items() if st.releasing)

    def _active(self) -> frozenset[PartitionId]:
        """Owned and not being released: the partitions records are taken from."""
        return frozenset(p for p, st in self._parts.items() if not st.releasing)

    # ---- health --------------------------------------------------------------------------------------
    def healthy(self) -> bool:
        """Alive and the poll loop is not stuck (it beats at least every iteration / release step)."""
        return time.monotonic() - self._heartbeat < max(HEALTHY_LOOP_SECONDS, self.cfg.drain_seconds + 30)

    def ready(self) -> bool:
        return self._running and self._connected and not self._stop.is_set() and self.source.ready()

    def request_stop(self) -> None:
        self._stop.set()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until :meth:`request_stop`; then drain, commit and return the exit code (0)."""
        from confluent_kafka import Consumer

        cfg = self.cfg
        self._consumer = Consumer(consumer_conf(cfg, on_commit=self._on_commit, error_cb=self._on_error))
        if cfg.dead_letter_topic:
            self._dlq = DeadLetterWriter(cfg, self.metrics)
        if cfg.park_topic:
            check_park_topic(self._consumer, cfg)
            self._parker = ParkWriter(cfg, self.metrics.park_write_errors.inc)
        self._engine = DeliveryEngine(cfg, self.metrics, self, self._dlq, self._parker)
        self._engine.start()
        self._check_connection()
        if self.subscribe:
            self._consumer.subscribe(subscription(cfg), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
        self._running = True
        self.source.start(self)
        log.info("consumer started", extra={"topics": ",".join(cfg.topics), "topic_pattern": cfg.topic_pattern,
                                            "group": cfg.group_id,
                                            "assignment": cfg.assignment, "threads": cfg.threads,
                                            "ordering": cfg.ordering})
        next_commit = time.monotonic() + cfg.commit_interval_ms / 1000.0
        next_conn_check = time.monotonic() + 10
        try:
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                if not self.subscribe:
                    self._apply_assignment()
                self._backpressure()
                with self._cond:
                    room = cfg.max_inflight - self._inflight
                    if self._paused and not self.subscribe:
                        # Full: take nothing more. librdkafka's local queue is bounded
                        # (queued.max.messages.kbytes), so its fetchers stop on their own.
                        self._cond.wait(0.05)
                if self._paused and not self.subscribe:
                    msgs = []
                else:
                    msgs = self._consumer.consume(num_messages=max(1, min(BATCH, room)), timeout=0.1)
                if msgs:
                    self._submit(msgs)
                now = time.monotonic()
                if now >= next_commit:
                    # Not while ownership is in doubt (a freeze just ended, the fence may not have run yet): a
                    # commit now could move back the offsets of partitions another worker owns meanwhile.
                    if self._may_deliver():
                        self._commit(sync=False)
                    next_commit = now + cfg.commit_interval_ms / 1000.0
                if now >= next_conn_check:
                    if not self._connected:
                        self._check_connection()
                    next_conn_check = now + 10
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        log.info("stopping: draining in-flight deliveries", extra={"drain_seconds": self.cfg.drain_seconds})
        owned = self._active()
        if owned:
            self._start_release(owned)
        while self._releasing():
            self._heartbeat = time.monotonic()
            self._progress_release(unassign=not self.subscribe)
            if self._releasing():
                time.sleep(0.02)
        self._abandon_all = True
        if self._engine is not None:
            self._engine.stop()
        self._report(self._applied_epoch, frozenset())
        try:
            self.source.stop()
        except Exception:
            log.exception("partition source stop failed")
        if self._dlq is not None:
            self._dlq.close()
        if self._parker is not None:
            self._parker.close()
        if self._scanner is not None:
            self._scanner.close()
        self._consumer.close()
        self._running = False
        log.info("consumer stopped")

    # ---- Kafka callbacks -----------------------------------------------------------------------------
    def _on_error(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._connected = False
        log.warning("kafka error", extra={"error": str(err)})

    def _on_commit(self, err: Any, partitions: list[Any]) -> None:
        if err is not None:
            self.metrics.commit_errors.inc()
            if self._warn_now(f"commit:{err}"):  # a deleted topic's partitions fail at every interval
                log.warning("offset commit failed", extra={"error": str(err)})
        for tp in partitions:
            pid, park = self._owner_of(tp.topic, tp.partition)
            if err is not None or tp.error is not None:
                st = self._parts.get(pid)
                stream = st.park if st is not None and park else st
                if stream is not None:
                    stream.committed = None  # try again at the next interval
            elif tp.offset >= 0 and not park:
                self.metrics.committed_offset.labels(*labels_of(pid)).set(tp.offset)

    def _owner_of(self, topic: str, partition: int) -> tuple[PartitionId, bool]:
        """The owned partition a Kafka topic/partition belongs to, and whether it is that partition's park
        (park partition p goes with partition p of the one source topic, see config.parse)."""
        if self.cfg.park_topic and topic == self.cfg.park_topic:
            return PartitionId(self.cfg.topics[0], partition), True
        return PartitionId(topic, partition), False

    def _warn_now(self, key: str) -> bool:
        """Whether a recurring warning (a missing topic, its failing fetches and commits) may be logged now:
        once per WARN_EVERY_SECONDS per key, so a deleted topic does not flood the log."""
        now = time.monotonic()
        if now < self._warned.get(key, 0.0):
            return False
        self._warned[key] = now + WARN_EVERY_SECONDS
        return True

    def _check_connection(self) -> None:
        try:
            md = self._consumer.list_topics(timeout=5)
            self._connected = True
        except Exception as exc:
            self._connected = False
            log.warning("cannot reach kafka", extra={"error": str(exc)})
            return
        for name in self.cfg.topics:
            topic = md.topics.get(name)
            if topic is None or topic.error is not None:
                log.warning("topic not available", extra={"topic": name,
                                                          "error": str(topic.error if topic else "missing")})

    def _check_new_topics(self, parts: frozenset[PartitionId]) -> None:
        """The first time a topic is assigned, see that it exists. A missing one is assigned anyway (the
        operator may grant it before it is created, or it was deleted): librdkafka keeps retrying it, and
        the worker's other partitions go on. Checked again at its next assignment until it is found."""
        for name in sorted({p.topic for p in parts} - self._checked_topics):
            self._heartbeat = time.monotonic()
            try:
                topic = self._consumer.list_topics(name, timeout=5).topics.get(name)
            except Exception as exc:
                log.warning("topic not checked: brokers not reachable", extra={"topic": name, "error": str(exc)})
                continue
            if topic is None or topic.error is not None:
                log.warning("assigned topic not available: its partitions deliver once it exists",
                            extra={"topic": name, "error": str(topic.error if topic else "missing")})
            else:
                self._checked_topics.add(name)

    def _on_assign(self, consumer: Any, tps: list[Any]) -> None:
        self._assign(frozenset(PartitionId(tp.topic, tp.partition) for tp in tps))
        self._report(self._applied_epoch + 1, self._owned())

    def _on_revoke(self, consumer: Any, tps: list[Any]) -> None:
        parts = frozenset(PartitionId(tp.topic, tp.partition) for tp in tps) & self._owned()
        if parts:
            self._start_release(parts - self._releasing())
        while self._releasing():
            self._heartbeat = time.monotonic()
            self._progress_release(unassign=False)  # the client unassigns after this callback
            if self._releasing():
                time.sleep(0.02)
        self._report(self._applied_epoch + 1, self._owned())

    def _on_lost(self, consumer: Any, tps: list[Any]) -> None:
        """Lost, not revoked: another member may already own them, so commit nothing and stop at once. A
        request already on the wire cannot be called back, so wait (at most the target timeout) until it
        ends before rejoining: if the partitions come back here, a key never runs twice at once."""
        lost = [PartitionId(tp.topic, tp.partition) for tp in tps]
        with self._cond:
            for p in lost:
                self._drop_queued(p)
                self._parts.pop(p, None)  # running deliveries see it and stop retrying
        log.warning("partitions lost", extra={"partitions": format_partitions(lost)})
        deadline = time.monotonic() + self.cfg.timeout_seconds + 5
        while time.monotonic() < deadline:
            with self._cond:
                if all(self._sched.pending_in(p) == 0 for p in lost):
                    break
            self._heartbeat = time.monotonic()
            time.sleep(0.02)
        self._report(self._applied_epoch + 1, self._owned())

    # ---- assignment (poll-loop thread only) -------------------------------------------------------------
    def _tps(self, parts: Iterable[PartitionId]) -> list[Any]:
        from confluent_kafka import TopicPartition

        return [TopicPartition(p.topic, p.partition) for p in sorted(parts)]

    def _park_tps(self, parts: Iterable[PartitionId]) -> list[Any]:
        """The park partitions that go with ``parts`` (none without --park-topic)."""
        from confluent_kafka import TopicPartition

        if not self.cfg.park_topic:
            return []
        return [TopicPartition(self.cfg.park_topic, p.partition) for p in sorted(parts)]

    def _all_tps(self, parts: Iterable[PartitionId]) -> list[Any]:
        return self._tps(parts) + self._park_tps(parts)

    def _apply_assignment(self) -> None:
        version, desired, epoch, fenced = self._desired.snapshot()
        fence_pending = self._fence_now.is_set()  # fenced, possibly lifted since: release everything first
        if desired is None and not fenced and not fence_pending:
            return
        if fenced or fence_pending:
            # The operator may regrant everything once the Lease runs out: stop at once, no drain, including
            # partitions already draining and those not yet asked for.
            now = time.monotonic()
            with self._cond:
                for st in self._parts.values():
                    if st.release_deadline is not None:
                        st.release_deadline = min(st.release_deadline, now)
            rest = self._active()
            if rest:
                self._start_release(rest, 0.0)
        if self._releasing():
            self._progress_release(unassign=True)
            if self._releasing():
                return
        if fence_pending and not fenced:
            self._fence_now.clear()  # lifted (a fresh grant after a Lease write): start afresh below
            self._fence_uncommitted.clear()
        target = frozenset() if fenced or desired is None else desired
        to_release = self._owned() - target
        if to_release:
            self._start_release(to_release)
            self._progress_release(unassign=True)
            if self._releasing():
                return
        to_assign = target - self._owned()
        if to_assign:
            self._assign(to_assign)
            if target - self._owned():
                return  # a park partition could not be read yet: tried again next time, reported then
        if version != self._applied_version:
            self._applied_version = version
            self._report(self._applied_epoch if fenced else epoch, self._owned())

    def _assign(self, parts: frozenset[PartitionId]) -> None:
        self._check_new_topics(parts)
        parks: dict[PartitionId, tuple[ParkStream, Any]] = {}
        if self.cfg.park_topic:
            # One committed-offsets read for every park partition of this assignment, then each is scanned.
            starts = self._starting_offsets(parts, park=True)
            for start_tp in starts:
                opened = self._open_park(start_tp)
                if opened is not None:
                    parks[self._owner_of(start_tp.topic, start_tp.partition)[0]] = opened
            parts = frozenset(parks)
            if not parts:
                return
        with self._cond:
            for p in parts:
                self._gen_counter += 1
                self._parts[p] = PartitionState(self._gen_counter, park=parks[p][0] if p in parks else None)
        self._consumer.incremental_assign(self._starting_offsets(parts) + [tp for _, tp in parks.values()])
        # librdkafka keeps a partition's pause flag across unassign/assign: set it explicitly.
        if self._paused and self.subscribe:
            self._consumer.pause(self._all_tps(parts))
        else:
            self._consumer.resume(self._all_tps(parts))
        log.info("partitions assigned", extra={"partitions": format_partitions(parts)})

    def _open_park(self, start_tp: Any) -> tuple[ParkStream, Any] | None:
        """Before partition ``p`` delivers anything: which keys are parked in its park partition (records
        between the park partition's committed offset, ``start_tp``, and its end), and where reading it
        starts. None if the park partition cannot be read now (``p`` is then not taken this time: a key
        parked by the previous owner could otherwise be overtaken by its next record)."""
        from confluent_kafka import Consumer, KafkaException

        cfg = self.cfg
        p = start_tp.partition
        try:
            low, high = self._consumer.get_watermark_offsets(start_tp, timeout=10)
        except KafkaException as exc:
            log.warning("park partition not readable: partition not taken yet",
                        extra={"partition": p, "error": str(exc)})
            return None
        start_tp.offset = start_tp.offset if start_tp.offset >= 0 else low
        if self._scanner is None:
            self._scanner = Consumer(consumer_conf(cfg, **{"enable.partition.eof": True,
                                                           "client.id": f"lagpilot-park-scan-{cfg.pod_name}"}))

        def keep_going() -> bool:
            self._heartbeat = time.monotonic()
            return not (self._stop.is_set() or self._fence_now.is_set())

        try:
            keys = scan_parked_keys(self._scanner, cfg, p, start_tp.offset, high, keep_going)
        except (ParkScanError, KafkaException) as exc:
            log.warning("park partition not scanned: partition not taken yet",
                        extra={"partition": p, "error": str(exc)})
            return None
        if keys:
            log.info("parked keys found", extra={"partition": p, "keys": len(keys),
                                                 "from": start_tp.offset, "to": high})
        return ParkStream(keys=keys), start_tp

    def _starting_offsets(self, parts: frozenset[PartitionId], attempts: int = 6, park: bool = False) -> list[Any]:
        """Where each partition starts: its committed offset, read here and given to ``assign``. Left to
        librdkafka, the offset fetch can hang for ever: a request-level NOT_COORDINATOR answer (a fresh
        broker loading ``__consumer_offsets``, a coordinator that moved) leaves the partition waiting with
        no retry and the fetcher never starts (librdkafka#5586; seen here on a fresh lab broker).
        ``committed()`` is retried instead, for the partitions whose read failed only; a partition without
        a committed offset starts where ``auto.offset.reset`` says (a park partition: at its beginning).
        One whose topic the brokers do not know (not created yet, deleted) is not waited for: nothing
        can be committed there, so it starts as a partition without a commit. If the coordinator stays
        unreachable, librdkafka is left to it."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition

        pending = self._park_tps(parts) if park else self._tps(parts)
        # consumer_conf's: --start-from latest, unless the user's properties set it
        reset = dict(self.cfg.kafka_config).get("auto.offset.reset",
                                                "latest" if self.cfg.start_from == "latest" else "earliest")
        fresh = OFFSET_END if str(reset) in ("latest", "largest", "end") and not park else OFFSET_BEGINNING
        read: list[Any] = []
        why = ""
        for attempt in range(attempts):
            self._heartbeat = time.monotonic()
            try:
                got = self._consumer.committed(pending, timeout=10)
            except KafkaException as exc:
                why = str(exc)
            else:
                retry: list[Any] = []
                for tp in got:
                    if tp.error is None:
                        read.append(tp)
                    elif tp.error.code() in TOPIC_GONE:
                        self._warn_topic_gone(tp.topic, "its committed offset is not readable", str(tp.error))
                        read.append(TopicPartition(tp.topic, tp.partition))
                    else:
                        retry.append(TopicPartition(tp.topic, tp.partition))
                        why = str(tp.error)
                pending = retry
                if not pending:
                    break
            log.warning("committed offsets not read yet, retrying", extra={"error": why, "attempt": attempt + 1})
            time.sleep(min(0.5 * 2 ** attempt, 5.0))
        if pending:
            log.warning("committed offsets not readable: librdkafka fetches them itself", extra={"error": why})
        new = [tp for tp in read if tp.offset < 0]
        for tp in new:
            tp.offset = fresh
        if new and not park and isinstance(self.cfg.start_from, float):
            self._start_at_time(new, self.cfg.start_from)
        return read + pending

    def _warn_topic_gone(self, topic: str, what: str, error: str) -> None:
        if self._warn_now(f"gone:{topic}:{what}"):
            log.warning(f"topic not known to the brokers (not created yet, or deleted): {what}; retrying",
                        extra={"topic": topic, "error": error})

    def _start_at_time(self, new: list[Any], when: float) -> None:
        """``--start-from <time>``: partitions the group never committed start at their first record at or
        after ``when`` (at the end if there is none); if the broker cannot say, where ``fresh`` put them.
        Asked topic by topic, so a missing topic leaves the others' start alone."""
        from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

        by_topic: dict[str, list[Any]] = {}
        for tp in new:
            by_topic.setdefault(tp.topic, []).append(tp)
        for topic, tps in sorted(by_topic.items()):
            query = [TopicPartition(tp.topic, tp.partition, round(when * 1000)) for tp in tps]
            try:
                found = {tp.partition: tp for tp in self._consumer.offsets_for_times(query, timeout=10)}
            except KafkaException as exc:
                log.warning("offsets for --start-from not read: starting from the beginning",
                            extra={"topic": topic, "error": str(exc)})
                continue
            for tp in tps:
                hit = found.get(tp.partition)
                if hit is not None and hit.error is None:
                    tp.offset = hit.offset if hit.offset >= 0 else OFFSET_END
        log.info("partitions without a commit start at --start-from",
                 extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in new],
                        "offsets": [tp.offset for tp in new]})

    def _drop_queued(self, p: PartitionId) -> None:
        for item in self._sched.drop_queued(p):
            self._uncount(item)

    def _uncount(self, item: Item) -> None:
        """``item`` no longer held in memory (under the lock)."""
        if item.stream == PARK:
            st = self._parts.get(item.partition)
            if st is not None and st.park is not None and st.generation == item.generation:
                st.park.inflight -= 1
        else:
            self._inflight -= 1
            self._inflight_bytes -= item.size

    def _start_release(self, parts: frozenset[PartitionId], drain_seconds: float | None = None) -> None:
        """Stop fetching ``parts``; their fetched records (queued or running) get until the deadline
        (``--drain-seconds``; 0 when fenced) to finish, so the final commit covers everything delivered and
        nothing that was acknowledged is delivered again by the next owner. After the deadline the queued
        rest is abandoned (not committed, re-delivered by the next owner) and retries stop; a request
        already on the wire is waited for (at most the target timeout), because the partition counts as
        released only when no delivery of it can still reach the target."""
        drain = self.cfg.drain_seconds if drain_seconds is None else drain_seconds
        deadline = time.monotonic() + drain
        try:
            self._consumer.pause(self._all_tps(parts))
        except Exception as exc:
            log.warning("pause failed", extra={"error": str(exc)})
        with self._cond:
            for p in parts:
                if p in self._parts:
                    self._parts[p].release_deadline = deadline
        log.info("releasing partitions", extra={"partitions": format_partitions(parts)})

    def _progress_release(self, unassign: bool) -> None:
        now = time.monotonic()
        with self._cond:
            releasing = {p: st for p, st in self._parts.items() if st.release_deadline is not None}
            for p, st in releasing.items():
                if now >= (st.release_deadline or now):
                    self._drop_queued(p)  # not started: they never will be here
            # Only requests on the wire are left past the deadline; they end within the target timeout.
            finished = [p for p in releasing if self._sched.pending_in(p) == 0]
        if not finished:
            return
        if self._fence_uncommitted.is_set():
            log.warning("late fence: releasing without a commit (another worker may own these partitions "
                        "now); what was delivered since the last commit will be delivered again",
                        extra={"partitions": format_partitions(finished)})
        else:
            finished = self._final_commit(finished, now)
            if not finished:
                return
        if unassign:
            try:
                self._consumer.incremental_unassign(self._all_tps(finished))
            except Exception as exc:
                log.warning("unassign failed", extra={"error": str(exc)})
        committed: dict[str, int | None] = {}
        with self._cond:
            for p in finished:
                st = self._parts.pop(p)
                left = st.watermark.outstanding()
                if left:  # the drain deadline passed with fetched records not done (not: a retried commit)
                    log.warning("drain deadline passed: fetched records of a released partition that were not "
                                "done are left to its next owner", extra={"partition": str(p), "records": left})
                committed[str(p)] = st.committed
        log.info("partitions released", extra={"partitions": format_partitions(finished), "committed": committed})

    def _final_commit(self, finished: list[PartitionId], now: float) -> list[PartitionId]:
        """Commit released partitions; those whose commit failed stay releasing and are tried again every
        RELEASE_COMMIT_RETRY s, for RELEASE_COMMIT_GRACE s past their drain deadline. Not while fenced: the
        operator may have granted them elsewhere, and a late commit could move the new owner's offset.
        One commit per topic, so a topic that is gone fails alone; its partitions are let go at once (there
        is no offset to keep there, and waiting would only hold up the hand-off)."""
        with self._cond:
            due = [p for p in finished if (self._parts[p].final_commit_retry_at or 0.0) <= now]
        if not due:
            return []
        failed: dict[PartitionId, int] = {}
        for topic in sorted({p.topic for p in due}):
            failed.update(self._commit(parts=frozenset(p for p in due if p.topic == topic), sync=True))
        keep: list[PartitionId] = []
        for p, code in sorted(failed.items()):
            st = self._parts[p]
            if code in TOPIC_GONE:
                log.warning("final commit of a released partition failed: its topic is not known to the brokers "
                            "(deleted?); released without it", extra={"partition": str(p), "error_code": code})
            elif not self._fence_now.is_set() and now < (st.release_deadline or now) + RELEASE_COMMIT_GRACE:
                if st.final_commit_retry_at is None:
                    log.warning("final commit of a released partition failed: trying again before letting "
                                "it go", extra={"partition": str(p), "grace_seconds": RELEASE_COMMIT_GRACE})
                st.final_commit_retry_at = now + RELEASE_COMMIT_RETRY
                keep.append(p)
            else:
                log.warning("final commit of a released partition failed: its next owner re-delivers what "
                            "was delivered since the last commit", extra={"partition": str(p)})
        return [p for p in due if p not in keep]

    # ---- fetching ------------------------------------------------------------------------------------------
    def _backpressure(self) -> None:
        """Bound in-flight records/bytes. With ``subscribe`` (kafka mode) the loop must keep polling for
        rebalances, so full means ``consumer.pause``. With ``assign`` (static, k8s) full means "stop
        taking records": librdkafka's bounded local queue then stops its fetchers. (Measured: cycling
        pause/resume on a busy 12-partition assignment made librdkafka 2.16 grow to ~500 MB RSS, as each
        resume discards the prefetched data and fetches afresh.)"""
        cfg = self.cfg
        with self._cond:
            n, b = self._inflight, self._inflight_bytes
        self.metrics.inflight_records.set(n)
        self.metrics.inflight_bytes.set(b)
        active = self._active()
        if not self._paused and (n >= cfg.max_inflight or b >= cfg.max_inflight_bytes):
            self._paused = True
            if active and self.subscribe:
                self._consumer.pause(self._tps(active))
            self.metrics.paused.set(1)
            log.debug("fetch paused", extra={"inflight": n, "inflight_bytes": b})
        elif self._paused and n <= cfg.max_inflight // 2 and b <= cfg.max_inflight_bytes // 2:
            self._paused = False
            if active and self.subscribe:
                self._consumer.resume(self._tps(active))
            self.metrics.paused.set(0)
            log.debug("fetch resumed", extra={"inflight": n, "inflight_bytes": b})
        self._hold_stuck_partitions()

    def _hold_stuck_partitions(self) -> None:
        """Bound the memory behind a record that keeps failing: the offsets of its partition done after
        it cannot be committed and stay in the watermark. At ``--max-outstanding-per-partition`` that
        partition stops fetching (others go on); below half the limit it fetches again. A park partition
        is held the same way, and also at ``--park-window`` records fetched and not done: parked keys whose
        target is still down must not fill the worker's memory (nor its ``--max-inflight``, which would
        stop the source partitions)."""
        cfg = self.cfg
        limit, window = cfg.max_outstanding_per_partition, cfg.park_window
        with self._cond:
            outstanding = {p: st.watermark.outstanding() for p, st in self._parts.items() if not st.releasing}
            parks = {p: st.park for p, st in self._parts.items() if st.park is not None and not st.releasing}
            park_over = {p for p, ps in parks.items() if ps.watermark.outstanding() >= limit or ps.inflight >= window}
            park_under = {p for p, ps in parks.items()
                          if ps.watermark.outstanding() <= limit // 2 and ps.inflight <= window // 2}
            parked_keys = sum(len(ps.keys) for ps in parks.values())
        self._held = self._hold(self._held, {p for p, n in outstanding.items() if n >= limit},
                                {p for p, n in outstanding.items() if n <= limit // 2}, self._tps, "partition")
        if cfg.park_topic:
            self._held_park = self._hold(self._held_park, park_over, park_under, self._park_tps, "park partition")
        now = time.monotonic()
        if now >= self._next_gauges:
            self._next_gauges = now + 1.0
            for p, n in outstanding.items():
                self.metrics.outstanding_offsets.labels(*labels_of(p)).set(n)
                self.metrics.fetch_held.labels(*labels_of(p)).set(1 if p in self._held else 0)
            self.metrics.parked_keys.set(parked_keys)

    def _hold(self, held: set[PartitionId], over: set[PartitionId], under: set[PartitionId],
              tps: Callable[[Iterable[PartitionId]], list[Any]], what: str) -> set[PartitionId]:
        """Pause the partitions newly ``over`` their bound; let go of held ones back ``under`` half of it
        (resumed) or no longer owned (nothing to resume)."""
        hold = over - held
        free = {p for p in held if p in under or p not in self._parts}
        if hold:
            self._consumer.pause(tps(sorted(hold)))
            log.warning(f"{what} stops fetching: too many records outstanding behind undelivered ones",
                        extra={"partitions": format_partitions(hold)})
        if free:
            alive = [p for p in free if p in under]
            if alive and not (self._paused and self.subscribe):
                self._consumer.resume(tps(alive))
            log.info(f"{what} fetches again", extra={"partitions": format_partitions(free)})
        if hold or free:
            self._next_gauges = 0.0
        return (held | hold) - free

    def _submit(self, msgs: list[Any]) -> None:
        from confluent_kafka import KafkaError

        counts: dict[PartitionId, int] = {}
        added = 0
        with self._cond:
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() in TOPIC_GONE:
                        self._warn_topic_gone(str(m.topic()), "its partitions do not fetch", str(err))
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("fetch error", extra={"error": str(err)})
                    continue
                p, in_park = self._owner_of(m.topic(), m.partition())
                st = self._parts.get(p)
                if st is None or st.releasing:
                    continue
                stream, wm = MAIN, st.watermark
                if st.park is not None and in_park:
                    stream, wm = PARK, st.park.watermark
                gen = st.generation
                off = m.offset()
                last = wm.commit_offset()
                if last is not None and off < last:
                    continue  # already seen (defensive: a re-fetch after pause/resume)
                try:
                    wm.add(off)
                except ValueError:
                    continue
                value = m.value()
                key = m.key()
                size = (len(value) if value else 0) + (len(key) if key else 0)
                self._sched.submit(Item(p, off, key, gen, size, m, stream=stream))
                if stream == PARK and st.park is not None:
                    st.park.inflight += 1  # bounded on its own (--park-window), not by --max-inflight
                else:
                    self._inflight += 1
                    self._inflight_bytes += size
                counts[p] = counts.get(p, 0) + 1
                added += 1
        if added and self._engine is not None:
            self._engine.wake()
        self._connected = True
        for p, n in counts.items():
            self.metrics.consumed_records(p, n)

    # ---- committing ----------------------------------------------------------------------------------------
    def _commit(self, parts: frozenset[PartitionId] | None = None, sync: bool = False) -> dict[PartitionId, int]:
        """Commit each partition's watermark. A sync commit (release, shutdown) is sent even if an async
        commit of the same offset is still outstanding, so its result is known before unassigning; it
        returns the partitions whose commit failed with the Kafka error code (an async one: none, its
        callback tells)."""
        from confluent_kafka import KafkaException, TopicPartition

        self._advance_idle(parts)
        cfg = self.cfg
        with self._cond:
            states: list[tuple[str, int, PartitionState | ParkStream, int | None]] = []
            for p, st in self._parts.items():
                if parts is None or p in parts:
                    states.append((p.topic, p.partition, st, st.watermark.commit_offset()))
                    if st.park is not None:
                        states.append((cfg.park_topic, p.partition, st.park, st.park.watermark.commit_offset()))
        chosen = [(stream, TopicPartition(topic, p, off)) for topic, p, stream, off in states
                  if off is not None and (sync or stream.committed != off)]
        if not chosen:
            return {}
        tps = [tp for _, tp in chosen]
        for stream, tp in chosen:
            stream.committed = tp.offset
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=not sync)
        except KafkaException as exc:
            self.metrics.commit_errors.inc()
            for stream, _ in chosen:
                stream.committed = None
            if self._warn_now(f"commit:{exc}"):
                log.warning("offset commit failed", extra={"error": str(exc), "sync": sync})
            code = exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else -1
            return {self._owner_of(tp.topic, tp.partition)[0]: code for tp in tps} if sync else {}
        failed: dict[PartitionId, int] = {}
        if sync and result:
            sent = {(tp.topic, tp.partition): stream for stream, tp in chosen}
            for tp in result:
                pid, in_park = self._owner_of(tp.topic, tp.partition)
                if tp.error is None and tp.offset >= 0:
                    if not in_park:
                        self.metrics.committed_offset.labels(*labels_of(pid)).set(tp.offset)
                elif tp.error is not None:
                    failed.setdefault(pid, tp.error.code())
                    gone = sent.get((tp.topic, tp.partition))
                    if gone is not None:
                        gone.committed = None
        if failed:
            self.metrics.commit_errors.inc()
        return failed

    def _advance_idle(self, parts: frozenset[PartitionId] | None) -> None:
        """Partitions whose every fetched record is done commit the consumer's position, which is past any
        transaction marker (an idle transactional partition otherwise keeps lag 1 forever: a false STALL,
        and no scale to zero). Only the poll thread consumes, so no record arrives in between."""
        from confluent_kafka import KafkaException

        with self._cond:
            idle = [p for p, st in self._parts.items()
                    if (parts is None or p in parts) and st.watermark.outstanding() == 0]
        if not idle:
            return
        try:
            positions = self._consumer.position(self._tps(idle))
        except KafkaException as exc:
            log.debug("position not read", extra={"error": str(exc)})
            return
        with self._cond:
            for tp in positions:
                st = self._parts.get(PartitionId(tp.topic, tp.partition))
                if st is not None and tp.offset >= 0 and st.watermark.outstanding() == 0:
                    st.watermark.advance_to(tp.offset)

    # ---- the engine's work queue (called on the engine's loop thread) --------------------------------------
    def take(self) -> Item | None:
        """The next record that may be delivered now (its lane's head), or None; none while fenced."""
        with self._cond:
            return None if self._fence_now.is_set() else self._sched.take()

    def cancelled(self, item: Item) -> bool:
        """Checked right before every attempt: the partition released (or its drain deadline passed), a
        fence, stopping, or ownership in doubt (the source's last-moment check)."""
        st = self._parts.get(item.partition)
        if (self._abandon_all or self._fence_now.is_set() or st is None or st.generation != item.generation
                or not self._may_deliver()):
            return True
        return st.release_deadline is not None and time.monotonic() >= st.release_deadline

    def finish(self, item: Item, outcome: str) -> None:
        """The record's delivery ended: done (success, dead letter, parked) or cancelled (not done: the
        next owner, or this one after a re-fetch, delivers it again). A record of the park that is done
        frees its key once it was the key's last parked record."""
        with self._cond:
            self._sched.complete(item)
            self._uncount(item)
            st = self._parts.get(item.partition)
            if outcome != "cancelled" and st is not None and st.generation == item.generation:
                if item.stream == PARK and st.park is not None:
                    st.park.watermark.done(item.offset)
                    st.park.keys.done(park_key(self.cfg.ordering, item.key))
                else:
                    st.watermark.done(item.offset)
            else:
                self.metrics.abandoned.inc()
            if self._paused:
                self._cond.notify_all()

    # ---- the retry park (called on the engine's loop thread) ------------------------------------------------
    def _park_keys(self, item: Item) -> tuple[Any, Any] | None:
        st = self._parts.get(item.partition)
        if st is None or st.park is None or st.generation != item.generation:
            return None
        return st.park.keys, park_key(self.cfg.ordering, item.key)

    def divert(self, item: Item) -> bool:
        """A source record whose key is parked: it follows its key into the park (counted now, before its
        write, so the key stays parked until it is done there)."""
        with self._cond:
            found = self._park_keys(item)
            if found is None or not found[0].holds(found[1]):
                return False
            found[0].add(found[1])
            return True

    def hold_key(self, item: Item) -> None:
        """``item`` is about to be parked: its key is parked from now on."""
        with self._cond:
            found = self._park_keys(item)
            if found is not None:
                found[0].add(found[1])

    def unhold_key(self, item: Item) -> None:
        """``item``'s park write was given up (cancelled): it does not hold its key."""
        with self._cond:
            found = self._park_keys(item)
            if found is not None:
                found[0].done(found[1])
