"""Figures of passing tests (pytest keeps their output): a test calls :func:`report_figures`, which prints
the line and appends it to LAGPILOT_TEST_FIGURES; scripts/run-tests.sh shows that file after pytest."""

from __future__ import annotations

import os


def report_figures(line: str) -> None:
    print(line)
    path = os.environ.get("LAGPILOT_TEST_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
