"""What `lagpilot status` and the demo's live view show of one ConsumerGroup: gathered from the API
(the CR's status, the assignment ConfigMap, worker Leases and pods, Events), the brokers (lag per
partition) and the workers' /metrics (deliveries by outcome), then rendered as tables or JSON."""

from __future__ import annotations

import contextlib
import datetime as dt
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lagpilot.cli.cluster import named_topics
from lagpilot.protocol import (
    ANNOTATION_EPOCH,
    ANNOTATION_OWNED,
    ASSIGNMENT_KEY,
    GROUP,
    LABEL_CG,
    LABEL_REVISION,
    PLURAL,
    VERSION,
    AssignmentDoc,
    PartitionId,
    assignment_configmap_name,
    parse_epoch,
    parse_owned,
    partitions_of,
)


@dataclass
class PartitionRow:
    topic: str
    partition: int
    owner: str = ""
    granted_to: str = ""
    committed: int | None = None
    log_end: int | None = None
    lag: int | None = None
    status: str = ""


@dataclass
class WorkerRow:
    pod: str
    revision: str
    phase: str
    ready: bool
    ip: str
    restarts: int
    owned: list[str] = field(default_factory=list)  # topic:partition
    epoch: int | None = None
    deliveries: dict[str, float] = field(default_factory=dict)


@dataclass
class GroupView:
    name: str
    namespace: str
    topic: str  # the group's topics as the spec names them (a list, or the pattern)
    group_id: str
    phase: str
    workers: int
    ready_workers: int
    partitions: int
    rollout: dict[str, Any]
    lag: dict[str, Any]
    conditions: list[dict[str, Any]]
    assignment_epoch: int | None
    partition_rows: list[PartitionRow]
    worker_rows: list[WorkerRow]
    events: list[dict[str, str]]
    deliveries: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class NotFound(LookupError):
    pass


