"""The operator wiring of the autoscaler: which worker count the planner runs (`effective_workers`), when the
autoscaler may decide (`scaling_mode`), the status.lag patch, and one poll of `LagPoller` against an
in-memory API (a dict store applying merge patches) and synthetic broker snapshots fed to the real
LagMonitor and autoscaling step."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot_operator.autoscale.offsets import KafkaUnavailable, LagSnapshot, TopicNotFound, build_snapshot
from lagpilot_operator.autoscale.poller import (
    LagPoller,
    degraded_reason,
    error_lag_status,
    error_reason,
    lag_changed,
)
from lagpilot_operator.autoscale.step import Event, LagMonitor
from lagpilot_operator.resource.patch import merge_patch
from lagpilot_operator.resource.spec import ConsumerGroupSpec, Problem, parse
from lagpilot_operator.settings import Settings
from lagpilot_operator.workload import plan
from lagpilot_operator.workload.sizing import (
    ANNOTATION_PAUSE,
    ScalingMode,
    effective_workers,
    pause_requested,
    scaling_mode,
)

pytestmark = pytest.mark.unit


def cg(workers: int = 2, autoscaling: Mapping[str, Any] | None = None, paused: bool = False,
       annotations: Mapping[str, str] | None = None, status: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"bootstrapServers": "kafka:9092", "topic": "orders", "workers": workers,
                            "target": {"url": "http://billing/api"}, "paused": paused}
    if autoscaling is not None:
        spec["autoscaling"] = dict(autoscaling)
    return {"metadata": {"name": "cg", "namespace": "ns", "uid": "u1", "annotations": dict(annotations or {})},
            "spec": spec, "status": dict(status or {})}


def parsed(body: Mapping[str, Any]) -> ConsumerGroupSpec:
    spec, problems = parse(body, "img")
    assert spec is not None and not problems, problems
    return spec


ON = {"enabled": True, "minWorkers": 1, "maxWorkers": 6, "lagPerWorker": 100, "pollSeconds": 5,
      "scaleDownStabilizationSeconds": 30}


# --- effective_workers: what the planner sizes the Deployment to ------------------------------------------

def test_autoscaling_off_runs_spec_workers_whatever_status_says() -> None:
    assert effective_workers(parsed(cg(workers=3)), {"workers": 5}) == 3


def test_autoscaling_on_runs_the_autoscalers_count_from_status_not_spec() -> None:
    assert effective_workers(parsed(cg(workers=2, autoscaling=ON)), {"workers": 5}) == 5


def test_autoscaling_on_before_any_decision_starts_from_spec_workers() -> None:
    assert effective_workers(parsed(cg(workers=2, autoscaling=ON)), {}) == 2
    assert effective_workers(parsed(cg(workers=2, autoscaling=ON)), None) == 2


@pytest.mark.parametrize("bad", [None, True, -1, "5", 2.5])
def test_unusable_status_workers_falls_back_to_spec_workers(bad: Any) -> None:
    assert effective_workers(parsed(cg(workers=2, autoscaling=ON)), {"workers": bad}) == 2


def test_bounds_changed_in_spec_apply_at_once() -> None:
    assert effective_workers(parsed(cg(autoscaling={**ON, "maxWorkers": 3})), {"workers": 5}) == 3
    assert effective_workers(parsed(cg(autoscaling={**ON, "minWorkers": 4})), {"workers": 2}) == 4


def test_scaled_to_zero_stays_zero_with_min_workers_zero() -> None:
    assert effective_workers(parsed(cg(autoscaling={**ON, "minWorkers": 0})), {"workers": 0}) == 0


def test_no_max_workers_leaves_the_cap_to_the_autoscaler() -> None:
    on = {k: v for k, v in ON.items() if k != "maxWorkers"}
    assert effective_workers(parsed(cg(autoscaling=on)), {"workers": 40}) == 40


def test_planner_desired_workers_is_effective_workers() -> None:
    spec = parsed(cg(workers=2, autoscaling=ON))
    assert plan.desired_workers(spec, {"workers": 4}) == 4
    assert plan.desired_workers(spec) == 2
    assert plan.desired_workers(parsed(cg(workers=2)), {"workers": 4}) == 2


@given(enabled=st.booleans(), spec_workers=st.integers(0, 50), min_w=st.integers(0, 10),
       extra=st.none() | st.integers(0, 10), status_workers=st.none() | st.integers(-3, 60))
def test_effective_workers_is_spec_workers_when_off_and_within_bounds_when_on(
        enabled: bool, spec_workers: int, min_w: int, extra: int | None, status_workers: int | None) -> None:
    auto: dict[str, Any] = {"enabled": enabled, "minWorkers": min_w}
    if extra is not None:
        auto["maxWorkers"] = max(1, min_w + extra)
    spec = parsed(cg(workers=spec_workers, autoscaling=auto))
    got = effective_workers(spec, {} if status_workers is None else {"workers": status_workers})
    if not enabled:
        assert got == spec_workers
        return
    assert got >= min_w
    if extra is not None:
        assert got <= max(1, min_w + extra)
    start = status_workers if status_workers is not None and status_workers >= 0 else spec_workers
    if min_w <= start and (extra is None or start <= max(1, min_w + extra)):
        assert got == start  # within bounds: exactly the autoscaler's (or the user's starting) count


# --- scaling_mode: when the autoscaler may decide ------------------------------------------------------

def test_autoscaling_off_never_decides_and_says_nothing() -> None:
    assert scaling_mode(parsed(cg()), [], {}) == ScalingMode(False, None)


def test_autoscaling_on_decides() -> None:
    m = scaling_mode(parsed(cg(autoscaling=ON)), [], {})
    assert m.decide and m.note is None


def test_spec_paused_holds_scaling() -> None:
    m = scaling_mode(parsed(cg(autoscaling=ON, paused=True)), [], {})
    assert not m.decide and m.note is not None and "spec.paused" in m.note


@pytest.mark.parametrize("value,held", [("true", True), ("2026-01-01T00:00:00Z", True), ("", True),
                                        ("false", False), ("0", False), ("No", False)])
def test_pause_annotation_holds_scaling_unless_false_like(value: str, held: bool) -> None:
    assert pause_requested({ANNOTATION_PAUSE: value}) is held
    m = scaling_mode(parsed(cg(autoscaling=ON)), [], {ANNOTATION_PAUSE: value})
    assert m.decide is not held
    if held:
        assert m.note is not None and ANNOTATION_PAUSE in m.note


def test_invalid_spec_holds_scaling_so_it_does_not_fight_the_reconcile() -> None:
    m = scaling_mode(parsed(cg(autoscaling=ON)), [Problem("spec.x", "Bad", "bad")], {})
    assert not m.decide and m.note is not None and "invalid" in m.note


# --- status.lag patch -------------------------------------------------------------------------------

def test_lag_patch_nulls_fields_no_longer_reported() -> None:
    prev = {"total": 5, "desiredWorkers": 3, "reason": "x", "error": "BrokerUnreachable: y"}
    new = {"total": 0, "status": "OK"}
    assert merge_patch(prev, new) == {"desiredWorkers": None, "reason": None, "error": None, "total": 0,
                                    "status": "OK"}
    assert merge_patch(None, new) == new


def test_error_status_keeps_last_figures_and_their_age_but_says_unknown() -> None:
    prev = {"total": 7, "updatedAt": "2026-01-01T00:00:00Z", "status": "OK"}
    out = error_lag_status(prev, "BrokerUnreachable", "no answer")
    assert out == {"total": 7, "updatedAt": "2026-01-01T00:00:00Z", "status": "UNKNOWN",
                   "error": "BrokerUnreachable: no answer"}


def test_errors_map_to_the_operators_condition_reasons() -> None:
    assert error_reason(KafkaUnavailable("x")) == "BrokerUnreachable"
    assert error_reason(TopicNotFound("x")) == "TopicNotFound"


def test_degraded_reason_only_when_degraded_is_true() -> None:
    assert degraded_reason({"conditions": [{"type": "Degraded", "status": "True", "reason": "TopicNotFound"}]}) \
        == "TopicNotFound"
    assert degraded_reason({"conditions": [{"type": "Degraded", "status": "False", "reason": "AsExpected"}]}) is None
    assert degraded_reason({}) is None


# --- LagPoller: one poll against an in-memory API and synthetic broker snapshots --------------------------

class Store:
    """The API as LagPoller uses it: get the CR, merge-patch its status. Counts status writes."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body: dict[str, Any] | None = body
        self.patches: list[dict[str, Any]] = []
        self.before_patch: Any = None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert kind in ("ConsumerGroup", "Secret")
        return copy.deepcopy(self.body) if kind == "ConsumerGroup" else None

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        if self.body is None:
            return False
        self.patches.append(copy.deepcopy(dict(status)))
        merge(self.body.setdefault("status", {}), status)
        return True


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class Broker:
    """Stands in for LagReader.read: returns the next prepared snapshot, or raises the prepared error."""

    def __init__(self) -> None:
        self.ends: list[int] = [0, 0, 0, 0]
        self.committed: list[int] = [0, 0, 0, 0]
        self.error: Exception | None = None
        self.t = 1_000_000.0

    def read(self, group: str, topics: list[str], reset: str = "earliest") -> LagSnapshot:
        if self.error is not None:
            raise self.error
        self.t += 5
        n = len(self.ends)
        return build_snapshot(group, self.t, {("orders", i): 0 for i in range(n)},
                              {("orders", i): self.ends[i] for i in range(n)},
                              {("orders", i): self.committed[i] for i in range(n)})


