"""The hand-off's I/O shell: read the assignment ConfigMap, the workers' Leases and pods of one
ConsumerGroup; run one round of the pure planners (``plan_round``: ``observe`` -> ``next_rollout_step`` ->
``plan_assignment``); write the ConfigMap with optimistic concurrency; scale the per-revision Deployments;
and hand back status.rollout / status.assignment, Events and a Degraded reason for the operator's
reconcile to publish. Nothing is remembered between calls: everything comes from the API.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from lagpilot.protocol import (
    ANNOTATION_DELETION_COST,
    ANNOTATION_REPLAY,
    ASSIGNMENT_KEY,
    LABEL_CG,
    LABEL_REVISION,
    AssignmentDoc,
    PartitionId,
    format_partitions,
    lease_duration_for,
)
from lagpilot_operator.handoff.observe import LeaseClock, assignment_status, figures_from_metrics, observe
from lagpilot_operator.handoff.planner import Observed, plan_assignment
from lagpilot_operator.handoff.replay import (
    PositionsFn,
    ReplayRequest,
    ReplayStep,
    plan_replay,
    replay_request,
    replayed,
    take_checkpoint,
    targets,
)
from lagpilot_operator.handoff.rollout import (
    CANARY,
    CanaryFigures,
    Commands,
    Event,
    RolloutInput,
    RolloutStep,
    keep_lag_baseline,
    needs_backlog,
    needs_lag_baseline,
    needs_lag_now,
    next_rollout_step,
    status_partitions,
    with_backlog,
    with_lag_growth,
)
from lagpilot_operator.kube import Kube
from lagpilot_operator.resource.patch import merge_patch
from lagpilot_operator.resource.spec import ConsumerGroupSpec, RolloutSpec
from lagpilot_operator.workload import plan as planner
from lagpilot_operator.workload.diff import differences

if TYPE_CHECKING:
    from lagpilot_operator.group_offsets import GroupOffsets

log = logging.getLogger("lagpilot.operator.handoff")

# The Lease renewal period workers run with (lagpilot-consumer's default; the operator does not change it).
LEASE_RENEW_SECONDS = 5.0

# One LeaseClock per ConsumerGroup: the operator's own record of when it saw each worker's Lease change.
_clocks: dict[tuple[str, str], LeaseClock] = {}


def lease_clock(namespace: str, name: str) -> LeaseClock:
    return _clocks.setdefault((namespace, name), LeaseClock())


def forget_group(namespace: str, name: str) -> None:
    """The ConsumerGroup is gone: drop what was remembered about its workers."""
    _clocks.pop((namespace, name), None)


FiguresFn = Callable[[list[dict[str, Any]], list[PartitionId]], "CanaryFigures | None"]
# The group's lag per partition now (None when the brokers cannot tell): for canary lag growth.
LagFn = Callable[[], "Mapping[PartitionId, int] | None"]


@dataclass
class HandoffResult:
    rollout: dict[str, Any]  # -> status.rollout
    assignment: dict[str, Any]  # -> status.assignment
    events: list[Event] = field(default_factory=list)
    degraded: tuple[str, str] | None = None  # (reason, message) -> Degraded=True
    actions: list[str] = field(default_factory=list)
    deployments: dict[str, int] | None = None  # revision -> replicas, as applied
    settled: bool = False  # every partition owned by its desired owner

    def status_patch(self, previous_status: Mapping[str, Any]) -> dict[str, Any]:
        """``{"rollout": ..., "assignment": ...}`` for a JSON merge-patch of the CR status: keys that were
        there before and are gone now are sent as null (a merge-patch would otherwise keep them) -- also
        inside ``assignment.owners``, a map by ``topic:partition`` that loses a key when a partition is
        revoked or its topic goes away."""
        before = previous_status.get("assignment")
        assignment = merge_patch(before, self.assignment)
        if isinstance(self.assignment.get("owners"), Mapping):
            old_owners = before.get("owners") if isinstance(before, Mapping) else None
            assignment["owners"] = merge_patch(old_owners, self.assignment["owners"])
        return {"rollout": merge_patch(previous_status.get("rollout"), self.rollout), "assignment": assignment}


@dataclass(frozen=True)
class Round:
    """One round's decision: what was observed, the rollout step, and the next assignment document."""

    observed: Observed
    step: RolloutStep
    doc: AssignmentDoc
    replay: ReplayStep | None = None


