"""The chart's RBAC on the lab's real API server (RBAC authorizer): with watchNamespaces, the operator's
ServiceAccount can read a Secret only by name in a watched namespace (no list, no watch), and can neither
read Secrets nor write workloads anywhere else. Checked with `kubectl auth can-i --as` (impersonation:
the API server's own authorizer answers)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing.chart import helm_template

pytestmark = pytest.mark.lab


def can(k8s: Any, who: str, verb: str, resource: str, namespace: str) -> bool:
    out = k8s.kubectl("auth", "can-i", verb, resource, "--as", who, "-n", namespace, check=False)
    return out.stdout.strip() == "yes"


def test_a_namespaced_operator_cannot_read_secrets_or_write_outside_its_namespaces(
        k8s: Any, namespace: str, helm_bin: Path) -> None:
    release = f"rb{uuid.uuid4().hex[:6]}"
    elsewhere = f"other-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", elsewhere)
    manifest = helm_template(helm_bin, [f"watchNamespaces={{{namespace}}}", "peering.enabled=false"],
                             namespace=namespace, release=release,
                             extra=["--show-only", "templates/rbac.yaml",
                                    "--show-only", "templates/serviceaccount.yaml"])
    k8s.kubectl("apply", "-f", "-", input=manifest)
    who = f"system:serviceaccount:{namespace}:{release}-lagpilot"
    try:
        assert can(k8s, who, "get", "secrets", namespace)
        assert not can(k8s, who, "list", "secrets", namespace)
        assert not can(k8s, who, "watch", "secrets", namespace)
        for verb, resource in (("get", "secrets"), ("create", "deployments"), ("patch", "deployments"),
                               ("create", "roles"), ("patch", "pods"), ("get", "consumergroups")):
            assert not can(k8s, who, verb, resource, elsewhere), f"{verb} {resource} outside its namespaces"
        assert can(k8s, who, "create", "deployments", namespace)
        assert not can(k8s, who, "create", "clusterroles", namespace)
    finally:
        k8s.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)
        k8s.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)
