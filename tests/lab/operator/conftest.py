"""Lab fixtures for the operator: the CRDs installed once, and the operator as a real process watching only
the test's namespace (so parallel tests and other suites never see each other's objects)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_lab_helpers import Operator, install_crds, running_operator


@pytest.fixture(scope="session")
def crds(k8s: Any) -> None:
    install_crds(k8s)


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    with running_operator(k8s, namespace, tmp_path / "operator.log", {}) as op:
        yield op
