"""How the CLI finds a cluster: --kubeconfig, then $KUBECONFIG, then ~/.kube/config, then the running lab."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GROUP, VERSION, PLURAL = "lagpilot.io", "v1alpha1", "consumergroups"


class ClusterUnreachable(RuntimeError):
    """No kubeconfig, or the API server does not answer: one line for the user."""


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


def api_client(kubeconfig: str | None = None, check: bool = True) -> Any:
    """An ApiClient; with `check`, one cheap request proves the API server answers (short timeout)."""
    from kubernetes import client, config

    path = resolve_kubeconfig(kubeconfig)
    if not Path(path).exists():
        raise ClusterUnreachable(f"kubeconfig {path} does not exist")
    try:
        api = config.new_client_from_config(config_file=path)
    except Exception as exc:
        raise ClusterUnreachable(f"cannot load kubeconfig {path}: {exc}") from exc
    if check:
        try:
            client.VersionApi(api).get_code(_request_timeout=5)
        except Exception as exc:
            host = api.configuration.host
            raise ClusterUnreachable(f"cluster unreachable at {host}: {type(exc).__name__}") from exc
    return api
