"""`lagpilot lab up|down|status`: the embedded local lab for people, demos and scripts."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.table import Table

from lagpilot import paths
from lagpilot.lab.kindlab import kind_down, kind_status, kind_up
from lagpilot.lab.manager import load_lab, start_lab, stop_lab

err = Console(stderr=True)


@click.group()
def lab() -> None:
    """Start, stop and inspect the local lab (real Kafka + real Kubernetes control plane + lab runner)."""


@lab.command()
@click.option("--runtime", type=click.Choice(["local", "kind"]), default="local", show_default=True,
              help="local: etcd + kube-apiserver + controller-manager + the lab runner (pods as processes), "
                   "up in seconds; kind: a 3-node kind cluster (real kubelets and containers) with Kafka in "
                   "it, needs Docker (started if not running) and builds its images the first time.")
def up(runtime: str) -> None:
    """Start the lab in the background and return once everything is ready (idempotent)."""
    if runtime == "kind":
        t0 = time.monotonic()
        try:
            st = kind_up(progress=lambda line: err.print(f"[cyan]»[/] {line}", highlight=False))
        except RuntimeError as exc:
            err.print(f"[red]{exc}[/]")
            sys.exit(1)
        err.print(f"[green]kind lab up[/] in {time.monotonic() - t0:.0f}s")
        err.print(f"  export KUBECONFIG={st.get('kubeconfig')}")
        err.print(f"  kafka from this host: {st.get('bootstrap_servers')}; "
                  f"in the cluster: {st.get('bootstrap_servers_in_cluster')}")
        err.print(f"  pods reach this host at {st.get('host_address')}")
        return
    workdir = paths.lab_dir()
    existing = load_lab(workdir)
    if existing is not None:
        if existing.healthy():
            err.print(f"[green]lab already running[/] (kubeconfig {existing.kubeconfig})")
            return
        err.print("[yellow]found a partly stopped lab; restarting it[/]")
        stop_lab(existing, remove=True)
    t0 = time.monotonic()
    lab_ = start_lab(workdir, progress=lambda msg: err.print(f"[cyan]»[/] {msg}"))
    err.print(f"[green]lab up[/] in {time.monotonic() - t0:.0f}s")
    err.print(f"  export KUBECONFIG={lab_.kubeconfig}")
    err.print(f"  kafka bootstrap servers: {lab_.bootstrap_servers}")
    err.print(f"  kubectl: {paths.kubernetes_bin() / 'kubectl'}")


@lab.command()
def down() -> None:
    """Stop every lab process (and the kind lab, if up) and delete the lab's state."""
    if kind_status() is not None:
        kind_down()
        err.print("[green]kind lab down[/]")
    existing = load_lab(paths.lab_dir())
    if existing is None:
        err.print("lab is not running")
        return
    stop_lab(existing, remove=True)
    err.print("[green]lab down[/]")


@lab.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def status(output: str) -> None:
    """Show the lab's services; exit 1 when the lab is not running or a service is down."""
    existing = load_lab(paths.lab_dir())
    kind = kind_status()
    if existing is None and kind is not None:
        if output == "json":
            click.echo(json.dumps(kind, indent=2))
        else:
            table = Table(title="lagpilot lab (kind)")
            table.add_column("node container")
            table.add_column("state")
            for name, state in (kind.get("node_state") or {}).items():
                table.add_row(name, "[green]running[/]" if state == "running" else "[red]stopped[/]")
            Console().print(table)
            click.echo(f"kubeconfig: {kind.get('kubeconfig')}\nbootstrap servers: {kind.get('bootstrap_servers')} "
                       f"(in cluster: {kind.get('bootstrap_servers_in_cluster')})\n"
                       f"host address for pods: {kind.get('host_address')}")
        sys.exit(0 if kind.get("running") else 1)
    if existing is None:
        if output == "json":
            click.echo(json.dumps({"running": False}))
        else:
            err.print("lab is not running (start it with `lagpilot lab up`)")
        sys.exit(1)
    st = existing.status()
    st["runtime"] = "local"
    st["running"] = existing.healthy()
    if output == "json":
        click.echo(json.dumps(st, indent=2))
    else:
        table = Table(title="lagpilot lab")
        table.add_column("service")
        table.add_column("pid", justify="right")
        table.add_column("state")
        for name, svc in st["services"].items():
            table.add_row(name, str(svc["pid"]), "[green]running[/]" if svc["running"] else "[red]stopped[/]")
        Console().print(table)
        click.echo(f"kubeconfig: {st['kubeconfig']}\nbootstrap servers: {st['bootstrap_servers']}")
    sys.exit(0 if st["running"] else 1)
