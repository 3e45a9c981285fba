"""Start, stop and describe the whole lab (Kafka, control plane, runner) as one unit. `lagpilot lab` and
the test fixtures both use this."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lagpilot import paths
from lagpilot.lab.cluster import ControlPlane, start_control_plane, stop_control_plane
from lagpilot.lab.kafka import KafkaBroker, start_kafka, stop_kafka
from lagpilot.lab.proc import pid_alive, spawn, stop_pid, wait_until

Progress = Callable[[str], None]


@dataclass
class Lab:
    workdir: Path
    kafka: KafkaBroker
    control_plane: ControlPlane
    runner_pid: int

    @property
    def kubeconfig(self) -> str:
        return self.control_plane.kubeconfig

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    def status(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "kubeconfig": self.kubeconfig,
            "server": self.control_plane.server,
            "bootstrap_servers": self.bootstrap_servers,
            "kubectl": str(paths.kubernetes_bin() / "kubectl"),
            "services": {
                "kafka": {"pid": self.kafka.pid, "running": self.kafka.alive()},
                "etcd": {"pid": self.control_plane.etcd_pid, "running": pid_alive(self.control_plane.etcd_pid)},
                "kube-apiserver": {"pid": self.control_plane.apiserver_pid,
                                   "running": pid_alive(self.control_plane.apiserver_pid)},
                "kube-controller-manager": {"pid": self.control_plane.controller_manager_pid,
                                            "running": pid_alive(self.control_plane.controller_manager_pid)},
                "lab-runner": {"pid": self.runner_pid, "running": pid_alive(self.runner_pid)},
            },
        }

    def healthy(self) -> bool:
        return all(s["running"] for s in self.status()["services"].values())

    def save(self) -> None:
        (self.workdir / "lab.json").write_text(json.dumps({
            "kafka": self.kafka.to_json(), "control_plane": self.control_plane.to_json(),
            "runner_pid": self.runner_pid}, indent=2))


def start_runner(workdir: Path, kubeconfig: str) -> int:
    runner_dir = workdir / "runner"
    runner_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn([sys.executable, "-m", "lagpilot.lab.runner", "--kubeconfig", kubeconfig,
                  "--workdir", str(runner_dir)], runner_dir / "runner.log")
    return proc.pid


def wait_node_ready(cp: ControlPlane, runner_pid: int, log: Path) -> None:
    def ready() -> bool:
        out = cp.kubectl("get", "node", "lagpilot-lab", "-o",
                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
        return out.stdout.strip() == "True"

    wait_until(ready, 60, "lab runner node", alive=lambda: pid_alive(runner_pid), log=log)


def start_lab(workdir: Path, progress: Progress = lambda _msg: None) -> Lab:
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    progress("Kafka: resolving jars (first run downloads from Maven Central) and starting the broker")
    kafka = start_kafka(workdir / "kafka")
    progress(f"Kafka ready at {kafka.bootstrap_servers} ({time.monotonic() - t0:.0f}s)")
    progress("Kubernetes: building etcd/kube-apiserver/kube-controller-manager if not cached, then starting")
    try:
        cp = start_control_plane(workdir / "k8s")
    except BaseException:
        stop_kafka(kafka)
        raise
    progress(f"Kubernetes API ready at {cp.server} ({time.monotonic() - t0:.0f}s)")
    runner_pid = start_runner(workdir, cp.kubeconfig)
    lab = Lab(workdir=workdir, kafka=kafka, control_plane=cp, runner_pid=runner_pid)
    lab.save()
    try:
        wait_node_ready(cp, runner_pid, workdir / "runner" / "runner.log")
    except BaseException:
        stop_lab(lab)
        raise
    progress(f"Lab runner node Ready ({time.monotonic() - t0:.0f}s)")
    return lab


def load_lab(workdir: Path) -> Lab | None:
    state = workdir / "lab.json"
    if not state.exists():
        return None
    doc = json.loads(state.read_text())
    k = doc["kafka"]
    kafka = KafkaBroker(workdir=k["workdir"], port=k["port"], controller_port=k["controller_port"], pid=k["pid"])
    return Lab(workdir=workdir, kafka=kafka, control_plane=ControlPlane(**doc["control_plane"]),
               runner_pid=doc["runner_pid"])


def register_extra(workdir: Path, name: str, pid: int) -> None:
    """Processes started on top of the lab (the demo's operator and target) that `lab down` also stops."""
    path = workdir / "extras.json"
    extras = json.loads(path.read_text()) if path.exists() else {}
    extras[name] = pid
    path.write_text(json.dumps(extras))


def extras(workdir: Path) -> dict[str, int]:
    path = workdir / "extras.json"
    found = json.loads(path.read_text()) if path.exists() else {}
    return {name: pid for name, pid in found.items() if pid_alive(pid)}


def stop_lab(lab: Lab, remove: bool = False) -> None:
    """Extras first, then the runner (it stops pod processes), then the control plane, then Kafka."""
    for pid in extras(lab.workdir).values():
        stop_pid(pid, grace=10)
    (lab.workdir / "extras.json").unlink(missing_ok=True)
    stop_pid(lab.runner_pid, grace=20)
    stop_control_plane(lab.control_plane)
    stop_kafka(lab.kafka)
    (lab.workdir / "lab.json").unlink(missing_ok=True)
    if remove:
        import shutil

        shutil.rmtree(lab.workdir, ignore_errors=True)
