"""A real Prometheus (Debian's `prometheus` package) for the observability tests, configured from the
chart's own monitoring objects.

prometheus-operator is not run here; `scrape_configs` translates the ServiceMonitor and PodMonitor the
chart renders into the scrape configs prometheus-operator generates for them (Kubernetes service
discovery, the selector and port as `keep` rules, the target labels namespace/service/pod/container/
endpoint/job, honorLabels, the monitors' own relabelings), so a selector that misses our pods, a port name
that does not exist or a label clash shows up as a missing or mislabelled series. Only the fields the
chart uses are translated; anything else is refused rather than ignored."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lagpilot.lab.proc import free_port, stop_pid
from lagpilot.testing.wait import wait_for

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SUPPORTED_ENDPOINT_KEYS = {"port", "path", "interval", "scrapeTimeout", "relabelings", "honorLabels"}


class PrometheusMissing(RuntimeError):
    pass


def binary(path: str) -> str:
    found = shutil.which(Path(path).name) or (path if Path(path).exists() else None)
    if not found:
        raise PrometheusMissing(f"{path} not found: Debian's `prometheus` package provides it "
                                "(scripts/bootstrap.sh installs it from scripts/apt-packages.txt)")
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def rule_groups(prometheus_rule: Mapping[str, Any]) -> dict[str, Any]:
    """A Prometheus rule file from a PrometheusRule object (what prometheus-operator mounts)."""
    return {"groups": list(prometheus_rule["spec"]["groups"])}


# --- monitors -> scrape configs -------------------------------------------------------------------------

def _meta_label(role: str, label: str) -> str:
    return f"__meta_kubernetes_{role}_label_{re.sub(r'[^a-zA-Z0-9_]', '_', label)}"


def _relabelings(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Monitor relabelings (camelCase) as Prometheus relabel_configs (snake_case)."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "action": "action",
            "regex": "regex", "replacement": "replacement", "separator": "separator", "modulus": "modulus"}
    out = []
    for item in items:
        unknown = set(item) - set(keys)
        if unknown:
            raise ValueError(f"relabeling fields not translated: {sorted(unknown)}")
        rc = {keys[k]: v for k, v in item.items()}
        if "action" in rc:
            rc["action"] = str(rc["action"]).lower()
        out.append(rc)
    return out


def _selection(monitor: Mapping[str, Any], role: str) -> tuple[list[str] | None, list[dict[str, Any]]]:
    spec = monitor["spec"]
    selector = spec.get("selector") or {}
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"selector fields not translated: {sorted(set(selector) - {'matchLabels'})}")
    keep = [{"action": "keep", "source_labels": [_meta_label(role, k)], "regex": re.escape(str(v))}
            for k, v in sorted((selector.get("matchLabels") or {}).items())]
    ns_sel = spec.get("namespaceSelector") or {}
    names = None if ns_sel.get("any") else list(ns_sel.get("matchNames") or [monitor["metadata"]["namespace"]])
    return names, keep


def _job(name: str, endpoint: Mapping[str, Any], names: list[str] | None, kubeconfig: str, role: str,
         relabel: list[dict[str, Any]]) -> dict[str, Any]:
    unknown = set(endpoint) - SUPPORTED_ENDPOINT_KEYS
    if unknown:
        raise ValueError(f"endpoint fields not translated: {sorted(unknown)}")
    sd: dict[str, Any] = {"role": role, "kubeconfig_file": kubeconfig}
    if names is not None:
        sd["namespaces"] = {"names": names}
    job: dict[str, Any] = {"job_name": name, "honor_labels": bool(endpoint.get("honorLabels", False)),
                           "metrics_path": endpoint.get("path", "/metrics"), "kubernetes_sd_configs": [sd],
                           "relabel_configs": relabel + _relabelings(endpoint.get("relabelings") or [])}
    if endpoint.get("interval"):
        job["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    return job


def service_monitor_jobs(sm: Mapping[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    names, keep = _selection(sm, "service")
    jobs = []
    for i, ep in enumerate(sm["spec"]["endpoints"]):
        relabel = [*keep,
                   {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                    "regex": re.escape(ep["port"])},
                   {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                   {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
                   {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                   {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                   {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
                   {"target_label": "endpoint", "replacement": ep["port"]}]
        name = f"serviceMonitor/{sm['metadata']['namespace']}/{sm['metadata']['name']}/{i}"
        jobs.append(_job(name, ep, names, kubeconfig, "endpoints", relabel))
    return jobs


def pod_monitor_jobs(pm: Mapping[str, Any], kubeconfig: str) -> list[dict[str, Any]]:
    names, keep = _selection(pm, "pod")
    jobs = []
    ns, mon = pm["metadata"]["namespace"], pm["metadata"]["name"]
    for i, ep in enumerate(pm["spec"]["podMetricsEndpoints"]):
        relabel = [*keep,
                   {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": re.escape(ep["port"])},
                   {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                   {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
                   {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                   {"target_label": "job", "replacement": f"{ns}/{mon}"},
                   {"target_label": "endpoint", "replacement": ep["port"]}]
        jobs.append(_job(f"podMonitor/{ns}/{mon}/{i}", ep, names, kubeconfig, "pod", relabel))
    return jobs


def scrape_configs(monitors: Iterable[Mapping[str, Any]], kubeconfig: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for m in monitors:
        if m["kind"] == "ServiceMonitor":
            jobs += service_monitor_jobs(m, kubeconfig)
        elif m["kind"] == "PodMonitor":
            jobs += pod_monitor_jobs(m, kubeconfig)
        else:
            raise ValueError(f"not a monitor: {m['kind']}")
    return jobs


# --- the server -----------------------------------------------------------------------------------------

@dataclass
class Alert:
    name: str
    state: str  # pending | firing
    labels: dict[str, str]


@dataclass
class Prometheus:
    """`prometheus` as a child process on 127.0.0.1 with a 1 s scrape and evaluation interval."""

    workdir: Path
    scrape: list[dict[str, Any]]
    rules: dict[str, Any] | None = None
    port: int = 0
    pid: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg: dict[str, Any] = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                                          "evaluation_interval": "1s"},
                               "scrape_configs": self.scrape}
        if self.rules is not None:
            (self.workdir / "rules.yaml").write_text(yaml.safe_dump(self.rules, sort_keys=False))
            cfg["rule_files"] = [str(self.workdir / "rules.yaml")]
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self) -> Prometheus:
        config = self.write_config()
        check = promtool("check", "config", str(config))
        if check.returncode != 0:
            raise AssertionError(f"promtool check config failed:\n{check.stdout}\n{check.stderr}")
        self.port = free_port()
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen(
                [binary(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=1d"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        self.pid = self._proc.pid
        wait_for(self._ready, 60, what="prometheus ready")
        return self

    def _ready(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self._proc.returncode}):\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.pid:
            stop_pid(self.pid, grace=10)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=5)
            self.pid = 0

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        if doc.get("status") != "success":
            raise AssertionError(f"{path}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result of `expr` now (raises on a PromQL error)."""
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] in ("vector", "matrix") else [data["result"]]

    def alerts(self) -> list[Alert]:
        return [Alert(a["labels"]["alertname"], a["state"], dict(a["labels"])) for a in self.api("alerts")["alerts"]]

    def alert_state(self, name: str, **labels: str) -> str | None:
        """"firing", "pending", or None when no alert `name` with these labels is active."""
        states = {a.state for a in self.alerts()
                  if a.name == name and all(a.labels.get(k) == v for k, v in labels.items())}
        return "firing" if "firing" in states else "pending" if "pending" in states else None

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def reload(self) -> None:
        self.write_config()
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


@contextlib.contextmanager
def running_prometheus(workdir: Path, scrape: list[dict[str, Any]],
                       rules: dict[str, Any] | None = None) -> Iterator[Prometheus]:
    prom = Prometheus(workdir, scrape, rules).start()
    try:
        yield prom
    finally:
        prom.stop()


# --- dashboards -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PanelQuery:
    panel: str
    expr: str


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every PromQL expression of a Grafana dashboard's panels (rows included)."""
    out: list[PanelQuery] = []

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets") or []:
                if t.get("expr"):
                    out.append(PanelQuery(str(p.get("title", "?")), str(t["expr"])))
            walk(p.get("panels") or [])

    walk(dashboard.get("panels") or [])
    return out


def expand_grafana(expr: str, variables: Mapping[str, str], rate_interval: str = "10s") -> str:
    """`$var`/`${var}` replaced by a regex matching `variables[var]` (Grafana's multi-value formatting),
    `$__rate_interval` by a fixed range."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("${__rate_interval}", rate_interval)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    if "$" in expr:
        raise ValueError(f"unexpanded variable in {expr!r}")
    return expr

