"""The cluster a command talks to, chosen the way kubectl chooses it (`--kubeconfig`, `--context`, `-n`),
so `lagpilot status` and `kubectl lagpilot status` behave the same; kubectl passes a plugin its
arguments unchanged."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from lagpilot.kubeclient import ClusterUnreachable, api_client, context_namespace

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)  # one unwrapped line, whatever the terminal width
    sys.exit(code)


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str | None
    context: str | None
    namespace: str  # -n, else the context's namespace, else "default" (as kubectl)

    def client(self) -> Any:
        """An ApiClient that has answered once; raises ClusterUnreachable."""
        return api_client(self.kubeconfig, context=self.context)

    def connect(self) -> Any:
        """client(), or exit EXIT_UNREACHABLE with one line."""
        try:
            return self.client()
        except ClusterUnreachable as exc:
            fail(EXIT_UNREACHABLE, str(exc))


def cluster_options(command: Callable[..., None]) -> Callable[..., None]:
    """Adds --kubeconfig, --context and -n/--namespace; the command receives them as `cluster`."""

    @click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                  help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, then the lab's)")
    @click.option("--context", "kube_context", default=None, help="kubeconfig context (default: current)")
    @click.option("-n", "--namespace", default=None,
                  help="namespace (default: the context's namespace, else \"default\")")
    @functools.wraps(command)
    def wrapper(*args: Any, kubeconfig: str | None, kube_context: str | None, namespace: str | None,
                **kwargs: Any) -> None:
        if kubeconfig:  # $KUBECONFIG may list several files; like resolve_kubeconfig, use the first
            kubeconfig = kubeconfig.split(os.pathsep)[0]
        ns = namespace or context_namespace(kubeconfig, kube_context)
        command(*args, cluster=Cluster(kubeconfig, kube_context, ns), **kwargs)

    return wrapper


def named_topics(spec: dict[str, Any]) -> list[str]:
    """The topics a ConsumerGroup's spec names (spec.topic, then spec.topics), in order, each once; empty
    for a spec.topicPattern group."""
    return list(dict.fromkeys(([spec["topic"]] if spec.get("topic") else []) + list(spec.get("topics") or [])))
