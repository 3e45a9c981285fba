"""Helpers for the operator lab tests: polling, and `lagpilot-operator` as a restartable child process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from lagpilot.lab.proc import free_port, stop_pid
from lagpilot.paths import project_root
from lagpilot.testing.wait import wait_for

ROOT = project_root()
CRDS = ROOT / "crds"


class Operator:
    """`lagpilot-operator` as a child process; restartable."""

    def __init__(self, kubeconfig: str, namespace: str, log_path: Path, extra_env: dict[str, str],
                 peering_args: tuple[str, ...] = ("--standalone",)) -> None:
        self.peering_args = peering_args
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.extra_env = extra_env
        self.metrics_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        self.metrics_port = free_port()
        liveness = free_port()
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "LAGPILOT_WATCH_NAMESPACES": self.namespace,
               "LAGPILOT_CONSUMER_IMAGE": "lagpilot:lab", "LAGPILOT_RESYNC_SECONDS": "3",
               "LAGPILOT_BROKER_TIMEOUT_SECONDS": "2", **self.extra_env}
        argv = [str(Path(sys.executable).parent / "lagpilot-operator"), *self.peering_args,
                "--metrics-port", str(self.metrics_port), "--liveness", f"http://127.0.0.1:{liveness}/healthz",
                "--verbose"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)
        else:
            stop_pid(self.proc.pid, grace=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics_text(self) -> str:
        return str(urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode())

    def reconciles(self) -> float:
        """lagpilot_reconcile_total from the operator's /metrics."""
        text = urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        line = next(x for x in text.splitlines() if x.startswith("lagpilot_reconcile_total "))
        return float(line.split()[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def strip_finalizers(k8s: Any, namespace: str) -> None:
    out = k8s.kubectl("get", "consumergroups", "-o", "json", namespace=namespace, check=False)
    if out.returncode != 0:
        return
    for item in json.loads(out.stdout).get("items", []):
        k8s.kubectl("patch", "consumergroup", item["metadata"]["name"], "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', namespace=namespace, check=False)




def install_crds(k8s: Any) -> None:
    """The project's CRDs (ConsumerGroup, kopf peering), applied and established."""
    for path in sorted(CRDS.glob("*.yaml")):
        k8s.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/consumergroups.lagpilot.io")


def service_account_kubeconfig(k8s: Any, namespace: str, service_account: str, path: Path) -> str:
    """A kubeconfig for the lab's API server that authenticates as a ServiceAccount (a TokenRequest token),
    so a process run with it gets exactly that account's RBAC, as in a pod."""
    import yaml

    from lagpilot.lab.cluster import write_kubeconfig

    admin = yaml.safe_load(Path(k8s.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    token = k8s.kubectl("create", "token", service_account, "-n", namespace, "--duration", "2h").stdout.strip()
    write_kubeconfig(path, cluster["server"], Path(cluster["certificate-authority"]), token=token,
                     user=f"system:serviceaccount:{namespace}:{service_account}", namespace=namespace)
    return str(path)


@contextlib.contextmanager
def running_operator(k8s: Any, namespace: str, log: Path, env: dict[str, str] | None = None,
                     delete_timeout: float = 30, kubeconfig: str | None = None) -> Iterator[Operator]:
    """A real operator process watching `namespace` (as the lab's admin, or as whoever `kubeconfig` names);
    on exit the namespace's ConsumerGroups are deleted through it (so it removes its finalizers), it is
    stopped, leftovers are stripped, its log printed."""
    op = Operator(kubeconfig or k8s.kubeconfig, namespace, log, dict(env or {})).start()
    try:
        yield op
    finally:
        if op.alive():
            k8s.kubectl("delete", "consumergroups", "--all", "--wait=false", namespace=namespace, check=False)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not json.loads(k8s.kubectl("get", "consumergroups", "-o", "json",
                                                            namespace=namespace).stdout)["items"],
                         delete_timeout, "consumergroups deleted")
        op.stop()
        strip_finalizers(k8s, namespace)
        print(op.log()[-20000:])
