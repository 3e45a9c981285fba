"""Fixtures for the chart, image and kind tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from lagpilot.testing.chart import ensure_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()
