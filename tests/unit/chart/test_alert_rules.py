"""The chart's alert rules checked by Prometheus' own tool: `promtool check rules` on the rendered
PrometheusRule, and `promtool test rules` (alerts.promtool.yaml) with series shaped like ours, one case
per alert where it fires and one where it must not. Live firing on a real Prometheus is in
tests/lab/observability/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lagpilot.testing.chart import by_kind, one, render
from lagpilot.testing.prometheus import promtool, rule_groups

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parent
ALERTS = {"LagpilotLagGrowing", "LagpilotPartitionsStalled", "LagpilotConsumerGroupStopped",
          "LagpilotRolloutAborted", "LagpilotWorkersCrashLooping", "LagpilotReconcileErrors",
          "LagpilotOperatorDown"}


def rendered_rules(helm: Path, *sets: str) -> dict[str, object]:
    docs = render(helm, ("prometheusRule.enabled=true", *sets))
    return rule_groups(one(docs, "PrometheusRule"))


def test_rules_pass_promtool_check(helm: Path, tmp_path: Path) -> None:
    for variant in ((), ("clusterWide=true",), ("watchNamespaces={shop,billing}",)):
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(rendered_rules(helm, *variant)))
        out = promtool("check", "rules", str(path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout, out.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    tests = yaml.safe_load((HERE / "alerts.promtool.yaml").read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t["alert_rule_test"] if c["exp_alerts"]}
    quiet = {c["alertname"] for t in tests for c in t["alert_rule_test"] if not c["exp_alerts"]}
    assert firing == ALERTS and quiet == ALERTS


def test_promtool_unit_tests_pass(helm: Path, tmp_path: Path) -> None:
    # The series in alerts.promtool.yaml are in several namespaces: the rules of a cluster-wide install.
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rendered_rules(helm, "clusterWide=true")))
    shutil.copy(HERE / "alerts.promtool.yaml", tmp_path)
    out = promtool("test", "rules", "alerts.promtool.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_catch_a_broken_rule(helm: Path, tmp_path: Path) -> None:
    """The same tests against a rule file with one metric name misspelt must fail (proof they can)."""
    rules = rendered_rules(helm)
    text = yaml.safe_dump(rules).replace("lagpilot_consumergroup_lag_status", "lagpilot_consumergroup_lagstatus")
    (tmp_path / "rules.yaml").write_text(text)
    shutil.copy(HERE / "alerts.promtool.yaml", tmp_path)
    out = promtool("test", "rules", "alerts.promtool.yaml", cwd=tmp_path)
    assert out.returncode != 0
    assert "LagpilotLagGrowing" in out.stdout + out.stderr


def test_no_rule_without_the_value(helm: Path) -> None:
    """The PrometheusRule is rendered only when asked for (the CRD may not exist in the cluster)."""
    assert by_kind(render(helm), "PrometheusRule") == []
