"""One operator serving N ConsumerGroups on the lab: what it costs while nothing changes, and how fast a spec
change still reaches its Deployment. Optionally the same run against an older commit of the operator
(`--baseline REF`, checked out into a scratch git worktree), side by side.

Setup per N: a fresh namespace with N ConsumerGroups on topics of 6 partitions (10 groups per topic), all
`workers: 0` (ScaledToZero) except 20 with one worker, which the lab runner really runs (idle topics:
the target is never called). The operator watches only that namespace, with its default resync (30 s)
and lag poll (15 s). After every group has a phase and a warm-up, a measuring window records:

- operator CPU share (utime+stime over wall time), peak RSS, peak thread count (from /proc);
- API writes per minute to what the operator writes (ConsumerGroups and their status, Deployments,
  ConfigMaps), from the API server's own `apiserver_request_total`, and the operator's Events per minute
  (Events the namespace holds from the `kopf` source; the controller-manager's are listed apart);
- lag polls per group in the window (from the operator's `lagpilot_lag_polls`), and broker requests per lag
  round (`lagpilot_lag_broker_requests_total` / `lagpilot_lag_rounds_total`, when the operator has them);
- then 20 spec changes (workers 1 -> 2 -> 1 on the active groups): time from the accepted patch to the
  Deployment's new replica count seen on a watch, p50 and p99.

    .venv/bin/python bench/operator/run.py [--groups 100,300,1000] [--baseline REF] [--window 120]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from lagpilot.lab.kafka import create_topic
from lagpilot.lab.manager import start_lab, stop_lab
from lagpilot.lab.proc import free_port, stop_pid
from lagpilot.testing.apiserver import read_write_counts, writes_between
from lagpilot.testing.operator import install_crds

ROOT = Path(__file__).resolve().parents[2]
ACTIVE = 20
GROUPS_PER_TOPIC = 10
PARTITIONS = 6
OPERATOR_ENV: dict[str, str] = {}  # --operator-env KEY=VALUE (e.g. an experiment with MALLOC_ARENA_MAX)


@dataclass
class Figures:
    variant: str
    groups: int
    settle_s: float = 0.0
    cpu_share: float = 0.0
    rss_mb: float = 0.0
    threads: int = 0
    writes_per_min: dict[str, float] = field(default_factory=dict)
    events_per_min: float = 0.0
    min_lag_polls: float = 0.0
    expected_lag_polls: float = 0.0
    broker_requests_per_round: float | None = None
    lag_rounds: float | None = None
    change_p50_s: float | None = None
    change_p99_s: float | None = None
    load: str = ""
    event_reasons: dict[str, int] = field(default_factory=dict)


def proc_stats(pid: int) -> tuple[float, float, int]:
    """(cpu seconds, rss MB, threads) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return cpu, int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"])


def metric_values(port: int, name: str) -> list[float]:
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")]


def per_group(port: int, name: str) -> dict[str, float]:
    """A per-group counter's values by its `consumergroup` label."""
    text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and 'consumergroup="' in line:
            group = line.split('consumergroup="', 1)[1].split('"', 1)[0]
            out[group] = float(line.rsplit(" ", 1)[1])
    return out


def settled(cg: dict[str, Any]) -> bool:
    """Ready and done with its first rollout (a phase alone comes earlier: at 1 000 groups a quarter were
    still completing their first rollout, writing status and Events, inside the window)."""
    status = cg.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    rollout = (status.get("rollout") or {}).get("phase")
    return ready and status.get("phase") in ("Idle", "Running") and rollout in (None, "Stable")


def group_body(name: str, topic: str, bootstrap: str, workers: int) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "workers": workers, "threads": 2,
                     "target": {"url": "http://127.0.0.1:9/never-called"}}}


