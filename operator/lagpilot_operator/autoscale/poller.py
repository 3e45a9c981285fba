"""kopf wiring of the lag reader and autoscaler: every `spec.autoscaling.pollSeconds` (15 s by default; lag
is reported with autoscaling off too) each ConsumerGroup's lag is read in its connection's batched round
(autoscale.rounds), and `LagPoller.apply` patches `status.lag` when a figure changed, emits the Events, and,
when autoscaling may decide, writes the new count to `status.workers` and runs the operator's reconcile,
which sizes the Deployment from `workers.effective_workers`.

Conditions stay the reconcile's: a lag read that fails (brokers unreachable, topic gone) is shown in
`status.lag.error` and, only when the reconcile's own topic check does not already say so in Degraded, as
an Event; it never writes Ready/Degraded, so the two readers cannot flip the conditions against each other.

The blocking work (Kafka reads, API calls) runs in a small thread pool of its own, so that slow brokers
never take the kopf executor's threads from the reconcile handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import kopf
from prometheus_client import Counter, Gauge

from lagpilot.protocol import GROUP, PLURAL, VERSION
from lagpilot_operator.autoscale.decide import ScaleState
from lagpilot_operator.autoscale.offsets import KafkaUnavailable, LagSnapshot, TopicNotFound
from lagpilot_operator.autoscale.step import Event, GroupLagState, LagMonitor
from lagpilot_operator.brokererrors import classify
from lagpilot_operator.brokers import connection_key, recent_errors
from lagpilot_operator.index import GroupIndex
from lagpilot_operator.kube import Kube
from lagpilot_operator.resource.conditions import find
from lagpilot_operator.resource.patch import merge_patch
from lagpilot_operator.resource.spec import NO_CONTACT, ConsumerGroupSpec, bootstrap_problems, parse
from lagpilot_operator.settings import Settings
from lagpilot_operator.workload.reconcile import kafka_security_and_missing
from lagpilot_operator.workload.sizing import ScalingMode, effective_workers, scaling_mode

log = logging.getLogger("lagpilot.operator.lag")

DEFAULT_POLL_SECONDS = 15.0
POLLS = Counter("lagpilot_lag_polls", "Lag polls completed per ConsumerGroup (status.lag is written only on "
                "change, so this shows that polling goes on)", ("namespace", "consumergroup"))
LAST_READ = Gauge("lagpilot_lag_last_read_timestamp_seconds", "When the group's lag was last read from the "
                  "brokers (Unix time)", ("namespace", "consumergroup"))
ROUNDS = Counter("lagpilot_lag_rounds", "Batched lag rounds (one per connection and poll period)")
ROUND_REQUESTS = Counter("lagpilot_lag_broker_requests", "Broker client calls made by lag rounds (the commit log's "
                         "continuous Fetch aside)")
SCALE_REASONS = ("ScaledUp", "ScaledDown")
ERROR_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (KafkaUnavailable, "BrokerUnreachable"), (TopicNotFound, "TopicNotFound"))


def lag_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether status.lag needs a write: some figure changed (or it was never written). Unchanged figures
    are never rewritten, so an idle group's CR keeps its resourceVersion and nothing is written while
    nothing changes; `updatedAt` is the read that produced the figures, and how fresh the reads are shows in
    the `lagpilot_lag_last_read_timestamp_seconds` metric."""
    prev = dict(previous or {})
    if "updatedAt" not in prev:
        return True
    return {k: v for k, v in prev.items() if k != "updatedAt"} != {k: v for k, v in new.items() if k != "updatedAt"}


def error_reason(exc: Exception) -> str:
    return next(reason for kind, reason in ERROR_REASONS if isinstance(exc, kind))


def error_lag_status(previous: Mapping[str, Any] | None, reason: str, message: str) -> dict[str, Any]:
    """status.lag when the lag could not be read: the last figures and updatedAt stay (so their age shows),
    the status becomes UNKNOWN and `error` says why."""
    return {**(previous or {}), "status": "UNKNOWN", "error": f"{reason}: {message}"[:1000]}


def seed_history(monitor: LagMonitor, namespace: str, name: str, current: int, now: float) -> bool:
    """First poll of a group in this process (operator start or restart, group created): start the
    recommendation history with the count that runs, as the HPA does, so that a restart never lets the
    next poll scale down before a whole scale-down window has passed. True when it seeded.

    (LagMonitor has no public setter; this reaches into its state map under its lock.)"""
    with monitor._lock:
        if (namespace, name) in monitor._states:
            return False
        monitor._states[(namespace, name)] = GroupLagState(scale=ScaleState(((now, current),)))
        return True


