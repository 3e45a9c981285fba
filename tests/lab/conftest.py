"""Lab fixtures shared by the suites that run the operator as a real process: the CRDs installed once per
session, and an operator watching only the test's namespace (so tests never see each other's objects).
A suite that needs other operator settings overrides `operator` with `running_operator(...)`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing.operator import Operator, install_crds, running_operator


@pytest.fixture(scope="session")
def crds(k8s: Any) -> None:
    install_crds(k8s)


@pytest.fixture
def operator(k8s: Any, crds: None, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    with running_operator(k8s, namespace, tmp_path / "operator.log", {}) as op:
        yield op
