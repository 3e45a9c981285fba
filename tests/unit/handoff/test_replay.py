"""Replays and checkpoints, pure: the annotation's request (table), when a replay is refused (table), and a
simulated cluster (lagpilot.testing.rollout_sim: workers applying documents and reporting late, the real
rollout step and hand-off planner)
in which the offsets are only ever moved while no worker owns the held partitions -- for ``lagpilot
replay`` and for a canary aborted with ``onAbort: replayFromCheckpoint`` -- and every partition is owned
again afterwards. Disabling the hold (``nobody_owns`` always true) makes the property fail."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lagpilot.protocol import ANNOTATION_REPLAY, PartitionId
from lagpilot.testing.rollout_sim import Cluster
from lagpilot_operator.handoff import replay as rp
from lagpilot_operator.handoff.planner import AssignmentDoc, Observed, WorkerReport, WorkerView, plan_assignment
from lagpilot_operator.handoff.replay import (
    DONE,
    HOLDING,
    REFUSED,
    ReplayRequest,
    ReplayRequestError,
    next_replay_step,
    plan_replay,
    replay_request,
    replayed,
    take_checkpoint,
    targets,
)
from lagpilot_operator.handoff.rollout import ABORTED, STABLE, Commands, RolloutStep
from lagpilot_operator.resource.spec import CanarySpec, RolloutSpec

pytestmark = pytest.mark.unit


def P(n: int, topic: str = "t") -> PartitionId:
    return PartitionId(topic, n)


def H(*numbers: int, topic: str = "t") -> frozenset[PartitionId]:
    return frozenset(P(n, topic) for n in numbers)


@pytest.mark.parametrize(("text", "default", "want"), [
    ('{"id": "a", "to": "checkpoint"}', None, ReplayRequest("a", "checkpoint")),
    ('{"id": "a", "to": "checkpoint", "partitions": ["t:3", "t:1", "u:3", "t:3"]}', None,
     ReplayRequest("a", "checkpoint", partitions=(P(1), P(3), P(3, "u")))),
    # bare numbers (what the CLI of the previous version wrote): the group's single topic
    ('{"id": "a", "to": "checkpoint", "partitions": [3, 1, 3]}', "t", ReplayRequest("a", "checkpoint",
                                                                                    partitions=(P(1), P(3)))),
    ('{"id": "b", "to": "time", "time": "2026-01-31T00:00:00Z"}', None, ReplayRequest("b", "time", time=1769817600.0)),
    ('{"id": "c", "to": "offsets", "offsets": {"t:2": 10, "u:0": 0}}', None,
     ReplayRequest("c", "offsets", offsets={P(2): 10, P(0, "u"): 0}, partitions=(P(2), P(0, "u")))),
    ('{"id": "c", "to": "offsets", "offsets": {"2": 10, "0": 0}}', "t",
     ReplayRequest("c", "offsets", offsets={P(2): 10, P(0): 0}, partitions=(P(0), P(2)))),
])
def test_a_request_from_the_annotation(text: str, default: str | None, want: ReplayRequest) -> None:
    assert ReplayRequest.from_annotation(text, default) == want


@pytest.mark.parametrize(("text", "why"), [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"to": "checkpoint"}', "id:"),
    ('{"id": "a", "to": "yesterday"}', "to: must be one of checkpoint, time, offsets"),
    ('{"id": "a", "to": "time", "time": "noon"}', "time: an RFC 3339 time"),
    ('{"id": "a", "to": "offsets"}', "offsets: a non-empty object"),
    ('{"id": "a", "to": "offsets", "offsets": {"x": 1}}', "offsets: 'x'"),
    ('{"id": "a", "to": "offsets", "offsets": {"t:x": 1}}', "offsets: 't:x' is not topic:partition"),
    ('{"id": "a", "to": "offsets", "offsets": {"t:1": -5}}', "offsets: 't:1': -5"),
    ('{"id": "a", "to": "offsets", "offsets": {"t:1": true}}', "offsets: 't:1': True"),
    ('{"id": "a", "to": "checkpoint", "partitions": [-1]}', "partitions:"),
    ('{"id": "a", "to": "checkpoint", "partitions": ["t:-1"]}', "partitions:"),
    ('{"id": "a", "to": "checkpoint", "partitions": "t:1"}', "partitions: a list"),
    ('{"id": "a", "to": "checkpoint", "partitions": [true]}', "partitions: True"),
    # a group of several topics: a bare number names no partition
    ('{"id": "a", "to": "checkpoint", "partitions": [1]}', "names no topic and the group reads several"),
    ('{"id": "a", "to": "offsets", "offsets": {"1": 4}}', "names no topic and the group reads several"),
])
def test_a_bad_request_says_which_part(text: str, why: str) -> None:
    with pytest.raises(ReplayRequestError, match=None) as e:
        ReplayRequest.from_annotation(text)
    assert why in str(e.value)


def test_the_annotation_is_acted_on_once_per_id() -> None:
    ann = {ANNOTATION_REPLAY: '{"id": "r1", "to": "checkpoint"}'}
    assert replay_request(ann, {})[0] == ReplayRequest("r1", "checkpoint")
    assert replay_request(ann, {"handled": {ANNOTATION_REPLAY: "r1"}}) == (None, None)
    assert replay_request({ANNOTATION_REPLAY: "nope"}, {})[1] == f"{ANNOTATION_REPLAY}: not JSON"
    assert replay_request({}, {}) == (None, None)
    bare = {ANNOTATION_REPLAY: '{"id": "r2", "to": "checkpoint", "partitions": [0]}'}
    assert replay_request(bare, {}, "orders")[0] == ReplayRequest("r2", "checkpoint", partitions=(P(0, "orders"),))
    refused = replay_request(bare, {})
    assert refused[0] is None and "write topic:partition" in (refused[1] or "")


def owned_by(partitions: int, worker: str = "w1") -> Observed:
    every = H(*range(partitions))
    doc = AssignmentDoc(3, {worker: every}, {"t": partitions}, {})
    return Observed(doc, {worker: WorkerView(worker, report=WorkerReport(every, 3))}, {"t": partitions})


CHECKPOINT = {"at": 1.0, "offsets": {"t:0": 5, "t:1": 7, "t:2": 0}}


@pytest.mark.parametrize(("request_", "phase", "paused", "checkpoint", "why"), [
    (ReplayRequest("r", "checkpoint"), "Canary", False, CHECKPOINT, "a rollout is running (phase Canary)"),
    (ReplayRequest("r", "checkpoint"), "Aborted", False, CHECKPOINT, "a rollout is running"),
    (ReplayRequest("r", "checkpoint"), "Stable", True, CHECKPOINT, "paused"),
    (ReplayRequest("r", "checkpoint"), "Stable", False, None, "no checkpoint"),
    (ReplayRequest("r", "checkpoint", partitions=(P(7), P(0, "u"))), "Stable", False, CHECKPOINT,
     "none of partitions t:7 u:0 exists (the group has t:0-2)"),
])
def test_refused_requests(request_: ReplayRequest, phase: str, paused: bool, checkpoint: Any, why: str) -> None:
    step = next_replay_step(request_, None, owned_by(3), phase, paused, checkpoint, 10.0)
    assert step.hold == frozenset() and step.rewind is None
    assert step.status is not None and step.status["phase"] == REFUSED and why in step.status["message"]
    assert [e[1] for e in step.events] == ["ReplayRefused"]
    # and not again: the refusal is the answer to that id
    again = next_replay_step(request_, step.status, owned_by(3), phase, paused, checkpoint, 11.0)
    assert again.hold == frozenset() and again.events == []


def test_an_aborted_canary_replays_though_its_rollout_is_not_over() -> None:
    internal = ReplayRequest("abort-5", "checkpoint", partitions=(P(1),), internal=True)
    step = next_replay_step(internal, None, owned_by(3), ABORTED, False, CHECKPOINT, 10.0)
    assert step.status is not None and step.status["phase"] == HOLDING and step.hold == H(1)
    assert step.status["partitions"] == ["t:1"]


def test_held_partitions_are_not_moved_while_a_worker_still_owns_them() -> None:
    step = next_replay_step(ReplayRequest("r", "checkpoint"), None, owned_by(3), STABLE, False, CHECKPOINT, 10.0)
    assert step.hold == H(0, 1, 2) and step.rewind is None
    assert [e[1] for e in step.events] == ["ReplayStarted"]
    # revoked in the document, the worker has not reported the release yet
    doc = plan_assignment(owned_by(3), {})
    obs = Observed(doc, {"w1": WorkerView("w1", report=WorkerReport(H(0, 1, 2), 3))}, {"t": 3})
    assert next_replay_step(ReplayRequest("r", "checkpoint"), step.status, obs, STABLE, False, CHECKPOINT,
                            11.0).rewind is None
    # released
    obs = Observed(doc, {"w1": WorkerView("w1", report=WorkerReport(frozenset(), doc.epoch))}, {"t": 3})
    later = next_replay_step(ReplayRequest("r", "checkpoint"), step.status, obs, STABLE, False, CHECKPOINT, 12.0)
    assert later.rewind == ReplayRequest("r", "checkpoint") and later.hold == H(0, 1, 2)
    # held partitions an operator of the previous version wrote as bare numbers are its single topic's
    legacy = {**(step.status or {}), "partitions": [0, 1, 2]}
    assert next_replay_step(ReplayRequest("r", "checkpoint"), legacy, obs, STABLE, False, CHECKPOINT, 12.0,
                            "t").hold == H(0, 1, 2)


def test_targets_and_the_done_status() -> None:
    assert targets(ReplayRequest("r", "checkpoint"), H(0, 2), CHECKPOINT) == {P(0): 5, P(2): 0}
    # a checkpoint of the previous version (bare keys) is read with the group's single topic
    assert targets(ReplayRequest("r", "checkpoint"), H(0, 2), {"offsets": {"0": 5, "2": 1}}, None, "t") == \
        {P(0): 5, P(2): 1}
    assert targets(ReplayRequest("r", "offsets", offsets={P(1): 3}), H(1), None) == {P(1): 3}
    assert targets(ReplayRequest("r", "time", time=5.0), H(0, 1), None, {P(0): 9, P(1): 4}) == {P(0): 9, P(1): 4}
    st_, event = replayed({"id": "r", "phase": HOLDING}, {P(0): (40, 5), P(2, "u"): (None, 0)}, 20.0)
    assert st_["phase"] == DONE and st_["moved"] == {"t:0": {"from": 40, "to": 5}, "u:2": {"from": None, "to": 0}}
    assert event == ("Normal", "Replayed", "replay r: offsets moved t:0: 40->5, u:2: -->0")


# ---- a simulated cluster --------------------------------------------------------------------------------


class Sim(Cluster):
    """The rollout tests' simulated cluster plus what the operator's round adds: the checkpoint, and the
    replay's hold. Asserts, whenever a rewind would run, that no worker owns a held partition."""

    def __init__(self, partitions: int | dict[str, int]) -> None:
        super().__init__(partitions if isinstance(partitions, dict) else {"t": partitions})
        self.rewinds: list[frozenset[PartitionId]] = []
        self.request: ReplayRequest | None = None

    def shape(self, step: RolloutStep, observed: Observed, spec: RolloutSpec, now: float) -> None:
        take_checkpoint(step, self.status, lambda: {p: 100 + p.partition for p in self.partitions}, now)
        replay = plan_replay(step, self.status, observed, spec, False, step.status.get("checkpoint"),
                             self.request, now)
        if replay.rewind is not None:
            # the property under test: nobody owns a held partition when its offsets move
            owners = {p: pod.name for pod in self.pods.values() for p in pod.owned}
            assert not (replay.hold & set(owners)), f"offsets moved under {owners}"
            self.rewinds.append(replay.hold)
            step.status["replay"], done = replayed(step.status["replay"], {p: (None, 0) for p in replay.hold}, now)
            step.events.append(done)

    def run(self, spec: RolloutSpec, target: str, workers: int, now: float, data: st.DataObject | None,
            until: Any, request: ReplayRequest | None = None, commands: Commands | None = None,
            rounds: int = 300) -> float:
        self.request = request
        for _ in range(rounds):
            self.reconcile(spec, target, workers, now, commands=commands)
            self.workers_act(data)
            now += 1
            if until(self):
                return now
        raise AssertionError(f"not reached: {self.status}")


