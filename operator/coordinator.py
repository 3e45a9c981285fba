"""The partition coordinator's I/O shell: read the assignment ConfigMap, the workers' Leases and pods of one
ConsumerGroup; build the observed state; call the pure planners (``rollout.next_rollout_step`` then
``assignment.plan_assignment``); write the ConfigMap with optimistic concurrency; scale the per-revision
Deployments; and hand back status.rollout / status.assignment, Events and a Degraded reason for the
operator's reconcile to publish. Nothing is remembered between calls: everything comes from the API.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from lagpilot.operator import plan as planner
from lagpilot.operator.assignment import (
    CONFIGMAP_KEY,
    AssignmentDoc,
    Observed,
    WorkerReport,
    WorkerView,
    confirmed_owners,
    plan_assignment,
)
from lagpilot.operator.kube import Kube
from lagpilot.operator.rollout import (
    CANARY,
    DELETION_COST,
    CanaryFigures,
    Commands,
    Event,
    RolloutInput,
    lag_growth,
    next_rollout_step,
)
from lagpilot.operator.spec import ConsumerGroupSpec

log = logging.getLogger("lagpilot.operator.coordinator")

ANNOTATION_OWNED = "lagpilot.io/owned"
ANNOTATION_EPOCH = "lagpilot.io/epoch"
LABEL_CG = planner.LABEL_CG
LABEL_REVISION = planner.LABEL_REVISION

FiguresFn = Callable[[list[dict[str, Any]], list[int]], "CanaryFigures | None"]
# The group's lag per partition now (None when the brokers cannot tell): for canary lag growth.
LagFn = Callable[[], "Mapping[int, int] | None"]


@dataclass
class CoordinatorResult:
    rollout: dict[str, Any]  # -> status.rollout
    assignment: dict[str, Any]  # -> status.assignment
    events: list[Event] = field(default_factory=list)
    degraded: tuple[str, str] | None = None  # (reason, message) -> Degraded=True
    actions: list[str] = field(default_factory=list)
    deployments: dict[str, int] | None = None  # revision -> replicas, as applied
    settled: bool = False  # every partition owned by its desired owner

    def status_patch(self, previous_status: Mapping[str, Any]) -> dict[str, Any]:
        """``{"rollout": ..., "assignment": ...}`` for a JSON merge-patch of the CR status: keys that were
        there before and are gone now are sent as null (a merge-patch would otherwise keep them)."""
        return {"rollout": merge_patch(previous_status.get("rollout"), self.rollout),
                "assignment": merge_patch(previous_status.get("assignment"), self.assignment)}


def merge_patch(old: Any, new: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(new)
    if isinstance(old, Mapping):
        for key in old:
            if key not in new:
                out[key] = None
    return out


# ---- pure helpers (unit-tested) ----------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        text = str(value).replace("Z", "+00:00")
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_owned(text: str | None) -> frozenset[int] | None:
    if text is None:
        return None
    try:
        return frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        return None


def lease_state(lease: Mapping[str, Any], now: float) -> tuple[WorkerReport | None, bool]:
    """(report, expired) from a Lease as a dict. A Lease with unreadable annotations gives no report (so it
    never confirms a release); one without renewTime counts as expired."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    ann = meta.get("annotations") or {}
    owned = parse_owned(ann.get(ANNOTATION_OWNED))
    try:
        epoch = int(ann.get(ANNOTATION_EPOCH, ""))
    except ValueError:
        epoch = None  # type: ignore[assignment]
    report = WorkerReport(owned, epoch) if owned is not None and epoch is not None else None
    renewed = parse_time(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 0)
    expired = renewed is None or renewed + duration < now
    return report, expired


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def observe(doc: AssignmentDoc | None, pods: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]],
            partitions: int, now: float) -> Observed:
    """Observed state from raw objects. A name known only from the document (no pod, no Lease) is gone."""
    by_pod = {p["metadata"]["name"]: p for p in pods}
    by_lease = {lease["metadata"]["name"]: lease for lease in leases}
    views: dict[str, WorkerView] = {}
    for name in sorted(set(by_pod) | set(by_lease)):
        pod = by_pod.get(name)
        lease = by_lease.get(name)
        report, expired = lease_state(lease, now) if lease is not None else (None, False)
        gone = expired if lease is not None else pod is None
        revision = ""
        ready = terminating = False
        if pod is not None:
            meta = pod.get("metadata") or {}
            revision = (meta.get("labels") or {}).get(LABEL_REVISION, "")
            ready = pod_ready(pod)
            phase = (pod.get("status") or {}).get("phase")
            terminating = bool(meta.get("deletionTimestamp")) or phase in ("Succeeded", "Failed")
        else:
            terminating = True  # a running process without a pod object: let it drain, give it nothing
        views[name] = WorkerView(name, gone=gone, report=report, revision=revision, ready=ready,
                                 terminating=terminating)
    return Observed(doc, views, partitions)