def plan_round(rollout: RolloutSpec, paused: bool, target_revision: str, workers: int, topics: Mapping[str, int],
               doc: AssignmentDoc | None, pods: Sequence[Mapping[str, Any]], leases: Sequence[Mapping[str, Any]],
               previous: Mapping[str, Any], commands: Commands, figures: CanaryFigures | None, now: float,
               clock: LeaseClock, lease_duration: float, lag_fn: LagFn | None = None,
               published_epoch: int | None = None, replay_request: ReplayRequest | None = None,
               positions_fn: PositionsFn | None = None, default_topic: str | None = None) -> Round:
    """Observed objects -> the next rollout step and assignment document. ``topics``: every topic the group
    reads now, with its partition count (a topic gone from it has its partitions revoked, a new one's are
    granted). ``default_topic``: the group's only topic (None with several), so that Leases and status
    written with bare partition numbers by the previous version are understood. ``previous`` is status.rollout;
    ``now`` (wall clock) times the rollout; ``clock`` times the Leases (the operator's own observations);
    ``lag_fn`` is asked for the group's lag only while a canary's lag growth is judged or its baseline is
    taken (None: lag growth is not judged). ``published_epoch``: the epoch last published in
    status.assignment (so a lost document is told from a new group's first one). ``replay_request``: a
    ``lagpilot replay`` not handled yet; ``positions_fn`` reads the checkpoint when a rollout starts."""
    observed = observe(doc, pods, leases, topics, clock, lease_duration, published_epoch, default_topic)
    lag_now: Mapping[PartitionId, int] | None = None
    if lag_fn is not None and needs_lag_now(rollout, previous):
        lag_now = lag_fn()
        if lag_now is not None:
            figures = with_lag_growth(previous, figures, lag_now, default_topic)
    if lag_fn is not None and needs_backlog(previous, figures):
        lag_now = lag_now if lag_now is not None else lag_fn()
        figures = with_backlog(previous, figures, lag_now, default_topic)
    step = next_rollout_step(RolloutInput(rollout, target_revision, workers, observed, dict(previous),
                                          paused=paused, commands=commands, figures=figures, now=now,
                                          default_topic=default_topic))
    if lag_fn is None:
        step.status.pop("lagBaseline", None)
    else:
        if lag_now is None and needs_lag_baseline(rollout, step.status):
            lag_now = lag_fn()
        keep_lag_baseline(rollout, step.status, lag_now)
    checkpoint = take_checkpoint(step, previous, positions_fn, now)
    replay = plan_replay(step, previous, observed, rollout, paused or commands.pause, checkpoint, replay_request,
                         now, default_topic)
    # A new incarnation is used only when there is no readable document to continue from.
    return Round(observed, step, plan_assignment(observed, step.desired, uuid.uuid4().hex[:12]), replay)


def rewind(result_status: dict[str, Any], rp: ReplayStep, offsets: Any, now: float,
           default_topic: str | None = None) -> list[Event]:
    """Move the held partitions' committed offsets (nothing owns them: rp.rewind is set only then) and mark
    the replay done; if the brokers fail, it stays Holding and is tried again next round. ``offsets``: a
    ``GroupOffsets`` (keyed by PartitionId)."""
    from lagpilot_operator.group_offsets import GroupOffsetsError

    request = rp.rewind
    assert request is not None
    replay = dict(result_status.get("replay") or {})
    try:
        at_time = offsets.at_time(rp.hold, request.time) if request.to == "time" and request.time else None
        goal = targets(request, rp.hold, result_status.get("checkpoint"), at_time, default_topic)
        before = offsets.committed(goal)
        offsets.commit(goal)
    except GroupOffsetsError as exc:
        result_status["replay"] = {**replay, "message": f"offsets not moved yet (retrying): {exc}"}
        return [("Warning", "ReplayRetrying", f"replay {request.id}: {exc}")]
    done, event = replayed(replay, {p: (before.get(p), o) for p, o in goal.items()}, now)
    result_status["replay"] = done
    if not request.internal:
        result_status["handled"] = {**(result_status.get("handled") or {}), ANNOTATION_REPLAY: request.id}
    return [event]


