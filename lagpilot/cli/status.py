"""`lagpilot status|promote|abort|pause|resume`: read and steer ConsumerGroups.

Exit codes (all commands): 0 ok; 1 the group is not healthy (status) or there is nothing to act on
(promote/abort with no rollout in progress); 2 bad usage; 3 the ConsumerGroup does not exist;
4 the cluster cannot be reached.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.live import Live

from lagpilot.cli.view import NotFound, collect, list_names, render
from lagpilot.kubeclient import ClusterUnreachable, api_client
from lagpilot.protocol import ANNOTATION_ABORT as ABORT
from lagpilot.protocol import ANNOTATION_PAUSE as PAUSE
from lagpilot.protocol import ANNOTATION_PROMOTE as PROMOTE
from lagpilot.protocol import GROUP, PLURAL, VERSION
from lagpilot.timefmt import rfc3339

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
ACTIVE_ROLLOUT_PHASES = {"Progressing", "Canary", "Promoting"}

err = Console(stderr=True)

kubeconfig_option = click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                                 help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, then the lab's)")
namespace_option = click.option("-n", "--namespace", default="default", show_default=True)


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)  # one unwrapped line, whatever the terminal width
    sys.exit(code)


def connect(kubeconfig: str | None) -> Any:
    try:
        return api_client(kubeconfig)
    except ClusterUnreachable as exc:
        fail(EXIT_UNREACHABLE, str(exc))


def healthy(view_json: dict[str, Any]) -> bool:
    conds = {c.get("type"): c.get("status") for c in view_json.get("conditions") or []}
    return conds.get("Ready") == "True" and conds.get("Degraded") != "True"


@click.command()
@click.argument("name", required=False)
@namespace_option
@click.option("-A", "--all-namespaces", is_flag=True, help="every ConsumerGroup in the cluster")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("-w", "--watch", is_flag=True, help="refresh until Ctrl-C")
@click.option("--interval", default=2.0, show_default=True, help="seconds between refreshes with --watch")
@click.option("--no-lag", is_flag=True, help="do not read lag from the brokers")
@kubeconfig_option
def status(name: str | None, namespace: str, all_namespaces: bool, output: str, watch: bool, interval: float,
           no_lag: bool, kubeconfig: str | None) -> None:
    """Partitions with their owner worker and lag, workers, deliveries, rollout phase and recent Events.
    Exit 0 when every shown group is Ready and not Degraded, 1 otherwise."""
    api = connect(kubeconfig)
    try:
        targets = [(namespace, name)] if name else list_names(api, None if all_namespaces else namespace)
    except Exception as exc:  # e.g. the CRD is not installed
        fail(EXIT_NOT_FOUND, f"cannot list consumergroups: {getattr(exc, 'reason', exc)}")
    if not targets:
        fail(EXIT_NOT_FOUND, f'no consumergroups in namespace "{namespace}"')

    def gather() -> list[Any]:
        try:
            return [collect(api, ns, n, with_lag=not no_lag) for ns, n in targets]
        except NotFound as exc:
            fail(EXIT_NOT_FOUND, str(exc))
        return []

    if watch and output == "table":
        from rich.console import Group

        with Live(console=Console(), refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    live.update(Group(*[render(v) for v in gather()]))
                    time.sleep(interval)
            except KeyboardInterrupt:
                pass
        return
    views = gather()
    if output == "json":
        click.echo(json.dumps([v.to_json() for v in views] if not name else views[0].to_json(), indent=2,
                              default=str))
    else:
        console = Console()
        for v in views:
            console.print(render(v))
    sys.exit(EXIT_OK if all(healthy(v.to_json()) for v in views) else EXIT_NOT_OK)


def _annotate(kubeconfig: str | None, namespace: str, name: str, annotations: dict[str, str | None],
              require_rollout: bool) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = connect(kubeconfig)
    custom = client.CustomObjectsApi(api)
    try:
        cg = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            fail(EXIT_NOT_FOUND, f'consumergroup "{name}" not found in namespace "{namespace}"')
        fail(EXIT_UNREACHABLE, f"cannot read consumergroup: {exc.reason}")
    phase = ((cg.get("status") or {}).get("rollout") or {}).get("phase", "Stable")
    if require_rollout and phase not in ACTIVE_ROLLOUT_PHASES:
        fail(EXIT_NOT_OK, f'{namespace}/{name} has no rollout in progress (rollout phase "{phase}")')
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                          {"metadata": {"annotations": annotations}})
    return dict(cg)


def _stamp() -> str:
    return rfc3339()


@click.command()
@click.argument("name")
@namespace_option
@kubeconfig_option
def promote(name: str, namespace: str, kubeconfig: str | None) -> None:
    """Promote the rollout in progress now (skips the rest of the canary analysis or blue/green preview)."""
    _annotate(kubeconfig, namespace, name, {PROMOTE: _stamp(), ABORT: None}, require_rollout=True)
    err.print(f"[green]promote requested[/] for {namespace}/{name}")


@click.command()
@click.argument("name")
@namespace_option
@kubeconfig_option
def abort(name: str, namespace: str, kubeconfig: str | None) -> None:
    """Abort the rollout in progress: partitions move back to the stable revision."""
    _annotate(kubeconfig, namespace, name, {ABORT: _stamp(), PROMOTE: None}, require_rollout=True)
    err.print(f"[yellow]abort requested[/] for {namespace}/{name}")


@click.command()
@click.argument("name")
@namespace_option
@kubeconfig_option
def pause(name: str, namespace: str, kubeconfig: str | None) -> None:
    """Freeze rollouts and scaling of a ConsumerGroup (workers keep delivering)."""
    _annotate(kubeconfig, namespace, name, {PAUSE: "true"}, require_rollout=False)
    err.print(f"paused {namespace}/{name}")


@click.command()
@click.argument("name")
@namespace_option
@kubeconfig_option
def resume(name: str, namespace: str, kubeconfig: str | None) -> None:
    """Undo `pause`."""
    _annotate(kubeconfig, namespace, name, {PAUSE: None}, require_rollout=False)
    err.print(f"resumed {namespace}/{name}")


COMMANDS = [status, promote, abort, pause, resume]
