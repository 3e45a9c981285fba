"""Pure status computation: observed state -> the status fields the operator owns, conditions that tell
the truth, and a phase for the printer column. Fields other controllers own (lag, rollout, assignment)
are never produced here, so a merge-patch of this result leaves them alone."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lagpilot.timefmt import parse_rfc3339
from lagpilot_operator.resource import conditions as cond
from lagpilot_operator.resource.conditions import FALSE, TRUE, Condition
from lagpilot_operator.resource.spec import NO_CONTACT, Problem, describe
from lagpilot_operator.workload.cpu import PodSizing
from lagpilot_operator.workload.diff import DeploymentState, differences
from lagpilot_operator.workload.plan import status_selector

INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_NOT_PERMITTED = "SecretNotPermitted"
CRASH_LOOPING = "WorkersCrashLooping"
IMAGE_PULL = "ImagePullFailed"
CONFIG_ERROR = "WorkerConfigError"

TOPIC_NOT_FOUND = "TopicNotFound"
BROKER_UNREACHABLE = "BrokerUnreachable"  # or a more precise reason of lagpilot_operator.brokererrors
BOOTSTRAP_NOT_ALLOWED = "BootstrapNotAllowed"



@dataclass(frozen=True)
class TopicInfo:
    """The group's topics as the brokers have them: ``topics`` (name -> partition count) of those that
    exist, None when none could be read; ``reason`` (TopicNotFound | BrokerUnreachable | ...) says what is
    wrong. Both may be set: one topic of several deleted leaves the others read, and the group Degraded."""

    topics: Mapping[str, int] | None
    reason: str | None = None
    message: str = ""

    @property
    def partitions(self) -> int | None:
        """Every partition of every topic read: the most workers that can own one (autoscaling's cap)."""
        return None if self.topics is None else sum(self.topics.values())


PHASES = ("Pending", "Running", "Progressing", "Degraded", "Invalid", "Paused", "Idle")


@dataclass(frozen=True)
class PodTrouble:
    pod: str
    reason: str
    detail: str


# A scheduled pod whose containers are still not created this long after it was: its volumes cannot be
# mounted (a Secret the operator may not read, so could not check, is missing) or its sandbox fails
# (a slow image pull looks the same, hence the generous wait).
STUCK_CREATING_SECONDS = 180.0


def pod_trouble(pod: Mapping[str, Any], now: float | None = None) -> PodTrouble | None:
    """Why a worker pod cannot work, judged from its container statuses (None when nothing is wrong).
    With `now`, also a pod stuck before its containers exist (the kubelet reports that only as Events)."""
    name = str((pod.get("metadata") or {}).get("name"))
    if now is not None and (stuck := _stuck_creating(pod, now)) is not None:
        return PodTrouble(name, CONFIG_ERROR, f"{name}: containers not created {stuck:.0f} s after scheduling "
                          "(a Secret or ConfigMap volume may be missing: kubectl describe pod)")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = ((cs.get("state") or {}).get("waiting") or {})
        why = waiting.get("reason") or ""
        if why == "CrashLoopBackOff" or (int(cs.get("restartCount") or 0) >= 3 and not cs.get("ready")):
            return PodTrouble(name, CRASH_LOOPING, f"{name} restarted {cs.get('restartCount', 0)} times")
        if why in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
            return PodTrouble(name, IMAGE_PULL, f"{name}: {why} {waiting.get('message', '')}".strip())
        if why in ("CreateContainerConfigError", "CreateContainerError"):
            return PodTrouble(name, CONFIG_ERROR, f"{name}: {waiting.get('message') or why}")
    return None


def _stuck_creating(pod: Mapping[str, Any], now: float) -> float | None:
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"
                      and c.get("status") == "True"), None)
    since = parse_rfc3339((scheduled or {}).get("lastTransitionTime"))
    waiting = [((cs.get("state") or {}).get("waiting") or {}).get("reason")
               for cs in status.get("containerStatuses") or []]
    if since is None or any(w not in (None, "ContainerCreating") for w in waiting):
        return None
    return now - since if now - since >= STUCK_CREATING_SECONDS else None