@contextlib.contextmanager
def operator_process(variant_root: Path, kubeconfig: str, namespace: str, log: Path,
                     extra_env: dict[str, str] | None = None) -> Iterator[tuple[int, int]]:
    """`python -m lagpilot_operator.main` from `variant_root` (this checkout or a baseline worktree)."""
    port = free_port()
    env = {**os.environ, "KUBECONFIG": kubeconfig, "LAGPILOT_WATCH_NAMESPACES": namespace,
           "LAGPILOT_CONSUMER_IMAGE": "lagpilot:lab",
           "PYTHONPATH": os.pathsep.join(str(variant_root / p) for p in ("operator", ".", "consumer")),
           **(extra_env or {})}
    argv = [sys.executable, "-m", "lagpilot_operator.main", "--standalone", "--metrics-port", str(port),
            "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        yield proc.pid, port
    finally:
        stop_pid(proc.pid, grace=20)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class DeploymentWatch:
    """Replica counts of the namespace's Deployments as a watch reports them, with the time seen."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.seen: dict[str, list[tuple[float, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Watch from the current resourceVersion and resume from the last one seen. (A watch started
        without one first replays every Deployment as ADDED: with 1 000 groups that is 1 000 objects
        deserialized in this process before the change of interest shows, which the first runs did every
        5 s and then counted as operator latency.)"""
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        apps = client.AppsV1Api(self.api)

        def current() -> str:
            return str(apps.list_namespaced_deployment(self.namespace, limit=1).metadata.resource_version)

        rv = current()
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(apps.list_namespaced_deployment, self.namespace, resource_version=rv,
                                   timeout_seconds=30):
                    d = ev["object"]
                    rv = str(d.metadata.resource_version)
                    self.seen.setdefault(d.metadata.labels.get("lagpilot.io/consumergroup", ""), []).append(
                        (time.monotonic(), int(d.spec.replicas or 0)))
                    if self._stop.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # too old: start again from now (changes are sent after `after`)
                    rv = current()
            except Exception:
                time.sleep(0.2)

    def first_time(self, group: str, replicas: int, after: float, timeout: float = 60) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, r in list(self.seen.get(group, [])):
                if t >= after and r == replicas:
                    return t
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self._stop.set()


def events_since(core: Any, namespace: str, since: float) -> dict[str, int]:
    """Events of the namespace last seen after `since`, by source, involved kind and reason. The operator's
    are those from `kopf` (the controller-manager's about the lab's Services are not the operator's)."""
    out: dict[str, int] = {}
    for ev in core.list_namespaced_event(namespace).items:
        stamp = ev.last_timestamp or ev.event_time or ev.first_timestamp
        if stamp is not None and stamp.timestamp() >= since:
            source = (ev.source.component if ev.source else None) or ev.reporting_component or "?"
            key = f"{source}:{ev.involved_object.kind}/{ev.reason}"
            out[key] = out.get(key, 0) + 1
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(variant: str, root: Path, lab: Any, topics: list[str], n: int, window: float, warmup: float,
            logs: Path) -> Figures:
    from kubernetes import client

    cp = lab.control_plane
    api = cp.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-{''.join(c if c.isalnum() else '-' for c in variant.lower())}-{n}-{os.getpid() % 10000}"
    core.create_namespace({"metadata": {"name": namespace}})
    names = [f"cg-{i:04d}" for i in range(n)]
    for i, name in enumerate(names):
        custom.create_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups",
                                               group_body(name, topics[i // GROUPS_PER_TOPIC],
                                                          lab.kafka.bootstrap_servers, 1 if i < ACTIVE else 0))
    figures = Figures(variant, n)
    print(f"  [{variant} N={n}] {n} ConsumerGroups created; starting the operator", flush=True)
    with operator_process(root, cp.kubeconfig, namespace, logs / f"operator-{variant}-{n}.log",
                          OPERATOR_ENV) as (pid, port):
        t0 = time.monotonic()
        while True:
            items = custom.list_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace,
                                                         "consumergroups")["items"]
            if sum(1 for it in items if settled(it)) == n:
                break
            if time.monotonic() - t0 > 900:
                raise SystemExit(f"{variant} N={n}: not every group Ready and Stable within 900 s")
            time.sleep(2)
        figures.settle_s = round(time.monotonic() - t0, 1)
        print(f"  [{variant} N={n}] every group Ready and Stable after {figures.settle_s} s; warming up {warmup:.0f} s",
              flush=True)
        time.sleep(warmup)
        polls_before = per_group(port, "lagpilot_lag_polls_total")
        rounds_before = metric_values(port, "lagpilot_lag_rounds_total")
        requests_before = metric_values(port, "lagpilot_lag_broker_requests_total")
        writes_before = read_write_counts(cp.kubectl)
        wall0 = time.time()
        cpu0, _, _ = proc_stats(pid)
        w0 = time.monotonic()
        peak_rss = peak_threads = 0.0
        while time.monotonic() - w0 < window:
            _, rss, threads = proc_stats(pid)
            peak_rss, peak_threads = max(peak_rss, rss), max(peak_threads, threads)
            time.sleep(1)
        cpu1, _, _ = proc_stats(pid)
        elapsed = time.monotonic() - w0
        writes = writes_between(writes_before, read_write_counts(cp.kubectl))
        polls_after = per_group(port, "lagpilot_lag_polls_total")
        figures.cpu_share = round((cpu1 - cpu0) / elapsed, 4)
        figures.rss_mb, figures.threads = round(peak_rss, 1), int(peak_threads)
        figures.writes_per_min = {r: round(v * 60 / elapsed, 1) for r, v in writes.items()}
        figures.event_reasons = events_since(core, namespace, wall0)
        figures.events_per_min = round(sum(v for k, v in figures.event_reasons.items() if k.startswith("kopf:"))
                                       * 60 / elapsed, 1)
        figures.min_lag_polls = min((polls_after.get(g, 0.0) - polls_before.get(g, 0.0) for g in names),
                                    default=0.0)
        figures.expected_lag_polls = round(elapsed / 15.0 - 1, 1)
        rounds_after = metric_values(port, "lagpilot_lag_rounds_total")
        requests_after = metric_values(port, "lagpilot_lag_broker_requests_total")
        if rounds_after:
            rounds = sum(rounds_after) - sum(rounds_before)
            figures.lag_rounds = rounds
            figures.broker_requests_per_round = round((sum(requests_after) - sum(requests_before)) / rounds, 1) \
                if rounds else None
        # Spec changes on the active groups, one at a time.
        watch = DeploymentWatch(api, namespace)
        time.sleep(2)
        latencies: list[float] = []
        for i in range(ACTIVE):
            name = names[i]
            replicas = 2 if i % 2 == 0 else 1
            body = custom.get_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups", name)
            if int(body["spec"]["workers"]) == replicas:
                replicas = 1 if replicas == 2 else 2
            custom.patch_namespaced_custom_object("lagpilot.io", "v1alpha1", namespace, "consumergroups", name,
                                                  {"spec": {"workers": replicas}})
            sent = time.monotonic()
            seen = watch.first_time(name, replicas, sent)
            if seen is not None:
                latencies.append(seen - sent)
            time.sleep(1)
        watch.stop()
        if latencies:
            figures.change_p50_s = round(statistics.median(latencies), 3)
            figures.change_p99_s = round(percentile(latencies, 0.99), 3)
        missed = ACTIVE - len(latencies)
        if missed:
            print(f"  [{variant} N={n}] {missed} spec changes never reached their Deployment within 60 s")
        figures.load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    # The operator is stopped: remove this phase's workers, so that the next phase does not share the two
    # cores (and the API server) with them.
    apps = client.AppsV1Api(api)
    apps.delete_collection_namespaced_deployment(namespace)
    deadline = time.monotonic() + 120
    while core.list_namespaced_pod(namespace).items and time.monotonic() < deadline:
        time.sleep(2)
    api.close()
    return figures


