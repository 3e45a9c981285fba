"""`lagpilot replay NAME --to-checkpoint | --to-time T | --to-offset P:O ...`: move a group's committed
offsets back safely. The CLI only asks (the ``lagpilot.io/replay`` annotation, a JSON request with a fresh
id); the operator holds the partitions through the hand-off until no worker owns them, sets the offsets with
the admin API, grants them again, and reports in status.rollout.replay, which this command follows and
prints as a table. So the command needs no access to the brokers, and nothing can consume the partitions
while their offsets move.

Exit codes: 0 done; 1 refused (a rollout runs, no checkpoint, ...) or not done in ``--timeout``; 2 bad
usage; 3 the ConsumerGroup does not exist; 4 the cluster cannot be reached.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lagpilot.cli.cluster import (
    EXIT_NOT_FOUND,
    EXIT_NOT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Cluster,
    cluster_options,
    fail,
)
from lagpilot.protocol import ANNOTATION_REPLAY, GROUP, PLURAL, VERSION, parse_partition_id
from lagpilot.timefmt import parse_rfc3339

ACTIVE_ROLLOUT_PHASES = {"Progressing", "Canary", "Promoting", "Aborted"}

err = Console(stderr=True)


def build_request(to_checkpoint: bool, to_time: str | None, to_offset: tuple[str, ...],
                  partitions: str | None) -> dict[str, Any]:
    """The annotation's request, or a click.UsageError saying what is wrong."""
    chosen = [bool(to_checkpoint), to_time is not None, bool(to_offset)]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --to-checkpoint, --to-time, --to-offset")
    request: dict[str, Any] = {"id": f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"}
    if to_checkpoint:
        request["to"] = "checkpoint"
    elif to_time is not None:
        if parse_rfc3339(to_time) is None:
            raise click.UsageError(f"--to-time {to_time!r}: an RFC 3339 time such as 2026-01-31T00:00:00Z")
        request.update(to="time", time=to_time)
    else:
        offsets: dict[str, int] = {}
        for item in to_offset:
            p, sep, o = item.rpartition(":")
            try:
                offsets[str(_partition(p))] = int(o) if sep and o.isdigit() else int("x")
            except ValueError:
                raise click.UsageError(f"--to-offset {item!r}: [TOPIC:]PARTITION:OFFSET, e.g. 3:1200 or "
                                       f"orders:3:1200") from None
        request.update(to="offsets", offsets=offsets)
    if partitions:
        if to_offset:
            raise click.UsageError("--partitions goes with --to-checkpoint or --to-time (--to-offset names them)")
        try:
            request["partitions"] = sorted({_partition(p) for p in partitions.split(",") if p.strip()},
                                           key=lambda p: _sort_key(str(p)))
        except ValueError:
            raise click.UsageError(f"--partitions {partitions!r}: partitions such as 0,3 or orders:0,payments:3"
                                   ) from None
    return request


def _partition(text: str) -> int | str:
    """``3`` (the group's only topic) or ``orders:3``, checked and normalised; the operator resolves it."""
    text = text.strip()
    if ":" in text:
        return str(parse_partition_id(text))
    number = int(text)
    if number < 0:
        raise ValueError(text)
    return number


def _sort_key(name: str) -> tuple[str, int]:
    topic, _, number = str(name).rpartition(":")
    return (topic, int(number) if number.isdigit() else -1)


def moved_table(replay: dict[str, Any]) -> Table:
    table = Table(title="offsets moved", title_justify="left")
    for col in ("partition", "from", "to", "records again"):
        table.add_column(col, justify="right")
    for p, move in sorted((replay.get("moved") or {}).items(), key=lambda kv: _sort_key(kv[0])):
        before, after = move.get("from"), move.get("to")
        again = "" if before is None or after is None else str(max(0, before - after))
        table.add_row(str(p), "-" if before is None else str(before), str(after), again)
    return table


@click.command()
@click.argument("name")
@cluster_options
@click.option("--to-checkpoint", is_flag=True,
              help="the offsets of status.rollout.checkpoint (the last rollout's start)")
@click.option("--to-time", metavar="RFC3339", help="the first record at or after this time, per partition")
@click.option("--to-offset", metavar="[T:]P:O", multiple=True,
              help="partition P (of topic T; the group's only topic when left out) to offset O (repeat for more)")
@click.option("--partitions", metavar="LIST", help="only these partitions, e.g. 0,3 or orders:0,payments:3 "
                                                    "(default: all)")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for the operator")
@click.option("--no-wait", is_flag=True, help="ask and return; `lagpilot status` shows the outcome")
def replay(name: str, cluster: Cluster, to_checkpoint: bool, to_time: str | None, to_offset: tuple[str, ...],
           partitions: str | None, timeout: float, no_wait: bool) -> None:
    """Rewind a ConsumerGroup: its partitions are held (no worker owns them), their committed offsets are
    set, and they are granted again; records after the new offsets are delivered again. Refused while a
    rollout runs."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        request = build_request(to_checkpoint, to_time, to_offset, partitions)
    except click.UsageError as exc:
        fail(EXIT_USAGE, exc.format_message())
    api, namespace = cluster.connect(), cluster.namespace
    custom = client.CustomObjectsApi(api)

    def read() -> dict[str, Any]:
        try:
            return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                fail(EXIT_NOT_FOUND, f'consumergroup "{name}" not found in namespace "{namespace}"')
            fail(EXIT_UNREACHABLE, f"cannot read consumergroup: {exc.reason}")

    rollout = (read().get("status") or {}).get("rollout") or {}
    phase = rollout.get("phase", "Stable")
    if phase in ACTIVE_ROLLOUT_PHASES:
        fail(EXIT_NOT_OK, f'{namespace}/{name}: a rollout is running (phase "{phase}"); replay after it ends')
    if to_checkpoint and not (rollout.get("checkpoint") or {}).get("offsets"):
        fail(EXIT_NOT_OK, f"{namespace}/{name} has no checkpoint yet (one is taken when a rollout starts)")
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": {
        ANNOTATION_REPLAY: json.dumps(request, sort_keys=True)}}})
    err.print(f"replay {request['id']} requested for {namespace}/{name}")
    if no_wait:
        return
    deadline = time.monotonic() + timeout
    last = ""
    with err.status("waiting for the operator") as spinner:
        while time.monotonic() < deadline:
            state = ((read().get("status") or {}).get("rollout") or {}).get("replay") or {}
            if state.get("id") == request["id"]:
                message = f"{state.get('phase')}: {state.get('message', '')}"
                if message != last:
                    spinner.update(message)
                    err.print(message)
                    last = message
                if state.get("phase") == "Done":
                    Console().print(moved_table(state))
                    return
                if state.get("phase") == "Refused":
                    fail(EXIT_NOT_OK, f"replay refused: {state.get('message', '')}")
            time.sleep(1.0)
    fail(EXIT_NOT_OK, f"replay {request['id']} not done after {timeout:.0f} s (last: {last or 'not picked up'}); "
                      "`lagpilot status` shows its progress")


COMMANDS = [replay]
