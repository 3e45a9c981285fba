"""Helpers for the chart on the lab (the chart and observability suites): reading objects, the CRDs Helm
installs, the monitoring CRD stand-ins, and a failure report with pods, Events and the runner's logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lagpilot.protocol import GROUP, PLURAL
from lagpilot.testing.chart import CHART, ROOT

MONITORING_CRDS = ROOT / "tests" / "lab" / "chart" / "monitoring-crds.yaml"

# The lab runner writes status.qosClass "BestEffort" for every pod (lagpilot/lab/runner.py), and the API
# server rejects that status update for a pod with requests/limits (qosClass Burstable is immutable), so the
# pod would never be reported Ready. On the lab only, the operator runs without requests/limits.
LAB_RESOURCES = ("--set", "resources=null")


def kget(k8s: Any, *args: str, namespace: str | None = None) -> Any:
    out = k8s.kubectl("get", *args, "-o", "yaml", namespace=namespace, check=False)
    if out.returncode != 0:
        return None
    return yaml.safe_load(out.stdout)


def install_chart_crds(k8s: Any) -> None:
    """What `helm install` does with crds/ (also needed before a dry-run of objects of those kinds)."""
    for f in sorted((CHART / "crds").iterdir()):
        k8s.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
    for name in ("consumergroups.lagpilot.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        k8s.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def operator_pods(k8s: Any, release: str, namespace: str) -> list[dict[str, Any]]:
    pods = kget(k8s, "pods", "-l", f"app.kubernetes.io/instance={release},app.kubernetes.io/component=operator",
                namespace=namespace)
    return list((pods or {}).get("items") or [])


def ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return (pod.get("status") or {}).get("phase") == "Running" and conds.get("Ready") == "True"


def cg_status(k8s: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict((kget(k8s, f"{PLURAL}.{GROUP}", name, namespace=namespace) or {}).get("status") or {})


def diagnose(k8s: Any, *namespaces: str) -> str:
    """Pods, Events and the lab runner's container logs of the namespaces, for a failure message."""
    parts = []
    for ns in namespaces:
        parts.append(k8s.kubectl("get", "deploy,rs,pods", "-o", "wide", namespace=ns, check=False).stdout)
        pods = kget(k8s, "pods", namespace=ns) or {}
        for pod in pods.get("items") or []:
            parts.append(yaml.safe_dump({"pod": pod["metadata"]["name"], "status": pod.get("status")}))
        parts.append(k8s.kubectl("get", "events", namespace=ns, check=False).stdout[-3000:])
        for log in sorted(Path(k8s.runner_dir, "pods").glob(f"{ns}_*/*.log")):
            lines = [ln for ln in log.read_text(errors="replace").splitlines() if "GET /healthz" not in ln]
            parts.append(f"--- {log}\n" + "\n".join(lines[-40:]))
    runner_log = Path(k8s.runner_dir, "runner.log")
    if runner_log.exists():
        parts.append("--- runner.log\n" + "\n".join(runner_log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


def drop_finalizers_and_delete(k8s: Any, namespace: str, name: str) -> None:
    """With the operator uninstalled nobody removes kopf's finalizer; do it so the namespace can go."""
    k8s.kubectl("patch", f"{PLURAL}.{GROUP}", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                namespace=namespace, check=False)
    k8s.kubectl("delete", f"{PLURAL}.{GROUP}", name, "--wait=false", namespace=namespace, check=False)


def install_monitoring_crds(k8s: Any) -> None:
    """Stand-ins for prometheus-operator's CRDs (kinds only, spec not validated), so the chart's monitors
    can be applied to the lab."""
    k8s.kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS))
    for crd in ("servicemonitors", "podmonitors", "prometheusrules"):
        k8s.kubectl("wait", "--for=condition=Established", f"crd/{crd}.monitoring.coreos.com", "--timeout=60s")