@contextlib.contextmanager
def baseline_tree(ref: str, scratch: Path) -> Iterator[Path]:
    tree = scratch / f"baseline-{ref}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                   capture_output=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False,
                       capture_output=True)


def table(results: list[Figures]) -> str:
    head = ("variant", "groups", "CPU", "RSS MB", "threads", "API writes/min", "Events/min", "min lag polls",
            "broker req/round", "change p50 s", "change p99 s")
    rows = [head]
    for f in results:
        writes = sum(v for k, v in f.writes_per_min.items() if k != "events")
        rows.append((f.variant, str(f.groups), f"{f.cpu_share * 100:.1f}%", f"{f.rss_mb:.0f}", str(f.threads),
                     f"{writes:.1f}", f"{f.events_per_min:.1f}", f"{f.min_lag_polls:g}/{f.expected_lag_polls:g}",
                     "n/a" if f.broker_requests_per_round is None else f"{f.broker_requests_per_round:g}",
                     str(f.change_p50_s), str(f.change_p99_s)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", default="100,300,1000")
    ap.add_argument("--baseline", default="", help="git ref of an older operator to run beside this one")
    ap.add_argument("--baseline-groups", default="100,300", help="N values for the baseline")
    ap.add_argument("--window", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--out", default=str(ROOT / "bench/operator/results.json"))
    ap.add_argument("--operator-env", action="append", default=[], help="KEY=VALUE for the operator process")
    args = ap.parse_args()
    OPERATOR_ENV.update(kv.split("=", 1) for kv in args.operator_env)
    sizes = [int(x) for x in args.groups.split(",") if x]
    baseline_sizes = [int(x) for x in args.baseline_groups.split(",") if x] if args.baseline else []
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
          flush=True)
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        scratch = Path(tmp)
        logs = scratch / "logs"
        logs.mkdir()
        lab = start_lab(scratch / "lab", progress=lambda m: print("  lab:", m, flush=True))
        try:
            install_crds(lab.control_plane)
            topics = [f"bench-{i:03d}" for i in range(max(sizes + baseline_sizes) // GROUPS_PER_TOPIC + 1)]
            for t in topics:
                create_topic(lab.kafka.bootstrap_servers, t, PARTITIONS)
            print(f"  {len(topics)} topics of {PARTITIONS} partitions", flush=True)
            with contextlib.ExitStack() as stack:
                base_root = stack.enter_context(baseline_tree(args.baseline, scratch)) if args.baseline else None
                for n in sizes:
                    if base_root is not None and n in baseline_sizes:
                        results.append(measure(f"baseline@{args.baseline}", base_root, lab, topics, n,
                                               args.window, args.warmup, logs))
                        print(table(results[-1:]), flush=True)
                    results.append(measure("lagpilot", ROOT, lab, topics, n, args.window, args.warmup, logs))
                    print(table(results[-1:]), flush=True)
        finally:
            stop_lab(lab, remove=True)
    print()
    print(table(results))
    for r in results:
        if r.event_reasons:
            print(f"Events in the window ({r.variant}, N={r.groups}): {r.event_reasons}")
    Path(args.out).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
