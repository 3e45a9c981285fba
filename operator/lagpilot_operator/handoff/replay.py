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

Partitions are ``topic:partition`` everywhere (a group may read several topics). In a request a bare number
N still means partition N of the group's only topic, and is refused when the group reads several.
status.rollout.checkpoint (taken by the shell at every rollout start): ``{"at": unix seconds, "revision":
the revision that was stable, "offsets": {"<topic:partition>": offset}}``.
status.rollout.replay: ``{"id", "to", "partitions": ["<topic:partition>"], "phase": Holding|Done|Refused,
"message", "since", "moved": {"<topic:partition>": {"from": offset, "to": offset}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lagpilot.protocol import ANNOTATION_REPLAY, PartitionId, format_partitions, parse_partition_id
from lagpilot.timefmt import parse_rfc3339
from lagpilot_operator.handoff.planner import Observed, released
from lagpilot_operator.handoff.rollout import (
    CANARY,
    PROGRESSING,
    PROMOTING,
    RolloutStep,
    status_offsets,
    status_partitions,
)
from lagpilot_operator.resource.spec import RolloutSpec

# Where the group reads next per partition (None when the brokers cannot tell): the rollout checkpoint.
PositionsFn = Callable[[], "Mapping[PartitionId, int] | None"]

HOLDING, DONE, REFUSED = "Holding", "Done", "Refused"
TARGETS = ("checkpoint", "time", "offsets")

Event = tuple[str, str, str]


class ReplayRequestError(ValueError):
    """The annotation does not hold a valid replay request; the message says which part and why."""


def _partition(where: str, value: Any, default_topic: str | None) -> PartitionId:
    """A partition of a request: ``"topic:partition"``, or a bare number meaning ``default_topic``'s."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ReplayRequestError(f"{where}: {value!r} is not topic:partition")
    try:
        return parse_partition_id(value, default_topic)
    except ValueError:
        if default_topic is None and str(value).strip().isdigit():
            raise ReplayRequestError(f"{where}: {value!r} names no topic and the group reads several: "
                                     f"write topic:partition") from None
        raise ReplayRequestError(f"{where}: {value!r} is not topic:partition") from None


@dataclass(frozen=True)
class ReplayRequest:
    """Where to move which partitions. ``partitions`` None: every partition of every topic of the group
    (``offsets``: the partitions named). ``internal``: made by the operator itself (a canary's abort), not
    refused for the rollout it belongs to."""

    id: str
    to: str
    time: float | None = None  # unix seconds, for to == "time"
    offsets: Mapping[PartitionId, int] = field(default_factory=dict)  # for to == "offsets"
    partitions: tuple[PartitionId, ...] | None = None
    internal: bool = False

    @classmethod
    def from_annotation(cls, text: str, default_topic: str | None = None) -> ReplayRequest:
        """``{"id": "...", "to": "checkpoint"|"time"|"offsets", "time": "RFC 3339", "offsets":
        {"orders:0": 42}, "partitions": ["orders:0", "payments:1"]}`` (what ``lagpilot replay`` writes). A
        bare partition number is ``default_topic``'s (the group's only topic), refused without one."""
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
        offsets: dict[PartitionId, int] = {}
        if to == "offsets":
            given = raw.get("offsets")
            if not isinstance(given, dict) or not given:
                raise ReplayRequestError('offsets: a non-empty object {"<topic:partition>": offset} is required')
            for p, o in given.items():
                if isinstance(o, bool) or not isinstance(o, int) or o < 0:
                    raise ReplayRequestError(f"offsets: {p!r}: {o!r} is not topic:partition: offset >= 0")
                offsets[_partition("offsets", p, default_topic)] = o
        parts = raw.get("partitions")
        chosen: tuple[PartitionId, ...] | None = None
        if parts is not None:
            if not isinstance(parts, list):
                raise ReplayRequestError("partitions: a list of topic:partition is required")
            chosen = tuple(sorted({_partition("partitions", p, default_topic) for p in parts}))
        if to == "offsets":
            chosen = tuple(sorted(offsets))
        return cls(rid, to, when, offsets, chosen)


@dataclass
class ReplayStep:
    hold: frozenset[PartitionId]  # partitions nobody may own this round
    status: dict[str, Any] | None  # status.rollout.replay (None: none)
    events: list[Event] = field(default_factory=list)
    rewind: ReplayRequest | None = None  # set: nothing owns ``hold`` any more; the shell moves the offsets


def nobody_owns(observed: Observed, partitions: frozenset[PartitionId]) -> bool:
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


def replay_partitions(request: ReplayRequest, partitions: Sequence[PartitionId]) -> tuple[PartitionId, ...]:
    """The request's partitions that exist (all of them when it names none)."""
    if request.partitions is None:
        return tuple(sorted(partitions))
    existing = set(partitions)
    return tuple(p for p in request.partitions if p in existing)


def refusal(request: ReplayRequest, phase: str, paused: bool, checkpoint: Mapping[str, Any] | None,
            partitions: Sequence[PartitionId]) -> str | None:
    """Why a request cannot run now, or None."""
    if not request.internal and phase not in ("", "Stable"):
        return f"a rollout is running (phase {phase}): replay after it ends"
    if paused:
        return "the group is paused: unpause it first"
    if request.to == "checkpoint" and not (checkpoint or {}).get("offsets"):
        return "no checkpoint: one is taken when a rollout starts"
    if request.partitions is not None and not replay_partitions(request, partitions):
        return (f"none of partitions {format_partitions(request.partitions)} exists (the group has "
                f"{format_partitions(partitions) or 'no partitions'})")
    return None


def next_replay_step(request: ReplayRequest | None, previous: Mapping[str, Any] | None, observed: Observed,
                     phase: str, paused: bool, checkpoint: Mapping[str, Any] | None, now: float,
                     default_topic: str | None = None) -> ReplayStep:
    """``default_topic`` reads held partitions an operator of the previous version wrote as bare numbers."""
    prev = dict(previous or {})
    if request is None or (request.id == prev.get("id") and prev.get("phase") in (DONE, REFUSED)):
        return ReplayStep(frozenset(), prev or None)
    if request.id != prev.get("id"):
        why = refusal(request, phase, paused, checkpoint, observed.partitions)
        if why is not None:
            st = {"id": request.id, "to": request.to, "phase": REFUSED, "message": why, "since": now}
            return ReplayStep(frozenset(), st, [("Warning", "ReplayRefused", f"replay {request.id}: {why}")])
        parts = replay_partitions(request, observed.partitions)
        shown = format_partitions(parts)
        prev = {"id": request.id, "to": request.to, "partitions": [str(p) for p in parts], "phase": HOLDING,
                "since": now, "message": f"holding partitions {shown} until no worker owns them"}
        events: list[Event] = [("Normal", "ReplayStarted", f"replay {request.id} to {describe(request)}: "
                                                            f"holding partitions {shown}")]
    else:
        events = []
    hold = frozenset(status_partitions(prev.get("partitions"), default_topic))
    step = ReplayStep(hold, prev, events)
    if nobody_owns(observed, hold):
        step.rewind = request
        step.status = {**prev, "message": f"no worker owns partitions {format_partitions(hold)}: moving their "
                                          f"offsets"}
    return step


def describe(request: ReplayRequest) -> str:
    if request.to == "time":
        return f"time {request.time}"
    if request.to == "offsets":
        return "offsets " + ", ".join(f"{p}={o}" for p, o in sorted(request.offsets.items()))
    return "the checkpoint"


def targets(request: ReplayRequest, partitions: frozenset[PartitionId], checkpoint: Mapping[str, Any] | None,
            at_time: Mapping[PartitionId, int] | None = None, default_topic: str | None = None
            ) -> dict[PartitionId, int]:
    """The offset each held partition moves to. ``at_time``: the first offset at or after the request's
    time per partition (the shell asks the brokers; the log end where there is none). ``default_topic``
    reads a checkpoint an operator of the previous version wrote with bare numbers."""
    if request.to == "offsets":
        return {p: request.offsets[p] for p in partitions if p in request.offsets}
    if request.to == "time":
        return {p: at_time[p] for p in partitions if at_time is not None and p in at_time}
    saved = status_offsets((checkpoint or {}).get("offsets"), default_topic)
    return {p: saved[p] for p in partitions if p in saved}


def replayed(status: Mapping[str, Any], moved: Mapping[PartitionId, tuple[int | None, int]], now: float) -> tuple[
        dict[str, Any], Event]:
    """status.rollout.replay once the offsets are set (the partitions are granted again from the next round)."""
    table = {str(p): {"from": a, "to": b} for p, (a, b) in sorted(moved.items())}
    summary = ", ".join(f"{p}: {a if a is not None else '-'}->{b}" for p, (a, b) in sorted(moved.items()))
    st = {**status, "phase": DONE, "moved": table, "doneAt": now,
          "message": f"offsets moved ({summary}); partitions granted again"}
    return st, ("Normal", "Replayed", f"replay {status.get('id')}: offsets moved {summary}")


def abort_replay_request(spec_on_abort: str, rollout: Mapping[str, Any],
                         checkpoint: Mapping[str, Any] | None, default_topic: str | None = None
                         ) -> ReplayRequest | None:
    """``onAbort: replayFromCheckpoint``: an aborted canary's partitions go back to the checkpoint (one
    request per abort, named after the abort's time, so it runs once)."""
    if spec_on_abort != "replayFromCheckpoint" or rollout.get("phase") != "Aborted":
        return None
    chosen = status_partitions(rollout.get("canaryPartitions"), default_topic)
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
            shown = ", ".join(f"{p}={o}" for p, o in sorted(offsets.items()))
            step.events.append(("Normal", "CheckpointTaken", f"offsets before revision {new}: {shown}"))
    if checkpoint:
        status["checkpoint"] = checkpoint
    return checkpoint


def plan_replay(step: RolloutStep, previous: Mapping[str, Any], observed: Observed, rollout: RolloutSpec,
                paused: bool, checkpoint: Mapping[str, Any] | None, request: ReplayRequest | None,
                now: float, default_topic: str | None = None) -> ReplayStep:
    """The replay of this round (an aborted canary's own first, then a ``lagpilot replay``): its partitions
    are desired by nobody while it holds them. ``default_topic``: the group's only topic, for status an
    operator of the previous version wrote with bare partition numbers."""
    status = step.status
    prev = previous.get("replay") or None
    internal = abort_replay_request(rollout.on_abort, status, checkpoint, default_topic)
    if internal is not None and not (prev and prev.get("id") == internal.id and prev.get("phase") in (DONE, REFUSED)):
        request = internal
    rp = next_replay_step(request, prev, observed, str(status.get("phase") or ""), paused, checkpoint, now,
                          default_topic)
    for p in rp.hold:
        step.desired[p] = None
    if rp.status:
        status["replay"] = rp.status
        if request is not None and not request.internal and rp.status.get("phase") == REFUSED:
            status["handled"] = {**(status.get("handled") or {}), ANNOTATION_REPLAY: request.id}
    step.events.extend(rp.events)
    return rp


def replay_request(annotations: Mapping[str, str] | None, rollout_status: Mapping[str, Any],
                   default_topic: str | None = None) -> tuple[ReplayRequest | None, str | None]:
    """The ``lagpilot.io/replay`` request not handled yet, or the reason it is unreadable. ``default_topic``:
    the group's only topic (bare partition numbers mean its partitions); None when it reads several."""
    text = (annotations or {}).get(ANNOTATION_REPLAY)
    if not text:
        return None, None
    try:
        request = ReplayRequest.from_annotation(text, default_topic)
    except ReplayRequestError as exc:
        return None, f"{ANNOTATION_REPLAY}: {exc}"
    if ((rollout_status.get("handled") or {}).get(ANNOTATION_REPLAY)) == request.id:
        return None, None
    return request, None
