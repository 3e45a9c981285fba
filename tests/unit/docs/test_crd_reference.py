"""docs/consumergroup-reference.md is exactly what scripts/gen_crd_reference.py makes of the current CRD, it
covers every schema field, and every field the examples/ ConsumerGroups use exists in the CRD schema."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gen_crd_reference.py"
CRD_FILE = ROOT / "crds" / "consumergroups.lagpilot.io.yaml"
DOC = ROOT / "docs" / "consumergroup-reference.md"
SOURCE = "crds/consumergroups.lagpilot.io.yaml"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crd_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


gen = load_generator()
CRD_TEXT = CRD_FILE.read_text()
CRD = gen.load_crd(CRD_TEXT)
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


# ---------------------------------------------------------------------------------------------------------
# The committed doc is the generator's output


def test_committed_reference_is_what_the_generator_makes_of_the_current_crd() -> None:
    assert DOC.exists(), "docs/consumergroup-reference.md is missing; run: python scripts/gen_crd_reference.py"
    current = DOC.read_text()
    expected = gen.render(CRD_TEXT, SOURCE)
    if current != expected:
        line = gen.first_difference(current, expected)
        pytest.fail(f"docs/consumergroup-reference.md is stale (first difference at line {line}); "
                    "run: python scripts/gen_crd_reference.py")


def test_check_passes_on_the_repository() -> None:
    out = run_script("--check")
    assert out.returncode == 0, out.stderr
    assert out.stdout == out.stderr == ""


def test_check_fails_with_one_line_on_a_stale_doc(tmp_path: Path) -> None:
    stale = tmp_path / "ref.md"
    lines = DOC.read_text().splitlines(keepends=True)
    lines[20] = "edited by hand\n"
    stale.write_text("".join(lines))
    out = run_script("--check", "--out", str(stale))
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "stale" in out.stderr and "line 21" in out.stderr
    assert "python scripts/gen_crd_reference.py" in out.stderr


def test_check_fails_on_a_missing_doc(tmp_path: Path) -> None:
    out = run_script("--check", "--out", str(tmp_path / "absent.md"))
    assert out.returncode == 1 and "missing" in out.stderr and out.stderr.count("\n") == 1


def test_writing_then_checking_round_trips_and_is_deterministic(tmp_path: Path) -> None:
    target = tmp_path / "ref.md"
    assert run_script("--out", str(target)).returncode == 0
    first = target.read_text()
    assert run_script("--out", str(target)).returncode == 0
    assert target.read_text() == first == DOC.read_text()
    assert run_script("--check", "--out", str(target)).returncode == 0


def test_a_crd_change_makes_the_doc_stale(tmp_path: Path) -> None:
    crd = yaml.safe_load(CRD_TEXT)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["threads"]["default"] = 7
    spec["properties"]["target"]["properties"]["proxy"] = {"type": "string", "description": "An HTTP proxy."}
    changed = tmp_path / "crd.yaml"
    changed.write_text(yaml.safe_dump(crd, sort_keys=False))
    doc = gen.render(changed.read_text(), SOURCE)
    assert "| `spec.target.proxy` | `string` |  |  |  | An HTTP proxy. |" in doc
    assert "| `spec.threads` | `integer` |  | `7` |" in doc
    out = run_script("--check", "--crd", str(changed))
    assert out.returncode == 1 and "stale" in out.stderr


# ---------------------------------------------------------------------------------------------------------
# The doc covers the whole CRD


def all_fields(schema: dict[str, Any], path: str = "") -> list[str]:
    """Every property path in the schema, found independently of the generator's walk."""
    out: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        out.append(here)
        node, suffix = sub, ""
        while node.get("type") == "array" and isinstance(node.get("items"), dict):
            node, suffix = node["items"], suffix + "[]"
        out += all_fields(node, here + suffix)
    return out


