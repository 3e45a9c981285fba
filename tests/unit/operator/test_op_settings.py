"""Operator settings from env and flags; metrics names and phase gauge."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from lagpilot_operator.metrics import OperatorMetrics
from lagpilot_operator.settings import DEFAULT_IMAGE, Settings, from_env

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    s = from_env({})
    assert s == Settings()
    assert s.watch_namespaces == () and s.consumer_image == DEFAULT_IMAGE and s.metrics_port == 8090
    assert s.liveness == "http://0.0.0.0:8091/healthz" and s.peering == "auto" and s.log_format == "text"


def test_env() -> None:
    s = from_env({"LAGPILOT_WATCH_NAMESPACES": " shop, billing ,shop,", "LAGPILOT_CONSUMER_IMAGE": "img:2",
                  "LAGPILOT_LOG_FORMAT": "JSON", "LAGPILOT_METRICS_PORT": "9000", "LAGPILOT_PEERING": "standalone",
                  "LAGPILOT_RESYNC_SECONDS": "2.5", "LAGPILOT_FENCE_TIMEOUT_SECONDS": "9"})
    assert s.watch_namespaces == ("billing", "shop") and s.consumer_image == "img:2"
    assert s.log_format == "json" and s.metrics_port == 9000 and s.peering == "standalone"
    assert s.resync_seconds == 2.5 and s.fence_timeout_seconds == 9


@pytest.mark.parametrize("env", [{"LAGPILOT_LOG_FORMAT": "xml"}, {"LAGPILOT_METRICS_PORT": "x"},
                                 {"LAGPILOT_RESYNC_SECONDS": "soon"}])
def test_bad_env_is_an_error(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        from_env(env)


def test_overrides_ignore_none() -> None:
    s = Settings().with_overrides(metrics_port=None, consumer_image="x")
    assert s.metrics_port == 8090 and s.consumer_image == "x"


def test_cli_help_lists_flags() -> None:
    from lagpilot_operator.main import main

    out = CliRunner().invoke(main, ["--help"]).output
    for flag in ("--namespace", "--consumer-image", "--log-format", "--metrics-port", "--liveness",
                 "--standalone", "--peering"):
        assert flag in out


def test_metrics_names_and_phase_gauge() -> None:
    reg = CollectorRegistry()
    m = OperatorMetrics(reg)
    m.reconcile_total.inc()
    m.reconcile_errors.inc()
    m.reconcile_seconds.observe(0.1)
    m.set_phase("a", "x", "Running")
    m.set_phase("a", "y", "Running")
    m.set_phase("b", "x", "Degraded")
    m.set_phase("a", "y", "Invalid")
    text = generate_latest(reg).decode()
    for name in ("lagpilot_reconcile_total 1.0", "lagpilot_reconcile_errors_total 1.0",
                 "lagpilot_reconcile_seconds_count 1.0", 'lagpilot_consumergroups{phase="Running"} 1.0',
                 'lagpilot_consumergroups{phase="Degraded"} 1.0', 'lagpilot_consumergroups{phase="Invalid"} 1.0',
                 'lagpilot_consumergroups{phase="Paused"} 0.0'):
        assert name in text
    m.set_phase("a", "x", None)
    assert 'lagpilot_consumergroups{phase="Running"} 0.0' in generate_latest(reg).decode()


def test_rollout_phase_gauge_and_aborted_counter() -> None:
    reg = CollectorRegistry()
    m = OperatorMetrics(reg)
    m.set_rollout("a", "x", "Canary")
    m.set_rollout("a", "x", "Aborted", aborted=1)
    text = generate_latest(reg).decode()
    assert 'lagpilot_rollout_phase{consumergroup="x",namespace="a",phase="Aborted"} 1.0' in text
    assert 'lagpilot_rollout_phase{consumergroup="x",namespace="a",phase="Canary"} 0.0' in text
    assert 'lagpilot_rollouts_aborted_total{consumergroup="x",namespace="a"} 1.0' in text
    m.set_rollout("a", "x", None)  # the group is gone: no stale phase series
    assert 'lagpilot_rollout_phase{consumergroup="x"' not in generate_latest(reg).decode()
    assert 'lagpilot_rollouts_aborted_total{consumergroup="x"' not in generate_latest(reg).decode()


def test_aborted_counter_exported_at_zero_before_the_first_abort() -> None:
    """Prometheus' increase() sees nothing in a series that appears already at 1: the first abort of a group
    would never fire LagpilotRolloutAborted (found by the live Prometheus lab test)."""
    reg = CollectorRegistry()
    m = OperatorMetrics(reg)
    m.set_rollout("a", "y", "Stable")
    assert 'lagpilot_rollouts_aborted_total{consumergroup="y",namespace="a"} 0.0' in generate_latest(reg).decode()
    m.set_rollout("a", "y", "Aborted", aborted=1)
    assert 'lagpilot_rollouts_aborted_total{consumergroup="y",namespace="a"} 1.0' in generate_latest(reg).decode()
