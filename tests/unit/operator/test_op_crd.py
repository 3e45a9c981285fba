"""The CRD file: names, subresources, printer columns, and a schema that agrees with the operator's parser
(same defaults; the examples validate; the fields the other issues need are typed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot_operator.resource.spec import parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "consumergroups.lagpilot.io.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def test_names_scope_and_subresources() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["metadata"]["name"] == "consumergroups.lagpilot.io"
    spec = CRD["spec"]
    assert spec["scope"] == "Namespaced" and spec["names"]["kind"] == "ConsumerGroup"
    assert spec["names"]["shortNames"] == ["cg"]
    assert VERSION["name"] == "v1alpha1" and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.workers", "statusReplicasPath": ".status.workers",
        "labelSelectorPath": ".status.selector"}}


def test_printer_columns() -> None:
    cols = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")}
    assert list(cols) == ["Topics", "Workers", "Ready", "Lag", "Phase", "Rollout", "Age"]
    assert cols["Topics"] == ".status.topicNames"
    assert cols["Lag"] == ".status.lag.total" and cols["Rollout"] == ".status.rollout.phase"


def test_status_has_every_field_the_issues_name() -> None:
    st = SCHEMA["properties"]["status"]["properties"]
    for key in ("observedGeneration", "workers", "readyWorkers", "partitions", "selector", "conditions", "lag",
                "rollout", "assignment", "phase", "topics", "topicNames"):
        assert key in st
    assert set(st["lag"]["properties"]) == {"total", "maxPartition", "status", "updatedAt"}
    assert set(st["rollout"]["properties"]) == {"phase", "stableRevision", "newRevision", "canaryPartitions",
                                                 "step", "message", "checkpoint", "replay"}
    assert "epoch" in st["assignment"]["properties"]


def check(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """A small structural-schema validator (types, enums, required, patterns, ranges, unknown fields)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
        return []
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, int | str) else [f"{path}: int or string"]
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": int | float, "boolean": bool}
    if (kind and not isinstance(value, types[kind])) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{path}: not {kind}"]
    errs: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: not in enum")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errs.append(f"{path}: pattern")
    if ("minimum" in schema and value < schema["minimum"]) or ("maximum" in schema and value > schema["maximum"]):
        errs.append(f"{path}: range")
    if kind == "object":
        for req in schema.get("required", []):
            if req not in value:
                errs.append(f"{path}.{req}: required")
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                errs += check(props[k], v, f"{path}.{k}")
            elif "additionalProperties" in schema:
                errs += check(schema["additionalProperties"], v, f"{path}.{k}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                errs.append(f"{path}.{k}: unknown field")
    if kind == "array":
        for i, item in enumerate(value):
            errs += check(schema["items"], item, f"{path}[{i}]")
    return errs


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's defaulting does: fill `default` for absent properties of present objects."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for k, sub in schema.get("properties", {}).items():
        if k not in out and "default" in sub:
            out[k] = sub["default"]
        if k in out:
            out[k] = apply_defaults(sub, out[k])
    return out


def examples() -> list[dict[str, Any]]:
    docs = []
    for name in ("minimal.yaml", "full.yaml", "secure.yaml", "routes.yaml", "multi-topic.yaml"):
        docs += [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text())
                 if d["kind"] == "ConsumerGroup"]
    return docs


@pytest.mark.parametrize("cg", examples(), ids=lambda d: d["metadata"]["name"])
def test_examples_validate_against_schema(cg: dict[str, Any]) -> None:
    assert check(SCHEMA, cg) == []


@pytest.mark.parametrize("cg", examples(), ids=lambda d: d["metadata"]["name"])
def test_schema_defaults_equal_operator_defaults(cg: dict[str, Any]) -> None:
    cg = {**cg, "metadata": {**cg["metadata"], "namespace": "ns"}}
    # every optional object present, so all schema defaults apply
    full = {**cg, "spec": {"target": {}, "retry": {}, "kafka": {}, "autoscaling": {},
                           "rollout": {"blueGreen": {}, "canary": {}}, **cg["spec"]}}
    full["spec"]["target"] = {**cg["spec"]["target"]}
    defaulted = apply_defaults(SCHEMA, full)
    assert check(SCHEMA, defaulted) == []
    plain, p1 = parse(cg, "img")
    server, p2 = parse(defaulted, "img")
    assert p1 == p2 == []
    assert plain == server


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"target": {"url": "ftp://x"}}, ".spec.target.url: pattern"),
    ({"workers": -1}, ".spec.workers: range"),
    ({"threads": 0}, ".spec.threads: range"),
    ({"ordering": "global"}, ".spec.ordering: not in enum"),
    ({"target": {"url": "http://x", "connection": "keep"}}, ".spec.target.connection: not in enum"),
    ({"rollout": {"strategy": "Big"}}, ".spec.rollout.strategy: not in enum"),
    ({"bogus": 1}, ".spec.bogus: unknown field"),
    ({"routes": [{"match": {"kee": {}}}]}, ".spec.routes[0].match.kee: unknown field"),
    ({"routes": [{"target": {"method": "GET"}}]}, ".spec.routes[0].target.method: not in enum"),
    ({"unmatched": "drop"}, ".spec.unmatched: not in enum"),
])
def test_schema_rejects(patch: dict[str, Any], fragment: str) -> None:
    cg = examples()[0]
    cg = {**cg, "spec": {**cg["spec"], **patch}}
    assert fragment in check(SCHEMA, cg)


def test_schema_requires_core_fields() -> None:
    errs = check(SCHEMA, {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {},
                          "spec": {"target": {}}})
    assert {".spec.bootstrapServers: required", ".spec.target.url: required"} <= set(errs)
    # topic, topics or topicPattern: one is needed, and a pattern stands alone (CEL rules, checked by the API
    # server; the operator's parse says the same, see test_op_spec).
    rules = {r["rule"] for r in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]}
    assert "has(self.topic) || has(self.topics) || has(self.topicPattern)" in rules


def test_peering_crds_ship() -> None:
    docs = list(yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text()))
    assert {d["metadata"]["name"] for d in docs} == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}


def test_what_the_hand_off_writes_to_status_fits_the_schema() -> None:
    """status.rollout and status.assignment of a two-topic group through a Rolling start and a canary with
    topic:partition picks, checked against the CRD (the API server refuses a status that does not fit, and
    the whole status write is then lost)."""
    from lagpilot.protocol import PartitionId
    from lagpilot.testing.rollout_sim import Cluster
    from lagpilot_operator.handoff.observe import assignment_status
    from lagpilot_operator.resource.spec import CanarySpec, RolloutSpec

    status_schema = SCHEMA["properties"]["status"]
    c = Cluster({"orders": 3, "payments": 2})
    canary = RolloutSpec(strategy="Canary", canary=CanarySpec(partitions=(PartitionId("orders", 1), 0),
                                                              analysis_seconds=1000))
    seen: set[str] = set()
    for i, (spec, revision) in enumerate([(RolloutSpec(), "a")] * 8 + [(canary, "b")] * 12):
        c.reconcile(spec, revision, 2, float(i))
        c.workers_act(None)
        status = {"rollout": c.status, "assignment": assignment_status(c.observed(), c.doc)}
        assert check(status_schema, status, ".status") == [], status
        seen |= {k for k, v in c.status.items() if v}
    assert "canaryPartitions" in seen  # the canary did run
    assert sorted(c.status["canaryPartitions"]) == ["orders:0", "orders:1", "payments:0"]
