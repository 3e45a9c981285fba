"""kopf wiring: every trigger (CR created/changed/resumed, a worker Deployment, Lease or pod changed, the
periodic resync, the hand-off's fast ticks) runs the same level-based `reconcile` for the ConsumerGroup,
serialised per group by a lock.

Periodic work is not a kopf timer per group: one resync thread walks the operator's group index (fed by
kopf's watch) and reconciles a group only when `workload.resync.resync_due` says so, or every
FAST_INTERVAL_SECONDS while its partitions are in motion; lag is read in batched rounds (autoscale.rounds).
So N idle groups cost no API call and no Event per period."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from lagpilot.protocol import GROUP, LABEL_CG, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from lagpilot_operator.handoff.shell import forget_group
from lagpilot_operator.handoff.triggers import FAST_INTERVAL_SECONDS, LeaseKey, in_motion, lease_changed
from lagpilot_operator.index import GroupIndex
from lagpilot_operator.kube import Kube
from lagpilot_operator.metrics import metrics
from lagpilot_operator.settings import Settings
from lagpilot_operator.workload import reconcile as rec
from lagpilot_operator.workload import status as st
from lagpilot_operator.workload.applied import AppliedCache
from lagpilot_operator.workload.resync import Settled, full_resync_seconds, resync_due
from lagpilot_operator.workload.topics import TopicReader

log = logging.getLogger("lagpilot.operator")

KOPF_WORKER_LIMIT = 64  # per watched resource kind; see `configure`


@dataclass
class Context:
    settings: Settings
    kube: Kube
    topics: TopicReader
    index: GroupIndex = field(default_factory=GroupIndex)
    settled: dict[tuple[str, str], Settled] = field(default_factory=dict)
    on_first_event: list[Callable[[], None]] = field(default_factory=list)  # periodic loops to start
    loops_started: bool = False
    resync: ResyncLoop | None = None  # set by `register`
    applied: AppliedCache | None = None  # set by `register`

    def request(self, namespace: str, name: str) -> None:
        """Something the group depends on changed: reconcile it soon, coalesced with other requests."""
        if self.resync is not None and self.index.get((namespace, name)) is not None:
            self.resync.request((namespace, name))


_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def run_reconcile(ctx: Context, body: Any) -> str:
    """Reconcile with fresh input: re-read the CR so a queued trigger never acts on a stale body."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    m = metrics()
    with _lock(namespace, name):
        fresh = ctx.kube.get("ConsumerGroup", namespace, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            m.set_phase(namespace, name, None)
            m.set_rollout(namespace, name, None)
            return "Deleted"
        m.reconcile_total.inc()
        started = time.perf_counter()
        try:
            result = rec.reconcile(
                fresh, ctx.kube, ctx.topics, ctx.settings,
                emit=lambda kind, reason, message: kopf.event(cast(Any, fresh), type=kind, reason=reason,
                                                              message=message[:1000]),
                applied=ctx.applied)
        except Exception:
            m.reconcile_errors.inc()
            raise
        finally:
            m.reconcile_seconds.observe(time.perf_counter() - started)
        m.set_phase(namespace, name, result.phase)
        if result.rollout_phase is not None or result.aborted:
            m.set_rollout(namespace, name, result.rollout_phase, result.aborted)
        ctx.settled[(namespace, name)] = Settled(result.resource_version, result.quiet, result.connection,
                                                 result.topics, result.partitions, time.monotonic(),
                                                 result.pattern)
        return result.phase


class ResyncLoop:
    """One thread for every group's periodic work: each tick it walks the group index and queues a
    reconcile for groups whose partitions are in motion (every FAST_INTERVAL_SECONDS) or whose resync is
    due. Reconciles run in a small pool of their own, coalesced per group like controller-runtime's work
    queue: at most one queued and one running per group, and a request while one runs makes it run once
    more after (it may have read the world before the change). The watch triggers (a worker Deployment,
    pod or Lease changed, an owned object deleted) request here too, rather than reconciling in kopf's
    handler threads: a worker starting sent five or six events for its group, each holding one of kopf's
    threads on that group's lock, and a spec change of another group then waited seconds for a thread."""

    TICK_SECONDS = 0.5

    def __init__(self, ctx: Context, threads: int = 4) -> None:
        self.ctx = ctx
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="resync")
        self._queued: set[tuple[str, str]] = set()
        self._running: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base: contextvars.Context | None = None

    def start(self) -> None:
        # kopf's context as the loops start (kopf.event needs kopf's posting queue from it). Every reconcile
        # runs in a copy of this one, never of the requester's: a watch handler's context holds kopf's whole
        # cause for its event (body, diff, patch, logger), and a thousand queued requests each holding one
        # were most of the operator's memory while 1 000 groups started.
        self._base = contextvars.copy_context()
        self._thread = threading.Thread(target=self._base.copy().run, args=(self._run,), name="resync",
                                        daemon=True)
        self._thread.start()

    def _submit(self, key: tuple[str, str]) -> None:
        base = self._base if self._base is not None else contextvars.copy_context()
        self.pool.submit(base.copy().run, self._reconcile, key)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.wait(self.TICK_SECONDS):
            try:
                self.tick(time.monotonic())
            except Exception:
                log.exception("resync scheduling failed")

    def due(self, key: tuple[str, str], body: Any, now: float) -> bool:
        settings, settled = self.ctx.settings, self.ctx.settled.get(key)
        if settings.assignment_mode == "k8s" and in_motion(body.get("status")):
            return settled is None or now - settled.at >= FAST_INTERVAL_SECONDS
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        partitions = self.ctx.topics.known_partitions(settled.connection, settled.topics) if settled else None
        served_at = self.ctx.index.served_at(key)
        return resync_due(settled, rv, partitions, now, settings.resync_seconds,
                          full_resync_seconds(settings.full_resync_seconds, key),
                          now if served_at is None else served_at)

    def tick(self, now: float) -> int:
        queued = 0
        for key, body in self.ctx.index.items():
            if (body.get("metadata") or {}).get("deletionTimestamp") or not self.due(key, body, now):
                continue
            queued += self._enqueue(key, rerun_if_running=False)  # a due resync needs no second run
        return queued

    def request(self, key: tuple[str, str]) -> bool:
        """Reconcile `key` soon; False when that was already arranged (queued, or a rerun marked), or the
        operator is stopping."""
        return self._enqueue(key, rerun_if_running=True)

    def _enqueue(self, key: tuple[str, str], rerun_if_running: bool) -> bool:
        with self._guard:
            if self._stop.is_set() or key in self._queued:
                return False
            if key in self._running:
                if not rerun_if_running or key in self._again:
                    return False
                self._again.add(key)
                return True
            self._queued.add(key)
        self._submit(key)
        return True

    def _reconcile(self, key: tuple[str, str]) -> None:
        with self._guard:
            self._queued.discard(key)
            self._running.add(key)
        try:
            run_reconcile(self.ctx, {"metadata": {"namespace": key[0], "name": key[1]}})
        except Exception:
            log.exception("%s/%s: resync failed", *key)
            # Not quiet: try again after the resync interval.
            old = self.ctx.settled.get(key)
            self.ctx.settled[key] = Settled(old.resource_version if old else "", False, None, (), None,
                                            time.monotonic())
        finally:
            with self._guard:
                self._running.discard(key)
                again = key in self._again and not self._stop.is_set()
                self._again.discard(key)
                if again:
                    self._queued.add(key)
            if again:
                self._submit(key)


