"""What can be checked of the image without a Docker engine: pinned slim base, multi-stage, only the
built wheel installed, a numeric non-root user that matches the chart, entry points that are console
scripts, and COPY sources that exist and survive .dockerignore."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest
import yaml

from lagpilot.testing.chart import CHART, ROOT

pytestmark = pytest.mark.unit

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args() -> dict[str, str]:
    return dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)


def test_base_image_is_pinned_slim_python() -> None:
    froms = [a for w, a in instructions() if w == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for f in froms:
        image = f.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args()[m.group(1)], image)
        name, _, tag = image.partition(":")
        assert name == "python" and tag, f"base {image} must be python pinned by tag"
        assert tag != "latest" and re.match(r"3\.11(\.\d+)?-slim-bookworm$", tag), tag


def test_runtime_stage_installs_only_the_wheel() -> None:
    steps = instructions()
    last_from = max(i for i, (w, _) in enumerate(steps) if w == "FROM")
    runtime = steps[last_from:]
    copies = [a for w, a in runtime if w == "COPY"]
    assert copies and all(a.startswith("--from=build") for a in copies), "runtime copies only build output"
    runs = " ".join(a for w, a in runtime if w == "RUN")
    assert "pip install /tmp/dist/*.whl" in runs
    assert "[test]" not in runs and "-e " not in runs


def test_user_is_numeric_non_root_and_matches_chart() -> None:
    users = [a for w, a in instructions() if w == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric so runAsNonRoot can verify it"
    assert gid.isdigit() and int(gid) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["podSecurityContext"]["runAsNonRoot"] is True


def test_entry_points_are_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"lagpilot-operator", "lagpilot-consumer"} <= set(scripts)
    entry = [a for w, a in instructions() if w == "ENTRYPOINT"]
    assert entry and yaml.safe_load(entry[-1])[0] in scripts
    runs = " ".join(a for w, a in instructions() if w == "RUN")
    for name in ("lagpilot-operator", "lagpilot-consumer"):
        assert f"{name} --help" in runs, f"the build smoke-tests {name}"


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here (last match wins, ! re-includes)."""
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if pat == "**" or fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or path == pat:
            result = not neg
    return result


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sources = []
    for w, a in instructions():
        if w == "COPY" and not a.startswith("--from"):
            sources += a.split()[:-1]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY source {src} does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
        assert files, f"COPY {src} copies no Python files"
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not ignored(rel, patterns), f"{rel} is excluded by .dockerignore"
    # The package roots the wheel is built from (pyproject packages.find) are all copied.
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = {s.rstrip("/") for s in sources}
    for root in roots:
        if root == ".":
            assert "lagpilot" in copied
        else:
            assert root in copied, f"package root {root}/ is not copied into the image"
