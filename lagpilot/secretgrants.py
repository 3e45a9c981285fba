"""Which Secrets the operator may read in a namespace: one Role (get, by name) bound to its ServiceAccount,
written by whoever owns the namespace's Secrets (`lagpilot grant-secret`), never by the operator.

The API server lets a user create a Role only with rights they hold themselves (RBAC escalation check),
so a Secret gets granted only by someone who may read it: a ConsumerGroup's author who may not read a
Secret cannot make the operator read it (the confused deputy). Pure: from the Role as it is to the Role
and RoleBinding as they should be."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lagpilot.protocol import LABEL_MANAGED_BY

MANAGER = "lagpilot-cli"
DEFAULT_OPERATOR = "lagpilot-system/lagpilot"  # the chart's install in docs/helm.md


@dataclass(frozen=True)
class Operator:
    """The operator's ServiceAccount."""

    namespace: str
    service_account: str

    @classmethod
    def parse(cls, text: str) -> Operator:
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"--operator {text!r}: expected NAMESPACE/SERVICEACCOUNT, e.g. {DEFAULT_OPERATOR}")
        return cls(namespace, name)

    @property
    def role_name(self) -> str:
        return f"{self.service_account}-secret-grants"


def granted(role: Mapping[str, Any] | None) -> list[str]:
    """The Secret names a grants Role lets the operator get (none when there is no Role)."""
    names: set[str] = set()
    for rule in (role or {}).get("rules") or []:
        if "secrets" in (rule.get("resources") or []) and "get" in (rule.get("verbs") or []):
            names |= set(rule.get("resourceNames") or [])
    return sorted(names)


def grant_objects(namespace: str, operator: Operator, names: Iterable[str]) -> list[dict[str, Any]]:
    """The Role (get on exactly `names`) and its RoleBinding; no Role at all for no names (an empty
    resourceNames would mean every Secret)."""
    names = sorted(set(names))
    if not names:
        return []
    meta = {"name": operator.role_name, "namespace": namespace,
            "labels": {LABEL_MANAGED_BY: MANAGER, "app.kubernetes.io/part-of": "lagpilot"}}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": operator.role_name},
               "subjects": [{"kind": "ServiceAccount", "name": operator.service_account,
                             "namespace": operator.namespace}]}
    return [role, binding]


def after_grant(role: Mapping[str, Any] | None, add: Iterable[str]) -> list[str]:
    return sorted(set(granted(role)) | set(add))


def after_revoke(role: Mapping[str, Any] | None, remove: Iterable[str]) -> list[str]:
    return sorted(set(granted(role)) - set(remove))
