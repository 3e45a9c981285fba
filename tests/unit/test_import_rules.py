"""The package layout's import rules (docs/architecture.md, "Packages"), checked on the source tree:

- `lagpilot.protocol`, `lagpilot.timefmt`, `lagpilot.redact` and `lagpilot.routes` import nothing of ours
  (every part may import them);
- the pure planners (decisions from observed state to desired state) import no I/O library and, of ours,
  only other pure modules: so they stay testable without a cluster, a broker or a network;
- the consumer never imports the operator, the operator never imports the consumer; neither imports the
  CLI, the lab or the test helpers.
Every import counts, also one inside a function."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = {"lagpilot": ROOT / "lagpilot", "lagpilot_operator": ROOT / "operator" / "lagpilot_operator",
                 "lagpilot_consumer": ROOT / "consumer" / "lagpilot_consumer"}
OURS = tuple(PACKAGE_ROOTS)

LEAVES = {"lagpilot.protocol", "lagpilot.timefmt", "lagpilot.redact", "lagpilot.routes"}
PURE = LEAVES | {
    "lagpilot_operator.resource.spec", "lagpilot_operator.resource.conditions", "lagpilot_operator.resource.patch",
    "lagpilot_operator.workload.plan", "lagpilot_operator.workload.diff", "lagpilot_operator.workload.status",
    "lagpilot_operator.workload.sizing", "lagpilot_operator.workload.cpu", "lagpilot_operator.workload.resync",
    "lagpilot_operator.workload.kafka_client", "lagpilot_operator.brokererrors",
    "lagpilot_operator.handoff.planner", "lagpilot_operator.handoff.rollout", "lagpilot_operator.handoff.observe",
    "lagpilot_operator.handoff.replay",
    "lagpilot_operator.handoff.triggers",
    "lagpilot_operator.autoscale.snapshot", "lagpilot_operator.autoscale.window", "lagpilot_operator.autoscale.decide",
    "lagpilot_operator.autoscale.schedule", "lagpilot_operator.autoscale.commits",
    "lagpilot_consumer.scheduler", "lagpilot_consumer.watermark", "lagpilot_consumer.policy",
    "lagpilot_consumer.partitions", "lagpilot_consumer.limits", "lagpilot_consumer.park",
}
# Libraries that talk to the outside world (or start threads doing so).
IO_LIBRARIES = ("kopf", "kubernetes", "confluent_kafka", "requests", "urllib3", "urllib.request", "http",
                "socket", "subprocess", "prometheus_client", "threading", "aiohttp", "asyncio")
# The only piece of an I/O library a pure module may use: the API server's quantity arithmetic.
PURE_EXCEPTIONS = {"kubernetes.utils.quantity"}


def modules() -> Iterator[tuple[str, Path]]:
    for package, root in PACKAGE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def imports(path: Path, module: str) -> set[str]:
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # "from pkg import module" imports a module too
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def known_module(name: str, all_modules: set[str]) -> str | None:
    """The module of ours that an import name refers to (a symbol import resolves to its module)."""
    while name:
        if name in all_modules:
            return name
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return None


ALL = dict(modules())


def test_the_tree_has_the_modules_the_rules_name() -> None:
    assert set(ALL) >= PURE, sorted(PURE - set(ALL))


@pytest.mark.parametrize("module", sorted(LEAVES))
def test_protocol_modules_import_nothing_of_ours(module: str) -> None:
    assert not [name for name in imports(ALL[module], module) if ours(name)]


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_planners_import_no_io(module: str) -> None:
    names = imports(ALL[module], module)
    io = [n for n in names if n not in PURE_EXCEPTIONS and not any(
        p in PURE_EXCEPTIONS for p in (n, *(n.rsplit(".", k)[0] for k in range(1, n.count(".") + 1))))
        and any(n == lib or n.startswith(lib + ".") for lib in IO_LIBRARIES)]
    assert not io, f"{module} imports I/O: {sorted(io)}"
    impure = sorted({m for n in names if ours(n) and (m := known_module(n, set(ALL))) and m not in PURE
                     and m not in {"lagpilot_operator", "lagpilot_operator.resource", "lagpilot_operator.workload",
                                   "lagpilot_operator.handoff", "lagpilot_operator.autoscale",
                                   "lagpilot_consumer", "lagpilot"}})
    assert not impure, f"{module} imports modules that do I/O: {impure}"


@pytest.mark.parametrize(("package", "forbidden"), [
    ("lagpilot_consumer", ("lagpilot_operator", "lagpilot.cli", "lagpilot.lab", "lagpilot.testing")),
    ("lagpilot_operator", ("lagpilot_consumer", "lagpilot.cli", "lagpilot.lab", "lagpilot.testing")),
])
def test_the_operator_and_the_consumer_stay_apart(package: str, forbidden: tuple[str, ...]) -> None:
    bad = sorted(f"{module} -> {name}" for module, path in ALL.items() if module.startswith(package)
                 for name in imports(path, module) if any(name == f or name.startswith(f + ".") for f in forbidden))
    assert not bad, bad


def test_the_rules_can_fail(tmp_path: Path) -> None:
    """The checker sees an I/O import inside a function of a pure module (so a green run means something)."""
    bad = tmp_path / "planner.py"
    bad.write_text("def plan():\n    from kubernetes import client\n    return client\n")
    names = imports(bad, "lagpilot_operator.handoff.planner")
    assert "kubernetes" in names and "kubernetes.client" in names
