"""The chart's lifecycle on a real cluster: `helm upgrade` with a changed value replaces the operator pod
and leaves running workers alone; `helm uninstall` removes every object of the release but keeps the CRD
(and so every ConsumerGroup); installing again picks the groups up. The release is installed again at the
end whatever happens, so the other e2e tests do not depend on the order.

Needs LAGPILOT_E2E_HELM (the helm binary) and LAGPILOT_E2E_HELM_INSTALL (the install arguments after the
chart path, as scripts/e2e-kind.sh used them); without them (the lab's own run of this suite, whose chart
test covers the lifecycle already) it is skipped, unless LAGPILOT_E2E_REQUIRED=1."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lagpilot.testing.e2e_target import Target
from lagpilot.testing.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kind]

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "lagpilot.io", "v1alpha1", "consumergroups"
RELEASE = os.environ.get("LAGPILOT_E2E_HELM_RELEASE", "lagpilot")
OPERATOR_NS = os.environ.get("LAGPILOT_E2E_OPERATOR_NAMESPACE", "lagpilot-system")


def helm(*args: str) -> str:
    out = subprocess.run([os.environ["LAGPILOT_E2E_HELM"], *args], capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr[-2000:]}"
    return out.stdout


def install_args() -> list[str]:
    return shlex.split(os.environ["LAGPILOT_E2E_HELM_INSTALL"])


@pytest.fixture
def release() -> Any:
    if not (os.environ.get("LAGPILOT_E2E_HELM") and os.environ.get("LAGPILOT_E2E_HELM_INSTALL")):
        if os.environ.get("LAGPILOT_E2E_REQUIRED") == "1":
            pytest.fail("LAGPILOT_E2E_REQUIRED=1 but LAGPILOT_E2E_HELM / LAGPILOT_E2E_HELM_INSTALL not set")
        pytest.skip("needs LAGPILOT_E2E_HELM and LAGPILOT_E2E_HELM_INSTALL (scripts/e2e-kind.sh sets them)")
    yield RELEASE
    # Leave the release as the suite found it: installed, with the original values.
    helm("upgrade", "--install", RELEASE, str(ROOT / "charts" / "lagpilot"), "-n", OPERATOR_NS,
         *install_args(), "--wait", "--timeout", "300s")


def test_upgrade_uninstall_and_install_again(api: Any, release: str, e2e_namespace: str, worker_bootstrap: str,
                                            topic_factory: Callable[[int], str], target: Target) -> None:
    from kubernetes import client

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ext, rbac = client.ApiextensionsV1Api(api), client.RbacAuthorizationV1Api(api)
    selector = f"app.kubernetes.io/instance={release}"

    def operator_pods() -> list[Any]:
        return [p for p in core.list_namespaced_pod(OPERATOR_NS, label_selector=selector).items
                if not p.metadata.deletion_timestamp]

    def cg_ready() -> bool:
        st = custom.get_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, "cg").get("status") or {}
        conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
        return st.get("readyWorkers") == 2 and conds.get("Ready") == "True"

    def workers() -> dict[str, int]:
        pods = core.list_namespaced_pod(e2e_namespace, label_selector="lagpilot.io/consumergroup=cg").items
        return {p.metadata.uid: p.status.container_statuses[0].restart_count for p in pods
                if p.status.container_statuses}

    custom.create_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ConsumerGroup", "metadata": {"name": "cg"},
        "spec": {"bootstrapServers": worker_bootstrap, "topic": topic_factory(2), "workers": 2,
                 "target": {"url": target.url}}})
    wait_for(cg_ready, 300, what="the ConsumerGroup Ready with 2 workers", interval=2)
    (first,) = wait_for(operator_pods, 60, what="the operator pod")
    before = workers()

    # upgrade with a changed value: a new operator pod with it, the same worker pods.
    helm("upgrade", release, str(ROOT / "charts" / "lagpilot"), "-n", OPERATOR_NS, "--reuse-values",
         "--set", "logFormat=json", "--wait", "--timeout", "300s")
    (new,) = wait_for(lambda: [p for p in operator_pods() if p.metadata.uid != first.metadata.uid
                               and p.status.phase == "Running"] or None, 240, what="a new operator pod")
    env = {e.name: e.value for e in new.spec.containers[0].env or []}
    assert env.get("LAGPILOT_LOG_FORMAT") == "json"
    wait_for(lambda: [p.metadata.uid for p in operator_pods()] == [new.metadata.uid], 180,
             what="the old operator pod gone")
    wait_for(cg_ready, 120, what="the ConsumerGroup still Ready")
    assert workers() == before, "the upgrade restarted or replaced worker pods"

    # uninstall: no object of the release left; the CRD and the ConsumerGroup stay.
    helm("uninstall", release, "-n", OPERATOR_NS, "--wait", "--timeout", "300s")
    wait_for(lambda: not operator_pods(), 180, what="the operator pods gone")
    assert not client.AppsV1Api(api).list_namespaced_deployment(OPERATOR_NS, label_selector=selector).items
    assert not [r for r in rbac.list_cluster_role(label_selector=selector).items]
    assert not [b for b in rbac.list_cluster_role_binding(label_selector=selector).items]
    assert ext.read_custom_resource_definition("consumergroups.lagpilot.io") is not None
    assert custom.get_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, "cg")
    assert workers() == before, "workers must keep running without the operator"

    # install again: the group is picked up as it is.
    helm("install", release, str(ROOT / "charts" / "lagpilot"), "-n", OPERATOR_NS, *install_args(),
         "--wait", "--timeout", "300s")
    wait_for(operator_pods, 180, what="the operator pod after reinstall")
    wait_for(cg_ready, 180, what="the ConsumerGroup Ready under the new operator")
    assert workers() == before
    custom.delete_namespaced_custom_object(GROUP, VERSION, e2e_namespace, PLURAL, "cg")
    wait_for(lambda: not workers(), 180, what="the workers removed by the reinstalled operator", interval=2)