def test_every_schema_field_has_a_row() -> None:
    doc = DOC.read_text()
    paths = all_fields(SCHEMA)
    assert len(paths) > 80  # the walk itself sees the whole schema
    missing = [p for p in paths if f"| `{p}` |" not in doc]
    assert missing == []
    assert sum(line.startswith("| `") for line in doc.splitlines()) == len(paths)


@pytest.mark.parametrize("level", [
    "spec", "spec.target", "spec.retry", "spec.kafka", "spec.template", "spec.template.resources",
    "spec.template.tolerations[]", "spec.template.env[]", "spec.autoscaling", "spec.rollout",
    "spec.rollout.blueGreen", "spec.rollout.canary", "status", "status.conditions[]", "status.lag",
    "status.rollout", "status.assignment",
])
def test_one_table_per_object_level(level: str) -> None:
    doc = DOC.read_text()
    assert doc.count(f"\n### `{level}`\n") == 1
    assert f'<a id="{gen.anchor(level)}"></a>' in doc


def test_rows_carry_type_required_default_constraints_and_description() -> None:
    doc = DOC.read_text()
    for row in (
        "| `spec.target.method` | `string` |  | `POST` | one of `GET`, `POST`, `PUT`, `PATCH`, `DELETE` | "
        "HTTP method of every request. |",
        "| `spec.rollout.canary.maxErrorRate` | `number` |  | `0.01` | 0 ≤ value ≤ 1 | Most failed delivery "
        "attempts (retried, dead-lettered or failing) as a fraction of all attempts on the canary partitions, "
        "0 to 1. |",
        "| `spec.template.resources.limits` | `map[string]int-or-string` |  |  |  | Most compute resources the "
        "container may use, e.g. cpu 500m, memory 256Mi. |",
        "| `status.conditions[].status` | `string` | yes |  | one of `True`, `False`, `Unknown` | "
        "Whether the condition holds. |",
        # `<` would start an HTML tag in rendered markdown
        "| `status.selector` | `string` |  |  |  | Label selector of every worker pod of this group, all "
        "revisions (lagpilot.io/consumergroup=&lt;name>); the scale subresource's selector. |",
    ):
        assert row in doc, row
    for start in ("| `spec.target` | [`object`](#spec-target) | yes |  |  | ",
                  "| `spec.topic` | `string` |  |  | pattern `^[a-zA-Z0-9._-]{1,249}$` | ",
                  "| `spec.bootstrapServers` | `string` | yes |  | 1 ≤ length ≤ 2048 | ",
                  "| `status.conditions` | [`[]object`](#status-conditions) |  |  | list keyed by `type` | ",
                  "| `status.rollout.step` | `int-or-string` |  |  |  | "):
        assert start in doc, start
    # a field without a description shows a dash (root metadata may not have one: the API server forbids it)
    assert "| `metadata` | `object` |  |  |  | — |" in doc
    # CEL rules are listed under their object's table, pipes intact outside tables
    assert ("- Validation: rule `!has(self.maxWorkers) || !has(self.minWorkers) || "
            "self.maxWorkers >= self.minWorkers`, message \"maxWorkers must be >= minWorkers\"") in doc


def test_every_description_in_the_schema_is_in_the_doc() -> None:
    doc = DOC.read_text()
    documented = [(p, s["description"]) for p, s in gen.fields(SCHEMA) if s.get("description")]
    assert documented
    for path, description in documented:
        assert gen.text(description) in doc, path
    missing = {p for p, _ in gen.fields(SCHEMA)} - {p for p, _ in documented}
    assert set(gen.undocumented(SCHEMA)) == missing - {"metadata"}  # root metadata may not be described
    assert gen.undocumented(SCHEMA) == []


def test_printer_columns_short_name_and_subresources() -> None:
    doc = DOC.read_text()
    for col in VERSION["additionalPrinterColumns"]:
        shown = "`-o wide`" if col.get("priority", 0) else "default"
        assert f"| {col['name']} | `{col['type']}` | `{col['jsonPath']}` | {shown} |" in doc
    for name in CRD["spec"]["names"]["shortNames"]:
        assert f"| Short names | `{name}` |" in doc
    scale = VERSION["subresources"]["scale"]
    assert "- `status`: enabled" in doc
    assert (f"- `scale`: replicas are `{scale['specReplicasPath']}` (desired) and "
            f"`{scale['statusReplicasPath']}` (observed), label selector `{scale['labelSelectorPath']}`") in doc


