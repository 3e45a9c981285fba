"""Where lagpilot keeps build artifacts and lab state, outside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

KAFKA_VERSION = os.environ.get("LAGPILOT_KAFKA_VERSION", "3.9.1")
K8S_VERSION = os.environ.get("LAGPILOT_K8S_VERSION", "v1.34.4")
ETCD_VERSION = os.environ.get("LAGPILOT_ETCD_VERSION", "v3.5.21")


def cache_dir() -> Path:
    """Version-keyed artifacts (Kafka jars, Kubernetes binaries): shared by every clone on the machine."""
    return Path(os.environ.get("LAGPILOT_CACHE_DIR", Path.home() / ".cache" / "lagpilot"))


def lab_dir() -> Path:
    """State of the lab started by `lagpilot lab up` (one per machine unless overridden)."""
    return Path(os.environ.get("LAGPILOT_LAB_DIR", cache_dir() / "lab"))


def kafka_libs() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def kubernetes_bin() -> Path:
    return cache_dir() / f"kubernetes-{K8S_VERSION}" / "bin"


def etcd_bin() -> Path:
    return cache_dir() / f"etcd-{ETCD_VERSION}" / "bin" / "etcd"


def project_root() -> Path:
    """The checkout this package was installed from (editable installs: tests, benches, the lab)."""
    return Path(__file__).resolve().parent.parent


def repo_scripts() -> Path:
    """scripts/ of the checkout this package was installed from (editable installs and the image)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "scripts", Path("/app/scripts")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("scripts/ not found next to the lagpilot package")
