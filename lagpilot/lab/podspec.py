"""Pure pieces of the lab runner: env resolution, $(VAR) expansion, command lookup, probe plans, backoff,
and the pod status the runner reports. Kept free of I/O so they are unit-tested directly."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")

# Looks up data of a Secret or ConfigMap: (kind, namespace, name) -> dict or None when it does not exist.
DataLookup = Callable[[str, str, str], "Mapping[str, str] | None"]


class EnvError(Exception):
    """The pod cannot start: a referenced Secret/ConfigMap key is missing (CreateContainerConfigError)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names are replaced, unknown ones left as is, $$ escapes $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return VAR_REF.sub(sub, value)


def field_ref(pod: Mapping[str, Any], path: str, pod_ip: str, node: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": node,
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path}")


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, node: str,
                lookup: DataLookup) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env in order."""
    ns = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = lookup(kind, ns, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{ref["name"]}" not found')
            for k, v in data.items():
                env[prefix + k] = v
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item and item["value"] is not None:
            env[name] = expand(str(item["value"]), env)
            continue
        src = item.get("valueFrom") or {}
        if "fieldRef" in src:
            env[name] = field_ref(pod, src["fieldRef"]["fieldPath"], pod_ip, node)
        elif "secretKeyRef" in src or "configMapKeyRef" in src:
            kind, ref = ("Secret", src["secretKeyRef"]) if "secretKeyRef" in src else \
                ("ConfigMap", src["configMapKeyRef"])
            data = lookup(kind, ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind.lower()} "{ref["name"]}"'
                raise EnvError(f"{what} not found" if data is None else f'key "{ref["key"]}" not in {what}')
            env[name] = data[ref["key"]]
        elif "resourceFieldRef" in src:
            env[name] = _resource_field(container, src["resourceFieldRef"])
        else:
            env[name] = ""
    return env


def volume_files(pod: Mapping[str, Any], container: Mapping[str, Any],
                 lookup: DataLookup) -> dict[str, dict[str, str]]:
    """The container's Secret/ConfigMap volume mounts as files: mountPath -> {path in the volume: content}
    (``items`` select and rename keys, as the kubelet does). Other volume kinds are not mounted."""
    ns = pod["metadata"]["namespace"]
    volumes = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    out: dict[str, dict[str, str]] = {}
    for mount in container.get("volumeMounts") or []:
        vol = volumes.get(mount["name"]) or {}
        for kind, key, name_key in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            src = vol.get(key)
            if src is None:
                continue
            data = lookup(kind, ns, src[name_key])
            if data is None:
                if src.get("optional"):
                    break
                raise EnvError(f'MountVolume.SetUp failed for volume "{mount["name"]}": {kind.lower()} '
                               f'"{src[name_key]}" not found')
            items = src.get("items")
            files: dict[str, str] = {}
            for item in items if items else [{"key": k, "path": k} for k in data]:
                if item["key"] not in data:
                    raise EnvError(f'MountVolume.SetUp failed for volume "{mount["name"]}": key "{item["key"]}" '
                                   f'not in {kind.lower()} "{src[name_key]}"')
                files[item["path"]] = data[item["key"]]
            out[mount["mountPath"].rstrip("/")] = files
    return out


def rewrite_mount_paths(env: Mapping[str, str], mounts: Mapping[str, str]) -> dict[str, str]:
    """The lab has no mount namespaces: env values naming a path under a mountPath are pointed at the
    directory the runner materialized it in (``/etc/x/ca.crt`` -> ``<pod dir>/volumes/etc/x/ca.crt``)."""
    out = dict(env)
    for name, value in env.items():
        for mount_path, host_dir in mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                out[name] = host_dir + value[len(mount_path):]
    return out


def _resource_field(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, res = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(res)
    return str(value) if value is not None else "0"


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expansion. The lab pulls no images, so a command is required."""
    command = list(container.get("command") or [])
    if not command:
        raise EnvError(f'container "{container["name"]}" has no command; the lab runs only explicit commands '
                       "(images are not pulled)")
    return [expand(str(a), env) for a in command + list(container.get("args") or [])]


def backoff_seconds(restarts: int, base: float = 1.0, cap: float = 30.0) -> float:
    """CrashLoopBackOff delay. The kubelet uses 10 s doubling to 300 s; the lab shortens it for tests."""
    return float(min(cap, base * (2 ** max(0, restarts - 1)))) if restarts > 0 else 0.0


@dataclass
class ProbeSpec:
    kind: str  # http | tcp | exec
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    command: list[str] = field(default_factory=list)
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


def parse_probe(probe: Mapping[str, Any] | None, container: Mapping[str, Any]) -> ProbeSpec | None:
    if not probe:
        return None
    common = {
        "initial_delay": float(probe.get("initialDelaySeconds") or 0),
        "period": float(probe.get("periodSeconds") or 10),
        "timeout": float(probe.get("timeoutSeconds") or 1),
        "success_threshold": int(probe.get("successThreshold") or 1),
        "failure_threshold": int(probe.get("failureThreshold") or 3),
    }
    if "httpGet" in probe:
        h = probe["httpGet"]
        return ProbeSpec("http", port=resolve_port(h["port"], container), path=h.get("path") or "/",
                         scheme=h.get("scheme") or "HTTP", **common)  # type: ignore[arg-type]
    if "tcpSocket" in probe:
        return ProbeSpec("tcp", port=resolve_port(probe["tcpSocket"]["port"], container),
                         **common)  # type: ignore[arg-type]
    if "exec" in probe:
        return ProbeSpec("exec", command=list(probe["exec"].get("command") or []),
                         **common)  # type: ignore[arg-type]
    return None


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise EnvError(f'named port "{port}" not found in container "{container["name"]}"')


@dataclass
class ProbeState:
    """Consecutive results, as the kubelet counts them."""

    successes: int = 0
    failures: int = 0
    healthy: bool = False

    def record(self, ok: bool, spec: ProbeSpec) -> bool:
        """Returns True when the verdict changed."""
        before = self.healthy
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= spec.success_threshold:
                self.healthy = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= spec.failure_threshold:
                self.healthy = False
        return before != self.healthy


def pod_phase(restart_policy: str, states: list[dict[str, Any]]) -> str:
    """Running while any container runs or will be restarted; Succeeded/Failed when all are done for good."""
    if not states:
        return "Pending"
    terminated = [s["terminated"] for s in states if "terminated" in s]
    if any("running" in s for s in states):
        return "Running"
    if len(terminated) == len(states):
        if restart_policy == "Always":
            return "Running"
        if all(t.get("exitCode") == 0 for t in terminated):
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    if any("waiting" in s and s["waiting"].get("reason") == "CrashLoopBackOff" for s in states):
        return "Running"
    return "Pending"
