"""A real Prometheus (Debian's `prometheus` package) for the observability tests, configured from the
chart's own monitoring objects.

prometheus-operator is not run here; `scrape_configs` translates the ServiceMonitor and PodMonitor the
chart renders into the scrape configs prometheus-operator generates for them (the selector and port as
`keep` rules, the target labels namespace/service/pod/container/endpoint/job, honorLabels, the monitors'
own relabelings), so a selector that misses our pods, a port name that does not exist or a label clash
shows up as a missing or mislabelled series. Only the fields the chart uses are translated; anything else
is refused rather than ignored.

Debian builds Prometheus without Kubernetes service discovery, so `KubeDiscovery` plays that part: it
lists Services and Pods from the API server every second and writes file_sd target files carrying the
same `__meta_kubernetes_*` labels Prometheus' own endpoints and pod roles produce; Prometheus then applies
the generated relabelling itself."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
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


@dataclass(frozen=True)
class Discovery:
    """What one scrape job discovers: a Kubernetes SD role in some namespaces (None: all), as a file."""

    role: str  # "endpoints" | "pod"
    namespaces: tuple[str, ...] | None
    file: Path


@dataclass
class ScrapeSetup:
    jobs: list[dict[str, Any]] = field(default_factory=list)
    discoveries: list[Discovery] = field(default_factory=list)


def _job(setup: ScrapeSetup, sd_dir: Path, name: str, endpoint: Mapping[str, Any], names: list[str] | None,
         role: str, relabel: list[dict[str, Any]]) -> None:
    unknown = set(endpoint) - SUPPORTED_ENDPOINT_KEYS
    if unknown:
        raise ValueError(f"endpoint fields not translated: {sorted(unknown)}")
    file = sd_dir / (re.sub(r"[^a-zA-Z0-9_.-]", "_", name) + ".json")
    setup.discoveries.append(Discovery(role, None if names is None else tuple(names), file))
    job: dict[str, Any] = {"job_name": name, "honor_labels": bool(endpoint.get("honorLabels", False)),
                           "metrics_path": endpoint.get("path", "/metrics"),
                           "file_sd_configs": [{"files": [str(file)], "refresh_interval": "1s"}],
                           "relabel_configs": relabel + _relabelings(endpoint.get("relabelings") or [])}
    if endpoint.get("interval"):
        job["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    setup.jobs.append(job)


def service_monitor_jobs(setup: ScrapeSetup, sd_dir: Path, sm: Mapping[str, Any]) -> None:
    names, keep = _selection(sm, "service")
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
        _job(setup, sd_dir, name, ep, names, "endpoints", relabel)


def pod_monitor_jobs(setup: ScrapeSetup, sd_dir: Path, pm: Mapping[str, Any]) -> None:
    names, keep = _selection(pm, "pod")
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
        _job(setup, sd_dir, f"podMonitor/{ns}/{mon}/{i}", ep, names, "pod", relabel)


def scrape_configs(monitors: Iterable[Mapping[str, Any]], sd_dir: Path) -> ScrapeSetup:
    """Scrape jobs for the monitors, and what KubeDiscovery must write for them under `sd_dir`."""
    setup = ScrapeSetup()
    sd_dir.mkdir(parents=True, exist_ok=True)
    for m in monitors:
        if m["kind"] == "ServiceMonitor":
            service_monitor_jobs(setup, sd_dir, m)
        elif m["kind"] == "PodMonitor":
            pod_monitor_jobs(setup, sd_dir, m)
        else:
            raise ValueError(f"not a monitor: {m['kind']}")
    return setup


# --- Kubernetes service discovery, as file_sd -----------------------------------------------------------

def _labels(prefix: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (labels or {}).items():
        key = re.sub(r"[^a-zA-Z0-9_]", "_", k)
        out[f"{prefix}_label_{key}"] = v
        out[f"{prefix}_labelpresent_{key}"] = "true"
    return out


def pod_targets(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus' `pod` role: one target per declared container port of every pod with an IP."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        base = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
                "__meta_kubernetes_pod_ip": ip, "__meta_kubernetes_pod_phase": status.get("phase", ""),
                "__meta_kubernetes_pod_ready": str(ready).lower(),
                **_labels("__meta_kubernetes_pod", meta.get("labels"))}
        for c in pod["spec"]["containers"]:
            for port in c.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **base, "__meta_kubernetes_pod_container_name": c["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"])}})
    return groups


def endpoints_targets(endpoints: Iterable[Mapping[str, Any]], services: Mapping[tuple[str, str], Mapping[str, Any]],
                      pods: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus' `endpoints` role: one target per address and port of every Endpoints object, with the
    Service's labels and, for addresses backed by a pod, the pod's."""
    groups = []
    for ep in endpoints:
        ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
        svc = services.get((ns, name))
        base = {"__meta_kubernetes_namespace": ns, "__meta_kubernetes_endpoints_name": name}
        if svc is not None:
            base |= {"__meta_kubernetes_service_name": name,
                     **_labels("__meta_kubernetes_service", svc["metadata"].get("labels"))}
        for subset in ep.get("subsets") or []:
            for ready, addresses in (("true", subset.get("addresses") or []),
                                     ("false", subset.get("notReadyAddresses") or [])):
                for addr in addresses:
                    ref = addr.get("targetRef") or {}
                    pod = pods.get((ns, ref.get("name", ""))) if ref.get("kind") == "Pod" else None
                    for port in subset.get("ports") or []:
                        labels = {**base, "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                                  "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                                  "__meta_kubernetes_endpoint_ready": ready}
                        if pod is not None:
                            labels |= {"__meta_kubernetes_pod_name": pod["metadata"]["name"],
                                       **_labels("__meta_kubernetes_pod", pod["metadata"].get("labels"))}
                            serving = [c["name"] for c in pod["spec"]["containers"]
                                       if any(p.get("containerPort") == port["port"] for p in c.get("ports") or [])]
                            if serving:
                                labels["__meta_kubernetes_pod_container_name"] = serving[0]
                        groups.append({"targets": [f"{addr['ip']}:{port['port']}"], "labels": labels})
    return groups


