"""JSON schemas for kubeconform, generated offline from the exact API the chart targets, and the pinned
kubeconform that validates manifests against them.

Why generate them: kubeconform's default schemas are downloaded from a GitHub repository (there is no
network on CI runners besides package registries, and they are a third party's conversion). Kubernetes
publishes its own OpenAPI v2 document in the k8s.io/kubernetes Go module of each release, and the CRDs
come from the chart itself and from prometheus-operator's Go module, so the schemas are built from the
same inputs the API server of KUBE_VERSION uses, with nothing fetched but Go modules.

The conversion is openapi2jsonschema's --strict one: objects that declare properties reject any other
(additionalProperties: false, as `kubectl apply`'s default strict field validation does), `int-or-string`
accepts an integer or a string, a Quantity a string or a number, an optional field of a built-in kind
null (the API server reads null as unset), and each file carries the definitions it refers to
(`#/definitions/...`), so it is standalone. Each served CRD version's openAPIV3Schema gets the same
treatment (no additionalProperties: false on x-kubernetes-preserve-unknown-fields nodes; null only where
nullable, as for custom objects the API server rejects null elsewhere), plus the apiVersion, kind and
(Kubernetes' strict) ObjectMeta every custom object has. Descriptions are dropped: validation only.

Files follow kubeconform's default layout, <version>-standalone-strict/<kind>-<group's first label>-
<version>.json (e.g. v1.34.4-standalone-strict/deployment-apps-v1.json, configmap-v1.json,
servicemonitor-monitoring-v1.json), for built-in kinds and CRDs alike, so one -schema-location template
(schema_location()) serves both. Output is cached under cache_dir()/kubeconform-schemas/<version>-<hash>,
the hash covering every input and this module's source: later runs only hash the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lagpilot.paths import cache_dir
from lagpilot.testing.chart import CHART, KUBE_VERSION, ROOT

KUBECONFORM_VERSION = os.environ.get("LAGPILOT_KUBECONFORM_VERSION", "v0.8.0")
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
# The prometheus-operator kinds the chart renders (serviceMonitor.enabled/.workers, prometheusRule.enabled).
MONITORING_CRDS = ("servicemonitors", "podmonitors", "prometheusrules")

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING: dict[str, Any] = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
Schema = dict[str, Any]


class SchemaError(RuntimeError):
    pass


# -- inputs ---------------------------------------------------------------------------------------------

def go_module_dir(module: str, version: str) -> Path:
    """The Go module's directory in the module cache (downloaded through the Go proxy on first use)."""
    try:
        out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True,
                             text=True, timeout=900, cwd=tempfile.gettempdir())
    except FileNotFoundError as e:
        raise SchemaError("go not found on PATH (needed to read Kubernetes' and the CRDs' Go modules)") from e
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or not info.get("Dir"):
        raise SchemaError(f"go mod download {module}@{version} failed: {info.get('Error') or out.stderr}")
    return Path(info["Dir"])


def openapi_document(kube_version: str = KUBE_VERSION) -> Path:
    return go_module_dir("k8s.io/kubernetes", kube_version) / "api" / "openapi-spec" / "swagger.json"


def crd_files() -> list[Path]:
    """The chart's own CRDs and prometheus-operator's CRDs of the kinds the chart renders."""
    prom = go_module_dir("github.com/prometheus-operator/prometheus-operator", PROMETHEUS_OPERATOR_VERSION)
    return [*sorted((CHART / "crds").glob("*.yaml")),
            *(prom / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{name}.yaml"
              for name in MONITORING_CRDS)]


# -- conversion -----------------------------------------------------------------------------------------