def register(ctx: Context, registry: kopf.OperatorRegistry) -> None:
    """Attach the handlers to `registry` (explicit, so tests and main control what runs)."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        # Only our own kopf.event calls (real transitions) and kopf's warnings become Events: at INFO, every
        # "Handler ... succeeded." of every timer tick of every group was posted as an Event.
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 270
        settings.execution.max_workers = 8
        # At most this many groups in kopf's hands at once: unbounded, a start with 1 000 groups had every
        # group's body, diff and pending handler call alive together (5 M Python objects at the peak,
        # 545 MB RSS that fragmentation then kept) while the 8 handler threads worked through them. A worker
        # holds its slot until idle for `idle_timeout`, so that is shortened too; 64 slots of (handler time
        # + 1 s) still keep the 8 handler threads busy.
        settings.queueing.worker_limit = KOPF_WORKER_LIMIT
        settings.queueing.idle_timeout = 1.0

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account, else KUBECONFIG (the same sources as our own client)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    def on_change(body: kopf.Body, **_: Any) -> None:
        run_reconcile(ctx, body)  # returns nothing: kopf would store a result in status.<handler id>

    resync = ctx.resync = ResyncLoop(ctx)
    if ctx.applied is None:
        ctx.applied = AppliedCache(ttl=ctx.settings.full_resync_seconds)

    @kopf.on.event(GROUP, VERSION, PLURAL, id="index", registry=registry)
    async def index(body: kopf.Body, type: str | None, **_: Any) -> None:
        """Keep the group index current (async: no thread hop for every watch event). The periodic loops
        start from here, in a resource handler's context: kopf.event needs kopf's event queue, which kopf
        sets only for resource handlers (not for startup handlers)."""
        ctx.index.observe(type, body)
        if not ctx.loops_started:
            ctx.loops_started = True
            for start in ctx.on_first_event:
                start()

    ctx.on_first_event.append(resync.start)

    @kopf.daemon(GROUP, VERSION, PLURAL, id="served", cancellation_timeout=5.0, registry=registry)
    async def served(namespace: str | None, name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
        """A token, not a loop: the group is in the periodic loops' view while kopf runs this daemon."""
        key = (namespace or "", name)
        ctx.index.serve(key, True)
        try:
            await stopped.wait()
        finally:
            ctx.index.serve(key, False)

    @kopf.on.cleanup(registry=registry)
    async def stop_resync(**_: Any) -> None:
        resync.stop()

    for group, version, plural, kind in (("", "v1", "configmaps", "ConfigMap"), ("", "v1", "services", "Service"),
                                         ("", "v1", "serviceaccounts", "ServiceAccount"),
                                         ("rbac.authorization.k8s.io", "v1", "roles", "Role"),
                                         ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")):
        _register_deleted_trigger(ctx, registry, group, version, plural, kind)

    pod_troubles: dict[tuple[str, str], Any] = {}
    pod_troubles_guard = threading.Lock()

    @kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGER, LABEL_CG: kopf.PRESENT}, id="pod-changed",
                   registry=registry)
    async def pod_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        """A worker pod's trouble (crash loop, image pull, unschedulable) began, changed or ended: reconcile
        soon, so the condition follows without waiting for a resync. Other pod updates carry nothing new."""
        key = (str(body["metadata"]["namespace"]), str(body["metadata"]["name"]))
        trouble = None if type == "DELETED" else st.pod_trouble(body)
        with pod_troubles_guard:
            before = pod_troubles.get(key)
            if type == "DELETED":
                pod_troubles.pop(key, None)
            else:
                pod_troubles[key] = trouble
        if trouble == before:
            return
        ctx.request(key[0], body["metadata"]["labels"][LABEL_CG])

    @kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER, LABEL_CG: kopf.PRESENT},
                   id="worker-changed", registry=registry)
    async def worker_changed(body: kopf.Body, **_: Any) -> None:
        """A worker Deployment changed (drift, deletion, readiness): reconcile its group soon."""
        ctx.request(body["metadata"]["namespace"], body["metadata"]["labels"][LABEL_CG])

    if ctx.settings.assignment_mode == "k8s":
        _register_handoff_triggers(ctx, registry)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        metrics().set_phase(namespace, name, None)
        metrics().set_rollout(namespace, name, None)
        forget_group(namespace, name)
        ctx.settled.pop((namespace, name), None)

    # Lag reading and autoscaling: batched rounds over the group index, sharing the group lock.
    from lagpilot_operator.autoscale import poller as lag_handler

    lag_handler.register(registry, ctx.kube, ctx.settings, lock=_lock, reconcile=lambda b: run_reconcile(ctx, b),
                         index=ctx.index, on_partitions=ctx.topics.note, on_first_event=ctx.on_first_event)


