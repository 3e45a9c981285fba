"""`lagpilot grant-secret`'s pure part: the Role grants get on exactly the named Secrets (never an empty
resourceNames, which would mean all of them), merged with what was granted before."""

from __future__ import annotations

import pytest

from lagpilot.secretgrants import Operator, after_grant, after_revoke, grant_objects, granted

pytestmark = pytest.mark.unit

OP = Operator("lagpilot-system", "lagpilot")


def test_grant_objects_name_exactly_the_secrets_and_bind_the_operator() -> None:
    role, binding = grant_objects("shop", OP, ["b", "a", "a"])
    assert role["kind"] == "Role" and role["metadata"] == {
        "name": "lagpilot-secret-grants", "namespace": "shop",
        "labels": {"app.kubernetes.io/managed-by": "lagpilot-cli", "app.kubernetes.io/part-of": "lagpilot"}}
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a", "b"],
                              "verbs": ["get"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "lagpilot-secret-grants"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lagpilot", "namespace": "lagpilot-system"}]


def test_no_names_means_no_role_at_all() -> None:
    assert grant_objects("shop", OP, []) == []


@pytest.mark.parametrize(("before", "add", "remove", "after"), [
    (None, ["a"], [], ["a"]),
    (["a"], ["b"], [], ["a", "b"]),
    (["a", "b"], [], ["a"], ["b"]),
    (["a"], [], ["a"], []),
    (["a"], [], ["zzz"], ["a"]),
])
def test_grants_accumulate_and_revokes_remove(before: list[str] | None, add: list[str], remove: list[str],
                                              after: list[str]) -> None:
    role = grant_objects("shop", OP, before)[0] if before else None
    names = after_revoke(role, remove) if remove else after_grant(role, add)
    assert names == after


def test_granted_ignores_rules_that_are_not_secret_gets() -> None:
    role = {"rules": [{"resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["x"]},
                      {"resources": ["secrets"], "verbs": ["list"], "resourceNames": ["y"]},
                      {"resources": ["secrets"], "verbs": ["get"], "resourceNames": ["z"]}]}
    assert granted(role) == ["z"]


@pytest.mark.parametrize("text", ["lagpilot", "/x", "ns/", "a/b/c", ""])
def test_operator_must_be_namespace_slash_name(text: str) -> None:
    with pytest.raises(ValueError, match="NAMESPACE/SERVICEACCOUNT"):
        Operator.parse(text)