def assignment_status(observed: Observed, doc: AssignmentDoc) -> dict[str, Any]:
    confirmed = confirmed_owners(Observed(doc, observed.workers, observed.partitions))
    owners = doc.owner_of()
    return {
        "epoch": doc.epoch,
        "owners": [owners.get(p) for p in range(observed.partitions)],  # by partition; null = ungranted
        "confirmed": len(confirmed),
        "moving": sorted(doc.revoked),
        "unowned": sorted(p for p in range(observed.partitions) if p not in confirmed),
    }


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def figures_from_metrics(texts: list[str], partitions: list[int]) -> CanaryFigures | None:
    """Canary figures from the canary workers' /metrics pages, restricted to the canary partitions:
    failure rate of delivery attempts (retry + dead_letter + error over all), p99 attempt latency from the
    histogram, lag growth 0 (not measured here). The canary workers are new pods that have only ever held
    canary partitions, so their counters cover the canary window."""
    wanted = {str(p) for p in partitions}
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for text in texts:
        for line in text.splitlines():
            m = _SAMPLE.match(line)
            if not m:
                continue
            labels = dict(_LABEL.findall(m.group("labels") or ""))
            if labels.get("partition") not in wanted:
                continue
            try:
                value = float(m.group("value"))
            except ValueError:
                continue
            if m.group("name") == "lagpilot_deliveries_total":
                outcomes[labels.get("outcome", "")] = outcomes.get(labels.get("outcome", ""), 0.0) + value
            elif m.group("name") == "lagpilot_delivery_seconds_bucket":
                le = labels.get("le", "+Inf")
                bound = float("inf") if le == "+Inf" else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
    total = sum(outcomes.values())
    if total <= 0:
        return None
    failed = sum(v for k, v in outcomes.items() if k in ("retry", "dead_letter", "error"))
    p99 = 0.0
    if buckets:
        count = max(buckets.values())
        for bound in sorted(buckets):
            if buckets[bound] >= 0.99 * count:
                p99 = bound * 1000.0 if bound != float("inf") else max(
                    (b for b in buckets if b != float("inf")), default=0.0) * 1000.0
                break
    return CanaryFigures(deliveries=int(total), error_rate=failed / total, p99_ms=p99, lag_growth=0.0)


def scrape_figures(pods: list[dict[str, Any]], partitions: list[int], port: int = planner.HTTP_PORT,
                   timeout: float = 2.0) -> CanaryFigures | None:
    import requests

    texts = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        try:
            r = requests.get(f"http://{ip}:{port}/metrics", timeout=timeout)
            if r.ok:
                texts.append(r.text)
        except requests.RequestException as exc:
            log.info("canary metrics from %s: %s", pod["metadata"]["name"], exc)
    return figures_from_metrics(texts, partitions)


# ---- the shell ---------------------------------------------------------------------------------------


def _configmap(spec: ConsumerGroupSpec, owner: planner.Owner, doc: AssignmentDoc) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": spec.assignment_configmap, "namespace": spec.namespace,
                         "labels": planner.group_labels(spec.name),
                         "ownerReferences": [owner.reference()]},
            "data": {CONFIGMAP_KEY: doc.to_json()}}


