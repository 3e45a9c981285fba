"""Operator metrics (Prometheus): reconcile counts, errors, duration, ConsumerGroups per phase, and each
group's rollout phase and aborted rollouts (the names the chart's alerts and dashboard query)."""

from __future__ import annotations

import contextlib
import os
import threading

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lagpilot_operator.handoff.rollout import ABORTED, CANARY, PROGRESSING, PROMOTING, STABLE
from lagpilot_operator.workload.status import PHASES

ROLLOUT_PHASES = (STABLE, PROGRESSING, CANARY, PROMOTING, ABORTED)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.reconcile_total = Counter("lagpilot_reconcile_total", "ConsumerGroup reconciles run",
                                       registry=registry)
        self.reconcile_errors = Counter("lagpilot_reconcile_errors_total",
                                        "ConsumerGroup reconciles that raised", registry=registry)
        self.reconcile_seconds = Histogram("lagpilot_reconcile_seconds", "Time per reconcile",
                                           registry=registry,
                                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.consumergroups = Gauge("lagpilot_consumergroups", "ConsumerGroups by phase", ["phase"],
                                    registry=registry)
        self.rollout_phase = Gauge("lagpilot_rollout_phase",
                                   "1 for the rollout phase a ConsumerGroup is in, 0 for the others",
                                   ["namespace", "consumergroup", "phase"], registry=registry)
        self.rollouts_aborted = Counter("lagpilot_rollouts_aborted_total",
                                        "Rollouts aborted (by canary analysis or by a user)",
                                        ["namespace", "consumergroup"], registry=registry)
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._publish()

    def set_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """Record one group's phase (None = the group is gone) and republish the per-phase counts."""
        with self._lock:
            if phase is None:
                self._phases.pop((namespace, name), None)
            else:
                self._phases[(namespace, name)] = phase
            self._publish()

    def set_rollout(self, namespace: str, name: str, phase: str | None, aborted: int = 0) -> None:
        """Record one group's rollout phase (None = the group is gone: its series are removed) and count
        rollouts that were aborted in this reconcile. The abort counter is exported at 0 from the group's
        first reconcile: a series that appears already at 1 has no increase() in Prometheus, so the
        first abort of a group would never fire LagpilotRolloutAborted."""
        if phase is None and not aborted:
            with contextlib.suppress(KeyError):
                self.rollouts_aborted.remove(namespace, name)
        else:
            self.rollouts_aborted.labels(namespace=namespace, consumergroup=name).inc(aborted)
        for p in ROLLOUT_PHASES:
            if phase is None:
                try:
                    self.rollout_phase.remove(namespace, name, p)
                except KeyError:
                    pass
            else:
                self.rollout_phase.labels(namespace=namespace, consumergroup=name, phase=p).set(
                    1 if p == phase else 0)

    def _publish(self) -> None:
        counts = dict.fromkeys(PHASES, 0)
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, n in counts.items():
            self.consumergroups.labels(phase=phase).set(n)


_metrics: OperatorMetrics | None = None


def metrics() -> OperatorMetrics:
    """The process-wide metrics (created on first use)."""
    global _metrics
    if _metrics is None:
        _metrics = OperatorMetrics()
    return _metrics


def serve(port: int, addr: str | None = None) -> None:
    """Serve /metrics (0 disables) on LAGPILOT_METRICS_BIND, else the pod's own IP, else all interfaces:
    pods sharing one host's network (the lab) then never collide on the port. Raises OSError when the
    address cannot be bound."""
    if port:
        addr = addr or os.environ.get("LAGPILOT_METRICS_BIND") or os.environ.get("POD_IP") or "0.0.0.0"
        start_http_server(port, addr=addr)
