"""Lab fixtures shared by the suites that run the operator as a real process: the CRDs installed once per
session, and an operator watching only the test's namespace (so tests never see each other's objects).
A suite that needs other operator settings overrides `operator` with `running_operator(...)`. The chart
suites get the pinned Helm run against the lab's kubeconfig with private Helm state."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing.chart import ensure_helm
from lagpilot.testing.operator import Operator, install_crds, running_operator


@pytest.fixture(scope="session")
def crds(k8s: Any) -> None:
    install_crds(k8s)


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    with running_operator(k8s, namespace, tmp_path / "operator.log", {}) as op:
        yield op


HelmRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return ensure_helm()


@pytest.fixture
def helm(helm_bin: Path, k8s: object, tmp_path: Path) -> HelmRun:
    """helm(*args, check=True) against the lab, with its cache/config/data in a private directory."""
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "helm-config"), "HELM_DATA_HOME": str(tmp_path / "helm-data")}
    kubeconfig = k8s.kubeconfig  # type: ignore[attr-defined]

    def run(*args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([str(helm_bin), "--kubeconfig", kubeconfig, *args], capture_output=True,
                             text=True, env=env, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}\n{out.stdout}")
        return out

    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ports() -> tuple[int, int]:
    """(metrics, health) ports for an operator pod: the lab runs pods as host processes, so fixed ports
    could collide with other processes on the machine."""
    return free_port(), free_port()
