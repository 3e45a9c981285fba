"""A real Kubernetes control plane for the lab: etcd, kube-apiserver (TLS, RBAC, service-account token
signing) and kube-controller-manager (Deployments, ReplicaSets, garbage collection, namespaces, service
accounts), from binaries scripts/build-k8s.sh built into the cache. No kubelet, no scheduler: the lab
runner (runner.py) plays those."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from lagpilot import paths
from lagpilot.lab.certs import CertPaths, ensure_certs
from lagpilot.lab.proc import free_port, pid_alive, spawn, stop_pid, wait_until

SERVICE_CIDR = "10.0.0.0/24"


@dataclass
class ControlPlane:
    workdir: str
    server: str
    kubeconfig: str
    etcd_pid: int
    apiserver_pid: int
    controller_manager_pid: int

    def alive(self) -> bool:
        return all(pid_alive(p) for p in (self.etcd_pid, self.apiserver_pid, self.controller_manager_pid))

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(paths.kubernetes_bin() / "kubectl"), "--kubeconfig", self.kubeconfig, *args],
                              check=check, capture_output=True, text=True, input=input)

    def api_client(self):  # type: ignore[no-untyped-def]
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def ensure_binaries() -> None:
    if not (paths.kubernetes_bin() / "kube-apiserver").exists() or not paths.etcd_bin().exists():
        subprocess.run(["bash", str(paths.repo_scripts() / "build-k8s.sh"), "all"], check=True)


def write_kubeconfig(path: Path, server: str, ca: Path, *, cert: Path | None = None, key: Path | None = None,
                     token: str | None = None, user: str = "admin", namespace: str = "default") -> None:
    user_entry: dict[str, str] = {}
    if cert and key:
        user_entry = {"client-certificate": str(cert), "client-key": str(key)}
    if token:
        user_entry = {"token": token}
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lagpilot-lab",
        "clusters": [{"name": "lagpilot-lab", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "lagpilot-lab",
                      "context": {"cluster": "lagpilot-lab", "user": user, "namespace": namespace}}],
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)


def _https_ok(url: str, certs: CertPaths) -> bool:
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.load_cert_chain(str(certs.admin_cert), str(certs.admin_key))
    with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
        return bool(resp.status == 200)


def start_control_plane(workdir: Path, timeout: float = 120.0) -> ControlPlane:
    ensure_binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    certs = ensure_certs(workdir / "pki")
    kbin = paths.kubernetes_bin()
    etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()

    etcd_log = workdir / "etcd.log"
    etcd = spawn([str(paths.etcd_bin()), "--name", "lab", "--data-dir", str(workdir / "etcd"),
                  "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                  "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                  "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                  "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                  "--initial-cluster", f"lab=http://127.0.0.1:{etcd_peer}",
                  "--unsafe-no-fsync", "--log-level", "warn"], etcd_log)
    wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=2).status == 200,
               30, "etcd", alive=lambda: etcd.poll() is None, log=etcd_log)

    server = f"https://127.0.0.1:{api_port}"
    api_log = workdir / "kube-apiserver.log"
    apiserver = spawn([
        str(kbin / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
        f"--cert-dir={workdir / 'pki'}",
        f"--tls-cert-file={certs.serving_cert}", f"--tls-private-key-file={certs.serving_key}",
        f"--client-ca-file={certs.ca_cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={certs.sa_pub}",
        f"--service-account-signing-key-file={certs.sa_key}",
        "--authorization-mode=RBAC", "--allow-privileged=true",
        "--enable-priority-and-fairness=false", "--profiling=false",
        "--endpoint-reconciler-type=none", "--v=1",
    ], api_log)
    wait_until(lambda: _https_ok(f"{server}/readyz", certs), timeout, "kube-apiserver",
               alive=lambda: apiserver.poll() is None, log=api_log)

    kubeconfig = workdir / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, server, certs.ca_cert, cert=certs.admin_cert, key=certs.admin_key)

    kcm_log = workdir / "kube-controller-manager.log"
    kcm_port = free_port()
    kcm = spawn([
        str(kbin / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
        f"--service-account-private-key-file={certs.sa_key}", f"--root-ca-file={certs.ca_cert}",
        f"--cluster-signing-cert-file={certs.ca_cert}", f"--cluster-signing-key-file={certs.ca_key}",
        "--use-service-account-credentials=true", "--leader-elect=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10", "--v=1",
    ], kcm_log)
    cp = ControlPlane(workdir=str(workdir), server=server, kubeconfig=str(kubeconfig), etcd_pid=etcd.pid,
                      apiserver_pid=apiserver.pid, controller_manager_pid=kcm.pid)
    # Ready for workloads once the controller manager's service-account controller made `default` SA.
    wait_until(lambda: _default_sa_exists(cp), timeout, "kube-controller-manager",
               alive=lambda: kcm.poll() is None, log=kcm_log)
    (workdir / "control-plane.json").write_text(json.dumps(cp.to_json()))
    return cp


def _default_sa_exists(cp: ControlPlane) -> bool:
    return cp.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0


def stop_control_plane(cp: ControlPlane) -> None:
    for pid in (cp.controller_manager_pid, cp.apiserver_pid, cp.etcd_pid):
        stop_pid(pid, grace=10)
