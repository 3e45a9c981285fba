"""Rollouts by partition: a pure function from (spec.rollout, the target revision, the previous
status.rollout, the observed workers and assignment, canary figures, manual commands, now) to the next step:
replica counts per revision, the desired partition owners (fed to ``assignment.plan_assignment``, which
moves them safely), the new status.rollout, and the Events to emit.

All memory lives in status.rollout (phase, revisions, canary partitions, and a few timestamps), so an
operator restarted mid-rollout continues where it was. Each revision runs as its own Deployment; a
partition only ever moves through the hand-off protocol, so every strategy keeps one owner per partition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lagpilot.protocol import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSE,
    ANNOTATION_PROMOTE,
    PartitionId,
    flag_set,
    format_partitions,
    parse_partition_id,
)
from lagpilot_operator.handoff.planner import (
    Observed,
    WorkerView,
    balanced_distribution,
    confirmed_owners,
    limit_moves,
)
from lagpilot_operator.resource.spec import RolloutSpec

STABLE, PROGRESSING, CANARY, PROMOTING, ABORTED = "Stable", "Progressing", "Canary", "Promoting", "Aborted"

Event = tuple[str, str, str]  # (Normal|Warning, reason, message)

# How long past analysisSeconds a canary may go without taking its partitions or delivering anything while
# records wait on them (slow image pulls, a cold target), before it is aborted.
CANARY_GRACE_SECONDS = 60


@dataclass(frozen=True)
class Commands:
    """Manual control (annotations on the CR, or the lagpilot CLI which sets them to a timestamp).
    promote/abort are one-shot: the value acted on is remembered in status.rollout.handled, so an
    annotation left behind does not promote or abort the *next* rollout. pause holds while present."""

    promote: bool = False
    abort: bool = False
    pause: bool = False
    stamps: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str] | None,
                         status: Mapping[str, Any] | None = None) -> Commands:
        a = annotations or {}
        handled = (status or {}).get("handled") or {}

        def on(key: str) -> bool:
            return flag_set(a, key)

        def fresh(key: str) -> bool:
            return on(key) and handled.get(key) != str(a[key])

        stamps = {k: str(a[k]) for k in (ANNOTATION_PROMOTE, ANNOTATION_ABORT) if on(k)}
        return cls(fresh(ANNOTATION_PROMOTE), fresh(ANNOTATION_ABORT), on(ANNOTATION_PAUSE), stamps)


@dataclass(frozen=True)
class CanaryFigures:
    """Measured on the canary partitions since the analysis started (the caller scrapes the workers).
    ``lag_growth``: growth of the canary partitions' lag minus the stable partitions' (records).
    ``backlog``: records waiting on the canary partitions now (None: not read), so a canary that delivers
    nothing can be told from one that has nothing to deliver."""

    deliveries: int
    error_rate: float
    p99_ms: float
    lag_growth: float
    backlog: int | None = None


@dataclass(frozen=True)
class RolloutInput:
    spec: RolloutSpec
    target_revision: str
    workers: int
    observed: Observed
    status: Mapping[str, Any] = field(default_factory=dict)
    paused: bool = False
    commands: Commands = field(default_factory=Commands)
    figures: CanaryFigures | None = None
    now: float = 0.0
    # The group's only topic (None with several): reads partitions an operator of the previous version
    # left in status.rollout as bare numbers.
    default_topic: str | None = None


@dataclass
class RolloutStep:
    """``deployments``: revision -> replicas (revisions absent are to be deleted); None = leave the
    Deployments as they are (paused). ``deletion_cost``: pod -> value for the pod-deletion-cost annotation,
    so a scale-down removes workers that hold no partitions first."""

    deployments: dict[str, int] | None
    desired: dict[PartitionId, str | None]
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    degraded: tuple[str, str] | None = None
    deletion_cost: dict[str, int] = field(default_factory=dict)


# ---- helpers -----------------------------------------------------------------------------------------


def _workers(inp: RolloutInput, revision: str | None) -> list[WorkerView]:
    return sorted((v for v in inp.observed.workers.values() if v.revision == revision and not v.gone),
                  key=lambda v: v.name)


def _eligible(inp: RolloutInput, revision: str | None) -> list[str]:
    return [v.name for v in _workers(inp, revision) if v.eligible]


def _grants(inp: RolloutInput) -> dict[PartitionId, str]:
    return inp.observed.doc.owner_of() if inp.observed.doc else {}


def _holding(inp: RolloutInput, view: WorkerView) -> bool:
    """Granted something or still reporting something owned (not yet released)."""
    doc = inp.observed.doc
    granted = bool(doc and doc.grants.get(view.name))
    return granted or bool(view.report and view.report.owned)


def _all_on(inp: RolloutInput, desired: Mapping[PartitionId, str | None]) -> bool:
    """Every partition is confirmed owned by its desired owner."""
    confirmed = confirmed_owners(inp.observed)
    return all(desired.get(p) is not None and confirmed.get(p) == desired.get(p) for p in inp.observed.partitions)


def canary_partitions(spec: RolloutSpec, partitions: Sequence[PartitionId]) -> list[PartitionId]:
    """The explicit picks that exist (a ``topic:partition``, or a bare number N: partition N of every topic
    of the group), or the first ``count`` partitions ordered by (number, topic), so that a count spreads
    over the topics -- never all of them when there are at least two, so the stable revision keeps
    serving."""
    chosen = spec.canary.partitions
    existing = set(partitions)
    if isinstance(chosen, tuple):
        picked: set[PartitionId] = set()
        for pick in chosen:
            if isinstance(pick, PartitionId):
                picked.add(pick)
            else:
                picked.update(p for p in existing if p.partition == int(pick))
        return sorted(picked & existing)
    n = len(existing)
    count = max(1, min(int(chosen), n - 1 if n > 1 else 1))
    spread = sorted(existing, key=lambda p: (p.partition, p.topic))[:count]
    return sorted(spread)


def status_partitions(values: Iterable[Any] | None, default_topic: str | None = None) -> list[PartitionId]:
    """Partitions kept in status (``"topic:partition"``; a bare number, written by an operator of the previous
    version, is ``default_topic``'s). Unreadable entries are dropped: status is ours, never a user's."""
    out: set[PartitionId] = set()
    for value in values or ():
        try:
            out.add(parse_partition_id(value, default_topic))
        except ValueError:
            continue
    return sorted(out)


def status_offsets(table: Mapping[str, Any] | None, default_topic: str | None = None) -> dict[PartitionId, int]:
    """A ``{"topic:partition": number}`` table from status back to PartitionIds (bare keys: see
    :func:`status_partitions`)."""
    out: dict[PartitionId, int] = {}
    for key, value in (table or {}).items():
        try:
            out[parse_partition_id(key, default_topic)] = int(value)
        except (TypeError, ValueError):
            continue
    return out


def _split(parts: Iterable[PartitionId], workers: list[str], grants: Mapping[PartitionId, str]
           ) -> dict[PartitionId, str | None]:
    return dict(balanced_distribution(parts, workers, grants))


def _costs(inp: RolloutInput, revisions: Iterable[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rev in revisions:
        for v in _workers(inp, rev):
            out[v.name] = 1000 if _holding(inp, v) else -1000
    return out


def judge(spec: RolloutSpec, figures: CanaryFigures | None) -> str | None:
    """The first figure that breaks its limit, as a sentence; None while all are within limits. Lag growth
    is judged even without deliveries: a canary that delivers nothing at all shows up only there."""
    if figures is None:
        return None
    c = spec.canary
    if figures.deliveries > 0 and figures.error_rate > c.max_error_rate:
        return (f"error rate {figures.error_rate:.4f} over {figures.deliveries} deliveries exceeds "
                f"maxErrorRate {c.max_error_rate}")
    if figures.deliveries > 0 and c.max_p99_latency_ms and figures.p99_ms > c.max_p99_latency_ms:
        return f"p99 latency {figures.p99_ms:.0f} ms exceeds maxP99LatencyMs {c.max_p99_latency_ms}"
    if c.max_lag_growth and figures.lag_growth > c.max_lag_growth:
        return (f"lag growth {figures.lag_growth:.0f} records per canary partition exceeds maxLagGrowth "
                f"{c.max_lag_growth}")
    return None


def lag_growth(baseline: Mapping[PartitionId, int], current: Mapping[PartitionId, int],
               canary: Iterable[PartitionId]) -> float:
    """How much more the canary partitions' lag grew since the analysis began than the stable partitions'
    (mean per partition, records). Stable partitions draining a backlog (negative growth) do not count
    against the canary: only the canary falling behind while the stable revision keeps up does."""
    chosen = set(canary)

    def mean_growth(parts: list[PartitionId]) -> float:
        deltas = [current[p] - baseline[p] for p in parts if p in baseline]
        return sum(deltas) / len(deltas) if deltas else 0.0

    on_canary = mean_growth([p for p in current if p in chosen])
    on_stable = mean_growth([p for p in current if p not in chosen])
    return on_canary - max(on_stable, 0.0)


# ---- the step ----------------------------------------------------------------------------------------


def next_rollout_step(inp: RolloutInput) -> RolloutStep:
    prev = dict(inp.status or {})
    stable = prev.get("stableRevision") or inp.target_revision
    phase = prev.get("phase") or STABLE
    new = prev.get("newRevision")
    status: dict[str, Any] = {**prev, "stableRevision": stable}
    events: list[Event] = []
    paused = inp.paused or inp.commands.pause

    if paused:
        step = _paused(inp, status)
        if prev.get("handled"):
            step.status["handled"] = prev["handled"]
        return step

    # A spec change back to the stable revision ends any rollout (an "undo").
    if phase != STABLE and inp.target_revision == stable:
        events.append(("Normal", "RolloutCancelled", f"spec is back at stable revision {stable}"))
        status = _stable_status(stable, "")
        phase, new = STABLE, None

    if phase == ABORTED and inp.target_revision != new:
        phase = STABLE  # a newer spec after an abort: start again from stable
    if phase == STABLE and inp.target_revision != stable:
        new = inp.target_revision
        strategy = inp.spec.strategy
        phase = CANARY if strategy == "Canary" else PROGRESSING
        status = {"phase": phase, "stableRevision": stable, "newRevision": new, "strategy": strategy,
                  "since": inp.now, "step": 0, "canaryPartitions": [], "message": ""}
        if strategy == "Canary":
            status["canaryPartitions"] = [str(p) for p in canary_partitions(inp.spec, inp.observed.partitions)]
        events.append(("Normal", "RolloutStarted", f"{strategy} rollout from {stable} to {new}"))

    if phase in (PROGRESSING, CANARY, PROMOTING) and inp.commands.abort:
        msg = f"rollout of {new} aborted by {ANNOTATION_ABORT}"
        status = {**status, "phase": ABORTED, "message": msg, "since": inp.now}
        events.append(("Warning", "RolloutAborted", msg))
        phase = ABORTED

    if phase in (PROGRESSING, CANARY, PROMOTING) and inp.workers == 0:
        # Scaled to zero: no partition moves to anyone, so the new revision is stable now; the old workers
        # stop as in any scale-down (their grants revoked, SIGTERM, drain and commit).
        events.append(("Normal", "RolloutCompleted", f"revision {new} is stable (scaled to zero)"))
        stable, status, phase = str(new), _stable_status(str(new), ""), STABLE

    if phase == STABLE:
        step = _stable(inp, stable)
    elif phase == ABORTED:
        step = _aborted(inp, status, stable, str(new))
    elif phase == CANARY:
        step = _canary(inp, status, stable, str(new))
    elif status.get("strategy") == "BlueGreen":
        step = _blue_green(inp, status, stable, str(new))
    else:
        step = _rolling(inp, status, stable, str(new))
    step.events[:0] = events
    if step.status.get("phase") == ABORTED:
        step.degraded = ("RolloutAborted", str(step.status.get("message", "")))
    handled = {**(prev.get("handled") or {}), **inp.commands.stamps}
    if handled:
        step.status["handled"] = handled
    return step


def _stable_status(stable: str, message: str) -> dict[str, Any]:
    return {"phase": STABLE, "stableRevision": stable, "newRevision": "", "canaryPartitions": [],
            "step": 0, "message": message}


def _stable(inp: RolloutInput, stable: str) -> RolloutStep:
    desired = _split(inp.observed.partitions, _eligible(inp, stable), _grants(inp))
    return RolloutStep({stable: inp.workers}, desired, _stable_status(stable, ""),
                       deletion_cost=_costs(inp, [stable]))


def _paused(inp: RolloutInput, status: dict[str, Any]) -> RolloutStep:
    """Freeze: nobody loses a partition; only partitions nobody can hold are placed (with the revision
    that has the most eligible workers), so pausing never leaves a partition unowned."""
    grants = _grants(inp)
    eligible = {v.name for v in inp.observed.workers.values() if v.eligible}
    desired: dict[PartitionId, str | None] = {p: w for p, w in grants.items() if w in eligible}
    loose = [p for p in inp.observed.partitions if p not in desired]
    if loose and eligible:
        revs: dict[str, int] = {}
        for v in inp.observed.workers.values():
            if v.eligible:
                revs[v.revision] = revs.get(v.revision, 0) + 1
        rev = max(revs, key=lambda r: (revs[r], r == status.get("stableRevision")))
        desired.update(_split(loose, _eligible(inp, rev), grants))
    return RolloutStep(None, desired, {**status, "message": "paused"})


def _rolling(inp: RolloutInput, status: dict[str, Any], stable: str, new: str) -> RolloutStep:
    """One new worker at a time takes over one old worker's partitions; emptied old workers leave."""
    w, parts = inp.workers, inp.observed.partitions
    n = len(parts)
    old_views = _workers(inp, stable)
    old_holding = [v for v in old_views if _holding(inp, v)]
    new_eligible = _eligible(inp, new)
    grants = _grants(inp)
    keep = max(0, w - len(new_eligible))
    old_keep = sorted((v.name for v in old_holding if v.eligible),
                      key=lambda name: (-sum(1 for o in grants.values() if o == name), name))[:keep]
    targets = [*new_eligible, *old_keep] or _eligible(inp, stable)
    desired = _split(parts, targets, grants)
    budget = inp.spec.max_partitions_in_flight or math.ceil(n / max(1, w))
    if inp.observed.doc is not None:
        desired = limit_moves(inp.observed.doc, desired, budget)
    done = not old_holding and bool(new_eligible) and _all_on(inp, desired)
    if done:
        st = _stable_status(new, "")
        return RolloutStep({new: w}, desired, st, [("Normal", "RolloutCompleted", f"revision {new} is stable")],
                           deletion_cost=_costs(inp, [new]))
    new_replicas = min(w, max(1, w - len(old_holding) + 1))
    moved = sum(1 for p, o in confirmed_owners(inp.observed).items() if o in set(new_eligible))
    events: list[Event] = []
    if moved != status.get("step"):
        events.append(("Normal", "RolloutStep", f"{moved}/{n} partitions on revision {new}"))
    st = {**status, "phase": PROGRESSING, "step": moved,
          "message": f"{moved}/{n} partitions on {new}; {len(new_eligible)}/{new_replicas} new workers up"}
    return RolloutStep({stable: len(old_holding), new: new_replicas}, desired, st, events,
                       deletion_cost=_costs(inp, [stable, new]))


def _blue_green(inp: RolloutInput, status: dict[str, Any], stable: str, new: str) -> RolloutStep:
    """New workers start idle; once all are ready (and the preview is over, and promotion is allowed) every
    partition moves at once; the old revision stays for scaleDownDelaySeconds so an abort is fast."""
    w, parts, now = inp.workers, inp.observed.partitions, inp.now
    n = len(parts)
    bg = inp.spec.blue_green
    grants = _grants(inp)
    ready_new = [v.name for v in _workers(inp, new) if v.eligible and v.ready]
    deployments = {stable: w, new: w}
    events: list[Event] = []
    st = dict(status)
    if st.get("phase") != PROMOTING:
        desired = _split(parts, _eligible(inp, stable), grants)
        if len(ready_new) < max(1, w):
            st.pop("readySince", None)
            st.update(phase=PROGRESSING, message=f"{len(ready_new)}/{w} new workers ready (idle)")
            return RolloutStep(deployments, desired, st, events, deletion_cost=_costs(inp, [stable, new]))
        st.setdefault("readySince", now)
        preview_left = bg.preview_seconds - (now - float(st["readySince"]))
        allowed = st.get("promoted") or bg.auto_promote or inp.commands.promote
        if preview_left > 0 and not inp.commands.promote:
            st.update(phase=PROGRESSING, message=f"preview: promotion in {math.ceil(preview_left)} s")
            return RolloutStep(deployments, desired, st, events, deletion_cost=_costs(inp, [stable, new]))
        if not allowed:
            st.update(phase=PROGRESSING, message=f"{w} new workers ready; waiting for {ANNOTATION_PROMOTE}")
            return RolloutStep(deployments, desired, st, events, deletion_cost=_costs(inp, [stable, new]))
        st.update(phase=PROMOTING, since=now, step=0)
        events.append(("Normal", "Promoting", f"moving all {n} partitions to revision {new}"))
    desired = _split(parts, _eligible(inp, new) or _eligible(inp, stable), grants)
    old_holding = [v for v in _workers(inp, stable) if _holding(inp, v)]
    moved = sum(1 for p, o in confirmed_owners(inp.observed).items() if o in set(_eligible(inp, new)))
    if moved != st.get("step"):
        events.append(("Normal", "RolloutStep", f"{moved}/{n} partitions on revision {new}"))
    st["step"] = moved
    if old_holding or not _all_on(inp, desired):
        st.pop("settledAt", None)
        st["message"] = f"{moved}/{n} partitions on {new}"
        return RolloutStep(deployments, desired, st, events, deletion_cost=_costs(inp, [stable, new]))
    st.setdefault("settledAt", now)
    left = bg.scale_down_delay_seconds - (now - float(st["settledAt"]))
    if left > 0:
        st["message"] = f"all partitions on {new}; old revision kept {math.ceil(left)} s more"
        return RolloutStep(deployments, desired, st, events, deletion_cost=_costs(inp, [stable, new]))
    events.append(("Normal", "RolloutCompleted", f"revision {new} is stable"))
    return RolloutStep({new: w}, desired, _stable_status(new, ""), events, deletion_cost=_costs(inp, [new]))


def _canary(inp: RolloutInput, status: dict[str, Any], stable: str, new: str) -> RolloutStep:
    w, parts, now, c = inp.workers, inp.observed.partitions, inp.now, inp.spec.canary
    grants = _grants(inp)
    kept = status_partitions(status.get("canaryPartitions"), inp.default_topic)
    chosen = [p for p in kept or canary_partitions(inp.spec, parts) if inp.observed.exists(p)]
    shown = format_partitions(chosen)
    canaries = _eligible(inp, new)
    rest = [p for p in parts if p not in set(chosen)]
    desired: dict[PartitionId, str | None] = _split(rest, _eligible(inp, stable), grants)
    desired.update(_split(chosen, canaries or _eligible(inp, stable), grants))
    deployments = {stable: w, new: c.workers}
    st = {**status, "phase": CANARY, "canaryPartitions": [str(p) for p in chosen]}
    costs = _costs(inp, [stable, new])
    confirmed = confirmed_owners(inp.observed)
    on_canary = [p for p in chosen if confirmed.get(p) in set(canaries)]
    events: list[Event] = []
    limit = c.analysis_seconds + CANARY_GRACE_SECONDS
    if not canaries or len(on_canary) < len(chosen):
        started = float(st.get("since") or now)
        if now - started > limit:
            return _abort(inp, st, stable, new, events,
                          f"canary {new} did not take its partitions {shown} within {limit} s "
                          f"({len(on_canary)} of {len(chosen)} on ready canary workers)")
        st.pop("analysisSince", None)
        st.update(step=len(on_canary), message=f"moving canary partitions {shown}: {len(on_canary)} done")
        return RolloutStep(deployments, desired, st, deletion_cost=costs)
    if "analysisSince" not in st:
        st["analysisSince"] = now
        events.append(("Normal", "CanaryAnalysis", f"partitions {shown} on revision {new}; judging for "
                                                   f"{c.analysis_seconds} s"))
    failure = judge(inp.spec, inp.figures)
    if failure is not None:
        return _abort(inp, st, stable, new, events, f"canary {new} failed: {failure}")
    elapsed = now - float(st["analysisSince"])
    has_data = inp.figures is not None and inp.figures.deliveries > 0
    backlog = inp.figures.backlog if inp.figures is not None else None
    if not has_data and elapsed > limit and backlog != 0:
        waiting = "its partitions' lag could not be read" if backlog is None else \
            f"{backlog} records wait on its partitions"
        return _abort(inp, st, stable, new, events,
                      f"canary {new} failed: delivered nothing in {int(elapsed)} s of analysis while {waiting}")
    passed = elapsed >= c.analysis_seconds and has_data
    if not passed and not inp.commands.promote:
        if elapsed < c.analysis_seconds:
            why = f"analysis {int(elapsed)}/{c.analysis_seconds} s"
        elif backlog == 0:
            why = "no records on canary partitions to judge yet (promote to skip)"
        else:
            why = "no deliveries on canary partitions yet"
        st.update(step=len(on_canary), message=why)
        return RolloutStep(deployments, desired, st, events, deletion_cost=costs)
    if not (c.auto_promote or inp.commands.promote):
        st["message"] = f"canary passed; waiting for {ANNOTATION_PROMOTE}"
        return RolloutStep(deployments, desired, st, events, deletion_cost=costs)
    events.append(("Normal", "CanaryPassed", f"canary {new} passed; continuing with {c.then}"))
    st = {**st, "phase": PROGRESSING, "strategy": c.then, "since": now, "step": len(on_canary),
          "promoted": True, "message": f"canary passed; {c.then} to {new}"}
    st.pop("analysisSince", None)
    step = _blue_green(inp, st, stable, new) if c.then == "BlueGreen" else _rolling(inp, st, stable, new)
    step.events[:0] = events
    return step


def _abort(inp: RolloutInput, status: dict[str, Any], stable: str, new: str, events: list[Event],
           message: str) -> RolloutStep:
    st = {**status, "phase": ABORTED, "message": message, "since": inp.now}
    st.pop("analysisSince", None)
    step = _aborted(inp, st, stable, new)
    step.events[:0] = [*events, ("Warning", "RolloutAborted", message)]
    return step


def _aborted(inp: RolloutInput, status: dict[str, Any], stable: str, new: str) -> RolloutStep:
    """Everything goes back to the stable revision (scaled back up); the new revision's workers stay
    only while they still hold partitions, then are removed. Stays Aborted until the spec changes."""
    w = inp.workers
    desired = _split(inp.observed.partitions, _eligible(inp, stable), _grants(inp))
    new_holding = [v for v in _workers(inp, new) if _holding(inp, v)]
    deployments = {stable: w}
    if new_holding:
        deployments[new] = len(new_holding)
    return RolloutStep(deployments, desired, {**status, "phase": ABORTED},
                       deletion_cost=_costs(inp, [stable, new]))


# ---- canary lag growth: the analysis window's baseline lives in status.rollout.lagBaseline -------------


def needs_lag_now(spec: RolloutSpec, previous: Mapping[str, Any]) -> bool:
    """Whether this round judges lag growth: a canary under analysis with maxLagGrowth and a baseline."""
    return bool(spec.canary.max_lag_growth) and previous.get("phase") == CANARY and bool(previous.get("lagBaseline"))


def with_lag_growth(previous: Mapping[str, Any], figures: CanaryFigures | None,
                    lag_now: Mapping[PartitionId, int], default_topic: str | None = None) -> CanaryFigures:
    """The canary figures with lag growth since the baseline filled in (judged even without deliveries).
    ``default_topic`` reads a baseline an operator of the previous version wrote with bare numbers."""
    base = status_offsets(previous["lagBaseline"], default_topic)
    growth = lag_growth(base, lag_now, status_partitions(previous.get("canaryPartitions"), default_topic))
    if figures is not None:
        return replace(figures, lag_growth=growth)
    return CanaryFigures(deliveries=0, error_rate=0.0, p99_ms=0.0, lag_growth=growth)


def needs_backlog(previous: Mapping[str, Any], figures: CanaryFigures | None) -> bool:
    """A canary under analysis that has delivered nothing: whether records wait on its partitions decides
    between "broken" and "nothing to judge"."""
    return (previous.get("phase") == CANARY and "analysisSince" in previous
            and (figures is None or figures.deliveries == 0))


def with_backlog(previous: Mapping[str, Any], figures: CanaryFigures | None,
                 lag_now: Mapping[PartitionId, int] | None, default_topic: str | None = None) -> CanaryFigures:
    chosen = status_partitions(previous.get("canaryPartitions"), default_topic)
    backlog = None if lag_now is None else sum(int(lag_now.get(p, 0)) for p in chosen)
    base = figures or CanaryFigures(deliveries=0, error_rate=0.0, p99_ms=0.0, lag_growth=0.0)
    return replace(base, backlog=backlog)


def needs_lag_baseline(spec: RolloutSpec, status: Mapping[str, Any]) -> bool:
    """A canary analysis just started (or a restarted operator finds none): its starting lag is needed."""
    return (bool(spec.canary.max_lag_growth) and status.get("phase") == CANARY and "analysisSince" in status
            and "lagBaseline" not in status)


def keep_lag_baseline(spec: RolloutSpec, status: dict[str, Any],
                      lag_now: Mapping[PartitionId, int] | None) -> None:
    """Record the analysis window's starting lag in ``status`` (kept there so a restarted operator judges the
    same window), and drop it once no canary analysis runs."""
    if not (spec.canary.max_lag_growth and status.get("phase") == CANARY and "analysisSince" in status):
        status.pop("lagBaseline", None)
    elif "lagBaseline" not in status and lag_now is not None:
        status["lagBaseline"] = {str(p): int(v) for p, v in sorted(lag_now.items())}