def read_assignment(kube: Kube, namespace: str, name: str, default_topic: str | None = None
                    ) -> tuple[dict[str, Any] | None, AssignmentDoc | None]:
    """The assignment ConfigMap and its document (None when missing or unreadable). ``default_topic``: the
    group's only topic, so a format-1 document (bare numbers, written before an upgrade) is continued
    rather than rebuilt; with several topics it is unreadable and rebuilt (a new incarnation)."""
    cm = kube.get("ConfigMap", namespace, name)
    doc: AssignmentDoc | None = None
    if cm is not None:
        try:
            doc = AssignmentDoc.from_json((cm.get("data") or {}).get(ASSIGNMENT_KEY) or "", default_topic)
        except ValueError as exc:
            log.warning("%s/%s: %s; treating as missing", namespace, name, exc)
    return cm, doc


def write_assignment(core: client.CoreV1Api, namespace: str, cm: dict[str, Any] | None,
                     desired: dict[str, Any]) -> bool:
    """Create the ConfigMap ``desired`` (planner.assignment_configmap) or replace it, only over the version
    we read: a concurrent writer makes this round a no-op, the next one starts from what it wrote."""
    body = dict(desired, metadata=dict(desired["metadata"]))
    name = body["metadata"]["name"]
    try:
        if cm is None:
            core.create_namespaced_config_map(namespace, body)
        else:
            body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
            body["metadata"]["labels"] = {**(cm["metadata"].get("labels") or {}),
                                          **(body["metadata"].get("labels") or {})}
            core.replace_namespaced_config_map(name, namespace, body)
        return True
    except ApiException as exc:
        if exc.status == 409:
            log.info("%s/%s changed under us; next round", namespace, name)
            return False
        raise


