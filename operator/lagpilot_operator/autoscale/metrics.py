"""Prometheus metrics of the lag reader and autoscaler, so that dashboards, alerts and (with autoscaling off)
an external HPA/KEDA can use the same figures the operator does. Served by the operator's metrics port."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from lagpilot_operator.autoscale.decide import ScaleDecision
from lagpilot_operator.autoscale.window import GroupEval, LagStatus

_GROUP = ("namespace", "consumergroup")


def _collectors(registry: CollectorRegistry) -> tuple[Gauge, Gauge, Gauge, Counter, Gauge]:
    return (
        Gauge("lagpilot_consumergroup_lag", "Records behind the log end, per partition",
              (*_GROUP, "topic", "partition"), registry=registry),
        Gauge("lagpilot_consumergroup_lag_total", "Records behind the log end, all partitions",
              _GROUP, registry=registry),
        Gauge("lagpilot_consumergroup_desired_workers",
              "Worker count the operator wants: the autoscaler's, else spec.workers",
              _GROUP, registry=registry),
        Counter("lagpilot_scale_events", "Worker count changes made by the autoscaler",
                (*_GROUP, "direction"), registry=registry),
        Gauge("lagpilot_consumergroup_lag_status",
              "Lag evaluation of the group: 0 OK, 1 WARN (lag growing), 2 STALL (not moving), "
              "3 STOP (not moving, no worker running)", _GROUP, registry=registry),
    )


LAG, LAG_TOTAL, DESIRED_WORKERS, SCALE_EVENTS, LAG_STATUS = _collectors(REGISTRY)

# partitions published per group, so that partitions which disappear lose their series
_published: dict[tuple[str, str], set[tuple[str, str]]] = {}


def publish(namespace: str, name: str, evaluation: GroupEval, decision: ScaleDecision | None = None,
            workers: int | None = None) -> None:
    """Set the gauges from one evaluation (and count a scale event when the decision changes the count).
    Without autoscaling (no decision) the desired count is `workers`, the count the spec asks for, so the
    dashboard's running-vs-desired panel has a line for every group."""
    parts = {(p.topic, str(p.partition)) for p in evaluation.partitions}
    for p in evaluation.partitions:
        LAG.labels(namespace, name, p.topic, str(p.partition)).set(p.lag)
    for gone in _published.get((namespace, name), set()) - parts:
        try:
            LAG.remove(namespace, name, *gone)
        except KeyError:
            pass
    _published[(namespace, name)] = parts
    LAG_TOTAL.labels(namespace, name).set(evaluation.total)
    LAG_STATUS.labels(namespace, name).set(int(evaluation.status))
    desired = decision.desired if decision is not None else workers
    if desired is not None:
        DESIRED_WORKERS.labels(namespace, name).set(desired)
    if decision is not None and decision.direction is not None:
        SCALE_EVENTS.labels(namespace, name, decision.direction).inc()


def forget(namespace: str, name: str) -> None:
    """Remove every series of a deleted ConsumerGroup."""
    for part in _published.pop((namespace, name), set()):
        try:
            LAG.remove(namespace, name, *part)
        except KeyError:
            pass
    for gauge in (LAG_TOTAL, DESIRED_WORKERS, LAG_STATUS):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass
    for direction in ("up", "down"):
        try:
            SCALE_EVENTS.remove(namespace, name, direction)
        except KeyError:
            pass


def status_value(status: LagStatus) -> int:
    return int(status)