class Monitor(LagMonitor):
    def __init__(self, broker: Broker) -> None:
        super().__init__()
        self.broker = broker

    def reader(self, bootstrap_servers: str, security: Mapping[str, str] | None = None) -> Any:
        return self.broker

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        return super().poll(*args, **{**kwargs, "now": self.broker.t + 5})


class Harness:
    def __init__(self, body: dict[str, Any]) -> None:
        self.store = Store(body)
        self.broker = Broker()
        self.events: list[Event] = []
        self.reconciled = 0
        self.poller = LagPoller(self.store, Settings(), Monitor(self.broker),  # type: ignore[arg-type]
                                lambda ns, n: threading.Lock(), self._reconcile,
                                lambda body, e: self.events.append(e), clock=lambda: self.broker.t)

    def _reconcile(self, body: Mapping[str, Any]) -> None:
        """The reconcile's part that matters here: status.workers := effective_workers."""
        self.reconciled += 1
        assert self.store.body is not None
        spec = parsed(self.store.body)
        self.store.body["status"]["workers"] = effective_workers(spec, self.store.body["status"])

    @property
    def status(self) -> dict[str, Any]:
        assert self.store.body is not None
        return self.store.body["status"]


def test_lag_is_reported_with_autoscaling_off_and_the_count_is_never_written() -> None:
    h = Harness(cg(workers=1, status={"workers": 1, "readyWorkers": 1}))
    h.broker.ends = [5000, 5000, 5000, 5000]
    out = h.poller.poll("ns", "cg")
    assert out.workers is None and out.sleep == 15
    assert h.status["lag"]["total"] == 20000 and h.status["lag"]["status"] == "OK"
    assert "desiredWorkers" not in h.status["lag"] and h.status["workers"] == 1
    assert h.reconciled == 0 and not [e for e in h.events if e.reason.startswith("Scaled")]


