"""The chart's alerts and dashboard against a real Prometheus scraping the real operator and workers.

The chart is installed on the lab with its ServiceMonitor, PodMonitor and PrometheusRule (short `for`
durations and windows, so the test takes minutes, not hours). Prometheus is configured from the monitors
read back from the API server, as prometheus-operator would configure it (Kubernetes service discovery
against the lab's API server, see lagpilot/testing/prometheus.py); kube-state-metrics runs against the lab
for the pod series. Each alert is driven into its condition by a real fault and must go firing, then
resolve after the recovery:

  LagpilotLagGrowing            a target slower than production
  LagpilotPartitionsStalled     a target answering 503 to everything
  LagpilotRolloutAborted        a canary whose target answers 503
  LagpilotWorkersCrashLooping   a worker whose environment keeps its process from starting
  LagpilotReconcileErrors       a ResourceQuota that forbids the group's Deployment
  LagpilotOperatorDown          the operator's Deployment scaled to zero

and none of them fires for a healthy busy group. Every PromQL expression of the Grafana dashboard runs
against this Prometheus and must return data for the busy group."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.chart import CHART
from lagpilot.testing.handoff import SteadyProducer
from lagpilot.testing.labchart import (
    LAB_RESOURCES,
    diagnose,
    drop_finalizers_and_delete,
    install_chart_crds,
    install_monitoring_crds,
)
from lagpilot.testing.prometheus import (
    KubeDiscovery,
    Prometheus,
    dashboard_queries,
    expand_grafana,
    rule_groups,
    running_kube_state_metrics,
    running_prometheus,
    scrape_configs,
)
from lagpilot.testing.target import RecordingTarget
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

SHORT_ALERTS = ("prometheusRule.lagWarningFor=15s", "prometheusRule.stalledFor=5s", "prometheusRule.crashLoopFor=5s",
                "prometheusRule.rolloutAbortedWindow=40s", "prometheusRule.reconcileErrorsWindow=150s",
                "prometheusRule.reconcileErrorsFor=5s", "prometheusRule.operatorDownFor=10s")
LAG_ALERTS = ("LagpilotLagGrowing", "LagpilotPartitionsStalled", "LagpilotConsumerGroupStopped")


def new_namespace(k8s: Any, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", name)
    return name


def kjson(k8s: Any, *args: str, namespace: str | None = None) -> Any:
    return json.loads(k8s.kubectl("get", *args, "-o", "json", namespace=namespace).stdout)


def group(name: str, namespace: str, bootstrap: str, topic: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "groupId": f"g-{namespace}-{name}",
                     "workers": 1, "threads": 1, "target": {"url": url},
                     "retry": {"maxAttempts": 1000, "initialBackoffMs": 100, "maxBackoffMs": 500},
                     "autoscaling": {"pollSeconds": 1}, **spec}}


def apply(k8s: Any, doc: dict[str, Any]) -> None:
    k8s.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def alert_goes(prom: Prometheus, name: str, state: str | None, timeout: float, **labels: str) -> None:
    """Wait until alert `name` with `labels` is `state` ("firing"), or resolved (None)."""
    def check() -> bool:
        return prom.alert_state(name, **labels) == state
    wait_for(check, timeout, what=f"{name}{labels} {state or 'resolved'} (alerts now: "
                                  f"{[(a.name, a.state, a.labels) for a in prom.alerts()]})", interval=1)


@pytest.fixture
def release(k8s: Any, helm: Any, ports: tuple[int, int]) -> Iterator[dict[str, str]]:
    """The chart installed with monitoring on, the operator in its own namespace watching two others."""
    install_chart_crds(k8s)
    install_monitoring_crds(k8s)
    names = {"release": f"lp{uuid.uuid4().hex[:5]}", "op": new_namespace(k8s, "t-obs-op"),
             "app": new_namespace(k8s, "t-obs-app"), "quota": new_namespace(k8s, "t-obs-quota")}
    metrics_port, health_port = ports
    helm("install", names["release"], str(CHART), "-n", names["op"], "--wait", "--timeout", "240s",
         "--set", f"watchNamespaces={{{names['app']},{names['quota']}}}",
         "--set", f"metrics.port={metrics_port}", "--set", f"health.port={health_port}", *LAB_RESOURCES,
         "--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.workers=true",
         "--set", "serviceMonitor.interval=2s", "--set", "serviceMonitor.scrapeTimeout=2s",
         "--set", "prometheusRule.enabled=true", *[a for s in SHORT_ALERTS for a in ("--set", s)],
         "--set-json", 'extraEnv=[{"name":"LAGPILOT_RESYNC_SECONDS","value":"3"}]')
    try:
        yield names
    finally:
        for ns in (names["app"], names["quota"]):
            k8s.kubectl("delete", "resourcequota", "--all", namespace=ns, check=False)
            k8s.kubectl("delete", "consumergroups", "--all", "--wait=false", namespace=ns, check=False)
        k8s.kubectl("scale", "deployment", "-l", f"app.kubernetes.io/instance={names['release']}", "--replicas=1",
                    namespace=names["op"], check=False)
        for ns in (names["app"], names["quota"]):
            try:
                wait_for(lambda ns=ns: not kjson(k8s, "consumergroups", namespace=ns)["items"], 90,
                         what=f"consumergroups in {ns} deleted by the operator")
            except AssertionError:
                for item in kjson(k8s, "consumergroups", namespace=ns)["items"]:
                    drop_finalizers_and_delete(k8s, ns, item["metadata"]["name"])
        helm("uninstall", names["release"], "-n", names["op"], "--wait", "--timeout", "240s", check=False)
        for key in ("op", "app", "quota"):
            k8s.kubectl("delete", "namespace", names[key], "--wait=false", check=False)


def monitors(k8s: Any, namespace: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ServiceMonitor/PodMonitor and PrometheusRule as stored in the cluster (what prometheus-operator reads)."""
    mons = [*kjson(k8s, "servicemonitors.monitoring.coreos.com", namespace=namespace)["items"],
            *kjson(k8s, "podmonitors.monitoring.coreos.com", namespace=namespace)["items"]]
    (rule,) = kjson(k8s, "prometheusrules.monitoring.coreos.com", namespace=namespace)["items"]
    return mons, rule_groups(rule)


