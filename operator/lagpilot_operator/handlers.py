"""kopf wiring: every trigger (CR created/changed/resumed, periodic resync, a worker Deployment changed)
runs the same level-based `reconcile` for the ConsumerGroup, serialised per group by a lock."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import kopf

from lagpilot.protocol import GROUP, LABEL_CG, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from lagpilot_operator.handoff.shell import forget_group
from lagpilot_operator.handoff.triggers import FAST_INTERVAL_SECONDS, LeaseKey, in_motion, lease_changed
from lagpilot_operator.kube import Kube
from lagpilot_operator.metrics import metrics
from lagpilot_operator.settings import Settings
from lagpilot_operator.workload import reconcile as rec
from lagpilot_operator.workload.topics import TopicReader

log = logging.getLogger("lagpilot.operator")


@dataclass
class Context:
    settings: Settings
    kube: Kube
    topics: TopicReader


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
                                                              message=message[:1000]))
        except Exception:
            m.reconcile_errors.inc()
            raise
        finally:
            m.reconcile_seconds.observe(time.perf_counter() - started)
        m.set_phase(namespace, name, result.phase)
        if result.rollout_phase is not None or result.aborted:
            m.set_rollout(namespace, name, result.rollout_phase, result.aborted)
        return result.phase


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

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """In-cluster service account, else KUBECONFIG (the same sources as our own client)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    def on_change(body: kopf.Body, **_: Any) -> None:
        run_reconcile(ctx, body)  # returns nothing: kopf would store a result in status.<handler id>

    @kopf.timer(GROUP, VERSION, PLURAL, id="resync", interval=ctx.settings.resync_seconds, sharp=False,
                registry=registry)
    def resync(body: kopf.Body, **_: Any) -> None:
        run_reconcile(ctx, body)

    @kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGER, LABEL_CG: kopf.PRESENT},
                   id="worker-changed", registry=registry)
    def worker_changed(body: kopf.Body, **_: Any) -> None:
        """A worker Deployment changed (drift, deletion, readiness): reconcile its group now."""
        name = body["metadata"]["labels"][LABEL_CG]
        namespace = body["metadata"]["namespace"]
        if ctx.kube.get("ConsumerGroup", namespace, name) is not None:
            run_reconcile(ctx, {"metadata": {"name": name, "namespace": namespace}})

    if ctx.settings.assignment_mode == "k8s":
        _register_handoff_triggers(ctx, registry)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        metrics().set_phase(namespace, name, None)
        metrics().set_rollout(namespace, name, None)
        forget_group(namespace, name)

    # Lag reading and autoscaling (operator/lag_handler.py): a daemon per group, sharing the group lock.
    from lagpilot_operator.autoscale import poller as lag_handler

    lag_handler.register(registry, ctx.kube, ctx.settings, lock=_lock, reconcile=lambda b: run_reconcile(ctx, b))


def _register_handoff_triggers(ctx: Context, registry: kopf.OperatorRegistry) -> None:
    """Partition hand-offs wait on workers' Lease reports: reconcile the group when a Lease reports
    something new, and every FAST_INTERVAL_SECONDS while partitions are in motion (no API call otherwise:
    the check reads kopf's cached status)."""
    seen: dict[tuple[str, str], LeaseKey] = {}
    seen_guard = threading.Lock()

    @kopf.on.event("coordination.k8s.io", "v1", "leases", labels={LABEL_CG: kopf.PRESENT}, id="lease-changed",
                   registry=registry)
    def lease_changed_handler(body: kopf.Body, type: str | None, **_: Any) -> None:
        with seen_guard:
            news = lease_changed(seen, type, body)
        if not news:
            return
        name = body["metadata"]["labels"][LABEL_CG]
        namespace = body["metadata"]["namespace"]
        if ctx.kube.get("ConsumerGroup", namespace, name) is not None:
            run_reconcile(ctx, {"metadata": {"name": name, "namespace": namespace}})

    @kopf.timer(GROUP, VERSION, PLURAL, id="handoff", interval=FAST_INTERVAL_SECONDS, sharp=False,
                registry=registry)
    def handoff(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
        if in_motion(status):
            run_reconcile(ctx, body)
