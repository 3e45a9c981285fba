"""Helpers shared by the chart tests (unit and lab): where the chart and the pinned Helm are, and a
`helm template` wrapper that returns parsed manifests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lagpilot.paths import cache_dir, project_root

ROOT = project_root()
CHART = ROOT / "charts" / "lagpilot"
HELM_VERSION = "v3.16.4"
KUBE_VERSION = "v1.34.4"
# The namespaced + monitored variant the issue asks to lint, render and dry-run.
MONITORED_NAMESPACED = ("watchNamespaces={shop,billing}", "serviceMonitor.enabled=true",
                        "prometheusRule.enabled=true", "grafanaDashboard.enabled=true")


class HelmError(RuntimeError):
    pass


def helm_path() -> Path:
    """Same place as scripts/build-helm.sh: <lagpilot cache>/helm-<version>/bin/helm."""
    return cache_dir() / f"helm-{HELM_VERSION}" / "bin" / "helm"


def ensure_helm() -> Path:
    """The pinned Helm, built from its Go module on first use (minutes once per machine, then cached)."""
    path = helm_path()
    if not path.exists():
        out = subprocess.run(["bash", str(ROOT / "scripts" / "build-helm.sh")], capture_output=True,
                             text=True, timeout=1800)
        if out.returncode != 0:
            raise HelmError(f"scripts/build-helm.sh failed:\n{out.stderr[-3000:]}")
        if out.stdout.strip() != str(path):
            raise HelmError(f"build-helm.sh printed {out.stdout.strip()!r}, lagpilot.paths expects {path}")
    return path


def helm_template(helm: Path, sets: Iterable[str] = (), *, namespace: str = "lagpilot-system",
                  release: str = "lagpilot", extra: Sequence[str] = ()) -> str:
    args = [str(helm), "template", release, str(CHART), "--namespace", namespace,
            "--kube-version", KUBE_VERSION, *extra]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise HelmError(out.stderr.strip())
    return out.stdout


def render(helm: Path, sets: Iterable[str] = (), **kwargs: Any) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(helm_template(helm, sets, **kwargs)) if doc]


def by_kind(docs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def apply_operator_rbac(k8s: Any, helm: Path, namespace: str, release: str,
                        sets: Iterable[str] = ("peering.enabled=false",)) -> tuple[str, str]:
    """The chart's ServiceAccount and RBAC for a release in `namespace`, applied to the cluster:
    (the manifest, to delete it afterwards; the ServiceAccount's name)."""
    manifest = helm_template(helm, sets, namespace=namespace, release=release,
                             extra=["--show-only", "templates/rbac.yaml",
                                    "--show-only", "templates/serviceaccount.yaml"])
    k8s.kubectl("apply", "-f", "-", input=manifest)
    sa = next(d["metadata"]["name"] for d in yaml.safe_load_all(manifest) if d and d["kind"] == "ServiceAccount")
    return manifest, sa


def lagpilot_cli(k8s: Any, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    """The `lagpilot` command of this environment, as the lab's admin or as whoever `kubeconfig` names."""
    import os
    import sys

    env = {**os.environ, "KUBECONFIG": kubeconfig or k8s.kubeconfig}
    return subprocess.run([str(Path(sys.executable).parent / "lagpilot"), *args], capture_output=True,
                          text=True, timeout=60, env=env)
