"""`lagpilot status|promote|abort|pause|resume`: read and steer ConsumerGroups.

Exit codes (all commands): 0 ok; 1 the group is not healthy (status) or there is nothing to act on
(promote/abort with no rollout in progress); 2 bad usage; 3 the ConsumerGroup does not exist;
4 the cluster cannot be reached.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from lagpilot.cli.cluster import EXIT_NOT_FOUND, EXIT_NOT_OK, EXIT_OK, EXIT_UNREACHABLE, Cluster, cluster_options, fail
from lagpilot.cli.view import NotFound, collect, list_names, render
from lagpilot.protocol import ANNOTATION_ABORT as ABORT
from lagpilot.protocol import ANNOTATION_PAUSE as PAUSE
from lagpilot.protocol import ANNOTATION_PROMOTE as PROMOTE
from lagpilot.protocol import GROUP, PLURAL, VERSION
from lagpilot.timefmt import rfc3339

ACTIVE_ROLLOUT_PHASES = {"Progressing", "Canary", "Promoting"}

err = Console(stderr=True)


def healthy(view_json: dict[str, Any]) -> bool:
    conds = {c.get("type"): c.get("status") for c in view_json.get("conditions") or []}
    return conds.get("Ready") == "True" and conds.get("Degraded") != "True"


@click.command()
@click.argument("name", required=False)
@cluster_options
@click.option("-A", "--all-namespaces", is_flag=True, help="every ConsumerGroup in the cluster")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("-w", "--watch", is_flag=True, help="refresh until Ctrl-C")
@click.option("--interval", default=2.0, show_default=True, help="seconds between refreshes with --watch")
@click.option("--no-lag", is_flag=True, help="do not read lag from the brokers")
def status(name: str | None, cluster: Cluster, all_namespaces: bool, output: str, watch: bool, interval: float,
           no_lag: bool) -> None:
    """Partitions with their owner worker and lag, workers, deliveries, rollout phase and recent Events.
    Exit 0 when every shown group is Ready and not Degraded, 1 otherwise."""
    api, namespace = cluster.connect(), cluster.namespace
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


def _annotate(cluster: Cluster, name: str, annotations: dict[str, str | None],
              require_rollout: bool) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api, namespace = cluster.connect(), cluster.namespace
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
@cluster_options
def promote(name: str, cluster: Cluster) -> None:
    """Promote the rollout in progress now (skips the rest of the canary analysis or blue/green preview)."""
    _annotate(cluster, name, {PROMOTE: _stamp(), ABORT: None}, require_rollout=True)
    err.print(f"[green]promote requested[/] for {cluster.namespace}/{name}")


@click.command()
@click.argument("name")
@cluster_options
def abort(name: str, cluster: Cluster) -> None:
    """Abort the rollout in progress: partitions move back to the stable revision."""
    _annotate(cluster, name, {ABORT: _stamp(), PROMOTE: None}, require_rollout=True)
    err.print(f"[yellow]abort requested[/] for {cluster.namespace}/{name}")


@click.command()
@click.argument("name")
@cluster_options
def pause(name: str, cluster: Cluster) -> None:
    """Freeze rollouts and scaling of a ConsumerGroup (workers keep delivering)."""
    _annotate(cluster, name, {PAUSE: "true"}, require_rollout=False)
    err.print(f"paused {cluster.namespace}/{name}")


@click.command()
@click.argument("name")
@cluster_options
def resume(name: str, cluster: Cluster) -> None:
    """Undo `pause`."""
    _annotate(cluster, name, {PAUSE: None}, require_rollout=False)
    err.print(f"resumed {cluster.namespace}/{name}")


COMMANDS = [status, promote, abort, pause, resume]
