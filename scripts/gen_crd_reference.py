#!/usr/bin/env python3
"""Generate docs/consumergroup-reference.md from the ConsumerGroup CRD, so the reference cannot drift
from the schema the API server enforces.

    python scripts/gen_crd_reference.py                  # (re)write the doc
    python scripts/gen_crd_reference.py --check          # exit 1 with a one-line hint when it is stale
    python scripts/gen_crd_reference.py --undocumented   # list schema fields without a description

The output depends only on the CRD file's contents (fields in schema order), so it is reproducible.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "consumergroups.lagpilot.io.yaml"
DOC_PATH = ROOT / "docs" / "consumergroup-reference.md"
SCRIPT = "scripts/gen_crd_reference.py"

Schema = dict[str, Any]


@dataclass(frozen=True)
class Level:
    """One object level of the schema: gets its own table (e.g. `spec.target`, `status.conditions[]`)."""

    path: str  # "" for the root object
    schema: Schema


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_crd(text: str) -> dict[str, Any]:
    """The single CustomResourceDefinition document in `text`."""
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    crds = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    if len(crds) != 1:
        raise ValueError(f"expected exactly one CustomResourceDefinition, found {len(crds)}")
    return crds[0]


def leading_comment(text: str) -> list[str]:
    """The `#` comment block at the top of the CRD file (the author's notes on what the schema can't say)."""
    out: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        out.append(line.lstrip("#").strip())
    return out


# ---------------------------------------------------------------------------------------------------------
# Walking the schema


def object_level(schema: Schema, path: str) -> Level | None:
    """The table a field opens, if any: an object with properties, or (through `[]`) an array of them."""
    if schema.get("properties"):
        return Level(path, schema)
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return object_level(schema["items"], path + "[]")
    return None


def child_path(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def levels(root: Schema) -> Iterator[Level]:
    """Every object level, depth-first in schema order: a parent's table comes before its children's."""
    stack = [Level("", root)]
    while stack:
        level = stack.pop()
        yield level
        nested = [object_level(sub, child_path(level.path, name))
                  for name, sub in level.schema.get("properties", {}).items()]
        stack.extend(reversed([n for n in nested if n is not None]))


def fields(root: Schema) -> Iterator[tuple[str, Schema]]:
    """Every field (path, schema) in the order the reference lists them."""
    for level in levels(root):
        for name, sub in level.schema.get("properties", {}).items():
            yield child_path(level.path, name), sub


def undocumented(root: Schema) -> list[str]:
    """Field paths whose schema has no `description` (root `metadata` may not have one: the API server
    refuses anything but name/generateName there)."""
    return [path for path, sub in fields(root)
            if path != "metadata" and not str(sub.get("description", "")).strip()]


# ---------------------------------------------------------------------------------------------------------
# Rendering cells


def code(value: str) -> str:
    """A markdown code span that survives backticks in `value`."""
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def literal(value: Any) -> str:
    """A schema value (default, enum member) as it would be written in YAML/JSON, in a code span."""
    return code(value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(", ", ": ")))


def text(value: str) -> str:
    """Prose from the schema, safe in a table cell (no HTML tags swallowed, one line)."""
    return " ".join(value.split()).replace("<", "&lt;")


def cell(value: str) -> str:
    """Escape what would break a GFM table row (pipes escape even inside code spans)."""
    return value.replace("|", "\\|")


def anchor(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"


def type_name(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type")
    if kind is None:
        return "any"
    if kind == "array":
        items = schema.get("items")
        return "[]" + (type_name(items) if isinstance(items, dict) else "any")
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + type_name(schema["additionalProperties"])
    if kind == "object" and schema.get("x-kubernetes-preserve-unknown-fields"):
        return "object (keeps unknown fields)" if schema.get("properties") else "object (free-form)"
    fmt = schema.get("format")
    return f"{kind} ({fmt})" if fmt else str(kind)


def type_cell(schema: Schema, path: str) -> str:
    level = object_level(schema, path)
    name = code(type_name(schema))
    return f"[{name}](#{anchor(level.path)})" if level else name


def bounds(lo: Any, hi: Any, lo_excl: bool, hi_excl: bool, what: str) -> str | None:
    lo_op, hi_op = ("<" if lo_excl else "≤"), ("<" if hi_excl else "≤")
    if lo is not None and hi is not None:
        return f"{lo} {lo_op} {what} {hi_op} {hi}"
    if lo is not None:
        return f"{what} {'>' if lo_excl else '≥'} {lo}"
    if hi is not None:
        return f"{what} {hi_op} {hi}"
    return None


def rules(schema: Schema) -> list[str]:
    """CEL rules (x-kubernetes-validations) as prose."""
    out = []
    for v in schema.get("x-kubernetes-validations", []):
        msg = ', message "' + text(v["message"]) + '"' if v.get("message") else ""
        out.append(f"rule {code(v['rule'])}{msg}")
    return out


def constraints(schema: Schema, with_rules: bool = True) -> list[str]:
    """Allowed values, ranges, lengths, patterns and list/map semantics of one schema node."""
    out: list[str] = []
    if "enum" in schema:
        out.append("one of " + ", ".join(literal(v) for v in schema["enum"]))
    num = bounds(schema.get("minimum"), schema.get("maximum"), bool(schema.get("exclusiveMinimum")),
                 bool(schema.get("exclusiveMaximum")), "value")
    for part in (num,
                 bounds(schema.get("minLength"), schema.get("maxLength"), False, False, "length"),
                 bounds(schema.get("minItems"), schema.get("maxItems"), False, False, "items"),
                 bounds(schema.get("minProperties"), schema.get("maxProperties"), False, False, "keys")):
        if part:
            out.append(part)
    if "multipleOf" in schema:
        out.append(f"multiple of {schema['multipleOf']}")
    if "pattern" in schema:
        out.append("pattern " + code(schema["pattern"]))
    if schema.get("uniqueItems"):
        out.append("unique items")
    if schema.get("nullable"):
        out.append("may be null")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(code(k) for k in schema.get("x-kubernetes-list-map-keys", []))
        out.append(f"list keyed by {keys}")
    elif list_type:
        out.append(f"list type {code(list_type)}")
    if schema.get("x-kubernetes-map-type"):
        out.append(f"map type {code(schema['x-kubernetes-map-type'])}")
    if schema.get("x-kubernetes-embedded-resource"):
        out.append("embedded Kubernetes object")
    for key, label in (("items", "items"), ("additionalProperties", "values")):
        sub = schema.get(key)
        if isinstance(sub, dict) and not sub.get("properties"):
            out += [f"{label}: {c}" for c in constraints(sub)]
    if with_rules:
        out += rules(schema)
    return out


# ---------------------------------------------------------------------------------------------------------
# Rendering sections


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def level_section(level: Level) -> list[str]:
    title = code(level.path) if level.path else "Root object"
    out = [f'<a id="{anchor(level.path)}"></a>', "", f"### {title}", ""]
    if level.schema.get("description"):
        out += [text(level.schema["description"]), ""]
    for rule in rules(level.schema):
        out += [f"- Validation: {rule}"]
    if rules(level.schema):
        out.append("")
    required = set(level.schema.get("required", []))
    rows = []
    for name, sub in level.schema.get("properties", {}).items():
        path = child_path(level.path, name)
        # An object with its own table lists its CEL rules there; a leaf lists them in its row.
        limits = constraints(sub, with_rules=object_level(sub, path) is None)
        rows.append([
            code(path),
            type_cell(sub, path),
            "yes" if name in required else "",
            literal(sub["default"]) if "default" in sub else "",
            "; ".join(limits),
            text(sub["description"]) if sub.get("description") else "—",
        ])
    out += table(["Field", "Type", "Required", "Default", "Allowed values / range / pattern", "Description"],
                 rows)
    return [*out, ""]


def names_section(crd: dict[str, Any]) -> list[str]:
    spec = crd["spec"]
    names = spec["names"]
    rows = [["API group", code(spec["group"])],
            ["Versions", ", ".join(
                code(v["name"]) + " (" + ", ".join(
                    w for w, on in (("served", v.get("served")), ("storage", v.get("storage"))) if on
                ) + ")" for v in spec["versions"])],
            ["Kind", code(names["kind"])],
            ["List kind", code(names.get("listKind", names["kind"] + "List"))],
            ["Plural", code(names["plural"])],
            ["Singular", code(names.get("singular", names["kind"].lower()))],
            ["Short names", ", ".join(code(n) for n in names.get("shortNames", [])) or "—"],
            ["Categories", ", ".join(code(c) for c in names.get("categories", [])) or "—"],
            ["Scope", spec["scope"]]]
    out = ["## Names", ""]
    out += table(["", ""], rows)
    short = names.get("shortNames", [])
    if short:
        out += ["", f"`kubectl get {short[0]}` is the same as `kubectl get {names['plural']}`."]
    return [*out, ""]


def printer_section(version: dict[str, Any]) -> list[str]:
    cols = version.get("additionalPrinterColumns", [])
    out = ["### Printer columns (`kubectl get`)", ""]
    if not cols:
        return [*out, "None: `kubectl get` shows only Name and Age.", ""]
    rows = [[c["name"], code(c["type"]), code(c["jsonPath"]),
             "`-o wide`" if c.get("priority", 0) > 0 else "default",
             text(c["description"]) if c.get("description") else "—"] for c in cols]
    return [*out, *table(["Column", "Type", "JSONPath", "Shown", "Description"], rows), ""]


def subresources_section(version: dict[str, Any]) -> list[str]:
    sub = version.get("subresources") or {}
    out = ["### Subresources", ""]
    if not sub:
        return [*out, "None.", ""]
    if "status" in sub:
        out.append("- `status`: enabled; `.status` is written through the `/status` endpoint, and updates to "
                   "the main resource ignore it.")
    scale = sub.get("scale")
    if scale is not None:
        out.append(f"- `scale`: replicas are {code(scale['specReplicasPath'])} (desired) and "
                   f"{code(scale['statusReplicasPath'])} (observed)"
                   + (f", label selector {code(scale['labelSelectorPath'])}" if scale.get("labelSelectorPath")
                      else "")
                   + "; `kubectl scale` and HorizontalPodAutoscalers work through it.")
    for name in sorted(set(sub) - {"status", "scale"}):
        out.append(f"- {code(name)}")
    return [*out, ""]


def render(crd_text: str, source: str) -> str:
    """The whole reference document for the CRD in `crd_text` (named `source` in the header)."""
    crd = load_crd(crd_text)
    kind = crd["spec"]["names"]["kind"]
    out = [f"<!-- Generated by {SCRIPT} from {source}; do not edit by hand. -->",
           f"<!-- Regenerate: python {SCRIPT}   Check: python {SCRIPT} --check -->",
           "",
           f"# {kind} reference",
           "",
           f"Generated from the CustomResourceDefinition `{crd['metadata']['name']}` ({code(source)}); the "
           "tables list every field the schema declares, in schema order, with what the API server "
           "enforces. A dash in *Description* means the schema has none for that field."]
    comment = leading_comment(crd_text)
    if comment:
        out += ["", "Notes from the CRD file:", ""] + [f"> {text(line)}" if line else ">" for line in comment]
    out += ["", *names_section(crd)]
    for version in crd["spec"]["versions"]:
        out += [f"## Version `{version['name']}`", ""]
        out += printer_section(version)
        out += subresources_section(version)
        out += ["### Fields", "",
                "One table per object level; an object field's type links to its table. Paths ending in `[]` "
                "are the items of a list.", ""]
        for level in levels(version["schema"]["openAPIV3Schema"]):
            out += level_section(level)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# CLI


def display(path: Path) -> str:
    """`path` relative to the repository when inside it, so the output does not depend on the checkout."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def first_difference(a: str, b: str) -> int:
    """1-based number of the first line where `a` and `b` differ."""
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False), start=1):
        if x != y:
            return i
    return min(len(la), len(lb)) + 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--crd", type=Path, default=CRD_PATH, help="CRD YAML (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DOC_PATH, help="reference to write (default: %(default)s)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if --out is not what would be generated")
    mode.add_argument("--undocumented", action="store_true", help="list fields without a description")
    args = parser.parse_args(argv)

    crd_text = args.crd.read_text()
    if args.undocumented:
        for version in load_crd(crd_text)["spec"]["versions"]:
            for path in undocumented(version["schema"]["openAPIV3Schema"]):
                print(f"{version['name']}: {path}")
        return 0
    doc = render(crd_text, display(args.crd))
    regen = f"run: python {SCRIPT}"
    if args.check:
        if not args.out.exists():
            print(f"{display(args.out)} is missing; {regen}", file=sys.stderr)
            return 1
        current = args.out.read_text()
        if current != doc:
            line = first_difference(current, doc)
            print(f"{display(args.out)} is stale (differs from the CRD at line {line}); {regen}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(doc)
    print(f"wrote {display(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
