"""The lab runner's pure parts: env resolution as the kubelet does it, probes, backoff, pod phase."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lagpilot.lab.podspec import (
    EnvError,
    ProbeState,
    backoff_seconds,
    container_argv,
    expand,
    parse_probe,
    pod_phase,
    resolve_env,
    rewrite_mount_paths,
    volume_files,
)

pytestmark = pytest.mark.unit

POD: dict[str, Any] = {"metadata": {"name": "w-1", "namespace": "shop", "uid": "u1", "labels": {"app": "x"}},
                       "spec": {"serviceAccountName": "worker"}}
DATA = {("Secret", "shop", "creds"): {"username": "u", "password": "p"},
        ("ConfigMap", "shop", "cfg"): {"MODE": "fast"}}


def lookup(kind: str, ns: str, name: str) -> dict[str, str] | None:
    return DATA.get((kind, ns, name))


def test_downward_api_values_secret_and_configmap_refs_resolve() -> None:
    container = {"name": "c", "env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "username"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
        {"name": "URL", "value": "http://$(POD_IP):8080/$(UNKNOWN)/$$x"},
    ]}
    env = resolve_env(POD, container, "127.0.0.7", "node", lookup)
    assert env == {"POD_NAME": "w-1", "POD_NAMESPACE": "shop", "POD_IP": "127.0.0.7", "APP": "x", "USER": "u",
                   "MODE": "fast", "URL": "http://127.0.0.7:8080/$(UNKNOWN)/$x"}


def test_env_from_with_prefix_and_env_overrides_it() -> None:
    container = {"name": "c", "envFrom": [{"secretRef": {"name": "creds"}, "prefix": "LAGPILOT_HEADER_"}],
                 "env": [{"name": "LAGPILOT_HEADER_username", "value": "override"}]}
    env = resolve_env(POD, container, "127.0.0.2", "n", lookup)
    assert env == {"LAGPILOT_HEADER_username": "override", "LAGPILOT_HEADER_password": "p"}


@pytest.mark.parametrize("ref, message", [
    ({"secretKeyRef": {"name": "missing", "key": "k"}}, 'secret "missing" not found'),
    ({"secretKeyRef": {"name": "creds", "key": "nope"}}, 'key "nope" not in secret "creds"'),
    ({"configMapKeyRef": {"name": "absent", "key": "k"}}, 'configmap "absent" not found'),
])
def test_missing_reference_blocks_the_container(ref: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvError, match=message):
        resolve_env(POD, {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}, "ip", "n", lookup)


def test_optional_missing_reference_is_skipped() -> None:
    ref = {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}}
    assert resolve_env(POD, {"name": "c", "env": [{"name": "X", "valueFrom": ref}]}, "ip", "n", lookup) == {}


def test_command_is_required_because_images_are_not_pulled() -> None:
    with pytest.raises(EnvError, match="no command"):
        container_argv({"name": "c", "image": "nginx"}, {})
    assert container_argv({"name": "c", "command": ["lagpilot-consumer"], "args": ["--port", "$(P)"]},
                          {"P": "80"}) == ["lagpilot-consumer", "--port", "80"]


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=30))
def test_expand_leaves_text_without_references_alone(text: str) -> None:
    assert expand(text, {"A": "b"}) == text


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_seconds(n) for n in range(0, 8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_probe_named_port_and_thresholds() -> None:
    container = {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
    spec = parse_probe({"httpGet": {"path": "/readyz", "port": "http"}, "failureThreshold": 2,
                        "successThreshold": 1, "periodSeconds": 1}, container)
    assert spec is not None and spec.port == 8080 and spec.path == "/readyz"
    state = ProbeState()
    assert state.record(True, spec) and state.healthy
    assert not state.record(False, spec) and state.healthy  # one failure is tolerated
    assert state.record(False, spec) and not state.healthy


@pytest.mark.parametrize("policy, states, phase", [
    ("Always", [{"running": {}}], "Running"),
    ("Always", [{"waiting": {"reason": "ContainerCreating"}}], "Pending"),
    ("Always", [{"waiting": {"reason": "CrashLoopBackOff"}}], "Running"),
    ("Never", [{"terminated": {"exitCode": 0}}], "Succeeded"),
    ("Never", [{"terminated": {"exitCode": 1}}], "Failed"),
    ("OnFailure", [{"terminated": {"exitCode": 0}}], "Succeeded"),
    ("Never", [{"terminated": {"exitCode": 0}}, {"running": {}}], "Running"),
])
def test_pod_phase(policy: str, states: list[dict[str, Any]], phase: str) -> None:
    assert pod_phase(policy, states) == phase


def test_secret_and_configmap_volumes_become_files_and_env_paths_follow_them() -> None:
    pod = {**POD, "spec": {**POD["spec"], "volumes": [
        {"name": "sasl", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}},
        {"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]}}
    container = {"name": "c", "volumeMounts": [{"name": "sasl", "mountPath": "/etc/lp/sasl"},
                                               {"name": "cfg", "mountPath": "/etc/lp/cfg/"},
                                               {"name": "tmp", "mountPath": "/tmp"}]}
    assert volume_files(pod, container, lookup) == {"/etc/lp/sasl": {"pw": "p"}, "/etc/lp/cfg": {"MODE": "fast"}}
    env = {"PW_FILE": "/etc/lp/sasl/pw", "OTHER": "/etc/lp/sasl-not/x", "DIR": "/etc/lp/cfg"}
    assert rewrite_mount_paths(env, {"/etc/lp/sasl": "/pods/p/volumes/etc/lp/sasl",
                                     "/etc/lp/cfg": "/pods/p/volumes/etc/lp/cfg"}) == {
        "PW_FILE": "/pods/p/volumes/etc/lp/sasl/pw", "OTHER": "/etc/lp/sasl-not/x",
        "DIR": "/pods/p/volumes/etc/lp/cfg"}


@pytest.mark.parametrize(("volume", "message"), [
    ({"secret": {"secretName": "gone"}}, 'secret "gone" not found'),
    ({"secret": {"secretName": "creds", "items": [{"key": "token", "path": "t"}]}}, 'key "token" not in secret'),
    ({"configMap": {"name": "gone"}}, 'configmap "gone" not found'),
])
def test_a_volume_that_cannot_be_mounted_keeps_the_container_from_starting(volume: dict[str, Any],
                                                                          message: str) -> None:
    pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "v", **volume}]}}
    with pytest.raises(EnvError, match=message):
        volume_files(pod, {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}, lookup)
    optional = {k: {**v, "optional": True} for k, v in volume.items()}
    if "not found" in message:
        pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "v", **optional}]}}
        assert volume_files(pod, {"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}, lookup) == {}
