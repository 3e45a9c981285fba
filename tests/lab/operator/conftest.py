"""Lab fixtures for the operator: the CRDs installed once, and the operator as a real process watching only
the test's namespace (so parallel tests and other suites never see each other's objects)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_lab_helpers import CRDS, Operator, strip_finalizers, wait_for


@pytest.fixture(scope="session")
def crds(k8s: Any) -> None:
    for path in sorted(CRDS.glob("*.yaml")):
        k8s.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    k8s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/consumergroups.lagpilot.io")


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(k8s.kubeconfig, namespace, tmp_path / "operator.log", {}).start()
    try:
        yield op
    finally:
        if op.alive():
            k8s.kubectl("delete", "consumergroups", "--all", "--wait=false", namespace=namespace, check=False)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not json.loads(k8s.kubectl("get", "consumergroups", "-o", "json",
                                                            namespace=namespace).stdout)["items"], 30,
                         "consumergroups deleted")
        op.stop()
        strip_finalizers(k8s, namespace)
        print(op.log()[-20000:])
