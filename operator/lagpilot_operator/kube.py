"""Thin Kubernetes I/O for the operator: get/list/create/apply/delete of the few kinds it manages, and the
ConsumerGroup status subresource. Plain REST through the official client's ApiClient (no discovery), with
server-side apply so fields we stop asking for are removed and fields others own are left alone."""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from lagpilot import kubeclient
from lagpilot.protocol import GROUP, MANAGER, PLURAL, VERSION

# kind -> (path prefix, plural)
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "ConsumerGroup": (f"/apis/{GROUP}/{VERSION}", PLURAL),
}


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config (lagpilot.kubeclient)."""
    return kubeclient.load(kubeconfig)


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _call(self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _method, url, headers, body, _ = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason,
                               body=data.decode(errors="replace") if data else None)
        return json.loads(data) if data else {}

    @staticmethod
    def _path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{namespace}/{plural}"
        if name:
            path += f"/{name}"
        if sub:
            path += f"/{sub}"
        return path

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", self._path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        """The objects, each with its apiVersion and kind (a list response leaves them off its items, and a
        comparison with a planned object would then always find a difference)."""
        query = {"labelSelector": label_selector} if label_selector else None
        body = self._call("GET", self._path(kind, namespace), query=query)
        api_version = body.get("apiVersion") or ""
        items = list(body.get("items") or [])
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (someone else, or an earlier run, made it)."""
        meta = obj["metadata"]
        try:
            return self._call("POST", self._path(obj["kind"], meta["namespace"]), body=dict(obj),
                              query={"fieldManager": MANAGER})
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields (drift repair)."""
        meta = obj["metadata"]
        return self._call("PATCH", self._path(obj["kind"], meta["namespace"], meta["name"]),
                          body=dict(obj), query={"fieldManager": MANAGER, "force": "true"},
                          content_type="application/apply-patch+yaml")

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self._call("DELETE", self._path(kind, namespace, name),
                       body={"propagationPolicy": "Background"})
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the ConsumerGroup status subresource; False when the CR is gone."""
        try:
            self._call("PATCH", self._path("ConsumerGroup", namespace, name, "status"),
                       body={"status": dict(status)}, content_type="application/merge-patch+json")
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def ensure_peering(self, name: str, namespaces: builtins.list[str]) -> builtins.list[str]:
        """Create the kopf peering object(s) if the peering CRDs are installed; kopf does not create them.
        Returns what was created or found; nothing when the CRDs are absent (then kopf runs standalone)."""
        targets: builtins.list[tuple[str, str, str | None]] = (
                   [(f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings", "KopfPeering", ns) for ns in namespaces]
                   or [("/apis/kopf.dev/v1/clusterkopfpeerings", "ClusterKopfPeering", None)])
        done: builtins.list[str] = []
        for path, kind, ns in targets:
            meta: dict[str, Any] = {"name": name}
            if ns:
                meta["namespace"] = ns
            try:
                self._call("POST", path, body={"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": meta})
                done.append(f"created {kind} {name}")
            except ApiException as exc:
                if exc.status == 409:
                    done.append(f"found {kind} {name}")
                elif exc.status in (403, 404):
                    continue  # CRD absent, or no permission (the chart creates it then)
                else:
                    raise
        return done