def test_alerts_fire_and_resolve_and_dashboard_queries_return_data(
        k8s: Any, release: dict[str, str], bootstrap: str, topic_factory: Callable[..., str],
        tmp_path: Path) -> None:
    op_ns, app, quota_ns = release["op"], release["app"], release["quota"]
    mons, rules = monitors(k8s, op_ns)
    assert {m["kind"] for m in mons} == {"ServiceMonitor", "PodMonitor"}
    setup = scrape_configs(mons, tmp_path / "sd")
    discovery = KubeDiscovery(k8s.api_client(), setup.discoveries).start()
    with running_kube_state_metrics(k8s.kubeconfig, [app, quota_ns], tmp_path / "ksm.log") as ksm_job, \
            running_prometheus(tmp_path / "prometheus", [*setup.jobs, ksm_job], rules) as prom, \
            RecordingTarget() as good, RecordingTarget(latency_s=0.25) as slow, RecordingTarget() as broken, \
            RecordingTarget() as bad_canary:
        broken.fail(503)
        bad_canary.fail(503)
        topics = {n: topic_factory(partitions=p, prefix=f"obs{n}")
                  for n, p in (("busy", 3), ("slow", 1), ("stuck", 1), ("canary", 2), ("crash", 1), ("blocked", 1))}
        producers = {n: SteadyProducer(bootstrap, topics[n], p, rate=r).start()
                     for n, p, r in (("busy", 3, 1.5), ("slow", 1, 30), ("stuck", 1, 3), ("canary", 2, 10))}
        try:
            try:
                run_scenarios(k8s, prom, release, bootstrap, topics, producers, good, slow, broken, bad_canary)
            except AssertionError as exc:
                status = [(r["metric"].get("consumergroup"), r["value"][1])
                          for r in prom.query("lagpilot_consumergroup_lag_status")]
                history = prom.api("query", query='lagpilot_consumergroup_lag{consumergroup="busy"}[40s]')["result"]
                status += [(r["metric"]["partition"], [v for _, v in r["values"]]) for r in history]
                raise AssertionError(f"{exc}\n--- lag status series\n{status}\n--- prometheus targets\n"
                                     f"{[(t['labels'], t['health'], t['lastError']) for t in prom.targets()]}\n"
                                     f"{diagnose(k8s, op_ns, app, quota_ns)}") from None
        finally:
            for p in producers.values():
                p.stop()
            discovery.stop()


