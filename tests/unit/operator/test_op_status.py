"""Conditions and status: the truth in Ready/Progressing/Degraded, transition times that move only on a
status flip, no status write when nothing changed, Events only on transitions."""

from __future__ import annotations

from typing import Any

import pytest

from lagpilot.timefmt import rfc3339
from lagpilot_operator.resource import conditions as c
from lagpilot_operator.resource.spec import Problem
from lagpilot_operator.workload.diff import DeploymentState
from lagpilot_operator.workload.status import Observation, TopicInfo, compute, events_for, needs_write, pod_trouble

pytestmark = pytest.mark.unit

T0, T1, T2 = "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z", "2025-01-01T00:02:00Z"


def test_transition_time_moves_only_when_status_flips() -> None:
    first = c.merge([], [c.Condition("Ready", c.FALSE, "WorkersNotReady", "0/2")], T0, 1)
    assert first[0]["lastTransitionTime"] == T0 and first[0]["observedGeneration"] == 1
    same_status = c.merge(first, [c.Condition("Ready", c.FALSE, "TopicNotFound", "gone")], T1, 2)
    assert same_status[0]["lastTransitionTime"] == T0
    assert same_status[0]["reason"] == "TopicNotFound" and same_status[0]["observedGeneration"] == 2
    flipped = c.merge(same_status, [c.Condition("Ready", c.TRUE, "WorkersReady", "2/2")], T2, 2)
    assert flipped[0]["lastTransitionTime"] == T2


def test_merge_keeps_conditions_of_other_controllers() -> None:
    prev = [{"type": "LagWarning", "status": "True", "reason": "OffsetsDeleted", "lastTransitionTime": T0}]
    out = c.merge(prev, [c.Condition("Ready", c.TRUE, "WorkersReady")], T1, 1)
    assert [x["type"] for x in out] == ["Ready", "LagWarning"] and out[1] == prev[0]


def test_now_format_round_trips() -> None:
    assert len(rfc3339()) == 20 and rfc3339().endswith("Z")


def dep(name: str = "cg-new", replicas: int = 2, ready: int = 2) -> DeploymentState:
    return DeploymentState(name=name, revision=name[3:], replicas=replicas, ready=ready, updated=replicas,
                           generation_observed=True)


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = {"generation": 3, "name": "cg", "desired_workers": 2, "revision": "new",
                            "deployment_name": "cg-new", "deployments": [dep()], "topic": TopicInfo({"orders": 6})}
    base.update(kw)
    return Observation(**base)


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {x["type"]: (x["status"], x["reason"]) for x in status["conditions"]}


def test_all_ready() -> None:
    s = compute(obs(), {}, T0)
    assert conds(s) == {"Ready": ("True", "WorkersReady"), "Progressing": ("False", "Complete"),
                        "Degraded": ("False", "AsExpected")}
    assert s["phase"] == "Running" and s["workers"] == 2 and s["readyWorkers"] == 2 and s["partitions"] == 6
    assert s["observedGeneration"] == 3 and s["selector"] == "lagpilot.io/consumergroup=cg"
    assert s["revision"] == "new"
    assert "lag" not in s and "rollout" not in s and "assignment" not in s


def test_creating_scaling_and_rolling() -> None:
    s = compute(obs(deployments=[]), {}, T0)
    assert conds(s)["Progressing"] == ("True", "Creating") and s["phase"] == "Progressing"
    assert conds(s)["Ready"] == ("False", "WorkersNotReady")
    s = compute(obs(deployments=[dep(ready=1)]), {}, T0)
    assert conds(s)["Progressing"] == ("True", "Scaling") and s["readyWorkers"] == 1
    s = compute(obs(desired_workers=3), {}, T0)
    assert conds(s)["Progressing"] == ("True", "Scaling") and conds(s)["Ready"][0] == "False"
    s = compute(obs(deployments=[dep("cg-old"), dep()]), {}, T0)
    assert conds(s)["Progressing"] == ("True", "RollingOut") and conds(s)["Ready"][0] == "False"
    assert "cg-old" in next(x for x in s["conditions"] if x["type"] == "Progressing")["message"]


def test_scaled_to_zero_is_idle_and_ready() -> None:
    s = compute(obs(desired_workers=0, deployments=[dep(replicas=0, ready=0)]), {}, T0)
    assert conds(s)["Ready"] == ("True", "ScaledToZero") and s["phase"] == "Idle"


@pytest.mark.parametrize(("kw", "reason"), [
    ({"problems": [Problem("spec.threads", "OutOfRange", "must be >= 1")]}, "InvalidSpec"),
    ({"topic": TopicInfo(None, "TopicNotFound", "topic orders does not exist")}, "TopicNotFound"),
    ({"topic": TopicInfo(None, "BrokerUnreachable", "no broker")}, "BrokerUnreachable"),
    ({"missing_secrets": ["kafka-creds"]}, "SecretNotFound"),
    ({"refused_secrets": ["kafka-creds"]}, "SecretNotPermitted"),
    ({"degraded": [("RolloutAborted", "error rate 0.2 > 0.01")]}, "RolloutAborted"),
])
def test_degraded_reasons(kw: dict[str, Any], reason: str) -> None:
    s = compute(obs(**kw), {}, T0)
    assert conds(s)["Degraded"] == ("True", reason)
    assert conds(s)["Ready"] == ("False", reason)
    assert s["phase"] == ("Invalid" if reason == "InvalidSpec" else "Degraded")
    if reason == "InvalidSpec":
        assert conds(s)["Progressing"] == ("False", "InvalidSpec")
        assert "spec.threads: must be >= 1" in next(x for x in s["conditions"] if x["type"] == "Degraded")["message"]