def _write_doc(core: client.CoreV1Api, spec: ConsumerGroupSpec, owner: planner.Owner,
               cm: dict[str, Any] | None, doc: AssignmentDoc) -> bool:
    """Create or replace (only over the version we read: a concurrent writer makes this round a no-op,
    the next reconcile starts from what it wrote)."""
    body = _configmap(spec, owner, doc)
    try:
        if cm is None:
            core.create_namespaced_config_map(spec.namespace, body)
        else:
            body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
            body["metadata"]["labels"] = {**(cm["metadata"].get("labels") or {}), **body["metadata"]["labels"]}
            core.replace_namespaced_config_map(spec.assignment_configmap, spec.namespace, body)
        return True
    except ApiException as exc:
        if exc.status == 409:
            log.info("%s/%s changed under us; next round", spec.namespace, spec.assignment_configmap)
            return False
        raise


def apply_deployments(kube: Kube, spec: ConsumerGroupSpec, owner: planner.Owner, target: str,
                      deployments: Mapping[str, int], existing: list[dict[str, Any]], fence_timeout: int
                      ) -> list[str]:
    """Make the per-revision Deployments match: the target revision from the spec (server-side apply),
    older revisions only scaled (their template is what they were created with) or deleted when absent."""
    from lagpilot.operator.diff import differences

    actions: list[str] = []
    apps = client.AppsV1Api(kube.api)
    by_rev = {str((d["metadata"].get("labels") or {}).get(LABEL_REVISION) or ""): d for d in existing}
    if target in deployments:
        want = planner.deployment(spec, owner, deployments[target], fence_timeout)
        have = by_rev.get(target)
        if have is None or differences(want, have):
            kube.apply(want)
            actions.append(f"{'created' if have is None else 'updated'} Deployment {want['metadata']['name']}")
    for rev, dep in by_rev.items():
        if rev == target and target in deployments:
            continue  # applied above; an aborted target revision is absent and goes like any other
        name = dep["metadata"]["name"]
        if rev not in deployments:
            if kube.delete("Deployment", spec.namespace, name):
                actions.append(f"deleted Deployment {name} (revision {rev} no longer runs)")
        elif int((dep.get("spec") or {}).get("replicas") or 0) != deployments[rev]:
            apps.patch_namespaced_deployment(name, spec.namespace, {"spec": {"replicas": deployments[rev]}})
            actions.append(f"scaled Deployment {name} to {deployments[rev]}")
    return actions


