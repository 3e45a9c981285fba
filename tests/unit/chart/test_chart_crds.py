"""One source for the CRDs: every file in the chart's crds/ is the top-level crds/ file of the same name
(a relative symlink, or a byte-identical copy), and every top-level CRD ships in the chart."""

from __future__ import annotations

import os

import pytest
import yaml

from lagpilot.testing.chart import CHART, ROOT

pytestmark = pytest.mark.unit

TOP = ROOT / "crds"
CHART_CRDS = CHART / "crds"


def yaml_files(folder: os.PathLike[str]) -> set[str]:
    return {p.name for p in os.scandir(folder) if p.name.endswith((".yaml", ".yml"))}


def test_consumergroup_crd_ships_in_chart() -> None:
    assert "consumergroups.lagpilot.io.yaml" in yaml_files(CHART_CRDS)


def test_chart_crds_are_the_top_level_files() -> None:
    assert yaml_files(CHART_CRDS) == yaml_files(TOP), "chart crds/ and top-level crds/ list different files"
    for name in yaml_files(CHART_CRDS):
        link = CHART_CRDS / name
        assert (TOP / name).is_file(), f"crds/{name} is missing"
        if link.is_symlink():
            target = os.readlink(link)
            assert not os.path.isabs(target), f"{link} must be a relative symlink (it is packaged and cloned)"
            assert link.resolve() == (TOP / name).resolve()
        assert link.read_bytes() == (TOP / name).read_bytes(), f"charts/lagpilot/crds/{name} drifted"


def test_consumergroup_crd_is_what_the_chart_rbac_names() -> None:
    crd = yaml.safe_load((CHART_CRDS / "consumergroups.lagpilot.io.yaml").read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["group"] == "lagpilot.io"
    assert crd["spec"]["names"]["plural"] == "consumergroups"
    assert crd["spec"]["scope"] == "Namespaced"
    served = [v for v in crd["spec"]["versions"] if v["served"]]
    assert all({"status", "scale"} <= set(v.get("subresources", {})) for v in served)
