"""One reconcile of one ConsumerGroup: read, plan (pure), apply only the differences, write status.

Level-based: the result depends only on the CR and what the API server and brokers hold now, so it can
run at any time, any number of times, after any crash. Writes happen only where `diff` finds a real
difference, so a reconcile of an unchanged world writes nothing.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.rest import ApiException

from lagpilot.protocol import LABEL_CG, LABEL_REVISION, PartitionId
from lagpilot.timefmt import rfc3339
from lagpilot_operator.brokers import connection_key
from lagpilot_operator.group_offsets import GroupOffsets
from lagpilot_operator.handoff.rollout import ABORTED
from lagpilot_operator.handoff.shell import HandoffResult, reconcile_handoff
from lagpilot_operator.kube import Kube
from lagpilot_operator.resource.spec import (
    NO_CONTACT,
    ConsumerGroupSpec,
    KeyRef,
    bootstrap_problems,
    parse,
    partition_problems,
)
from lagpilot_operator.settings import Settings
from lagpilot_operator.workload import kafka_client
from lagpilot_operator.workload import plan as planner
from lagpilot_operator.workload import status as st
from lagpilot_operator.workload.applied import AppliedCache
from lagpilot_operator.workload.cpu import PodSizing, size_pods
from lagpilot_operator.workload.diff import deployment_state, differences, stale_deployments
from lagpilot_operator.workload.status import TopicInfo
from lagpilot_operator.workload.topics import TopicReader

log = logging.getLogger("lagpilot.operator")

# (type Normal|Warning, reason, message)
EventSink = Callable[[str, str, str], None]


@dataclass
class Result:
    phase: str
    actions: list[str] = field(default_factory=list)
    status_written: bool = False
    rollout_phase: str | None = None  # status.rollout.phase (assignment mode k8s)
    aborted: int = 0  # rollouts aborted by this reconcile (RolloutAborted events)
    events: int = 0  # Events emitted
    degraded: bool = False  # Degraded is True after this reconcile
    resource_version: str = ""  # of the CR reconciled
    connection: str | None = None  # broker connection key (lagpilot_operator.brokers)
    topics: tuple[str, ...] = ()  # the group's topics as read for this reconcile
    partitions: int | None = None  # all of their partitions, as read for this reconcile
    pattern: bool = False  # the group names its topics by a pattern (re-read on every resync)

    @property
    def quiet(self) -> bool:
        """Nothing written, nothing emitted, nothing wrong: a resync of an unchanged world can wait."""
        return not self.actions and not self.status_written and not self.events and not self.degraded


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


class _Objects:
    """Secrets and ConfigMaps of one namespace, each read from the API at most once per reconcile (a
    group's keys often share one Secret, and the existence check and the client settings read the same)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self._seen: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        # Read and refused (403): the chart grants no Secret the operator does not need for itself.
        self.forbidden: set[tuple[str, str]] = set()

    def get(self, kind: str, name: str) -> Mapping[str, Any] | None:
        if (kind, name) not in self._seen:
            try:
                self._seen[(kind, name)] = self.kube.get(kind, self.namespace, name)
            except ApiException as exc:
                if exc.status != 403:
                    raise
                self.forbidden.add((kind, name))
                self._seen[(kind, name)] = None
        return self._seen[(kind, name)]

    def knowable(self, ref: KeyRef) -> bool:
        """False for an object the operator may not read: whether it exists is the kubelet's to find."""
        return (ref.kind, ref.name) not in self.forbidden

    def read(self, ref: KeyRef) -> str | None:
        data = (self.get(ref.kind, ref.name) or {}).get("data") or {}
        raw = data.get(ref.key)
        if raw is None or ref.kind != "Secret":
            return raw
        return base64.b64decode(raw).decode()


def kafka_security(spec: ConsumerGroupSpec, kube: Kube) -> dict[str, str]:
    """librdkafka settings for the operator's own metadata reads (material only in memory)."""
    return kafka_security_and_missing(spec, kube)[0]


def kafka_security_and_missing(spec: ConsumerGroupSpec, kube: Kube,
                               objects: _Objects | None = None) -> tuple[dict[str, str], list[str]]:
    """The settings, and the material that could not be read, missing or not permitted (then no client
    should be made)."""
    conf, missing, refused = kafka_security_read(spec, objects or _Objects(kube, spec.namespace))
    return conf, missing + [f"Secret {name} (not permitted)" for name in refused]


def kafka_security_read(spec: ConsumerGroupSpec,
                        objects: _Objects) -> tuple[dict[str, str], list[str], list[str]]:
    """(settings, material not there, Secrets the operator may not read) for its own broker connection."""
    conf, missing = kafka_client.operator_conf(kafka_client.client_settings(spec.kafka), objects.read)
    refused = sorted({m.ref.name for m in missing if not objects.knowable(m.ref)})
    return conf, [m.describe for m in missing if objects.knowable(m.ref)], refused


def missing_material(spec: ConsumerGroupSpec, objects: _Objects) -> list[str]:
    """Every Secret, ConfigMap or key the workers would mount that is not there (the pod would not start).
    A Secret the operator may not read is not checked: the kubelet mounts it, or the pod says why not."""
    missing = [f"Secret {s}" for s in referenced_secrets(spec)
               if objects.get("Secret", s) is None and objects.knowable(KeyRef("Secret", s, ""))]
    for m in (m for m in kafka_client.worker_materials(spec.kafka, spec.target)
              if objects.read(m.ref) is None and objects.knowable(m.ref)):
        gone = objects.get(m.ref.kind, m.ref.name) is None
        entry = f"{m.ref.kind} {m.ref.name}" if gone else m.describe
        if entry not in missing:
            missing.append(entry)
    return missing


def referenced_secrets(spec: ConsumerGroupSpec) -> list[str]:
    names = {spec.target.headers_from_secret, spec.kafka.credentials_secret}
    names |= {m.ref.name for m in kafka_client.worker_materials(spec.kafka, spec.target) if m.ref.kind == "Secret"}
    return sorted(n for n in names if n)


def _lag_reader(spec: ConsumerGroupSpec, kube: Kube, topics: list[str]
                ) -> Callable[[], dict[PartitionId, int] | None]:
    """The group's lag per partition, read on demand (only a canary with maxLagGrowth asks for it)."""
    def read() -> dict[PartitionId, int] | None:
        from lagpilot_operator.autoscale.offsets import LagReader

        try:
            snap = LagReader(spec.bootstrap_servers, kafka_security(spec, kube), timeout=5.0).read(
                spec.group_id, topics)
        except Exception as exc:  # the brokers' trouble is reported by the lag reader; judge next round
            log.info("%s/%s: lag for canary analysis not read: %s", spec.namespace, spec.name, exc)
            return None
        return {PartitionId(p.topic, p.partition): p.lag for p in snap.partitions}
    return read


def _group_offsets(spec: ConsumerGroupSpec, kube: Kube, topics: list[str]) -> Callable[[], GroupOffsets]:
    """The group's offsets on the brokers, built on demand (a rollout's checkpoint, a replay's rewind)."""
    def make() -> GroupOffsets:
        return GroupOffsets(spec.bootstrap_servers, spec.group_id, topics, kafka_security(spec, kube))
    return make


def reconcile(body: Mapping[str, Any], kube: Kube, topics: TopicReader, settings: Settings,
              emit: EventSink, desired_workers: Callable[..., int] = planner.desired_workers,
              applied: AppliedCache | None = None) -> Result:
    meta = body.get("metadata") or {}
    name, namespace, uid = str(meta["name"]), str(meta["namespace"]), str(meta["uid"])
    generation = int(meta.get("generation") or 0)
    previous = dict(body.get("status") or {})
    spec, problems = parse(body, settings.consumer_image)
    if spec is not None:
        problems += bootstrap_problems(spec, settings.allowed_bootstrap_servers)
    owner = planner.Owner(name, namespace, uid)
    result = Result(phase="Pending", resource_version=str(meta.get("resourceVersion") or ""))
    outer_emit = emit

    def counted_emit(kind: str, reason: str, message: str) -> None:
        result.events += 1
        outer_emit(kind, reason, message)

    emit = counted_emit

    topic: TopicInfo | None = None
    missing: list[str] = []
    refused: list[str] = []
    if spec is not None and not any(p.code in NO_CONTACT for p in problems):
        objects = _Objects(kube, namespace)
        missing = missing_material(spec, objects)
        security, unread, refused = kafka_security_read(spec, objects)
        result.connection = connection_key(spec.bootstrap_servers, security)
        result.topics, result.pattern = spec.topics, spec.topic_pattern is not None
        if not unread and not refused:
            # Without every credential a client could not even be created: SecretNotFound or
            # SecretNotPermitted says why.
            topic = topics.resolve(spec.bootstrap_servers, spec.topics, spec.topic_pattern,
                                   (spec.dead_letter_topic, spec.retry.park_topic), security)
            result.partitions = topic.partitions
            if topic.topics is not None:
                result.topics = tuple(sorted(topic.topics))
                problems += partition_problems(spec, topic.topics)

    selector = f"{LABEL_CG}={name}"
    existing = [d for d in kube.list("Deployment", namespace, selector) if _owned_by(d, uid)]
    revision = deployment_name = None
    coord: HandoffResult | None = None
    workers = int(previous.get("workers") or 0)
    sizing: PodSizing | None = None
    if spec is not None and not problems:
        workers = desired_workers(spec, previous)
        sizing = size_pods(spec, workers, topic.partitions if topic is not None else None)
        pod_spec, pod_count = sizing.spec, sizing.pods
        desired = planner.plan(pod_spec, owner, pod_count, settings.fence_timeout_seconds, settings.assignment_mode)
        revision, deployment_name = desired.revision, desired.deployment_name
        for obj in desired.applied:
            fresh, token = applied.check(obj) if applied is not None else (False, 0)
            if fresh:
                continue
            current = kube.get(obj["kind"], namespace, obj["metadata"]["name"])
            if current is None or differences(obj, current):
                kube.apply(obj)
                result.actions.append(f"{'created' if current is None else 'updated'} {obj['kind']} "
                                      f"{obj['metadata']['name']}")
            if applied is not None:
                applied.remember(obj, token)
        if settings.assignment_mode == "k8s":
            # The hand-off owns the per-revision Deployments (it leaves them alone while
            # paused) and the assignment ConfigMap; without a partition count it changes nothing.
            if topic is not None and topic.topics is not None:
                # A missing topic of several leaves the others read: their hand-off goes on, and the missing
                # one's partitions are revoked (Degraded TopicNotFound says which).
                read = sorted(topic.topics)
                coord = reconcile_handoff(kube, body, pod_spec, revision, pod_count, topic.topics, time.time(),
                                          settings.fence_timeout_seconds, lag_fn=_lag_reader(spec, kube, read),
                                          offsets_fn=_group_offsets(spec, kube, read))
                result.actions += coord.actions
                if coord.rollout.get("phase") == ABORTED and coord.rollout.get("stableRevision"):
                    # The aborted revision is on its way out: report on the revision that serves.
                    revision = str(coord.rollout["stableRevision"])
                    deployment_name = planner.deployment_name(name, revision)
            elif not spec.paused and not existing:
                # Partition count unknown (brokers unreachable): the first revision's workers start anyway
                # and own nothing until the hand-off can plan; a running group is left as it is.
                kube.apply(desired.deployment)
                result.actions.append(f"created Deployment {deployment_name}")
        elif not spec.paused:
            current = next((d for d in existing if d["metadata"]["name"] == deployment_name), None)
            if current is None or differences(desired.deployment, current):
                kube.apply(desired.deployment)
                result.actions.append(f"{'created' if current is None else 'updated'} Deployment "
                                      f"{deployment_name}")
            for stale in stale_deployments(deployment_name, [deployment_state(d) for d in existing], False):
                if kube.delete("Deployment", namespace, stale):
                    result.actions.append(f"deleted Deployment {stale} (old revision)")
        if result.actions:
            existing = [d for d in kube.list("Deployment", namespace, selector) if _owned_by(d, uid)]
    elif existing:
        # Invalid spec: leave the running workers alone, report on what runs.
        newest = max(existing, key=lambda d: d["metadata"].get("creationTimestamp") or "")
        deployment_name = newest["metadata"]["name"]
        revision = (newest["metadata"].get("labels") or {}).get(LABEL_REVISION)
        workers = int((newest.get("spec") or {}).get("replicas") or 0)
        if int(((previous.get("sizing") or {}).get("podsPerWorker")) or 1) > 1:
            # Pods of workers split by CPU: report those pods, and keep the worker count as it was.
            sizing = PodSizing(spec, int(previous.get("workers") or 0), workers,
                               int(previous["sizing"]["podsPerWorker"])) if spec is not None else None
    if spec is not None and spec.paused and deployment_name and not any(
            d["metadata"]["name"] == deployment_name for d in existing) and existing:
        # Paused before the new revision was created: report on what runs.
        deployment_name = max(existing, key=lambda d: d["metadata"].get("creationTimestamp") or "")[
            "metadata"]["name"]

    pods = kube.list("Pod", namespace, selector)
    troubles = [t for p in pods if (t := st.pod_trouble(p, time.time())) is not None]
    obs = st.Observation(
        generation=generation, name=name, desired_workers=sizing.pods if sizing else workers, revision=revision,
        sizing=sizing,
        deployment_name=deployment_name, deployments=[deployment_state(d) for d in existing],
        problems=problems, topic=topic, missing_secrets=missing, refused_secrets=refused, namespace=namespace,
        pod_troubles=troubles,
        paused=bool(spec and spec.paused), degraded=[coord.degraded] if coord and coord.degraded else [],
        unowned_partitions=coord.assignment.get("unowned") if coord else None)
    new_status = st.compute(obs, previous, rfc3339())
    if coord is not None:
        new_status.update(coord.status_patch(previous))
    result.phase = new_status["phase"]
    result.degraded = any(c.get("type") == "Degraded" and c.get("status") == "True"
                          for c in new_status.get("conditions") or [])
    if st.needs_write(new_status, previous):
        result.status_written = kube.patch_status(namespace, name, new_status)
    for action in result.actions:
        emit("Normal", "Reconciled", action)
    for kind, reason, message in coord.events if coord else []:
        emit(kind, reason, message)
        result.aborted += reason == "RolloutAborted"
    if coord is not None:
        result.rollout_phase = coord.rollout.get("phase")
    for kind, reason, message in st.events_for(previous.get("conditions") or [], new_status["conditions"]):
        emit(kind, reason, message)
    if result.actions:
        log.info("%s/%s: %s", namespace, name, "; ".join(result.actions))
    return result