def run_scenarios(k8s: Any, prom: Prometheus, release: dict[str, str], bootstrap: str, topics: dict[str, str],
                  producers: dict[str, SteadyProducer], good: RecordingTarget, slow: RecordingTarget,
                  broken: RecordingTarget, bad_canary: RecordingTarget) -> None:
    op_ns, app, quota_ns = release["op"], release["app"], release["quota"]
    apply(k8s, group("busy", app, bootstrap, topics["busy"], good.url, workers=2, threads=2))
    apply(k8s, group("slow", app, bootstrap, topics["slow"], slow.url))
    apply(k8s, group("stuck", app, bootstrap, topics["stuck"], broken.url))
    apply(k8s, group("canary", app, bootstrap, topics["canary"], good.url, rollout={"strategy": "Rolling"}))
    apply(k8s, group("crash", app, bootstrap, topics["crash"], good.url,
                     template={"env": [{"name": "PYTHONHOME", "value": "/nonexistent"}]}))
    k8s.kubectl("create", "quota", "no-deployments", "--hard=count/deployments.apps=0", namespace=quota_ns)
    apply(k8s, group("blocked", quota_ns, bootstrap, topics["blocked"], good.url))

    # Both monitors find their targets: the operator through its Service, every worker pod.
    def scraped() -> bool:
        ups = {(r["metric"].get("job"), r["metric"].get("consumergroup")) for r in prom.query("up == 1")}
        return ({(f"{release['release']}-lagpilot-metrics", None), (f"{op_ns}/{release['release']}-lagpilot-workers",
                 "busy")} <= ups)
    wait_for(scraped, 180, what="the operator and the busy group's workers scraped", interval=1)
    busy_ok = f'lagpilot_consumergroup_lag_status{{namespace="{app}",consumergroup="busy"}} == 0'
    wait_for(lambda: prom.query(busy_ok), 180, what="the busy group caught up after its start", interval=1)
    settled = time.monotonic()

    # Lag alerts, each for its own group.
    alert_goes(prom, "LagpilotLagGrowing", "firing", 180, namespace=app, consumergroup="slow")
    alert_goes(prom, "LagpilotPartitionsStalled", "firing", 180, namespace=app, consumergroup="stuck")
    # The canary: a first revision settles, then a Canary to a target that answers 503 is aborted.
    wait_for(lambda: ((kjson(k8s, "consumergroup", "canary", namespace=app).get("status") or {})
                      .get("rollout") or {}).get("phase") == "Stable", 180, what="canary group Stable")
    apply(k8s, group("canary", app, bootstrap, topics["canary"], bad_canary.url,
                     rollout={"strategy": "Canary", "canary": {"partitions": [1], "workers": 1, "analysisSeconds": 15,
                                                               "maxErrorRate": 0.05}}))
    alert_goes(prom, "LagpilotRolloutAborted", "firing", 180, namespace=app, consumergroup="canary")
    alert_goes(prom, "LagpilotWorkersCrashLooping", "firing", 180, namespace=app)
    alert_goes(prom, "LagpilotReconcileErrors", "firing", 180, namespace=op_ns)

    # The dashboard, while everything is busy: every expression returns data for the busy group.
    dashboard = json.loads((CHART / "dashboards" / "lagpilot.json").read_text())
    empty = []
    for q in dashboard_queries(dashboard):
        expr = expand_grafana(q.expr, {"namespace": app, "consumergroup": "busy"})
        if not prom.query(expr):
            empty.append((q.panel, expr))
    assert not empty, f"dashboard panels with no data for a busy group: {empty}"
    assert len(dashboard_queries(dashboard)) >= 10

    # Recoveries: each alert resolves.
    producers["slow"].stop()
    alert_goes(prom, "LagpilotLagGrowing", None, 180, namespace=app, consumergroup="slow")
    broken.recover()
    alert_goes(prom, "LagpilotPartitionsStalled", None, 180, namespace=app, consumergroup="stuck")
    k8s.kubectl("patch", "consumergroup", "crash", "--type=json", "-p",
                '[{"op":"remove","path":"/spec/template"}]', namespace=app)
    alert_goes(prom, "LagpilotWorkersCrashLooping", None, 240, namespace=app)
    k8s.kubectl("delete", "quota", "no-deployments", namespace=quota_ns)
    alert_goes(prom, "LagpilotReconcileErrors", None, 300, namespace=op_ns)
    alert_goes(prom, "LagpilotRolloutAborted", None, 180, namespace=app, consumergroup="canary")

    # No alert was even pending for the busy group once it had caught up (ALERTS keeps pending and firing).
    since = int(time.monotonic() - settled)
    assert prom.query(f'max_over_time(ALERTS{{namespace="{app}",consumergroup="busy"}}[{since}s])') == []

    # The operator itself: scaled to zero, the alert fires; back, it resolves.
    selector = f"app.kubernetes.io/instance={release['release']}"
    k8s.kubectl("scale", "deployment", "-l", selector, "--replicas=0", namespace=op_ns)
    alert_goes(prom, "LagpilotOperatorDown", "firing", 120, namespace=op_ns)
    k8s.kubectl("scale", "deployment", "-l", selector, "--replicas=1", namespace=op_ns)
    alert_goes(prom, "LagpilotOperatorDown", None, 180, namespace=op_ns)
