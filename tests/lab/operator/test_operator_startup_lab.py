"""Issue 14 item 10: an operator that cannot start says why in one line, naming the setting, and exits; its
endpoints bind to the pod's own IP when POD_IP is set. Real `lagpilot-operator` processes; no cluster is
needed for these (the ports are checked first)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lagpilot.lab.proc import free_port

pytestmark = pytest.mark.lab

OPERATOR = str(Path(sys.executable).parent / "lagpilot-operator")


def run_operator(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAGPILOT_")}
    return subprocess.run([OPERATOR, "--standalone"], env={**base, "KUBECONFIG": "/nonexistent", **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("variable", "what"), [("LAGPILOT_METRICS_PORT", "/metrics"),
                                                 ("LAGPILOT_LIVENESS", "liveness endpoint")])
def test_a_taken_port_is_one_line_naming_the_setting(variable: str, what: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {"LAGPILOT_METRICS_PORT": str(free_port()), "LAGPILOT_LIVENESS": "",
               "LAGPILOT_METRICS_BIND": "127.0.0.1"}
        if variable == "LAGPILOT_METRICS_PORT":
            env["LAGPILOT_METRICS_PORT"] = str(port)
        else:
            env["LAGPILOT_LIVENESS"] = f"http://127.0.0.1:{port}/healthz"
        out = run_operator(env)
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("lagpilot-operator: ") and f"127.0.0.1:{port}" in lines[0]
    assert variable in lines[0] and what in lines[0] and "in use" in lines[0]


def test_a_bad_setting_is_one_line() -> None:
    out = run_operator({"LAGPILOT_METRICS_PORT": "eighty"})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "lagpilot-operator: LAGPILOT_METRICS_PORT must be an integer, got 'eighty'"


def test_endpoints_bind_to_the_pod_ip() -> None:
    """With POD_IP set, the default liveness endpoint and /metrics listen on that address only: a port held
    on another loopback address does not collide (as pods sharing a host's network in the lab)."""
    from lagpilot_operator.main import liveness_url
    from lagpilot_operator.settings import from_env

    assert liveness_url(from_env({})) == "http://0.0.0.0:8091/healthz"
    os.environ["POD_IP"] = "127.0.0.42"
    try:
        assert liveness_url(from_env({})) == "http://127.0.0.42:8091/healthz"
        assert liveness_url(from_env({"LAGPILOT_LIVENESS": "http://0.0.0.0:9/x"})) == "http://0.0.0.0:9/x"
    finally:
        del os.environ["POD_IP"]
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        out = run_operator({"POD_IP": "127.0.0.43", "LAGPILOT_METRICS_PORT": str(port), "LAGPILOT_LIVENESS": ""})
    # It got past both ports (127.0.0.43 is free) and stops at the cluster configuration, in one line.
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "cannot load the cluster configuration" in out.stderr and "/metrics" not in out.stderr
