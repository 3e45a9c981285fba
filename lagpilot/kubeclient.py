"""How every lagpilot process finds its cluster (one loader for the operator, the workers and the CLI):
in a pod its ServiceAccount, else --kubeconfig, then $KUBECONFIG, then ~/.kube/config, and for the CLI
also the running lab."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lagpilot.protocol import GROUP, PLURAL, VERSION

__all__ = ["GROUP", "PLURAL", "VERSION", "ClusterUnreachable", "api_client", "context_namespace", "load",
           "resolve_kubeconfig"]


class ClusterUnreachable(RuntimeError):
    """No kubeconfig, or the API server does not answer: one line for the user."""


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token")


def load(kubeconfig: str | None = None) -> Any:
    """An ApiClient for a long-running process: the pod's ServiceAccount when running in a pod and no
    kubeconfig is named, else the kubeconfig (explicit, $KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config

    if kubeconfig is None and in_cluster():
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


def resolve_kubeconfig(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"].split(os.pathsep)[0]
    home = Path.home() / ".kube" / "config"
    if home.exists():
        return str(home)
    from lagpilot import paths

    lab_kubeconfig = paths.lab_dir() / "k8s" / "admin.kubeconfig"
    if lab_kubeconfig.exists():
        return str(lab_kubeconfig)
    raise ClusterUnreachable("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start the lab with "
                             "`lagpilot lab up`")


def api_client(kubeconfig: str | None = None, check: bool = True, context: str | None = None) -> Any:
    """An ApiClient for the kubeconfig's current context, or `context`; with `check`, one cheap request
    proves the API server answers (short timeout)."""
    from kubernetes import client, config

    path = resolve_kubeconfig(kubeconfig)
    if not Path(path).exists():
        raise ClusterUnreachable(f"kubeconfig {path} does not exist")
    try:
        api = config.new_client_from_config(config_file=path, context=context)
    except Exception as exc:
        raise ClusterUnreachable(f"cannot load kubeconfig {path}: {exc}") from exc
    if check:
        try:
            client.VersionApi(api).get_code(_request_timeout=5)
        except Exception as exc:
            host = api.configuration.host
            raise ClusterUnreachable(f"cluster unreachable at {host}: {type(exc).__name__}") from exc
    return api


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace kubectl would use without -n: the (current or named) context's, else "default"."""
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=resolve_kubeconfig(kubeconfig))
    except Exception:
        return "default"
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