def settled(sim: Sim, rev: str) -> bool:
    return sim.status.get("phase") == STABLE and sim.status.get("stableRevision") == rev and \
        len(sim.owners()) == len(sim.partitions) and set(sim.owners().values()) == {rev}


@settings(max_examples=12)
@given(st.data(), st.dictionaries(st.sampled_from(["t", "u"]), st.integers(1, 5), min_size=1), st.integers(1, 3))
def test_lagpilot_replay_moves_offsets_only_while_nobody_owns_them(data: st.DataObject, topics: dict[str, int],
                                                                    workers: int) -> None:
    sim = Sim(topics)
    spec = RolloutSpec(strategy="Canary", canary=CanarySpec(partitions=(0,), analysis_seconds=0))
    now = sim.run(spec, "a", workers, 0.0, data, lambda s: settled(s, "a"))
    # a finished rollout leaves a checkpoint
    now = sim.run(RolloutSpec(), "b", workers, now, data, lambda s: settled(s, "b"))
    assert sim.status["checkpoint"]["forRevision"] == "b"
    chosen = tuple(sorted(data.draw(st.sets(st.sampled_from(sim.partitions), min_size=1), label="partitions")))
    request = ReplayRequest("r1", "checkpoint", partitions=chosen)
    sim.run(RolloutSpec(), "b", workers, now, data,
            lambda s: (s.status.get("replay") or {}).get("phase") == DONE and settled(s, "b"), request)
    assert sim.rewinds == [frozenset(chosen)]
    assert [e[1] for e in sim.events].count("Replayed") == 1


