"""`lagpilot lag`: the operator's per-partition lag table and Burrow-style status, for a ConsumerGroup in
the cluster, or for anyone with a broker address and a group id (no Kubernetes needed)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from lagpilot.cli.cluster import Cluster, cluster_options, named_topics
from lagpilot.kubeclient import ClusterUnreachable
from lagpilot.protocol import GROUP, PLURAL, VERSION
from lagpilot_operator.autoscale.offsets import KafkaUnavailable, LagReader, LagSnapshot, TopicNotFound
from lagpilot_operator.autoscale.window import GroupEval, LagStatus, LagWindow, add_snapshot, evaluate

EXIT_OK, EXIT_NOT_OK, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

_STYLE = {LagStatus.OK: "green", LagStatus.WARN: "yellow", LagStatus.STALL: "red", LagStatus.STOP: "red bold"}


def _notes(p: Any) -> str:
    notes = []
    if p.no_commit:
        notes.append("no commit")
    if p.behind_log_start:
        notes.append(f"{p.log_start - p.committed} deleted unread")
    if p.ahead_of_log_end:
        notes.append("committed > log end")
    return ", ".join(notes)


def render_table(snapshot: LagSnapshot, ev: GroupEval) -> Table:
    by_key = {(e.topic, e.partition): e for e in ev.partitions}
    table = Table(title=f"group {snapshot.group}", title_justify="left")
    for col, justify in (("TOPIC", "left"), ("PARTITION", "right"), ("LOG-START", "right"),
                         ("LOG-END", "right"), ("COMMITTED", "right"), ("LAG", "right"), ("STATUS", "left"),
                         ("NOTE", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in snapshot.partitions:
        e = by_key.get((p.topic, p.partition))
        status = e.status if e else LagStatus.OK
        note = _notes(p)
        if e and e.status != LagStatus.OK:
            note = ", ".join(x for x in (note, e.reason) if x)
        table.add_row(p.topic, str(p.partition), str(p.log_start), str(p.log_end),
                      "-" if p.committed is None else str(p.committed), str(p.lag),
                      f"[{_STYLE[status]}]{status.name}[/]", note)
    table.caption = (f"total lag {ev.total}, max partition {ev.max_partition}, status "
                     f"[{_STYLE[ev.status]}]{ev.status.name}[/], {snapshot.requests} requests in "
                     f"{snapshot.read_seconds * 1000:.0f} ms")
    table.caption_justify = "left"
    return table


def as_json(snapshot: LagSnapshot, ev: GroupEval) -> dict[str, Any]:
    by_key = {(e.topic, e.partition): e for e in ev.partitions}
    return {
        "group": snapshot.group,
        **ev.status_summary(),
        "requests": snapshot.requests,
        "warnings": snapshot.warnings,
        "partitions": [{**p.to_dict(), "status": by_key[(p.topic, p.partition)].status.name,
                        "reason": by_key[(p.topic, p.partition)].reason} for p in snapshot.partitions],
    }


def exit_code(snapshot: LagSnapshot, ev: GroupEval) -> int:
    """1 when the group is not OK (WARN/STALL/STOP) or records were deleted before being consumed."""
    return EXIT_NOT_OK if ev.status != LagStatus.OK or any(p.behind_log_start for p in snapshot.partitions) \
        else EXIT_OK


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"lagpilot lag: {message}", err=True)
    sys.exit(code)


def consumergroup_spec(cluster: Cluster, name: str) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        cg = client.CustomObjectsApi(cluster.client()).get_namespaced_custom_object(
            GROUP, VERSION, cluster.namespace, PLURAL, name)
    except ClusterUnreachable as exc:
        _fail(EXIT_UNREACHABLE, str(exc))
    except ApiException as exc:
        if exc.status == 404:
            _fail(EXIT_USAGE, f'consumergroup "{name}" not found in namespace "{cluster.namespace}"')
        _fail(EXIT_UNREACHABLE, f"cannot read consumergroup: {exc.reason}")
    return dict(cg.get("spec") or {})


def _read(path: str, hint: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path!r} ({exc.strerror})", param_hint=hint) from None


def kafka_settings(items: tuple[str, ...], config_file: str | None) -> dict[str, str]:
    """librdkafka settings from --kafka-config-file, then -X (KEY=@FILE: the value is FILE's content,
    one trailing line break dropped)."""
    security: dict[str, str] = {}
    if config_file:
        for n, line in enumerate(_read(config_file, "--kafka-config-file").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith(("#", "!")):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"line {n} is not key=value", param_hint="--kafka-config-file")
            security[key.strip()] = value.strip()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item.split('=')[0]!r}=...", param_hint="-X")
        if value.startswith("@"):
            value = _read(value[1:], "-X").rstrip("\r\n")
        security[key.strip()] = value
    return security


@click.command("lag")
@click.argument("consumergroup", required=False)
@cluster_options
@click.option("--bootstrap-servers", "-b", envvar="LAGPILOT_BOOTSTRAP_SERVERS",
              help="Kafka bootstrap servers (env LAGPILOT_BOOTSTRAP_SERVERS). Default: the ConsumerGroup's.")
@click.option("--group", "-g", help="Consumer group id. Default: the ConsumerGroup's.")
@click.option("--topic", "-t", "topics", multiple=True,
              help="Topic (repeatable). Default: every topic the group has committed offsets on.")
@click.option("--watch", "-w", is_flag=True, help="Poll every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between polls with --watch/--count.")
@click.option("--count", "-c", type=click.IntRange(min=1), default=None,
              help="Poll this many times, then exit (implies watching).")
@click.option("--window", type=click.FloatRange(min=0), default=None,
              help="Evaluation window in seconds. Default: 10 x --interval.")
@click.option("--reset", type=click.Choice(["earliest", "latest"]), default="earliest", show_default=True,
              help="The group's auto.offset.reset, for partitions without a committed offset.")
@click.option("--timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds to wait for the brokers.")
@click.option("-X", "config", multiple=True, metavar="KEY=VALUE",
              help="librdkafka setting, e.g. -X security.protocol=SASL_SSL (repeatable). KEY=@FILE takes the "
                   "value from FILE, so a password never shows in ps: -X sasl.password=@/run/secrets/kafka.")
@click.option("--kafka-config-file", type=click.Path(dir_okay=False), default=None,
              help="librdkafka settings as key=value lines (read before -X, which wins).")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def lag(consumergroup: str | None, cluster: Cluster, bootstrap_servers: str | None, group: str | None,
        topics: tuple[str, ...], watch: bool, interval: float, count: int | None, window: float | None,
        reset: str, timeout: float, config: tuple[str, ...], kafka_config_file: str | None, output: str) -> None:
    """Per-partition lag of a consumer group: log-start, log-end, committed offset, lag and status.

    Name a ConsumerGroup (with -n, --context, --kubeconfig as kubectl) to read its brokers, group id and
    topic from the cluster, or give --bootstrap-servers and --group to ask Kafka directly.

    \b
    Status (over a sliding window of polls, needs --watch or --count to see more than OK):
      OK     caught up, or consuming and lag not steadily growing
      WARN   committed offset moves but lag grew over the whole window
      STALL  committed offset did not move for the whole window while lag > 0
    (STOP, "no worker running", needs the operator's knowledge of the workers.)

    \b
    Exit codes:
      0  every partition OK
      1  the group is WARN/STALL at the last poll, or committed offsets fell below log-start
         (records deleted by retention before being consumed)
      2  bad usage: bad option, unknown topic or ConsumerGroup, or no --topic and no committed offsets
      3  brokers (or, with a ConsumerGroup named, the cluster) unreachable or not answering in --timeout
    """
    if consumergroup:
        spec = consumergroup_spec(cluster, consumergroup)
        bootstrap_servers = bootstrap_servers or spec.get("bootstrapServers")
        group = group or spec.get("groupId") or f"{cluster.namespace}.{consumergroup}"
        # The spec's topics (a pattern's: those the group has committed offsets on, below).
        topics = topics or tuple(named_topics(spec))
    if not bootstrap_servers or not group:
        raise click.UsageError("name a ConsumerGroup, or give --bootstrap-servers and --group")
    security = kafka_settings(config, kafka_config_file)
    reader = LagReader(bootstrap_servers, security, timeout=timeout)
    polls = count or (None if watch else 1)
    win = LagWindow(window_seconds=window if window is not None else 10 * interval)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    code = EXIT_OK
    try:
        names = list(topics) or reader.committed_topics(group)
        if not names:
            _fail(EXIT_USAGE, f"group {group!r} has no committed offsets; name the topic with --topic")
        done = 0
        while polls is None or done < polls:
            if done:
                time.sleep(interval)
            snapshot = reader.read(group, names, reset)  # type: ignore[arg-type]
            win = add_snapshot(win, snapshot)
            ev = evaluate(win, workers_running=None)
            code = exit_code(snapshot, ev)
            if output == "json":
                click.echo(json.dumps(as_json(snapshot, ev)))
            else:
                if watch and console.is_terminal:
                    console.clear()
                console.print(render_table(snapshot, ev))
                for w in snapshot.warnings:
                    console.print(f"[yellow]warning:[/] {w}")
            done += 1
    except KafkaUnavailable as exc:
        _fail(EXIT_UNREACHABLE, str(exc))
    except TopicNotFound as exc:
        _fail(EXIT_USAGE, str(exc))
    except KeyboardInterrupt:
        pass
    sys.exit(code)
