"""What the kind end-to-end tests read and write on the cluster, through the kubernetes client: the one
ConsumerGroup a test namespace holds, its pods and Deployments, and the in-cluster target's records as
the lab's `Arrival`s (so the same order, overlap and history checks judge both)."""

from __future__ import annotations

from typing import Any

from lagpilot.testing.target import Arrival

GROUP, VERSION, PLURAL = "lagpilot.io", "v1alpha1", "consumergroups"
NAME = "cg"


class Cluster:
    """The few reads and writes these tests make, through the kubernetes client."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.ns = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.authz = client.AuthorizationV1Api(api)

    def apply(self, doc: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, NAME,
                                                       {"spec": doc["spec"]})

    def cg(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, NAME))

    def pods(self) -> list[Any]:
        return list(self.core.list_namespaced_pod(self.ns, label_selector=f"lagpilot.io/consumergroup={NAME}").items)

    def deployments(self) -> list[Any]:
        return list(self.apps.list_namespaced_deployment(
            self.ns, label_selector=f"lagpilot.io/consumergroup={NAME}").items)


def ready(cg: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (cg.get("status") or {}).get("conditions", []))


def arrivals(records: list[dict[str, Any]]) -> list[Arrival]:
    """The in-cluster target's records as the lab's Arrival (it answers 200 to everything)."""
    return [Arrival(topic="", partition=r["partition"], offset=r["offset"],
                    key=r["key"].encode() if r["key"] is not None else None, worker=r["worker"] or "",
                    start=r["start"], end=r["end"] or r["start"], status=200, body=b"", headers={})
            for r in records]