# ---------------------------------------------------------------------------------------------------------
# Every field the examples use exists in the schema


def unknown_fields(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Paths in `value` that the structural schema does not declare (the API server would prune them).
    Free-form nodes (x-kubernetes-preserve-unknown-fields, additionalProperties: true) accept anything."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return []
    out: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            here = f"{path}.{key}"
            if key in props:
                out += unknown_fields(props[key], sub, here)
            elif isinstance(extra, dict):
                out += unknown_fields(extra, sub, here)
            elif extra is not True and not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(here)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += unknown_fields(schema["items"], item, f"{path}[{i}]")
    return out


def example_groups() -> list[tuple[str, dict[str, Any]]]:
    group = CRD["spec"]["group"]
    found = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (isinstance(doc, dict) and doc.get("kind") == CRD["spec"]["names"]["kind"]
                    and str(doc.get("apiVersion", "")).startswith(group + "/")):
                found.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return found


EXAMPLES = example_groups()


def test_examples_exist() -> None:
    names = {n.split(":")[0] for n, _ in EXAMPLES}
    assert {"minimal.yaml", "full.yaml"} <= names


@pytest.mark.parametrize(("name", "cg"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_example_fields_exist_in_the_schema(name: str, cg: dict[str, Any]) -> None:
    assert cg["apiVersion"].split("/")[1] in {v["name"] for v in CRD["spec"]["versions"]}
    assert set(cg) <= set(SCHEMA["properties"]), name
    assert unknown_fields(SCHEMA["properties"]["spec"], cg["spec"], "spec") == []


def test_full_example_uses_every_spec_level() -> None:
    """The walk is only as good as what it reaches: full.yaml with secure.yaml (whose two groups show the
    alternatives full.yaml cannot hold at once: OAUTHBEARER, target auth) touch every object level."""
    used = set()

    def visit(value: Any, path: str) -> None:
        if isinstance(value, dict):
            used.add(path)
            for k, v in value.items():
                visit(v, f"{path}.{k}")
        elif isinstance(value, list):
            for item in value:
                visit(item, path + "[]")

    for name, cg in EXAMPLES:
        if name.startswith(("full.yaml", "secure.yaml", "routes.yaml")):
            visit(cg["spec"], "spec")
    spec_levels = {lv.path for lv in gen.levels(SCHEMA) if lv.path.startswith("spec")}
    assert spec_levels <= used


@pytest.mark.parametrize(("patch", "expected"), [
    ({"target": {"url": "http://x", "urll": "http://y"}}, ["spec.target.urll"]),
    ({"workerz": 3}, ["spec.workerz"]),
    ({"template": {"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrm": {}}]}},
     ["spec.template.env[1].valueFrm"]),
    ({"rollout": {"canary": {"partitions": [0, 7], "then": "Rolling", "promote": True}}},
     ["spec.rollout.canary.promote"]),
    ({"template": {"resources": {"requests": {"cpu": "1"}, "claims": []}}}, ["spec.template.resources.claims"]),
    ({"target": {"url": "http://x", "method": {"verb": "POST"}}}, ["spec.target.method.verb"]),
    # free-form and map fields take any key
    ({"template": {"affinity": {"anything": {"deep": [1]}}, "podLabels": {"any-key": "v"}}}, []),
])
def test_the_walk_names_the_unknown_field(patch: dict[str, Any], expected: list[str]) -> None:
    spec = {"bootstrapServers": "b:9092", "topic": "t", "target": {"url": "http://x"}, **patch}
    assert unknown_fields(SCHEMA["properties"]["spec"], spec, "spec") == expected
