"""Replays: moving a group's committed offsets back (or to a time, or to given offsets) safely. Pure: from the
request, the previous status.rollout.replay, the observed assignment and the rollout phase to the partitions
to hold, the next status, the Events, and -- once nothing owns them -- the rewind for the shell to do.

Why a hold: a committed offset changed under a worker that owns the partition is overwritten by that
worker's next commit, and records it already fetched are delivered anyway. So the partitions are first
revoked through the hand-off and granted to nobody (*held*); once every worker that had them has reported
the release (or is gone), the shell sets the offsets with the admin API; the next round grants them again,
and their new owners start from the new offsets. The same path serves ``lagpilot replay`` (the
``lagpilot.io/replay`` annotation) and ``rollout.onAbort: replayFromCheckpoint`` (a canary aborted: its
partitions go back to the checkpoint taken when the rollout started, so the stable revision handles again
what the bad version handled).

status.rollout.checkpoint (taken by the shell at every rollout start): ``{"at": unix seconds, "revision":
the revision that was stable, "offsets": {"<partition>": offset}}``.
status.rollout.replay: ``{"id", "to", "partitions", "phase": Holding|Done|Refused, "message", "since",
"moved": {"<partition>": {"from": offset, "to": offset}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lagpilot.protocol import ANNOTATION_REPLAY
from lagpilot.timefmt import parse_rfc3339
from lagpilot_operator.handoff.planner import Observed, released
from lagpilot_operator.handoff.rollout import CANARY, PROGRESSING, PROMOTING, RolloutStep
from lagpilot_operator.resource.spec import RolloutSpec

# Where the group reads next per partition (None when the brokers cannot tell): the rollout checkpoint.
PositionsFn = Callable[[], "Mapping[int, int] | None"]

HOLDING, DONE, REFUSED = "Holding", "Done", "Refused"
TARGETS = ("checkpoint", "time", "offsets")

Event = tuple[str, str, str]


class ReplayRequestError(ValueError):
    """The annotation does not hold a valid replay request; the message says which part and why."""


@dataclass(frozen=True)
class ReplayRequest:
    """Where to move which partitions. ``partitions`` None: every partition of the topic (``offsets``: the
    partitions named). ``internal``: made by the operator itself (a canary's abort), not refused for the
    rollout it belongs to."""

    id: str
    to: str
    time: float | None = None  # unix seconds, for to == "time"
    offsets: Mapping[int, int] = field(default_factory=dict)  # for to == "offsets"
    partitions: tuple[int, ...] | None = None
    internal: bool = False

    @classmethod
    def from_annotation(cls, text: str) -> ReplayRequest:
        """``{"id": "...", "to": "checkpoint"|"time"|"offsets", "time": "RFC 3339", "offsets": {"0": 42},
        "partitions": [0, 1]}`` (what ``lagpilot replay`` writes)."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise ReplayRequestError("not JSON") from None
        if not isinstance(raw, dict):
            raise ReplayRequestError("not a JSON object")
        rid, to = raw.get("id"), raw.get("to")
        if not isinstance(rid, str) or not rid:
            raise ReplayRequestError("id: a non-empty string is required")
        if to not in TARGETS:
            raise ReplayRequestError(f"to: must be one of {', '.join(TARGETS)}")
        when = None
        if to == "time":
            when = parse_rfc3339(str(raw.get("time") or ""))
            if when is None:
                raise ReplayRequestError("time: an RFC 3339 time such as 2026-01-31T00:00:00Z is required")
        offsets: dict[int, int] = {}
        if to == "offsets":
            given = raw.get("offsets")
            if not isinstance(given, dict) or not given:
                raise ReplayRequestError('offsets: a non-empty object {"<partition>": offset} is required')
            for p, o in given.items():
                if not str(p).isdigit() or isinstance(o, bool) or not isinstance(o, int) or o < 0:
                    raise ReplayRequestError(f"offsets: {p!r}: {o!r} is not partition: offset >= 0")
                offsets[int(p)] = o
        parts = raw.get("partitions")
        chosen: tuple[int, ...] | None = None
        if parts is not None:
            if not isinstance(parts, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                                      for p in parts):
                raise ReplayRequestError("partitions: a list of partition numbers is required")
            chosen = tuple(sorted(set(parts)))
        if to == "offsets":
            chosen = tuple(sorted(offsets))
        return cls(rid, to, when, offsets, chosen)


@dataclass
class ReplayStep:
    hold: frozenset[int]  # partitions nobody may own this round
    status: dict[str, Any] | None  # status.rollout.replay (None: none)
    events: list[Event] = field(default_factory=list)
    rewind: ReplayRequest | None = None  # set: nothing owns ``hold`` any more; the shell moves the offsets


def nobody_owns(observed: Observed, partitions: frozenset[int]) -> bool:
    """Every one of ``partitions`` is granted to nobody in the published document, and every worker it was
    revoked from has reported the release (or is gone): no worker can deliver or commit them."""
    doc = observed.doc
    if doc is None:
        return False
    owner = doc.owner_of()
    for p in partitions:
        if p in owner:
            return False
        rev = doc.revoked.get(p)
        if rev is not None and not released(observed, rev, p):
            return False
        for view in observed.workers.values():
            if not view.gone and view.report is not None and p in view.report.owned:
                return False
    return True


def replay_partitions(request: ReplayRequest, partitions: int) -> tuple[int, ...]:
    chosen = request.partitions if request.partitions is not None else tuple(range(partitions))
    return tuple(p for p in chosen if 0 <= p < partitions)


def refusal(request: ReplayRequest, phase: str, paused: bool, checkpoint: Mapping[str, Any] | None,
            partitions: int) -> str | None:
    """Why a request cannot run now, or None."""
    if not request.internal and phase not in ("", "Stable"):
        return f"a rollout is running (phase {phase}): replay after it ends"
    if paused:
        return "the group is paused: unpause it first"
    if request.to == "checkpoint" and not (checkpoint or {}).get("offsets"):
        return "no checkpoint: one is taken when a rollout starts"
    if request.partitions is not None and not replay_partitions(request, partitions):
        return f"none of partitions {list(request.partitions)} exists (the topic has {partitions})"
    return None


def next_replay_step(request: ReplayRequest | None, previous: Mapping[str, Any] | None, observed: Observed,
                     phase: str, paused: bool, checkpoint: Mapping[str, Any] | None, now: float) -> ReplayStep:
    prev = dict(previous or {})
    if request is None or (request.id == prev.get("id") and prev.get("phase") in (DONE, REFUSED)):
        return ReplayStep(frozenset(), prev or None)
    if request.id != prev.get("id"):
        why = refusal(request, phase, paused, checkpoint, observed.partitions)
        if why is not None:
            st = {"id": request.id, "to": request.to, "phase": REFUSED, "message": why, "since": now}
            return ReplayStep(frozenset(), st, [("Warning", "ReplayRefused", f"replay {request.id}: {why}")])
        parts = replay_partitions(request, observed.partitions)
        prev = {"id": request.id, "to": request.to, "partitions": list(parts), "phase": HOLDING, "since": now,
                "message": f"holding partitions {list(parts)} until no worker owns them"}
        events: list[Event] = [("Normal", "ReplayStarted", f"replay {request.id} to {describe(request)}: "
                                                            f"holding partitions {list(parts)}")]
    else:
        events = []
    hold = frozenset(int(p) for p in prev.get("partitions") or [])
    step = ReplayStep(hold, prev, events)
    if nobody_owns(observed, hold):
        step.rewind = request
        step.status = {**prev, "message": f"no worker owns partitions {sorted(hold)}: moving their offsets"}
    return step


def describe(request: ReplayRequest) -> str:
    if request.to == "time":
        return f"time {request.time}"
    if request.to == "offsets":
        return "offsets " + ", ".join(f"{p}:{o}" for p, o in sorted(request.offsets.items()))
    return "the checkpoint"


def targets(request: ReplayRequest, partitions: frozenset[int], checkpoint: Mapping[str, Any] | None,
            at_time: Mapping[int, int] | None = None) -> dict[int, int]:
    """The offset each held partition moves to. ``at_time``: the first offset at or after the request's
    time per partition (the shell asks the brokers; the log end where there is none)."""
    if request.to == "offsets":
        return {p: request.offsets[p] for p in partitions if p in request.offsets}
    if request.to == "time":
        return {p: at_time[p] for p in partitions if at_time is not None and p in at_time}
    saved = {int(p): int(o) for p, o in ((checkpoint or {}).get("offsets") or {}).items()}
    return {p: saved[p] for p in partitions if p in saved}


def replayed(status: Mapping[str, Any], moved: Mapping[int, tuple[int | None, int]], now: float) -> tuple[
        dict[str, Any], Event]:
    """status.rollout.replay once the offsets are set (the partitions are granted again from the next round)."""
    table = {str(p): {"from": a, "to": b} for p, (a, b) in sorted(moved.items())}
    summary = ", ".join(f"{p}: {a if a is not None else '-'}->{b}" for p, (a, b) in sorted(moved.items()))
    st = {**status, "phase": DONE, "moved": table, "doneAt": now,
          "message": f"offsets moved ({summary}); partitions granted again"}
    return st, ("Normal", "Replayed", f"replay {status.get('id')}: offsets moved {summary}")


def abort_replay_request(spec_on_abort: str, rollout: Mapping[str, Any],
                         checkpoint: Mapping[str, Any] | None) -> ReplayRequest | None:
    """``onAbort: replayFromCheckpoint``: an aborted canary's partitions go back to the checkpoint (one
    request per abort, named after the abort's time, so it runs once)."""
    if spec_on_abort != "replayFromCheckpoint" or rollout.get("phase") != "Aborted":
        return None
    chosen = [int(p) for p in rollout.get("canaryPartitions") or []]
    if not chosen or not (checkpoint or {}).get("offsets"):
        return None
    return ReplayRequest(f"abort-{int(float(rollout.get('since') or 0))}", "checkpoint",
                         partitions=tuple(sorted(chosen)), internal=True)


# ---- one round: the checkpoint and the replay beside the rollout step ----------------------------------


def take_checkpoint(step: RolloutStep, previous: Mapping[str, Any], positions_fn: PositionsFn | None,
                    now: float) -> dict[str, Any] | None:
    """status.rollout.checkpoint: the group's offsets when a rollout starts (read once per rollout, in its
    first round; again next round if the brokers did not answer), then kept until the next rollout."""
    status = step.status
    checkpoint = dict(previous.get("checkpoint") or {}) or None
    new = status.get("newRevision")
    if (positions_fn is not None and status.get("phase") in (PROGRESSING, CANARY, PROMOTING) and new
            and (checkpoint or {}).get("forRevision") != new):
        offsets = positions_fn()
        if offsets is not None:
            checkpoint = {"at": now, "revision": status.get("stableRevision"), "forRevision": new,
                          "offsets": {str(p): int(o) for p, o in sorted(offsets.items())}}
            shown = ", ".join(f"{p}:{o}" for p, o in sorted(offsets.items()))
            step.events.append(("Normal", "CheckpointTaken", f"offsets before revision {new}: {shown}"))
    if checkpoint:
        status["checkpoint"] = checkpoint
    return checkpoint


def plan_replay(step: RolloutStep, previous: Mapping[str, Any], observed: Observed, rollout: RolloutSpec,
                paused: bool, checkpoint: Mapping[str, Any] | None, request: ReplayRequest | None,
                now: float) -> ReplayStep:
    """The replay of this round (an aborted canary's own first, then a ``lagpilot replay``): its partitions
    are desired by nobody while it holds them."""
    status = step.status
    prev = previous.get("replay") or None
    internal = abort_replay_request(rollout.on_abort, status, checkpoint)
    if internal is not None and not (prev and prev.get("id") == internal.id and prev.get("phase") in (DONE, REFUSED)):
        request = internal
    rp = next_replay_step(request, prev, observed, str(status.get("phase") or ""), paused, checkpoint, now)
    for p in rp.hold:
        step.desired[p] = None
    if rp.status:
        status["replay"] = rp.status
        if request is not None and not request.internal and rp.status.get("phase") == REFUSED:
            status["handled"] = {**(status.get("handled") or {}), ANNOTATION_REPLAY: request.id}
    step.events.extend(rp.events)
    return rp


def replay_request(annotations: Mapping[str, str] | None, rollout_status: Mapping[str, Any]
                   ) -> tuple[ReplayRequest | None, str | None]:
    """The ``lagpilot.io/replay`` request not handled yet, or the reason it is unreadable."""
    text = (annotations or {}).get(ANNOTATION_REPLAY)
    if not text:
        return None, None
    try:
        request = ReplayRequest.from_annotation(text)
    except ReplayRequestError as exc:
        return None, f"{ANNOTATION_REPLAY}: {exc}"
    if ((rollout_status.get("handled") or {}).get(ANNOTATION_REPLAY)) == request.id:
        return None, None
    return request, None
