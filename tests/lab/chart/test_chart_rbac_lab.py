"""The chart's RBAC on the lab's real API server (RBAC authorizer), with the chart's default values: the
operator's ServiceAccount reads no Secret at all (403), neither by name nor by list or watch; one granted
by `rbac.secretNames` or `lagpilot grant-secret` becomes readable by that name only; it can neither read
Secrets nor write workloads outside its namespaces. Checked with `kubectl auth can-i --as` (impersonation:
the API server's own authorizer answers)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing.chart import apply_operator_rbac, lagpilot_cli
from lagpilot.testing.operator import service_account_kubeconfig

pytestmark = pytest.mark.lab


def can(k8s: Any, who: str, verb: str, resource: str, namespace: str) -> bool:
    out = k8s.kubectl("auth", "can-i", verb, resource, "--as", who, "-n", namespace, check=False)
    return out.stdout.strip() == "yes"


def grant(k8s: Any, verb: str, namespace: str, sa: str, *names: str, kubeconfig: str | None = None) -> Any:
    return lagpilot_cli(k8s, f"{verb}-secret", *names, "-n", namespace, "--operator", f"{namespace}/{sa}",
                        kubeconfig=kubeconfig)


def test_the_default_operator_reads_no_secret_and_writes_nothing_outside_its_namespace(
        k8s: Any, namespace: str, helm_bin: Path, tmp_path: Path) -> None:
    release = f"rb{uuid.uuid4().hex[:6]}"
    elsewhere = f"other-{uuid.uuid4().hex[:6]}"
    k8s.kubectl("create", "namespace", elsewhere)
    # Default values; only peering off (its CRD objects are not the point here).
    manifest, sa = apply_operator_rbac(k8s, helm_bin, namespace, release)
    who = f"system:serviceaccount:{namespace}:{sa}"
    try:
        for verb in ("get", "list", "watch"):
            assert not can(k8s, who, verb, "secrets", namespace), f"{verb} secrets by default"
        assert not can(k8s, who, "get", "secret/kafka-user", namespace)
        for verb, resource in (("get", "secrets"), ("create", "deployments"), ("patch", "deployments"),
                               ("create", "roles"), ("patch", "pods"), ("get", "consumergroups")):
            assert not can(k8s, who, verb, resource, elsewhere), f"{verb} {resource} outside its namespaces"
        assert can(k8s, who, "create", "deployments", namespace)
        assert not can(k8s, who, "create", "clusterroles", namespace)

        out = grant(k8s, "grant", namespace, sa, "kafka-user")
        assert out.returncode == 0, out.stderr
        assert can(k8s, who, "get", "secret/kafka-user", namespace)
        assert not can(k8s, who, "get", "secret/other", namespace), "a grant is by name only"
        assert not can(k8s, who, "list", "secrets", namespace)
        assert not can(k8s, who, "get", "secret/kafka-user", elsewhere)
        # The operator itself cannot widen its grant: RBAC refuses a Role with rights it does not hold.
        out = k8s.kubectl("--as", who, "create", "role", "more", "--verb=get", "--resource=secrets",
                          "-n", namespace, check=False)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower(), out.stdout + out.stderr
        # A ConsumerGroup author who manages Roles but may not read a Secret cannot grant it (no deputy).
        k8s.kubectl("create", "serviceaccount", "dev", "-n", namespace)
        k8s.kubectl("create", "role", "dev", "--verb=get,create,update,patch", "--resource=roles,rolebindings",
                    "-n", namespace)
        k8s.kubectl("create", "rolebinding", "dev", "--role=dev", f"--serviceaccount={namespace}:dev",
                    "-n", namespace)
        dev = service_account_kubeconfig(k8s, namespace, "dev", tmp_path / "dev.kubeconfig")
        out = grant(k8s, "grant", namespace, sa, "billing-auth", kubeconfig=dev)
        assert out.returncode == 1 and "only someone who may read these Secrets" in out.stderr, out.stderr
        assert not can(k8s, who, "get", "secret/billing-auth", namespace)
        out = grant(k8s, "revoke", namespace, sa, "kafka-user")
        assert out.returncode == 0, out.stderr
        assert not can(k8s, who, "get", "secret/kafka-user", namespace)
    finally:
        k8s.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)
        k8s.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)


def test_secret_names_from_values_are_readable_by_name_only(k8s: Any, namespace: str, helm_bin: Path) -> None:
    release = f"rb{uuid.uuid4().hex[:6]}"
    manifest, sa = apply_operator_rbac(k8s, helm_bin, namespace, release,
                                       ["peering.enabled=false", "rbac.secretNames={kafka-user}"])
    who = f"system:serviceaccount:{namespace}:{sa}"
    try:
        assert can(k8s, who, "get", "secret/kafka-user", namespace)
        assert not can(k8s, who, "get", "secret/billing-auth", namespace)
        assert not can(k8s, who, "list", "secrets", namespace)
    finally:
        k8s.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest, check=False)
