"""The lab's control plane and runner behave like a cluster: Deployments become Running/Ready pods that
are real processes on their own 127.0.0.N address, stop on delete, restart on crash, and RBAC applies."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

SERVER = "import http.server,os,socketserver\n" \
         "class H(http.server.BaseHTTPRequestHandler):\n" \
         "    def do_GET(self):\n" \
         "        body=('%s %s %s %s' % (os.environ['MY_POD'], os.environ['MY_NS'], os.environ['MY_IP'], " \
         "os.environ.get('FROM_SECRET',''))).encode()\n" \
         "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n" \
         "    def log_message(self,*a): pass\n" \
         "http.server.ThreadingHTTPServer((os.environ['MY_IP'], 8000), H).serve_forever()\n"


def deployment(name: str, replicas: int, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"terminationGracePeriodSeconds": 5,
                                       "containers": [{"name": "main", "image": "python:3.11-slim",
                                                       "command": command, **container}]}}},
    }


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_deployment_pods_run_as_processes_on_own_ip_and_stop_on_delete(k8s: Any, namespace: str) -> None:
    api = k8s.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"k": "from-secret"}})
    env = [{"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
           {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    apps.create_namespaced_deployment(namespace, deployment(
        "web", 2, ["python3", "-c", SERVER], env=env,
        readinessProbe={"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1}))

    def ready_pods() -> list[Any]:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        ok = [p for p in pods if p.status.phase == "Running"
              and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return ok if len(ok) == 2 else []

    pods = wait_for(ready_pods, what="2 ready pods")
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 2 and all(ip.startswith("127.0.") and ip != "127.0.0.1" for ip in ips)
    pids = []
    for p in pods:
        with urllib.request.urlopen(f"http://{p.status.pod_ip}:8000/", timeout=5) as resp:
            assert resp.read().decode() == f"{p.metadata.name} {namespace} {p.status.pod_ip} from-secret"
        pids.append(int(p.status.container_statuses[0].container_id.removeprefix("lab://")))
    assert all(pid_running(pid) for pid in pids)
    # The Deployment controller counts the ready pods a moment after the pods report Ready.
    wait_for(lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2, 60,
             "the Deployment's status to count 2 ready replicas")

    apps.delete_namespaced_deployment("web", namespace)
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items, 60,
             "pods deleted")
    wait_for(lambda: not any(pid_running(pid) for pid in pids), 30, "processes stopped")


def test_crashing_container_restarts_with_backoff_and_count(k8s: Any, namespace: str) -> None:
    api = k8s.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "crash"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "sleep 0.2; exit 3"]}]}})

    def restarted() -> Any:
        pod = core.read_namespaced_pod("crash", namespace)
        st = (pod.status.container_statuses or [None])[0]
        return st if st and st.restart_count >= 2 else None

    st = wait_for(restarted, 60, "two restarts")
    assert st.last_state.terminated.exit_code == 3
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=crash").items
    assert any(e.reason == "BackOff" for e in events)


def test_liveness_probe_failure_restarts_container(k8s: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s.api_client())
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "unlive"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "3600"],
                                 "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1,
                                                   "failureThreshold": 2}}]}})
    wait_for(lambda: (core.read_namespaced_pod("unlive", namespace).status.container_statuses or [None])[0]
             and core.read_namespaced_pod("unlive", namespace).status.container_statuses[0].restart_count >= 1,
             60, "restart after liveness failure")


def test_service_account_without_permission_gets_403(k8s: Any, namespace: str) -> None:
    """The pod's kubeconfig carries its ServiceAccount's token, so RBAC applies to pods as in a cluster."""
    api = k8s.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "cm-reader"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    probe = ("import json,os\n"
             "from kubernetes import client, config\n"
             "api = client.CoreV1Api(config.new_client_from_config())\n"
             "out = {}\n"
             "for what, call in (('configmaps', lambda: api.list_namespaced_config_map(os.environ['NS'])),\n"
             "                   ('secrets', lambda: api.list_namespaced_secret(os.environ['NS']))):\n"
             "    try:\n"
             "        call(); out[what] = 200\n"
             "    except client.ApiException as e:\n"
             "        out[what] = e.status\n"
             "print('RESULT ' + json.dumps(out), flush=True)\n")
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "rbac"},
        "spec": {"serviceAccountName": "reader", "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "x", "command": ["python3", "-c", probe],
                                 "env": [{"name": "NS", "valueFrom": {"fieldRef": {
                                     "fieldPath": "metadata.namespace"}}}]}]}})
    pod = wait_for(lambda: (p := core.read_namespaced_pod("rbac", namespace)).status.phase == "Succeeded" and p,
                   60, "pod to finish")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0
    logs = (k8s.runner_dir / "pods").glob(f"{namespace}_rbac_*/c.log")
    text = next(iter(logs)).read_text()
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    assert result == {"configmaps": 200, "secrets": 403}