def test_backlog_writes_the_count_to_status_emits_scaled_up_and_runs_the_reconcile() -> None:
    h = Harness(cg(workers=1, autoscaling=ON, status={"workers": 1, "readyWorkers": 1}))
    h.broker.ends = [5000, 5000, 5000, 5000]
    out = h.poller.poll("ns", "cg")
    assert out.workers == 4 and out.sleep == 5
    assert h.status["workers"] == 4 and h.status["lag"]["desiredWorkers"] == 4
    assert "capped at 4 partitions" in h.status["lag"]["reason"]
    assert [e.reason for e in h.events] == ["ScaledUp"] and h.events[0].message.startswith("1 -> 4 workers")
    assert h.reconciled == 1
    assert h.store.body is not None and h.store.body["spec"]["workers"] == 1  # the user's field


def test_drained_backlog_is_held_by_the_scale_down_window_then_scales_down() -> None:
    h = Harness(cg(workers=1, autoscaling=ON, status={"workers": 1, "readyWorkers": 1}))
    h.broker.ends = [5000] * 4
    h.poller.poll("ns", "cg")
    h.broker.committed = [5000] * 4
    counts, reasons = [], []
    for _ in range(8):  # 5 s apart: the 30 s window ends after the 6th poll
        h.poller.poll("ns", "cg")
        counts.append(h.status["workers"])
        reasons.append(h.status["lag"]["reason"])
    assert counts[:5] == [4] * 5 and counts[-1] == 1, counts
    assert all("held at 4 by scale-down stabilization" in r for r in reasons[:5]), reasons
    assert [e.reason for e in h.events if e.reason.startswith("Scaled")] == ["ScaledUp", "ScaledDown"]