@settings(max_examples=12)
@given(st.data(), st.integers(3, 8))
def test_an_aborted_canary_goes_back_to_the_checkpoint_while_nobody_owns_its_partitions(
        data: st.DataObject, partitions: int) -> None:
    sim = Sim(partitions)
    now = sim.run(RolloutSpec(), "a", 2, 0.0, data, lambda s: settled(s, "a"))
    chosen = (P(0), P(partitions - 1))
    spec = RolloutSpec(strategy="Canary", on_abort="replayFromCheckpoint",
                       canary=CanarySpec(partitions=chosen, analysis_seconds=10_000))
    now = sim.run(spec, "b", 2, now, data,
                  lambda s: {p for p, rev in s.owners().items() if rev == "b"} == set(chosen))
    assert sim.status["checkpoint"]["offsets"] == {f"t:{p}": 100 + p for p in range(partitions)}
    abort = Commands(abort=True, stamps={"lagpilot.io/abort": "t1"})
    sim.reconcile(spec, "b", 2, now, commands=abort)
    assert sim.status["phase"] == ABORTED
    sim.run(spec, "b", 2, now + 1, data,
            lambda s: (s.status.get("replay") or {}).get("phase") == DONE and len(s.owners()) == partitions
            and set(s.owners().values()) == {"a"})
    assert sim.rewinds == [frozenset(chosen)]
    assert sim.status["phase"] == ABORTED and sim.status["replay"]["id"].startswith("abort-")