def test_several_causes_all_in_message_first_is_reason() -> None:
    s = compute(obs(missing_secrets=["a"], topic=TopicInfo(None, "TopicNotFound", "no topic")), {}, T0)
    d = next(x for x in s["conditions"] if x["type"] == "Degraded")
    assert d["reason"] == "SecretNotFound" and "no topic" in d["message"] and "a" in d["message"]


def test_partitions_kept_when_broker_unreachable() -> None:
    s = compute(obs(topic=TopicInfo(None, "BrokerUnreachable", "x")), {"partitions": 12}, T0)
    assert s["partitions"] == 12


def test_paused() -> None:
    s = compute(obs(paused=True, deployments=[dep("cg-old")]), {}, T0)
    assert conds(s)["Progressing"] == ("False", "Paused") and s["phase"] == "Paused"


def crash_pod(reason: str = "CrashLoopBackOff", restarts: int = 4, ready: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": "cg-new-abc"}, "status": {"containerStatuses": [
        {"name": "consumer", "ready": ready, "restartCount": restarts,
         "state": {"waiting": {"reason": reason, "message": "boom"}}}]}}


def test_pod_trouble_classification() -> None:
    t = pod_trouble(crash_pod())
    assert t is not None and t.reason == "WorkersCrashLooping"
    t = pod_trouble(crash_pod("ImagePullBackOff", 0))
    assert t is not None and t.reason == "ImagePullFailed"
    t = pod_trouble(crash_pod("CreateContainerConfigError", 0))
    assert t is not None and t.reason == "WorkerConfigError" and "boom" in t.detail
    assert pod_trouble(crash_pod("ContainerCreating", 0)) is None
    assert pod_trouble({"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"ready": True, "restartCount": 5, "state": {"running": {}}}]}}) is None
    assert pod_trouble({"metadata": {"name": "p"}}) is None
    s = compute(obs(pod_troubles=[pod_trouble(crash_pod())]), {}, T0)
    assert conds(s)["Degraded"] == ("True", "WorkersCrashLooping")


def test_unchanged_observation_needs_no_write_and_emits_no_events() -> None:
    first = compute(obs(), {}, T0)
    assert needs_write(first, {})
    stored = {**first, "lag": {"total": 5}}  # other controllers' fields on the server
    second = compute(obs(), stored, T1)
    assert not needs_write(second, stored)
    assert second["conditions"] == first["conditions"]
    assert events_for(stored["conditions"], second["conditions"]) == []


def test_generation_change_is_written() -> None:
    stored = compute(obs(), {}, T0)
    assert needs_write(compute(obs(generation=4), stored, T1), stored)


def test_events_on_transitions() -> None:
    ready = compute(obs(), {}, T0)
    broken = compute(obs(topic=TopicInfo(None, "TopicNotFound", "topic gone")), ready, T1)
    ev = events_for(ready["conditions"], broken["conditions"])
    assert ("Warning", "TopicNotFound", "topic gone") in ev
    back = compute(obs(), broken, T2)
    ev = events_for(broken["conditions"], back["conditions"])
    assert ("Normal", "Recovered", "no problems found") in ev
    assert any(e[1] == "Ready" for e in ev)
    rolling = compute(obs(deployments=[dep("cg-old"), dep()]), ready, T1)
    done = compute(obs(), rolling, T2)
    assert any(e[1] == "RolloutComplete" for e in events_for(rolling["conditions"], done["conditions"]))


def test_a_secret_the_operator_may_not_read_names_the_grant_that_fixes_it() -> None:
    s = compute(obs(refused_secrets=["kafka-user", "cluster-ca"], namespace="shop"), {}, T0)
    d = next(x for x in s["conditions"] if x["type"] == "Degraded")
    assert d["reason"] == "SecretNotPermitted"
    assert "`lagpilot grant-secret kafka-user cluster-ca -n shop`" in d["message"]
    assert "rbac.secretNames" in d["message"]


def pending_pod(scheduled_at: str | None, waiting: str | None = "ContainerCreating",
                phase: str = "Pending", deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": []}
    if scheduled_at:
        status["conditions"].append({"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled_at})
    if waiting is not None:
        status["containerStatuses"] = [{"name": "consumer", "ready": False, "restartCount": 0,
                                        "state": {"waiting": {"reason": waiting}}}]
    meta: dict[str, Any] = {"name": "cg-new-abc"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


NOW = 1767225600.0  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(("pod", "stuck"), [
    (pending_pod("2025-12-31T23:56:00Z"), True),  # 4 minutes creating: a volume cannot be mounted
    (pending_pod("2025-12-31T23:56:00Z", waiting=None), True),  # no container status at all yet
    (pending_pod("2025-12-31T23:59:00Z"), False),  # 1 minute: an image may still be pulling
    (pending_pod(None), False),  # not scheduled (the scheduler's problem, not the pod's)
    (pending_pod("2025-12-31T23:56:00Z", phase="Running"), False),
    (pending_pod("2025-12-31T23:56:00Z", deleting=True), False),
    (pending_pod("2025-12-31T23:56:00Z", waiting="ErrImagePull"), False),  # told apart as ImagePullFailed
])
def test_a_pod_stuck_before_its_containers_exist(pod: dict[str, Any], stuck: bool) -> None:
    t = pod_trouble(pod, NOW)
    if not stuck:
        assert t is None or t.reason == "ImagePullFailed"
        return
    assert t is not None and t.reason == "WorkerConfigError"
    assert "240 s" in t.detail and "kubectl describe pod" in t.detail
    assert pod_trouble(pod) is None  # without the time (pod watch events), nothing is judged stale