def test_paused_group_reports_lag_but_holds_the_count_and_says_why() -> None:
    h = Harness(cg(workers=1, autoscaling=ON, annotations={ANNOTATION_PAUSE: "true"},
                   status={"workers": 1, "readyWorkers": 1, "lag": {"desiredWorkers": 4, "reason": "old"}}))
    h.broker.ends = [5000] * 4
    out = h.poller.poll("ns", "cg")
    assert out.workers is None and h.status["workers"] == 1 and h.reconciled == 0
    assert h.status["lag"]["total"] == 20000 and "desiredWorkers" not in h.status["lag"]
    assert ANNOTATION_PAUSE in h.status["lag"]["reason"]


def test_count_changed_by_a_reconcile_meanwhile_is_not_overwritten() -> None:
    """Autoscaling turned off between the read and the write: the decision must not land in status."""
    h = Harness(cg(workers=1, autoscaling=ON, status={"workers": 1, "readyWorkers": 1}))
    h.broker.ends = [5000] * 4
    real_read = h.broker.read

    def read_then_disable(*a: Any, **k: Any) -> LagSnapshot:
        snap = real_read(*a, **k)
        assert h.store.body is not None
        h.store.body["spec"]["autoscaling"]["enabled"] = False
        h.store.body["spec"]["workers"] = 2
        h.store.body["status"]["workers"] = 2
        return snap

    h.broker.read = read_then_disable  # type: ignore[method-assign]
    out = h.poller.poll("ns", "cg")
    assert out.workers is None and h.status["workers"] == 2 and h.reconciled == 0
    assert not [e for e in h.events if e.reason == "ScaledUp"]
    assert h.status["lag"]["total"] == 20000


@pytest.mark.parametrize("exc,reason", [(KafkaUnavailable("no answer within 2s"), "BrokerUnreachable"),
                                        (TopicNotFound("orders"), "TopicNotFound")])
