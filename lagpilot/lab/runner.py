"""The lab runner plays kubelet and scheduler for the lab, and only for the lab.

What it does: registers one Node and keeps its Lease and Ready condition fresh; binds every pending pod
(default scheduler) to that node; runs each container's command as a local process with the pod's env
resolved (values, Secret/ConfigMap refs, envFrom, downward API) and its own loopback address 127.0.0.N
(reported as status.podIP, passed as POD_IP); gives each pod a kubeconfig with a TokenRequest token of
its ServiceAccount (bound to the pod) so RBAC applies as in a cluster; runs HTTP/TCP/exec readiness,
liveness and startup probes; restarts containers per restartPolicy with backoff and restartCount;
deletes gracefully (SIGTERM, grace period, SIGKILL); writes pod status and Events back.

What it does not do: pull images (the container's `command` is required and resolved against the
installed console scripts, then PATH), isolate filesystems, users or resources (readOnlyRootFilesystem,
runAsUser, limits are recorded, not enforced), mount volumes (pods get KUBECONFIG instead of a token
volume; Secret and ConfigMap volumes are written to files under the pod's directory and env values naming
paths under their mountPath are pointed there), run init or sidecar containers, or route Service IPs
(there is no kube-proxy or DNS: pods reach each other by pod IP, and services on the host by 127.0.0.1).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from lagpilot.lab.podspec import (
    EnvError,
    ProbeSpec,
    ProbeState,
    backoff_seconds,
    container_argv,
    parse_probe,
    pod_phase,
    resolve_env,
    rewrite_mount_paths,
    volume_files,
)
from lagpilot.timefmt import rfc3339

log = logging.getLogger("lagpilot.lab.runner")
NODE_NAME = "lagpilot-lab"
TICK = 0.25


ADDRESS_CLAIMS = Path(os.environ.get("LAGPILOT_ADDRESS_CLAIMS", "/tmp/lagpilot-lab-addresses"))


def claim_address(ip: str) -> bool:
    """Machine-wide claim of a pod address: a file created exclusively, naming the claiming runner.
    A claim whose runner is gone is stale and taken over."""
    from lagpilot.lab.proc import pid_alive

    ADDRESS_CLAIMS.mkdir(parents=True, exist_ok=True)
    path = ADDRESS_CLAIMS / ip
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid() or (owner > 0 and pid_alive(owner)):
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release_address(ip: str) -> None:
    path = ADDRESS_CLAIMS / ip
    with contextlib.suppress(OSError, ValueError):
        if int(path.read_text().strip()) == os.getpid():
            path.unlink()


def now_iso() -> str:
    return rfc3339()


def now_micro() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class ContainerRun:
    spec: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    started_mono: float = 0.0
    restarts: int = 0
    last_termination: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None  # final, when it will not be restarted
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    next_start: float = 0.0
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    startup: ProbeSpec | None = None
    ready_state: ProbeState = field(default_factory=ProbeState)
    live_state: ProbeState = field(default_factory=lambda: ProbeState(healthy=True))
    startup_state: ProbeState = field(default_factory=ProbeState)
    next_probe: dict[str, float] = field(default_factory=dict)
    probing: dict[str, Future[bool]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def started(self) -> bool:
        return self.running() and (self.startup is None or self.startup_state.healthy)

    def ready(self) -> bool:
        if not self.started():
            return False
        return self.readiness is None or self.ready_state.healthy


@dataclass
class PodRun:
    uid: str
    namespace: str
    name: str
    ip: str
    dir: Path
    containers: list[ContainerRun]
    restart_policy: str
    start_time: str
    kubeconfig: Path | None = None
    last_status: dict[str, Any] | None = None
    terminating: bool = False
    finished: bool = False


class Runner:
    def __init__(self, api: client.ApiClient, workdir: Path, server: str, ca_file: str,
                 node_name: str = NODE_NAME) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coord = client.CoordinationV1Api(api)
        self.workdir = workdir
        self.server = server
        self.ca_file = ca_file
        self.node = node_name
        self.pods: dict[str, PodRun] = {}
        self.ips: dict[str, str] = {}
        self.stopping = threading.Event()
        self.probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.killers = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kill")
        self.bin_dirs = [Path(sys.executable).parent]
        self.last_node_status = 0.0
        self.last_lease = 0.0

    # --- node -------------------------------------------------------------------------------------
    def register_node(self) -> None:
        body = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node,
                                                       "kubernetes.io/os": "linux",
                                                       "lagpilot.io/lab": "true"}},
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(body)
        self.update_node_status(force=True)
        self.renew_node_lease(force=True)

    def update_node_status(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_node_status < 20:
            return
        self.last_node_status = time.monotonic()
        ts = now_iso()
        status = {
            "conditions": [{"type": "Ready", "status": "True", "reason": "LabRunnerReady",
                            "message": "lagpilot lab runner is running pods", "lastHeartbeatTime": ts,
                            "lastTransitionTime": ts}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node}],
            "capacity": {"cpu": str(os.cpu_count() or 2), "memory": "24Gi", "pods": "250"},
            "allocatable": {"cpu": str(os.cpu_count() or 2), "memory": "24Gi", "pods": "250"},
            "nodeInfo": {"kubeletVersion": "lagpilot-lab", "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "lab://local-process", "kernelVersion": os.uname().release,
                         "osImage": "local", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        }
        try:
            self.core.patch_node_status(self.node, {"status": status})
        except ApiException as exc:
            log.warning("node status: %s", exc.reason)

    def renew_node_lease(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_lease < 10:
            return
        self.last_lease = time.monotonic()
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.node, namespace="kube-node-lease"),
                              spec=client.V1LeaseSpec(holder_identity=self.node, lease_duration_seconds=40,
                                                      renew_time=now_micro()))
        try:
            self.coord.replace_namespaced_lease(self.node, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status == 404:
                with contextlib.suppress(ApiException):
                    self.coord.create_namespaced_lease("kube-node-lease", body)
            else:
                log.warning("node lease: %s", exc.reason)

    # --- events -----------------------------------------------------------------------------------
    def event(self, pod: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        meta = pod["metadata"]
        ts = now_iso()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                               "uid": meta["uid"], "apiVersion": "v1"},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": "lagpilot-lab-runner", "host": self.node},
            "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:
            log.debug("event: %s", exc.reason)

    # --- scheduling -------------------------------------------------------------------------------
    def bind(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        body = client.V1Binding(metadata=client.V1ObjectMeta(name=meta["name"], uid=meta["uid"]),
                                target=client.V1ObjectReference(kind="Node", name=self.node, api_version="v1"))
        try:
            self.core.create_namespaced_binding(meta["namespace"], body, _preload_content=False)
            self.event(pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to "
                                         f"{self.node}")
        except ApiException as exc:
            if exc.status != 409:
                log.warning("bind %s/%s: %s", meta["namespace"], meta["name"], exc.reason)

    # --- pods -------------------------------------------------------------------------------------
    def allocate_ip(self, uid: str) -> str:
        """The lowest loopback address no pod of any lab on this machine holds (labs of parallel test
        sessions, or a person's lab beside the tests, share 127.0.0.0/8)."""
        if uid in self.ips:
            return self.ips[uid]
        used = set(self.ips.values())
        for third in range(256):
            for fourth in range(2 if third == 0 else 1, 255):
                ip = f"127.0.{third}.{fourth}"
                if ip not in used and claim_address(ip):
                    self.ips[uid] = ip
                    return ip
        raise RuntimeError("no free loopback address")

    def lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        import base64

        try:
            if kind == "Secret":
                obj = self.core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()}
            cm = self.core.read_namespaced_config_map(name, namespace)
            return dict(cm.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def materialize_volumes(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> dict[str, str]:
        """Write the container's Secret/ConfigMap volumes under the pod's directory (mode 0600 files, as
        the kubelet's tmpfs, here on disk); returns mountPath -> that directory."""
        mounts: dict[str, str] = {}
        for mount_path, files in volume_files(pod, container, self.lookup).items():
            host = run.dir / "volumes" / mount_path.lstrip("/")
            if host.exists():
                shutil.rmtree(host)
            host.mkdir(parents=True, mode=0o700)
            for rel, content in files.items():
                target = host / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                target.chmod(0o600)
            mounts[mount_path] = str(host)
        return mounts

    def pod_kubeconfig(self, pod: dict[str, Any], run: PodRun) -> Path:
        """A kubeconfig holding a TokenRequest token of the pod's ServiceAccount, bound to the pod."""
        from lagpilot.lab.cluster import write_kubeconfig

        meta = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName") or "default"
        req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=86400,
            bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1", name=meta["name"],
                                                           uid=meta["uid"])))
        token = self.core.create_namespaced_service_account_token(sa, meta["namespace"], req).status.token
        path = run.dir / "kubeconfig"
        write_kubeconfig(path, self.server, Path(self.ca_file), token=token,
                         user=f"system:serviceaccount:{meta['namespace']}:{sa}", namespace=meta["namespace"])
        return path

    def admit(self, pod: dict[str, Any]) -> PodRun:
        meta = pod["metadata"]
        uid = meta["uid"]
        pod_dir = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        containers = []
        for c in pod["spec"]["containers"]:
            run_c = ContainerRun(spec=c)
            try:
                run_c.readiness = parse_probe(c.get("readinessProbe"), c)
                run_c.liveness = parse_probe(c.get("livenessProbe"), c)
                run_c.startup = parse_probe(c.get("startupProbe"), c)
            except EnvError as exc:
                run_c.waiting_reason, run_c.waiting_message = "CreateContainerConfigError", str(exc)
            containers.append(run_c)
        run = PodRun(uid=uid, namespace=meta["namespace"], name=meta["name"], ip=self.allocate_ip(uid),
                     dir=pod_dir, containers=containers,
                     restart_policy=pod["spec"].get("restartPolicy") or "Always", start_time=now_iso())
        self.pods[uid] = run
        return run

    def start_container(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> None:
        try:
            if run.kubeconfig is None:
                run.kubeconfig = self.pod_kubeconfig(pod, run)
            env = resolve_env(pod, c.spec, run.ip, self.node, self.lookup)
            env = rewrite_mount_paths(env, self.materialize_volumes(pod, c.spec, run))
            argv = container_argv(c.spec, env)
        except EnvError as exc:
            if c.waiting_reason != "CreateContainerConfigError":
                self.event(pod, "Failed", f"Error: {exc}", "Warning")
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(exc)
            c.next_start = time.monotonic() + 2
            return
        except ApiException as exc:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", f"token request: {exc.reason}"
            c.next_start = time.monotonic() + 2
            return
        exe = self.resolve_command(argv[0])
        if exe is None:
            msg = f'executable "{argv[0]}" not found in the installed console scripts or PATH'
            if c.waiting_reason != "CreateContainerError":
                self.event(pod, "Failed", msg, "Warning")
            c.waiting_reason, c.waiting_message = "CreateContainerError", msg
            c.next_start = time.monotonic() + 5
            return
        base = {
            "PATH": os.pathsep.join([*map(str, self.bin_dirs), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": str(run.dir), "LANG": os.environ.get("LANG", "C.UTF-8"), "PYTHONUNBUFFERED": "1",
            "HOSTNAME": run.name, "KUBECONFIG": str(run.kubeconfig), "POD_IP": run.ip,
        }
        for key in ("LAGPILOT_CACHE_DIR", "JAVA_HOME", "TMPDIR"):
            if key in os.environ:
                base[key] = os.environ[key]
        full_env = {**base, **env}
        out = open(run.dir / f"{c.name}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            c.proc = subprocess.Popen([exe, *argv[1:]], env=full_env, cwd=c.spec.get("workingDir") or run.dir,
                                      stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        except OSError as exc:
            c.waiting_reason, c.waiting_message = "RunContainerError", str(exc)
            c.next_start = time.monotonic() + backoff_seconds(c.restarts + 1)
            self.event(pod, "Failed", f"Error: {exc}", "Warning")
            return
        finally:
            out.close()
        c.started_at, c.started_mono = now_iso(), time.monotonic()
        c.waiting_reason = c.waiting_message = ""
        c.ready_state, c.live_state, c.startup_state = ProbeState(), ProbeState(healthy=True), ProbeState()
        c.next_probe = {k: c.started_mono + (p.initial_delay if p else 0)
                        for k, p in (("readiness", c.readiness), ("liveness", c.liveness),
                                     ("startup", c.startup))}
        (run.dir / f"{c.name}.pid").write_text(str(c.proc.pid))
        self.event(pod, "Started", f"Started container {c.name} (pid {c.proc.pid}, ip {run.ip})")

    def resolve_command(self, name: str) -> str | None:
        if os.path.isabs(name):
            return name if os.access(name, os.X_OK) else None
        for d in self.bin_dirs:
            if (d / name).exists():
                return str(d / name)
        return shutil.which(name)

    def on_exit(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        term = {"exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error", "startedAt": c.started_at,
                "finishedAt": now_iso(), "containerID": f"lab://{c.proc.pid}"}
        if code is not None and code < 0:
            term["signal"] = -code
        c.proc = None
        restart = run.restart_policy == "Always" or (run.restart_policy == "OnFailure" and code != 0)
        if run.terminating or not restart:
            c.terminated = term
            return
        c.last_termination = term
        c.restarts += 1
        delay = backoff_seconds(c.restarts)
        c.next_start = time.monotonic() + delay
        c.waiting_reason = "CrashLoopBackOff"
        c.waiting_message = f"back-off {delay:.0f}s restarting failed container={c.name} pod={run.name}"
        self.event(pod, "BackOff", c.waiting_message, "Warning")

    # --- probes -----------------------------------------------------------------------------------
    def run_probe(self, spec: ProbeSpec, ip: str, run: PodRun, env: dict[str, str]) -> bool:
        try:
            if spec.kind == "http":
                url = f"{spec.scheme.lower()}://{ip}:{spec.port}{spec.path}"
                with urllib.request.urlopen(url, timeout=spec.timeout) as resp:
                    return 200 <= resp.status < 400
            if spec.kind == "tcp":
                with socket.create_connection((ip, spec.port), timeout=spec.timeout):
                    return True
            if spec.kind == "exec":
                return subprocess.run(spec.command, env=env, cwd=run.dir, timeout=spec.timeout,
                                      capture_output=True).returncode == 0
        except Exception:
            return False
        return False

    def probe(self, pod: dict[str, Any], run: PodRun, c: ContainerRun) -> None:
        now = time.monotonic()
        for kind in ("startup", "readiness", "liveness"):
            spec: ProbeSpec | None = getattr(c, kind)
            if spec is None or (kind != "startup" and not c.started()):
                continue
            if kind == "startup" and c.startup_state.healthy:
                continue
            fut = c.probing.get(kind)
            if fut is not None:
                if not fut.done():
                    continue
                del c.probing[kind]
                self.apply_probe(pod, run, c, kind, spec, fut.result())
                continue
            if now >= c.next_probe.get(kind, 0):
                c.next_probe[kind] = now + spec.period
                c.probing[kind] = self.probes.submit(self.run_probe, spec, run.ip, run, dict(os.environ))

    def apply_probe(self, pod: dict[str, Any], run: PodRun, c: ContainerRun, kind: str, spec: ProbeSpec,
                    ok: bool) -> None:
        state = {"readiness": c.ready_state, "liveness": c.live_state, "startup": c.startup_state}[kind]
        state.record(ok, spec)
        if not ok and state.failures == spec.failure_threshold:
            self.event(pod, "Unhealthy", f"{kind.capitalize()} probe failed for container {c.name}", "Warning")
        if kind in ("liveness", "startup") and state.failures >= spec.failure_threshold and c.running():
            self.event(pod, "Killing", f"Container {c.name} failed {kind} probe, will be restarted")
            self.kill_container(c, grace=float(pod["spec"].get("terminationGracePeriodSeconds") or 30))

    # --- termination ------------------------------------------------------------------------------
    def kill_container(self, c: ContainerRun, grace: float) -> None:
        proc = c.proc
        if proc is None:
            return

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=max(grace, 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Reap stray children of the group too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        self.killers.submit(kill)

    def terminate_pod(self, pod: dict[str, Any] | None, run: PodRun) -> None:
        if run.terminating:
            return
        run.terminating = True
        grace = 30.0
        if pod is not None:
            meta = pod["metadata"]
            grace = float(meta.get("deletionGracePeriodSeconds")
                          or pod["spec"].get("terminationGracePeriodSeconds") or 30)
            for c in run.containers:
                if c.running():
                    self.event(pod, "Killing", f"Stopping container {c.name}")
        for c in run.containers:
            self.kill_container(c, grace)

    def finish_deletion(self, run: PodRun) -> None:
        """All containers stopped: remove the pod object for good, as the kubelet does."""
        try:
            self.core.delete_namespaced_pod(run.name, run.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": run.uid}))
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("final delete %s/%s: %s", run.namespace, run.name, exc.reason)
        self.forget(run)

    def forget(self, run: PodRun) -> None:
        self.pods.pop(run.uid, None)
        ip = self.ips.pop(run.uid, None)
        if ip:
            release_address(ip)

    # --- status -----------------------------------------------------------------------------------
    def container_status(self, c: ContainerRun, image: str) -> dict[str, Any]:
        st: dict[str, Any] = {"name": c.name, "image": image, "imageID": f"lab://{image}",
                              "restartCount": c.restarts, "ready": c.ready(), "started": c.started()}
        if c.running():
            assert c.proc is not None
            st["state"] = {"running": {"startedAt": c.started_at}}
            st["containerID"] = f"lab://{c.proc.pid}"
        elif c.terminated is not None:
            st["state"] = {"terminated": c.terminated}
        else:
            waiting = {"reason": c.waiting_reason or "ContainerCreating"}
            if c.waiting_message:
                waiting["message"] = c.waiting_message
            st["state"] = {"waiting": waiting}
        if c.last_termination:
            st["lastState"] = {"terminated": c.last_termination}
        return st

    def write_status(self, pod: dict[str, Any], run: PodRun) -> None:
        images = {c["name"]: c.get("image", "") for c in pod["spec"]["containers"]}
        statuses = [self.container_status(c, images[c.name]) for c in run.containers]
        phase = pod_phase(run.restart_policy, [s["state"] for s in statuses])
        all_ready = all(c.ready() for c in run.containers) and phase == "Running"
        old = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}

        def cond(type_: str, ok: bool) -> dict[str, Any]:
            status = "True" if ok else "False"
            prev = old.get(type_)
            ts = prev["lastTransitionTime"] if prev and prev.get("status") == status else now_iso()
            return {"type": type_, "status": status, "lastTransitionTime": ts}

        status: dict[str, Any] = {
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": run.ip,
            "podIPs": [{"ip": run.ip}], "startTime": run.start_time,
            "qosClass": (pod.get("status") or {}).get("qosClass") or "BestEffort",
            "conditions": [cond("PodScheduled", True), cond("Initialized", True),
                           cond("ContainersReady", all_ready), cond("Ready", all_ready)],
            "containerStatuses": statuses,
        }
        comparable = json.dumps({**status, "conditions": [(c["type"], c["status"]) for c in status["conditions"]]},
                                sort_keys=True)
        if run.last_status is not None and run.last_status.get("_cmp") == comparable:
            return
        try:
            self.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
            run.last_status = {"_cmp": comparable}
        except ApiException as exc:
            if exc.status != 404:
                log.warning("status %s/%s: %s", run.namespace, run.name, exc.reason)

    # --- the loop ---------------------------------------------------------------------------------
    def sync(self) -> None:
        resp = self.core.list_pod_for_all_namespaces(_preload_content=False)
        items = json.loads(resp.data)["items"]
        seen: set[str] = set()
        for pod in items:
            meta, spec = pod["metadata"], pod["spec"]
            if not spec.get("nodeName"):
                if (spec.get("schedulerName") or "default-scheduler") == "default-scheduler" \
                        and not meta.get("deletionTimestamp"):
                    self.bind(pod)
                continue
            if spec["nodeName"] != self.node:
                continue
            uid = meta["uid"]
            seen.add(uid)
            run = self.pods.get(uid)
            phase = (pod.get("status") or {}).get("phase")
            if run is None:
                if meta.get("deletionTimestamp"):
                    self.finish_deletion(PodRun(uid, meta["namespace"], meta["name"], "", self.workdir, [],
                                                "Never", ""))
                    continue
                if phase in ("Succeeded", "Failed"):
                    continue
                run = self.admit(pod)
            self.sync_pod(pod, run)
        for uid, run in list(self.pods.items()):
            if uid not in seen:  # force-deleted: stop what is left
                self.terminate_pod(None, run)
                if not any(c.running() for c in run.containers):
                    self.forget(run)

    def sync_pod(self, pod: dict[str, Any], run: PodRun) -> None:
        now = time.monotonic()
        if pod["metadata"].get("deletionTimestamp"):
            self.terminate_pod(pod, run)
        for c in run.containers:
            if c.proc is not None and c.proc.poll() is not None:
                self.on_exit(pod, run, c)
            if run.terminating:
                continue
            if c.proc is None and c.terminated is None and now >= c.next_start:
                self.start_container(pod, run, c)
            if c.running():
                self.probe(pod, run, c)
        if run.terminating and not any(c.running() for c in run.containers):
            self.finish_deletion(run)
            return
        self.write_status(pod, run)

    def run_forever(self) -> None:
        self.register_node()
        while not self.stopping.is_set():
            try:
                self.sync()
                self.update_node_status()
                self.renew_node_lease()
            except Exception:
                log.exception("sync failed")
                time.sleep(1)
            self.stopping.wait(TICK)
        self.shutdown()

    def shutdown(self) -> None:
        """The node goes down: its processes stop with it (pods stay in the API, as on a dead node)."""
        # All at once, one shared grace: one container at a time (16 killers, 5 s each) outlasted the
        # grace `lab down` and the test fixtures give the runner with 100+ pods, leaving their processes.
        procs = [c.proc for run in list(self.pods.values()) for c in run.containers if c.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left, and stray children of each group
        self.killers.shutdown(wait=True)
        self.probes.shutdown(wait=False, cancel_futures=True)
        for ip in self.ips.values():
            release_address(ip)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lagpilot.lab.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--node-name", default=NODE_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    import yaml

    kc = yaml.safe_load(Path(args.kubeconfig).read_text())
    cluster = kc["clusters"][0]["cluster"]
    api = config.new_client_from_config(config_file=args.kubeconfig)
    runner = Runner(api, Path(args.workdir), cluster["server"], cluster["certificate-authority"], args.node_name)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    runner.run_forever()


if __name__ == "__main__":
    main()