@dataclass(frozen=True)
class Observation:
    """Everything status depends on, gathered by the handler (or a test)."""

    generation: int
    name: str
    desired_workers: int
    revision: str | None
    deployment_name: str | None
    deployments: Sequence[DeploymentState] = ()
    problems: Sequence[Problem] = ()
    topic: TopicInfo | None = None
    missing_secrets: Sequence[str] = ()
    # Secrets the operator's own broker connection needs but RBAC does not let it read (403).
    refused_secrets: Sequence[str] = ()
    namespace: str = "<namespace>"
    pod_troubles: Sequence[PodTrouble] = ()
    paused: bool = False
    # Extra Degraded causes from other parts (e.g. the hand-off's RolloutAborted): (reason, message).
    degraded: Sequence[tuple[str, str]] = field(default_factory=tuple)
    # Partitions no worker is confirmed to process (status.assignment.unowned, assignment mode k8s);
    # None when not known (kafka mode, or no partition count): then readiness is judged on workers only.
    unowned_partitions: Sequence[str] | None = None  # topic:partition
    # Workers split into pods by CPU (workload.cpu): desired_workers then counts pods, status reports workers.
    sizing: PodSizing | None = None


def _degraded_causes(obs: Observation) -> list[tuple[str, str]]:
    causes: list[tuple[str, str]] = []
    own = [p for p in obs.problems if p.code in NO_CONTACT]
    for reason in NO_CONTACT:
        named = [p for p in own if p.code == reason]
        if named:
            causes.append((reason, describe(named)))
    rest = [p for p in obs.problems if p.code not in NO_CONTACT]
    if rest:
        causes.append((INVALID_SPEC, describe(rest)))
    if obs.missing_secrets:
        causes.append((SECRET_NOT_FOUND, "not found (workers cannot start without it): "
                       + ", ".join(sorted(obs.missing_secrets))))
    if obs.refused_secrets:
        names = " ".join(obs.refused_secrets)
        causes.append((SECRET_NOT_PERMITTED, f"the operator may not read Secret {', '.join(obs.refused_secrets)}, "
                       f"which its own broker connection needs (workers get it mounted): grant it with "
                       f"`lagpilot grant-secret {names} -n {obs.namespace}` or the chart value rbac.secretNames"))
    if obs.topic is not None and obs.topic.reason:
        causes.append((obs.topic.reason, obs.topic.message))
    by_reason: dict[str, list[str]] = {}
    for t in obs.pod_troubles:
        by_reason.setdefault(t.reason, []).append(t.detail)
    for reason in (CRASH_LOOPING, IMAGE_PULL, CONFIG_ERROR):
        if reason in by_reason:
            causes.append((reason, "; ".join(sorted(by_reason[reason]))))
    causes += list(obs.degraded)
    return causes