def degraded_reason(status: Mapping[str, Any]) -> str | None:
    c = find(list(status.get("conditions") or []), "Degraded")
    return str(c.get("reason")) if c and c.get("status") == "True" else None


@dataclass(frozen=True)
class PollOutcome:
    """What one poll did (for logs and tests): the next delay, the count written (if any), the Events."""

    sleep: float
    workers: int | None = None
    events: tuple[Event, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Prepared:
    """One group ready to be read: its body (from the watch index), parsed spec and scaling mode."""

    namespace: str
    name: str
    body: Mapping[str, Any]
    spec: ConsumerGroupSpec
    mode: ScalingMode
    current: int
    sleep: float
    security: Mapping[str, str]

    @property
    def topics(self) -> list[str]:
        """The topics whose lag counts: those of the spec that the last reconcile found (status.topics), so
        one deleted topic of several does not stop the lag of the others; a pattern's, as it resolved."""
        found = (self.body.get("status") or {}).get("topics")
        if isinstance(found, Mapping) and found:
            present = [t for t, n in found.items() if n is not None]
            if self.spec.topic_pattern is not None:
                return sorted(present)
            return [t for t in self.spec.topics if t in present] or list(self.spec.topics)
        return list(self.spec.topics)


class LagPoller:
    """One poll of one ConsumerGroup, synchronous (runs in the lag thread pool): `prepare` it from the
    body the operator's watch holds, read (alone with `poll`, or in a batched round), then `apply` the
    snapshot. An unchanged group costs no API call: the CR is re-read (under the reconcile's lock) only
    when there is something to write."""

    def __init__(self, kube: Kube, settings: Settings, monitor: LagMonitor,
                 lock: Callable[[str, str], threading.Lock], reconcile: Callable[[Mapping[str, Any]], Any],
                 emit: Callable[[Mapping[str, Any], Event], None], clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.kube = kube
        self.settings = settings
        self.monitor = monitor
        self.lock = lock
        self.reconcile = reconcile
        self.emit = emit
        self._errors: dict[tuple[str, str], str] = {}  # last lag-read error reason per group

    def prepare(self, body: Mapping[str, Any] | None) -> Prepared | None:
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec, problems = parse(body, self.settings.consumer_image)
        if spec is None:
            return None
        problems += bootstrap_problems(spec, self.settings.allowed_bootstrap_servers)
        if any(p.code in NO_CONTACT for p in problems):
            return None  # no credentials to brokers this operator may not talk to (status says why)
        namespace, name = str(body["metadata"]["namespace"]), str(body["metadata"]["name"])
        status = body.get("status") or {}
        mode = scaling_mode(spec, problems, body["metadata"].get("annotations"))
        current = effective_workers(spec, status)
        if mode.decide:
            seed_history(self.monitor, namespace, name, current, self.clock())
        security, unread = kafka_security_and_missing(spec, self.kube)
        if unread:
            return None  # a credential is missing: the reconcile reports SecretNotFound; nothing to read with
        prep = Prepared(namespace, name, body, spec, mode, current, float(spec.autoscaling.poll_seconds),
                        security)
        if not prep.topics:
            return None  # a pattern the reconcile has not resolved yet (or that matches nothing): no lag
        return prep

    def poll(self, namespace: str, name: str) -> PollOutcome:
        """Read and apply one group on its own (tests, and the CLI's way of reading one group)."""
        prep = self.prepare(self.kube.get("ConsumerGroup", namespace, name))
        if prep is None:
            return PollOutcome(DEFAULT_POLL_SECONDS)
        try:
            snapshot = self.monitor.reader(prep.spec.bootstrap_servers, prep.security).read(
                prep.spec.group_id, prep.topics)
        except (KafkaUnavailable, TopicNotFound) as exc:
            return self.apply(prep, exc)
        return self.apply(prep, snapshot)

    def apply(self, prep: Prepared, read: LagSnapshot | Exception) -> PollOutcome:
        namespace, name, spec, current, sleep = prep.namespace, prep.name, prep.spec, prep.current, prep.sleep
        if isinstance(read, KafkaUnavailable):
            # The same precise reason as the reconcile's (an untrusted certificate, rejected credentials).
            reason, message = classify(recent_errors(connection_key(spec.bootstrap_servers, prep.security)),
                                       str(read))
            return self._failed(prep.body, reason, message, sleep)
        if isinstance(read, TopicNotFound):
            return self._failed(prep.body, error_reason(read), str(read), sleep)
        if isinstance(read, Exception):
            raise read
        status = prep.body.get("status") or {}
        step = self.monitor.step(namespace, name, read, replace(spec.autoscaling, enabled=prep.mode.decide),
                                 current, int(status.get("readyWorkers") or 0), self.clock())
        self._errors.pop((namespace, name), None)
        POLLS.labels(namespace, name).inc()
        LAST_READ.labels(namespace, name).set(read.taken_at)
        lag = dict(step.lag_status)
        if prep.mode.note:
            lag["reason"] = prep.mode.note
        events = step.events
        written: int | None = None
        fresh: Mapping[str, Any] = prep.body
        if step.workers is not None or lag_changed(status.get("lag"), lag):
            with self.lock(namespace, name):
                # Re-read under the reconcile's lock: write the count only if no reconcile changed it since we
                # read it (e.g. autoscaling just turned off); the next poll decides again from the new count.
                got = self.kube.get("ConsumerGroup", namespace, name)
                if got is None:
                    return PollOutcome(sleep)
                fresh = got
                fresh_status = fresh.get("status") or {}
                fresh_spec, _ = parse(fresh, self.settings.consumer_image)
                patch: dict[str, Any] = {}
                if lag_changed(fresh_status.get("lag"), lag):
                    patch["lag"] = merge_patch(fresh_status.get("lag"), lag)
                if step.workers is not None and fresh_spec is not None and \
                        effective_workers(fresh_spec, fresh_status) == current:
                    patch["workers"] = written = step.workers
                if patch:
                    self.kube.patch_status(namespace, name, patch)
        if step.workers is not None and written is None:
            events = tuple(e for e in events if e.reason not in SCALE_REASONS)
        for e in events:
            self.emit(fresh, e)
        if written is not None:
            log.info("%s/%s: %d -> %d workers", namespace, name, current, written)
            self.reconcile(fresh)
        return PollOutcome(sleep, written, events)

    def _failed(self, body: Mapping[str, Any], reason: str, message: str, sleep: float) -> PollOutcome:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        status = body.get("status") or {}
        lag = error_lag_status(status.get("lag"), reason, message)
        if lag != status.get("lag"):
            self.kube.patch_status(namespace, name, {"lag": merge_patch(status.get("lag"), lag)})
        events: tuple[Event, ...] = ()
        if self._errors.get((namespace, name)) != reason and degraded_reason(status) != reason:
            events = (Event("Warning", reason, f"cannot read lag: {message}"[:1000]),)
            self.emit(body, events[0])
        self._errors[(namespace, name)] = reason
        log.warning("%s/%s: lag not read: %s: %s", namespace, name, reason, message)
        return PollOutcome(sleep, events=events, error=reason)

    def forget(self, namespace: str, name: str) -> None:
        self._errors.pop((namespace, name), None)
        self.monitor.forget(namespace, name)
        for metric in (POLLS, LAST_READ):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)


def _kopf_emit(body: Any, e: Event) -> None:
    kopf.event(body, type=e.type, reason=e.reason, message=e.message[:1000])


def register(registry: kopf.OperatorRegistry, kube: Kube, settings: Settings,
             lock: Callable[[str, str], threading.Lock], reconcile: Callable[[Mapping[str, Any]], Any],
             index: GroupIndex, on_partitions: Callable[[str, Mapping[str, int]], None] = lambda c, p: None,
             on_first_event: list[Callable[[], None]] | None = None, monitor: LagMonitor | None = None,
             threads: int = 4) -> LagPoller:
    """Attach the lag rounds (started with the operator, over the group index) and the forget-on-delete
    handler to `registry`. `lock` and `reconcile` are the operator's per-group lock and reconcile entry
    point (handlers.py); `on_partitions` receives the partition counts each round saw (the reconcile's topic
    reader uses them instead of its own metadata reads). The rounds start with the first watch event
    (`on_first_event`, run by the index handler in kopf's resource context, which kopf.event needs)."""
    from lagpilot_operator.autoscale.rounds import LagRounds

    poller = LagPoller(kube, settings, monitor or LagMonitor(timeout=max(10.0, settings.broker_timeout_seconds)),
                       lock, reconcile, _kopf_emit)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lag")
    rounds = LagRounds(poller, index, pool, on_partitions)

    if on_first_event is not None:
        on_first_event.append(rounds.start)

    @kopf.on.cleanup(registry=registry)
    async def stop_lag_rounds(**_: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, rounds.stop)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="lag-forget", optional=True, registry=registry)
    def lag_forget(namespace: str | None, name: str, **_: Any) -> None:
        poller.forget(namespace or "", name)
        rounds.forget((namespace or "", name))

    return poller