def scrape_figures(pods: list[dict[str, Any]], partitions: list[PartitionId], port: int = planner.HTTP_PORT,
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


def apply_deployments(kube: Kube, spec: ConsumerGroupSpec, owner: planner.Owner, target: str,
                      deployments: Mapping[str, int], existing: list[dict[str, Any]], fence_timeout: int
                      ) -> list[str]:
    """Make the per-revision Deployments match: the target revision from the spec (server-side apply),
    older revisions only scaled (their template is what they were created with) or deleted when absent."""
    actions: list[str] = []
    apps = client.AppsV1Api(kube.api)
    by_rev = {str((d["metadata"].get("labels") or {}).get(LABEL_REVISION) or ""): d for d in existing}
    if target in deployments:
        want = planner.deployment(spec, owner, deployments[target], fence_timeout)
        have = by_rev.get(target)
        diff = differences(want, have) if have is not None else []
        if have is None or diff:
            kube.apply(want)
            actions.append(f"created Deployment {want['metadata']['name']}" if have is None else
                           f"updated Deployment {want['metadata']['name']} ({'; '.join(diff[:3])})")
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


def reconcile_handoff(kube: Kube, body: Mapping[str, Any], spec: ConsumerGroupSpec, target_revision: str,
                      workers: int, topics: Mapping[str, int], now: float, fence_timeout: int,
                      figures_fn: FiguresFn | None = None, manage_deployments: bool = True,
                      lag_fn: LagFn | None = None, offsets_fn: Callable[[], GroupOffsets] | None = None
                      ) -> HandoffResult:
    """One hand-off round for one ConsumerGroup. ``topics``: every topic the group reads now with its
    partition count (from the brokers). ``now``: unix seconds. ``lag_fn``: the group's lag per partition
    (canary lag growth); ``offsets_fn`` gives the group's offsets (``GroupOffsets``) for the rollout
    checkpoint and replays. Returns what the reconcile must publish; the ConfigMap, pod deletion costs,
    stale Leases, a replay's offsets and (with ``manage_deployments``) the Deployments are written here."""
    meta = body.get("metadata") or {}
    owner = planner.Owner(str(meta["name"]), str(meta["namespace"]), str(meta["uid"]))
    ns = spec.namespace
    core = client.CoreV1Api(kube.api)
    coord = client.CoordinationV1Api(kube.api)
    selector = f"{LABEL_CG}={spec.name}"
    legacy = spec.single_topic  # bare partition numbers (the previous version's) are this topic's

    cm, doc = read_assignment(kube, ns, spec.assignment_configmap, legacy)
    pods = kube.list("Pod", ns, selector)
    lease_objs = coord.list_namespaced_lease(ns, label_selector=selector).items
    leases = [kube.api.sanitize_for_serialization(lease) for lease in lease_objs]

    prev = dict(((body.get("status") or {}).get("rollout")) or {})
    commands = Commands.from_annotations(meta.get("annotations"), prev)
    figures = None
    if prev.get("phase") == CANARY and prev.get("newRevision"):
        canary_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_REVISION)
                       == prev["newRevision"]]
        figures = (figures_fn or scrape_figures)(canary_pods, status_partitions(prev.get("canaryPartitions"), legacy))
    duration = lease_duration_for(fence_timeout, LEASE_RENEW_SECONDS, spec.target.timeout_seconds)
    published = ((body.get("status") or {}).get("assignment") or {}).get("epoch")
    request, unreadable = replay_request(meta.get("annotations"), prev, legacy)

    def positions() -> Mapping[PartitionId, int] | None:
        from lagpilot_operator.group_offsets import GroupOffsetsError

        if offsets_fn is None:
            return None
        try:
            return dict(offsets_fn().positions())
        except GroupOffsetsError as exc:
            log.info("%s/%s: checkpoint not taken yet: %s", ns, spec.name, exc)
            return None

    rnd = plan_round(spec.rollout, spec.paused, target_revision, workers, topics, doc, pods, leases, prev,
                     commands, figures, now, lease_clock(ns, spec.name), duration, lag_fn,
                     published if isinstance(published, int) else None, request, positions, legacy)
    observed, step, new_doc = rnd.observed, rnd.step, rnd.doc
    if rnd.replay is not None and rnd.replay.rewind is not None and offsets_fn is not None:
        step.events += rewind(step.status, rnd.replay, offsets_fn(), now, legacy)
    if unreadable is not None and prev.get("replayUnreadable") != unreadable:
        step.events.append(("Warning", "ReplayRefused", unreadable))
    if unreadable is not None:
        step.status["replayUnreadable"] = unreadable
    else:
        step.status.pop("replayUnreadable", None)
    result = HandoffResult(rollout=step.status, assignment={}, events=list(step.events),
                           degraded=step.degraded, deployments=step.deployments)
    if cm is None or doc is None or new_doc != doc:
        if write_assignment(core, ns, cm, planner.assignment_configmap(spec, owner, new_doc)):
            grants = "; ".join(f"{w}: {format_partitions(ps)}" for w, ps in sorted(new_doc.grants.items()))
            result.actions.append(f"assignment epoch {new_doc.epoch}: {grants or 'nothing granted'}")
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
        have = (pod["metadata"].get("annotations") or {}).get(ANNOTATION_DELETION_COST)
        if want is not None and have != str(want) and not pod["metadata"].get("deletionTimestamp"):
            try:
                core.patch_namespaced_pod(name, ns, {"metadata": {"annotations": {
                    ANNOTATION_DELETION_COST: str(want)}}})
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
    """The AssignmentChanged Event: what was revoked, and what was granted to whom (ranges per topic)."""
    before, after = old.owner_of(), new.owner_of()
    granted: dict[str, list[PartitionId]] = {}
    for p, w in after.items():
        if before.get(p) != w:
            granted.setdefault(w, []).append(p)
    revoked = [p for p, w in before.items() if after.get(p) != w]
    parts = [f"epoch {new.epoch}"]
    if revoked:
        parts.append(f"revoked {format_partitions(revoked)}")
    if granted:
        parts.append("granted " + ", ".join(f"{format_partitions(ps)} -> {w}" for w, ps in sorted(granted.items())))
    return "; ".join(parts)