def _age(ts: str | None) -> str:
    if not ts:
        return ""
    try:
        t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    s = int((dt.datetime.now(dt.UTC) - t).total_seconds())
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def scrape_deliveries(ip: str, port: int = 8080, timeout: float = 1.0) -> dict[str, float]:
    """lagpilot_deliveries_total by outcome from one worker; {} when the worker cannot be reached."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/metrics", timeout=timeout) as resp:
            text = resp.read().decode()
    except Exception:  # unreachable workers just show no figures
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "lagpilot_deliveries":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcome = sample.labels.get("outcome", "?")
                out[outcome] = out.get(outcome, 0.0) + sample.value
    return out


def collect(api: Any, namespace: str, name: str, *, with_lag: bool = True, with_metrics: bool = True,
            max_events: int = 8) -> GroupView:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    try:
        cg = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(f'consumergroup "{name}" not found in namespace "{namespace}"') from exc
        raise
    spec, status = cg.get("spec") or {}, cg.get("status") or {}
    group_id = spec.get("groupId") or f"{namespace}.{name}"
    partitions = int(status.get("partitions") or 0)
    named = named_topics(spec)
    single = named[0] if len(named) == 1 and not spec.get("topicPattern") else None
    topics = {str(t): int(n) for t, n in (status.get("topics") or {}).items() if n is not None}
    if not topics and single is not None and partitions:
        topics = {single: partitions}  # a status written before status.topics existed

    grants: dict[PartitionId, str] = {}
    epoch: int | None = None
    with contextlib.suppress(ApiException, ValueError, KeyError):
        cm = core.read_namespaced_config_map(assignment_configmap_name(name), namespace)
        doc = AssignmentDoc.from_json((cm.data or {}).get(ASSIGNMENT_KEY) or "", single)
        epoch = doc.epoch
        grants = doc.owner_of()

    pods = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_CG}={name}").items
    leases: dict[str, Any] = {}
    with contextlib.suppress(ApiException):
        for lease in client.CoordinationV1Api(api).list_namespaced_lease(namespace).items:
            leases[lease.metadata.name] = lease
    workers: list[WorkerRow] = []
    owner: dict[PartitionId, str] = {}
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        meta, st = pod.metadata, pod.status
        ready = any(c.type == "Ready" and c.status == "True" for c in st.conditions or [])
        restarts = sum(cs.restart_count for cs in st.container_statuses or [])
        owned: list[PartitionId] = []
        lease_epoch = None
        lease = leases.get(meta.name)
        if lease is not None:
            ann = lease.metadata.annotations or {}
            owned = sorted(parse_owned(ann.get(ANNOTATION_OWNED), single) or ())
            lease_epoch = parse_epoch(ann.get(ANNOTATION_EPOCH))
        for p in owned:
            owner[p] = meta.name
        row = WorkerRow(pod=meta.name, revision=(meta.labels or {}).get(LABEL_REVISION, ""),
                        phase=("Terminating" if meta.deletion_timestamp else st.phase or ""), ready=ready,
                        ip=st.pod_ip or "", restarts=restarts, owned=[str(p) for p in owned], epoch=lease_epoch)
        if with_metrics and st.pod_ip:
            row.deliveries = scrape_deliveries(st.pod_ip)
        workers.append(row)

    rows = {p: PartitionRow(topic=p.topic, partition=p.partition, owner=owner.get(p, ""),
                            granted_to=grants.get(p, "")) for p in partitions_of(topics)}
    if with_lag and spec.get("bootstrapServers") and topics:
        with contextlib.suppress(Exception):
            from lagpilot_operator.autoscale.offsets import LagReader

            snap = LagReader(spec["bootstrapServers"], timeout=3.0).read(group_id, sorted(topics))
            for pl in snap.partitions:
                pid = PartitionId(pl.topic, pl.partition)
                row_ = rows.setdefault(pid, PartitionRow(topic=pl.topic, partition=pl.partition))
                row_.committed, row_.log_end, row_.lag = pl.committed, pl.log_end, pl.lag

    events: list[dict[str, str]] = []
    with contextlib.suppress(ApiException):
        names = {name} | {p.metadata.name for p in pods}
        # Endpoints/Service events are left out: in the lab, loopback pod IPs are not valid endpoints.
        evs = [e for e in core.list_namespaced_event(namespace).items
               if (e.involved_object.name in names or (e.involved_object.name or "").startswith(f"{name}-"))
               and e.involved_object.kind not in ("Endpoints", "EndpointSlice", "Service")]
        evs.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        for e in evs[-max_events:]:
            ts = e.last_timestamp or e.event_time or e.metadata.creation_timestamp
            events.append({"age": _age(ts.isoformat() if ts else None), "type": e.type or "",
                           "object": f"{(e.involved_object.kind or '').lower()}/{e.involved_object.name}",
                           "reason": e.reason or "", "message": (e.message or "").strip()})
    totals: dict[str, float] = {}
    for w in workers:
        for k, v in w.deliveries.items():
            totals[k] = totals.get(k, 0.0) + v
    phase = str(status.get("phase") or "")
    if not phase:
        phase = next((c.get("reason", "") for c in status.get("conditions") or []
                      if c.get("type") == "Ready"), "")
    selection = f"pattern {spec['topicPattern']}" if spec.get("topicPattern") else ",".join(named)
    return GroupView(name=name, namespace=namespace, topic=selection, group_id=group_id, phase=phase,
                     workers=int(status.get("workers") or 0), ready_workers=int(status.get("readyWorkers") or 0),
                     partitions=partitions, rollout=dict(status.get("rollout") or {}),
                     lag=dict(status.get("lag") or {}), conditions=list(status.get("conditions") or []),
                     assignment_epoch=epoch, partition_rows=[rows[p] for p in sorted(rows)],
                     worker_rows=workers, events=events, deliveries=totals)


def list_names(api: Any, namespace: str | None) -> list[tuple[str, str]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    if namespace:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    else:
        items = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in items)


def _status_style(value: str) -> str:
    return {"True": "green", "False": "dim", "OK": "green", "WARN": "yellow", "STALL": "red",
            "STOP": "red"}.get(value, "")


def _replay_line(rollout: dict[str, Any]) -> str:
    """The last replay, while it holds partitions or was refused (a finished one is in status and Events)."""
    replay = rollout.get("replay") or {}
    if replay.get("phase") not in ("Holding", "Refused"):
        return ""
    return f"\nreplay {replay.get('id', '?')} {replay['phase']}: {replay.get('message', '')}"


def render(view: GroupView) -> Group:
    head = Text.assemble(
        (f"{view.namespace}/{view.name}", "bold"),
        f"  {'topics' if ',' in view.topic or view.topic.startswith('pattern') else 'topic'} {view.topic}"
        f"  group {view.group_id}\n",
        f"phase {view.phase or '?'}  workers {view.ready_workers}/{view.workers} ready  "
        f"partitions {view.partitions}  epoch {view.assignment_epoch if view.assignment_epoch is not None else '-'}"
        f"  rollout {view.rollout.get('phase', 'Stable')}"
        + (f" ({view.rollout.get('message')})" if view.rollout.get("message") else "")
        + _replay_line(view.rollout)
        + f"\nlag total {view.lag.get('total', '-')}  max partition {view.lag.get('maxPartition', '-')}  "
          f"status {view.lag.get('status', '-')}  deliveries "
        + (", ".join(f"{k} {int(v)}" for k, v in sorted(view.deliveries.items())) or "-"))

    conds = Table(title="conditions", title_justify="left", expand=False)
    for col in ("TYPE", "STATUS", "REASON", "MESSAGE", "AGE"):
        conds.add_column(col)
    for c in view.conditions:
        conds.add_row(c.get("type", ""), Text(c.get("status", ""), style=_status_style(c.get("status", ""))),
                      c.get("reason", ""), (c.get("message") or "")[:80], _age(c.get("lastTransitionTime")))

    parts = Table(title="partitions", title_justify="left")
    for col, j in (("TOPIC", "left"), ("P", "right"), ("OWNER", "left"), ("GRANTED", "left"), ("COMMITTED", "right"),
                   ("END", "right"), ("LAG", "right"), ("STATUS", "left")):
        parts.add_column(col, justify=j)  # type: ignore[arg-type]
    for r in view.partition_rows:
        moving = r.granted_to and r.owner != r.granted_to
        parts.add_row(r.topic, str(r.partition), r.owner or "-",
                      Text(r.granted_to or "-", style="yellow" if moving else ""),
                      "-" if r.committed is None else str(r.committed), "-" if r.log_end is None else str(r.log_end),
                      "-" if r.lag is None else str(r.lag), Text(r.status, style=_status_style(r.status)))

    workers = Table(title="workers", title_justify="left")
    for col, j in (("POD", "left"), ("REV", "left"), ("PHASE", "left"), ("READY", "left"), ("IP", "left"),
                   ("RESTARTS", "right"), ("OWNS", "left"), ("OK", "right"), ("RETRY", "right"),
                   ("DLQ", "right")):
        workers.add_column(col, justify=j)  # type: ignore[arg-type]
    for w in view.worker_rows:
        workers.add_row(w.pod, w.revision, w.phase, Text("yes" if w.ready else "no",
                                                         style="green" if w.ready else "red"),
                        w.ip, str(w.restarts), ",".join(map(str, w.owned)) or "-",
                        str(int(w.deliveries.get("success", 0))), str(int(w.deliveries.get("retry", 0))),
                        str(int(w.deliveries.get("dead_letter", 0))))

    events = Table(title="recent events", title_justify="left")
    for col in ("AGE", "TYPE", "OBJECT", "REASON", "MESSAGE"):
        events.add_column(col)
    for e in view.events:
        events.add_row(e["age"], Text(e["type"], style="yellow" if e["type"] == "Warning" else ""), e["object"],
                       e["reason"], e["message"][:100])
    return Group(head, conds, parts, workers, events)