def compute(obs: Observation, previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The operator-owned part of status for this observation; `previous` is the current status."""
    current = next((d for d in obs.deployments if d.name == obs.deployment_name), None)
    old = [d for d in obs.deployments if d.name != obs.deployment_name]
    ready = current.ready if current else 0
    causes = _degraded_causes(obs)
    invalid = bool(obs.problems)
    # With workers split by CPU the counts below are pods: say so.
    unit = "worker pods" if obs.sizing and obs.sizing.pods_per_worker > 1 else "workers"

    degraded = (Condition("Degraded", TRUE, causes[0][0], "; ".join(m for _, m in causes)) if causes
                else Condition("Degraded", FALSE, "AsExpected", "no problems found"))

    if invalid:
        progressing = Condition("Progressing", FALSE, INVALID_SPEC, "spec is invalid; nothing was changed")
    elif obs.paused:
        progressing = Condition("Progressing", FALSE, "Paused", "spec.paused is true; workers are frozen")
    elif current is None:
        progressing = Condition("Progressing", TRUE, "Creating", f"creating workers of revision {obs.revision}")
    elif old:
        progressing = Condition("Progressing", TRUE, "RollingOut",
                                f"revision {obs.revision}: {ready}/{obs.desired_workers} ready; "
                                f"replacing {', '.join(sorted(d.name for d in old))}")
    elif not current.settled or current.replicas != obs.desired_workers:
        progressing = Condition("Progressing", TRUE, "Scaling",
                                f"{ready}/{obs.desired_workers} {unit} ready")
    else:
        progressing = Condition("Progressing", FALSE, "Complete",
                                f"revision {obs.revision} runs {obs.desired_workers} {unit}")

    all_ready = (current is not None and not old and current.settled
                 and current.replicas == obs.desired_workers and ready >= obs.desired_workers)
    if causes:
        ready_c = Condition("Ready", FALSE, causes[0][0], causes[0][1])
    elif obs.desired_workers == 0 and all_ready:
        ready_c = Condition("Ready", TRUE, "ScaledToZero", "no workers requested")
    elif all_ready and obs.unowned_partitions:
        ready_c = Condition("Ready", FALSE, "PartitionsUnowned",
                            f"{ready}/{obs.desired_workers} {unit} ready; partitions not owned yet: "
                            f"{', '.join(map(str, obs.unowned_partitions))}")
    elif all_ready:
        ready_c = Condition("Ready", TRUE, "WorkersReady", f"{ready}/{obs.desired_workers} {unit} ready"
                            + ("" if obs.unowned_partitions is None else "; every partition owned"))
    else:
        ready_c = Condition("Ready", FALSE, "WorkersNotReady", f"{ready}/{obs.desired_workers} {unit} ready")

    if invalid:
        phase = "Invalid"
    elif causes:
        phase = "Degraded"
    elif obs.paused:
        phase = "Paused"
    elif ready_c.status == TRUE:
        phase = "Idle" if obs.desired_workers == 0 else "Running"
    elif progressing.status == TRUE:
        phase = "Progressing"
    else:
        phase = "Pending"

    previous_partitions = previous.get("partitions")
    partitions = obs.topic.partitions if obs.topic and obs.topic.partitions is not None else previous_partitions
    topics = dict(obs.topic.topics) if obs.topic and obs.topic.topics is not None else previous.get("topics")
    out: dict[str, Any] = {
        "observedGeneration": obs.generation,
        "workers": obs.sizing.workers if obs.sizing else obs.desired_workers,
        "readyWorkers": obs.sizing.ready_workers(ready) if obs.sizing else ready,
        "selector": status_selector(obs.name),
        "phase": phase,
        "conditions": cond.merge(previous.get("conditions") or [], [ready_c, progressing, degraded], now,
                                 obs.generation),
    }
    if obs.revision is not None:
        out["revision"] = obs.revision
    if partitions is not None:
        out["partitions"] = partitions
    if topics is not None:
        # A merge patch: a topic gone from the group is set to null, so it leaves status.topics.
        out["topics"] = {**dict.fromkeys(previous.get("topics") or {}), **topics}
        out["topicNames"] = ",".join(sorted(topics))
    sizing = obs.sizing.status() if obs.sizing else None
    if sizing is not None:
        out["sizing"] = sizing
    elif previous.get("sizing") is not None:
        out["sizing"] = None  # a merge patch: removes it
    return out


def needs_write(new: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether the status patch would change anything (no write on a no-op reconcile)."""
    return bool(differences(dict(new), dict(previous)))


def events_for(previous: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]
               ) -> list[tuple[str, str, str]]:
    """(type Normal|Warning, reason, message) for each condition that changed status or reason."""
    out = []
    for c in cond.transitions(list(previous), list(current)):
        kind = c.get("type")
        bad = (kind == "Degraded" and c.get("status") == TRUE) or (kind == "Ready" and c.get("status") == FALSE)
        if kind == "Progressing" and c.get("status") == FALSE and c.get("reason") == "Complete":
            out.append(("Normal", "RolloutComplete", str(c.get("message"))))
        elif kind == "Degraded" and c.get("status") == TRUE:
            out.append(("Warning", str(c.get("reason")), str(c.get("message"))))
        elif kind == "Ready" and not bad:
            out.append(("Normal", "Ready", str(c.get("message"))))
        elif kind == "Degraded" and c.get("status") == FALSE and find_previous(previous, "Degraded"):
            out.append(("Normal", "Recovered", str(c.get("message"))))
    return out


def find_previous(previous: Iterable[Mapping[str, Any]], type_: str) -> bool:
    """True when the previous list had this condition set to True (so a change to False is a recovery)."""
    c = cond.find(list(previous), type_)
    return bool(c and c.get("status") == TRUE)