def _register_deleted_trigger(ctx: Context, registry: kopf.OperatorRegistry, group: str, version: str,
                              plural: str, kind: str) -> None:
    """An object the reconcile owns was deleted (by a person, GitOps, a script): reconcile its group now
    rather than at the next full resync. Any other change only makes the next reconcile of the group read
    the object back (it is no longer known to match its plan: `AppliedCache`)."""

    @kopf.on.event(group, version, plural, labels={LABEL_MANAGED_BY: MANAGER, LABEL_CG: kopf.PRESENT},
                   id=f"{plural}-deleted", registry=registry)
    async def deleted(body: kopf.Body, type: str | None, **_: Any) -> None:
        meta = body["metadata"]
        if ctx.applied is not None:
            ctx.applied.forget(kind, str(meta["namespace"]), str(meta["name"]))
        if type == "DELETED":
            ctx.request(meta["namespace"], meta["labels"][LABEL_CG])


def _register_handoff_triggers(ctx: Context, registry: kopf.OperatorRegistry) -> None:
    """Partition hand-offs wait on workers' Lease reports: reconcile the group when a Lease reports
    something new (the fast ticks while partitions are in motion are the ResyncLoop's)."""
    seen: dict[tuple[str, str], LeaseKey] = {}
    seen_guard = threading.Lock()

    @kopf.on.event("coordination.k8s.io", "v1", "leases", labels={LABEL_CG: kopf.PRESENT}, id="lease-changed",
                   registry=registry)
    async def lease_changed_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
        with seen_guard:
            news = lease_changed(seen, type, body)
        if news:
            ctx.request(body["metadata"]["namespace"], body["metadata"]["labels"][LABEL_CG])