def service_endpoints(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The Endpoints object the endpoints controller derives for `service`: pods matched by its selector,
    ready ones as addresses and the rest as notReadyAddresses, ports with named targetPorts resolved.
    The lab needs this: its pods have loopback IPs, which Endpoints and EndpointSlices may not hold."""
    meta, spec = service["metadata"], service.get("spec") or {}
    selector = spec.get("selector") or {}
    subsets = []
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if (not selector or pod["metadata"]["namespace"] != meta["namespace"] or not ip
                or pod["metadata"].get("deletionTimestamp")
                or any(labels.get(k) != v for k, v in selector.items())):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        named = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []
                 if p.get("name")}
        ports = []
        for sp in spec.get("ports") or []:
            target = sp.get("targetPort", sp["port"])
            number = named.get(target) if isinstance(target, str) else target
            if number is not None:
                ports.append({"name": sp.get("name", ""), "port": int(number), "protocol": sp.get("protocol", "TCP")})
        address = {"ip": ip, "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"]}}
        subsets.append({"addresses" if ready else "notReadyAddresses": [address], "ports": ports})
    return {"metadata": {"namespace": meta["namespace"], "name": meta["name"]}, "subsets": subsets}


class KubeDiscovery:
    """Writes the file_sd files of a ScrapeSetup from the API server every `interval` seconds (a thread).
    Endpoints are derived from Services and Pods (service_endpoints), as the lab cannot store them."""

    def __init__(self, api: Any, discoveries: Iterable[Discovery], interval: float = 1.0) -> None:
        self.api, self.discoveries, self.interval = api, list(discoveries), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-discovery", daemon=True)
        self.errors = 0

    def _items(self, kind: str) -> list[dict[str, Any]]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        lister = {"pods": core.list_pod_for_all_namespaces, "services": core.list_service_for_all_namespaces}[kind]
        return list(self.api.sanitize_for_serialization(lister(_request_timeout=5)).get("items") or [])

    def refresh(self) -> None:
        pods = self._items("pods")
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in self._items("services")}
        endpoints = [service_endpoints(svc, pods) for svc in services.values()]
        by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        for d in self.discoveries:
            def wanted(obj: Mapping[str, Any], d: Discovery = d) -> bool:
                return d.namespaces is None or obj["metadata"]["namespace"] in d.namespaces
            groups = (pod_targets([p for p in pods if wanted(p)]) if d.role == "pod"
                      else endpoints_targets([e for e in endpoints if wanted(e)], services, by_name))
            tmp = d.file.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups, sort_keys=True))
            tmp.replace(d.file)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # the API server may be busy; the next round writes again
                self.errors += 1

    def start(self) -> KubeDiscovery:
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


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



# --- kube-state-metrics ---------------------------------------------------------------------------------

KSM_VERSION = "v2.15.0"  # scripts/build-go-tools.sh


def ensure_kube_state_metrics() -> Path:
    """The pinned kube-state-metrics, built from its Go module on first use (scripts/build-go-tools.sh)."""
    from lagpilot.paths import cache_dir, project_root

    path = cache_dir() / f"kube-state-metrics-{KSM_VERSION}" / "bin" / "kube-state-metrics"
    if not path.exists():
        out = subprocess.run(["bash", str(project_root() / "scripts" / "build-go-tools.sh"), "kube-state-metrics"],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0 or out.stdout.strip() != str(path):
            raise PrometheusMissing(f"scripts/build-go-tools.sh kube-state-metrics failed:\n{out.stderr[-3000:]}")
    return path


@contextlib.contextmanager
def running_kube_state_metrics(kubeconfig: str, namespaces: Iterable[str], log: Path) -> Iterator[dict[str, Any]]:
    """kube-state-metrics (pods only) for `namespaces`; yields the scrape job for it (honor_labels, as
    its own namespace/pod labels must win, the way kube-prometheus scrapes it)."""
    port, telemetry = free_port(), free_port()
    argv = [str(ensure_kube_state_metrics()), f"--kubeconfig={kubeconfig}", "--host=127.0.0.1", f"--port={port}",
            "--telemetry-host=127.0.0.1", f"--telemetry-port={telemetry}", "--resources=pods",
            f"--namespaces={','.join(namespaces)}"]
    out = open(log, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        out.close()
    try:
        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"kube-state-metrics exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        wait_for(healthy, 60, what="kube-state-metrics healthy")
        yield {"job_name": "kube-state-metrics", "honor_labels": True,
               "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    finally:
        stop_pid(proc.pid, grace=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
