"""allowedBootstrapServers at admission: the chart's ValidatingAdmissionPolicy, applied to the lab's real
API server, refuses a ConsumerGroup naming another broker (on create and on change) and lets the allowed
ones in; scoped to the watched namespaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.testing.chart import helm_template
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab


def group(name: str, servers: str) -> str:
    return yaml.safe_dump({"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup",
                           "metadata": {"name": name}, "spec": {"bootstrapServers": servers, "topic": "t",
                                                                "workers": 0, "target": {"url": "http://x/"}}})


def test_the_admission_policy_refuses_other_brokers(k8s: Any, crds: None, namespace: str, helm_bin: Path) -> None:
    manifest = helm_template(helm_bin, ["allowedBootstrapServers={*.kafka.svc:9093,[fd00::?]:9093}",
                                        f"watchNamespaces={{{namespace}}}"],
                             extra=["--show-only", "templates/bootstrap-policy.yaml"])
    k8s.kubectl("apply", "-f", "-", input=manifest)
    try:
        attempts = iter(range(10_000))

        def refused() -> Any:
            # A fresh name each time: re-applying an unchanged object sends no request, so no admission.
            out = k8s.kubectl("create", "--dry-run=server", "-f", "-", namespace=namespace, check=False,
                              input=group(f"evil-{next(attempts)}", "kafka.kafka.svc:9093,evil.example.com:9093"))
            return out if out.returncode != 0 else None
        out = wait_for(refused, timeout=60, what="the policy in force")
        assert "names a broker this operator does not allow" in out.stderr
        ok = k8s.kubectl("apply", "-f", "-", namespace=namespace, check=False,
                         input=group("good", "KAFKA-0.kafka.svc:9093, [fd00::5]:9093"))
        assert ok.returncode == 0, ok.stderr
        change = k8s.kubectl("apply", "-f", "-", namespace=namespace, check=False,
                             input=group("good", "kafka-0.kafka.svc:9092"))
        assert change.returncode != 0 and "does not allow" in change.stderr
    finally:
        k8s.kubectl("delete", "-f", "-", "--ignore-not-found", input=manifest)