def reconcile_partitions(kube: Kube, body: Mapping[str, Any], spec: ConsumerGroupSpec, target_revision: str,
                         workers: int, partitions: int, now: float, fence_timeout: int,
                         figures_fn: FiguresFn | None = None, manage_deployments: bool = True,
                         lag_fn: LagFn | None = None) -> CoordinatorResult:
    """One coordinator round for one ConsumerGroup. ``partitions``: the topic's partition count (from the
    broker). ``now``: unix seconds. Returns what the reconcile must publish; the ConfigMap, pod deletion
    costs, stale Leases and (with ``manage_deployments``) the Deployments are written here."""
    meta = body.get("metadata") or {}
    owner = planner.Owner(str(meta["name"]), str(meta["namespace"]), str(meta["uid"]))
    ns = spec.namespace
    core = client.CoreV1Api(kube.api)
    coord = client.CoordinationV1Api(kube.api)
    selector = f"{LABEL_CG}={spec.name}"

    cm = kube.get("ConfigMap", ns, spec.assignment_configmap)
    doc: AssignmentDoc | None = None
    if cm is not None:
        try:
            doc = AssignmentDoc.from_json((cm.get("data") or {}).get(CONFIGMAP_KEY) or "")
        except ValueError as exc:
            log.warning("%s/%s: %s; treating as missing", ns, spec.assignment_configmap, exc)
    pods = kube.list("Pod", ns, selector)
    lease_objs = coord.list_namespaced_lease(ns, label_selector=selector).items
    leases = [kube.api.sanitize_for_serialization(lease) for lease in lease_objs]
    observed = observe(doc, pods, leases, partitions, now)

    prev = dict(((body.get("status") or {}).get("rollout")) or {})
    commands = Commands.from_annotations(meta.get("annotations"), prev)
    figures = None
    if prev.get("phase") == CANARY and prev.get("newRevision"):
        canary_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_REVISION)
                       == prev["newRevision"]]
        figures = (figures_fn or scrape_figures)(canary_pods, list(prev.get("canaryPartitions") or []))
    watch_lag = bool(spec.rollout.canary.max_lag_growth) and lag_fn is not None
    lag_now: Mapping[int, int] | None = None
    if watch_lag and prev.get("phase") == CANARY and prev.get("lagBaseline") and lag_fn is not None:
        lag_now = lag_fn()
        if lag_now is not None:
            base = {int(p): int(v) for p, v in dict(prev["lagBaseline"]).items()}
            growth = lag_growth(base, lag_now, list(prev.get("canaryPartitions") or []))
            figures = (replace(figures, lag_growth=growth) if figures is not None
                       else CanaryFigures(deliveries=0, error_rate=0.0, p99_ms=0.0, lag_growth=growth))
    step = next_rollout_step(RolloutInput(spec.rollout, target_revision, workers, observed, prev,
                                          paused=spec.paused, commands=commands, figures=figures, now=now))
    if watch_lag and step.status.get("phase") == CANARY and "analysisSince" in step.status:
        if "lagBaseline" not in step.status and lag_fn is not None:
            lag_now = lag_now if lag_now is not None else lag_fn()
            if lag_now is not None:  # the analysis window's starting point, kept in status for restarts
                step.status["lagBaseline"] = {str(p): int(v) for p, v in sorted(lag_now.items())}
    else:
        step.status.pop("lagBaseline", None)
    new_doc = plan_assignment(observed, step.desired)
    result = CoordinatorResult(rollout=step.status, assignment={}, events=list(step.events),
                               degraded=step.degraded, deployments=step.deployments)
    if cm is None or doc is None or new_doc != doc:
        if _write_doc(core, spec, owner, cm, new_doc):
            result.actions.append(f"assignment epoch {new_doc.epoch}: "
                                  f"{ {w: sorted(ps) for w, ps in sorted(new_doc.grants.items())} }")
            if doc is not None and new_doc.epoch != doc.epoch:
                result.events.append(("Normal", "AssignmentChanged", _describe(doc, new_doc)))
        else:
            new_doc = doc or new_doc
    result.assignment = assignment_status(observed, new_doc)
    result.settled = not result.assignment["unowned"] and not new_doc.revoked

    if manage_deployments and step.deployments is not None:
        existing = [d for d in kube.list("Deployment", ns, selector)
                    if any(r.get("uid") == owner.uid for r in d["metadata"].get("ownerReferences") or [])]
        result.actions += apply_deployments(kube, spec, owner, target_revision, step.deployments, existing,
                                            fence_timeout)
    for pod in pods:
        name = pod["metadata"]["name"]
        want = step.deletion_cost.get(name)
        have = (pod["metadata"].get("annotations") or {}).get(DELETION_COST)
        if want is not None and have != str(want) and not pod["metadata"].get("deletionTimestamp"):
            try:
                core.patch_namespaced_pod(name, ns, {"metadata": {"annotations": {DELETION_COST: str(want)}}})
            except ApiException as exc:
                if exc.status != 404:
                    raise
    pod_names = {p["metadata"]["name"] for p in pods}
    referenced = set(new_doc.grants) | {r.worker for r in new_doc.revoked.values()}
    for lease in leases:
        name = lease["metadata"]["name"]
        view = observed.workers.get(name)
        if name not in pod_names and name not in referenced and view is not None and view.gone:
            try:
                coord.delete_namespaced_lease(name, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise
    return result


def _describe(old: AssignmentDoc, new: AssignmentDoc) -> str:
    before, after = old.owner_of(), new.owner_of()
    granted = sorted(p for p, w in after.items() if before.get(p) != w)
    revoked = sorted(p for p, w in before.items() if after.get(p) != w)
    parts = [f"epoch {new.epoch}"]
    if revoked:
        parts.append(f"revoked {revoked}")
    if granted:
        parts.append("granted " + ", ".join(f"{p}->{after[p]}" for p in granted))
    return "; ".join(parts)