def test_without_the_hold_offsets_would_move_under_an_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mutation check, kept as a test: with ``nobody_owns`` always true the simulation catches it."""
    monkeypatch.setattr(rp, "nobody_owns", lambda observed, partitions: True)
    sim = Sim(4)
    now = sim.run(RolloutSpec(), "a", 2, 0.0, None, lambda s: settled(s, "a"))
    sim.status["checkpoint"] = {"offsets": {"t:0": 1, "t:1": 1, "t:2": 1, "t:3": 1}}
    with pytest.raises(AssertionError, match="offsets moved under"):
        sim.run(RolloutSpec(), "a", 2, now, None, lambda s: False, ReplayRequest("r", "checkpoint"), rounds=3)


def test_a_refused_request_is_marked_handled_so_it_never_runs_later() -> None:
    """Refused while a canary runs: recorded under status.rollout.handled, so the same annotation does not
    start a replay once the rollout is over (a user would not expect an old request to fire then)."""
    sim = Sim(3)
    now = sim.run(RolloutSpec(), "a", 1, 0.0, None, lambda s: settled(s, "a"))
    spec = RolloutSpec(strategy="Canary", canary=CanarySpec(partitions=(0,), analysis_seconds=10_000))
    sim.request = ReplayRequest("late", "checkpoint")
    sim.reconcile(spec, "b", 1, now)
    assert sim.status["replay"]["phase"] == REFUSED
    assert sim.status["handled"][ANNOTATION_REPLAY] == "late"
    assert replay_request({ANNOTATION_REPLAY: '{"id": "late", "to": "checkpoint"}'}, sim.status) == (None, None)


def test_the_checkpoint_is_taken_once_per_rollout_and_kept_after_it() -> None:
    sim = Sim(2)
    now = sim.run(RolloutSpec(), "a", 1, 0.0, None, lambda s: settled(s, "a"))
    assert "checkpoint" not in sim.status, "a new group has no rollout, so no checkpoint"
    now = sim.run(RolloutSpec(), "b", 1, now, None, lambda s: settled(s, "b"))
    taken = [e for e in sim.events if e[1] == "CheckpointTaken"]
    assert len(taken) == 1 and taken[0][2] == "offsets before revision b: t:0=100, t:1=101"
    assert sim.status["checkpoint"]["revision"] == "a" and sim.status["phase"] == STABLE