def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json: kind, first label of the group, version."""
    parts = [kind.lower(), *([group.split(".")[0].lower()] if group else []), version.lower()]
    return "-".join(parts) + ".json"


def _strict_v2(node: Schema) -> Schema:
    """An OpenAPI v2 (swagger) schema node as a strict JSON schema."""
    if node.get("format") == "int-or-string":
        return dict(INT_OR_STRING)
    out: Schema = {}
    for key, value in node.items():
        if key == "description" or key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            required = set(node.get("required", ()))
            out[key] = {name: _strict_v2(sub) if name in required else _or_null(_strict_v2(sub))
                        for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _strict_v2(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_strict_v2(sub) for sub in value]
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _or_null(schema: Schema) -> Schema:
    """An optional field of a built-in kind may be null: the API server reads null as unset."""
    if "$ref" in schema:
        return {"anyOf": [{"type": "null"}, schema]}
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return schema


def _strict_v3(node: Schema) -> Schema:
    """A CRD's structural OpenAPI v3 schema node as a strict JSON schema."""
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    out: Schema = {}
    for key, value in node.items():
        if key in ("description", "nullable") or key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: _strict_v3(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _strict_v3(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_strict_v3(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string") is True and "anyOf" not in out and "type" not in out:
        out.update(INT_OR_STRING)
    if node.get("x-kubernetes-embedded-resource") is True and "properties" in out:
        for name in ("apiVersion", "kind"):
            out["properties"].setdefault(name, {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _standalone(root: Schema, definitions: dict[str, Schema]) -> Schema:
    """root with the definitions it reaches, transitively, under #/definitions."""
    needed: dict[str, Schema] = {}
    todo = list(_refs(root))
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = definitions[name]
            todo.extend(_refs(needed[name]))
    return {**root, "definitions": dict(sorted(needed.items()))} if needed else root


def strict_definitions(swagger: Schema) -> dict[str, Schema]:
    """Every definition of Kubernetes' OpenAPI v2 document, strict; a Quantity may be a number (`cpu: 1`)."""
    definitions = {name: _strict_v2(d) for name, d in swagger["definitions"].items()}
    definitions[QUANTITY] = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    return definitions


def builtin_schemas(swagger: Schema, definitions: dict[str, Schema]) -> Iterator[tuple[str, Schema]]:
    """(file name, schema) of each group/version/kind in Kubernetes' OpenAPI v2 document."""
    for name, raw in swagger["definitions"].items():
        for gvk in raw.get("x-kubernetes-group-version-kind", ()):
            yield file_name(gvk["group"], gvk["version"], gvk["kind"]), _standalone(definitions[name], definitions)


def crd_schemas(crds: Iterable[Schema], definitions: dict[str, Schema]) -> Iterator[tuple[str, Schema]]:
    """(file name, schema) of each served version of each CRD; metadata is Kubernetes' strict ObjectMeta."""
    for crd in crds:
        spec = crd["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            raw = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
            root = _strict_v3(raw)
            root["properties"] = {**root.get("properties", {}),
                                  "apiVersion": {"type": "string", "enum": [f"{group}/{version['name']}"]},
                                  "kind": {"type": "string", "enum": [kind]},
                                  "metadata": {"$ref": f"#/definitions/{OBJECT_META}"}}
            if raw.get("x-kubernetes-preserve-unknown-fields") is not True:
                root.setdefault("additionalProperties", False)
            yield file_name(group, version["name"], kind), _standalone(root, definitions)


def load_crds(paths: Iterable[Path]) -> list[Schema]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = (doc for path in paths for doc in yaml.load_all(path.read_text(), Loader=loader))
    return [doc for doc in docs if doc and doc.get("kind") == "CustomResourceDefinition"]


def write_schemas(out: Path, swagger_path: Path, crd_paths: Sequence[Path]) -> int:
    """Write every schema into the new folder out; the number of files written."""
    swagger = json.loads(swagger_path.read_text())
    definitions = strict_definitions(swagger)
    written: dict[str, str] = {}
    out.mkdir(parents=True)
    pairs = [*((n, s, "Kubernetes") for n, s in builtin_schemas(swagger, definitions)),
             *((n, s, "CRD") for n, s in crd_schemas(load_crds(crd_paths), definitions))]
    for name, schema, origin in pairs:
        if name in written:
            raise SchemaError(f"{name}: {origin} schema clashes with a {written[name]} one (same kind, "
                              "group's first label and version)")
        written[name] = origin
        (out / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
    return len(written)


# -- cache ----------------------------------------------------------------------------------------------

def _inputs_hash(kube_version: str, paths: Sequence[Path]) -> str:
    h = hashlib.sha256(kube_version.encode())
    h.update(Path(__file__).read_bytes())
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def strict_dir_name(kube_version: str = KUBE_VERSION) -> str:
    """The folder kubeconform reads for `-kubernetes-version <kube_version> -strict`."""
    return f"v{kube_version.removeprefix('v')}-standalone-strict"


def ensure_schemas(kube_version: str = KUBE_VERSION) -> Path:
    """The schema root for kube_version (generated on first use in well under a second, then cached)."""
    swagger = openapi_document(kube_version)
    crds = crd_files()
    for path in (swagger, *crds):
        if not path.is_file():
            raise SchemaError(f"schema input missing: {path}")
    root = cache_dir() / "kubeconform-schemas" / f"{kube_version}-{_inputs_hash(kube_version, [swagger, *crds])}"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write_schemas(tmp / strict_dir_name(kube_version), swagger, crds)
        try:
            tmp.rename(root)
        except OSError:
            if not root.is_dir():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def schema_location(root: Path) -> str:
    """The -schema-location template of a root from ensure_schemas (kubeconform's default layout)."""
    return f"{root}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/" \
           "{{ .ResourceKind }}{{ .KindSuffix }}.json"


# -- kubeconform ----------------------------------------------------------------------------------------

def kubeconform_path() -> Path:
    """Same place as scripts/build-go-tools.sh: <lagpilot cache>/kubeconform-<version>/bin/kubeconform."""
    return cache_dir() / f"kubeconform-{KUBECONFORM_VERSION}" / "bin" / "kubeconform"


def ensure_kubeconform() -> Path:
    """The pinned kubeconform, built from its Go module on first use (about a minute, then cached)."""
    path = kubeconform_path()
    if not path.exists():
        out = subprocess.run(["bash", str(ROOT / "scripts" / "build-go-tools.sh"), "kubeconform"],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SchemaError(f"scripts/build-go-tools.sh kubeconform failed:\n{out.stderr[-3000:]}")
        if out.stdout.strip() != str(path):
            raise SchemaError(f"build-go-tools.sh printed {out.stdout.strip()!r}, lagpilot expects {path}")
    return path


@dataclass(frozen=True)
class Report:
    """kubeconform's JSON output: the summary counts and one entry per resource (-verbose)."""
    summary: dict[str, int]
    resources: list[dict[str, Any]]
    returncode: int

    def problems(self) -> list[str]:
        return [f"{r['kind']}/{r['name']}: {r['status']}: {r['msg']} {r.get('validationErrors', '')}"
                for r in self.resources if r["status"] != "statusValid"]


def kubeconform(binary: Path, schemas: Path, manifests: str, kube_version: str = KUBE_VERSION) -> Report:
    """Validate a YAML stream strictly against schemas only. A proxy that refuses every connection makes
    sure kubeconform never falls back to downloading anything."""
    args = [str(binary), "-strict", "-summary", "-verbose", "-output", "json",
            "-kubernetes-version", kube_version.removeprefix("v"), "-schema-location", schema_location(schemas), "-"]
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}
    out = subprocess.run(args, input=manifests, capture_output=True, text=True, timeout=300, env=env)
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError as e:
        raise SchemaError(f"kubeconform gave no JSON (rc {out.returncode}):\n{out.stdout}\n{out.stderr}") from e
    return Report(summary=data["summary"], resources=data["resources"], returncode=out.returncode)