def test_read_error_shows_in_status_lag_with_one_event_and_never_touches_conditions(
        exc: Exception, reason: str) -> None:
    h = Harness(cg(autoscaling=ON, status={"workers": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "WorkersReady"}]}))
    h.broker.ends = [10, 10, 10, 10]
    h.poller.poll("ns", "cg")
    h.broker.error = exc
    for _ in range(3):
        out = h.poller.poll("ns", "cg")
        assert out.error == reason
    assert h.status["lag"]["status"] == "UNKNOWN" and h.status["lag"]["error"].startswith(reason)
    assert h.status["lag"]["total"] == 40 and h.status["workers"] == 1
    assert [e.reason for e in h.events] == [reason]  # once, not every poll
    assert all("conditions" not in p for p in h.store.patches)
    h.broker.error = None
    h.poller.poll("ns", "cg")
    assert h.status["lag"]["status"] == "OK" and "error" not in h.status["lag"]


def test_read_error_already_reported_by_the_reconciles_degraded_condition_gives_no_duplicate_event() -> None:
    h = Harness(cg(status={"conditions": [{"type": "Degraded", "status": "True", "reason": "BrokerUnreachable"}]}))
    h.broker.error = KafkaUnavailable("down")
    h.poller.poll("ns", "cg")
    assert h.events == [] and h.status["lag"]["error"] == "BrokerUnreachable: down"


def test_deleted_group_is_not_polled() -> None:
    h = Harness(cg())
    h.store.body = None
    out = h.poller.poll("ns", "cg")
    assert out.workers is None and h.store.patches == []


def test_operator_restart_does_not_scale_down_before_a_whole_window() -> None:
    """A fresh monitor (new operator process) finds 4 workers and no lag: like the HPA after a restart, it
    holds 4 for the scale-down window (30 s) instead of dropping to minWorkers at the first poll."""
    h = Harness(cg(workers=1, autoscaling=ON, status={"workers": 4, "readyWorkers": 4}))
    counts = []
    for _ in range(9):  # 5 s apart
        h.poller.poll("ns", "cg")
        counts.append(h.status["workers"])
    assert counts[:5] == [4] * 5 and counts[-1] == 1, counts
    (down,) = [e for e in h.events if e.reason == "ScaledDown"]
    assert down.message.startswith("4 -> 1 workers")


def test_unchanged_lag_is_never_rewritten() -> None:
    prev = {"total": 0, "status": "OK", "updatedAt": "2026-01-01T00:00:00Z"}
    same = {**prev, "updatedAt": "2026-01-01T00:15:00Z"}
    assert not lag_changed(prev, same)  # however old: nothing is written while nothing changes
    assert lag_changed(prev, {**same, "total": 1})
    assert lag_changed({**prev, "desiredWorkers": 2}, same)  # a key dropped
    assert lag_changed(None, same) and lag_changed({"total": 0, "status": "OK"}, same)


def test_idle_group_polls_without_writing_the_cr_again() -> None:
    h = Harness(cg(workers=1, autoscaling=ON, status={"workers": 1, "readyWorkers": 1}))
    for _ in range(30):  # 150 s: many windows
        h.poller.poll("ns", "cg")
    assert len(h.store.patches) == 1  # the first report; then nothing changed


def test_a_poll_of_an_unchanged_group_reads_nothing_from_the_api() -> None:
    """Prepared from the body the watch holds, an unchanged group's poll makes no API call at all."""
    h = Harness(cg(workers=1, status={"workers": 1, "readyWorkers": 1}))
    h.poller.poll("ns", "cg")
    assert h.store.body is not None
    body = copy.deepcopy(h.store.body)
    gets = []
    real_get = h.store.get
    h.store.get = lambda *a: gets.append(a) or real_get(*a)  # type: ignore[method-assign]
    prep = h.poller.prepare(body)
    assert prep is not None
    h.poller.apply(prep, h.broker.read("cg", ["orders"]))
    assert gets == [] and len(h.store.patches) == 1
    h.broker.ends = [3, 0, 0, 0]  # a figure changed: now it re-reads under the lock and writes
    h.poller.apply(prep, h.broker.read("cg", ["orders"]))
    assert [g[0] for g in gets] == ["ConsumerGroup"] and len(h.store.patches) == 2
