"""Backlog -> scale decision -> backlog cleared: lagpilot's autoscaler beside a KEDA-style pure lag rule
(desired = ceil(lag / lagThreshold) through the HPA with its default behaviour) on the same traces.

Both policies drive the same simulated cluster, second by second: records arrive at the trace's rate,
spread evenly over the partitions; each ready worker delivers `--worker-rate` records/s over the partitions
it owns (partitions dealt round-robin); a new worker is ready `--startup` seconds after the decision; a
stalled partition (poison record) never moves. lagpilot runs its real code (lag window, Burrow status,
rate learning, decide_workers) on snapshots built from the simulated offsets every `pollSeconds`.

    .venv/bin/python bench/lag/bench_scaling.py [--trace rates.csv] [--worker-rate 200] [--startup 10]

`--trace` takes "seconds,records_per_second" lines (e.g. recorded from lagpilot_records_consumed_total
or a producer's metrics); without it three built-in scenarios run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lagpilot_operator.autoscale.decide import AutoscaleSpec
from lagpilot_operator.autoscale.offsets import build_snapshot
from lagpilot_operator.autoscale.step import GroupLagState, run_autoscaling_step

Rate = Callable[[float], float]


@dataclass
class Scenario:
    name: str
    rate: Rate
    duration: int = 900
    partitions: int = 12
    lag_per_worker: int = 1000
    backlog_at: float = 53.0  # when the backlog starts to appear (not aligned with a poll)
    stalled: dict[int, float] = field(default_factory=dict)  # partition -> time it stalls


@dataclass
class Cluster:
    """Offsets per partition and workers (ready ones and those still starting)."""

    partitions: int
    worker_rate: float
    ends: list[float] = field(default_factory=list)
    committed: list[float] = field(default_factory=list)
    ready: int = 1
    starting: list[float] = field(default_factory=list)  # ready-at times

    def __post_init__(self) -> None:
        self.ends = [0.0] * self.partitions
        self.committed = [0.0] * self.partitions

    @property
    def workers(self) -> int:
        return self.ready + len(self.starting)

    def scale(self, n: int, now: float, startup: float) -> None:
        if n > self.workers:
            self.starting += [now + startup] * (n - self.workers)
        elif n < self.workers:
            drop = self.workers - n
            cut = min(drop, len(self.starting))
            self.starting = self.starting[: len(self.starting) - cut]
            self.ready -= drop - cut

    def tick(self, now: float, rate: float, stalled: set[int]) -> None:
        self.ready += sum(1 for t in self.starting if t <= now)
        self.starting = [t for t in self.starting if t > now]
        for p in range(self.partitions):
            self.ends[p] += rate / self.partitions
        owners = min(self.ready, self.partitions)
        for w in range(owners):
            owned = [p for p in range(w, self.partitions, owners) if p not in stalled]
            budget = self.worker_rate
            # water-filling: share the worker's second among its partitions with a backlog
            while budget > 1e-9 and owned:
                share = budget / len(owned)
                still = []
                for p in owned:
                    take = min(share, self.ends[p] - self.committed[p])
                    self.committed[p] += take
                    budget -= take
                    if self.ends[p] - self.committed[p] > 1e-9:
                        still.append(p)
                if len(still) == len(owned):
                    break
                owned = still

    def lag(self, exclude: frozenset[int] | set[int] = frozenset()) -> float:
        return sum(self.ends[p] - self.committed[p] for p in range(self.partitions) if p not in exclude)


@dataclass
class HpaKeda:
    """KEDA Kafka scaler (lagThreshold, allowIdleConsumers=false caps at partitions) + HPA defaults:
    15 s sync, 10 % tolerance, scale-up max(100 %, 4 pods) per 15 s, scale-down 300 s stabilization and
    100 % per 15 s."""

    lag_threshold: int
    min_replicas: int
    max_replicas: int
    partitions: int
    history: list[tuple[float, int]] = field(default_factory=list)

    def decide(self, now: float, current: int, total_lag: float) -> int:
        metric = min(total_lag, self.partitions * self.lag_threshold)
        ratio = metric / (self.lag_threshold * max(current, 1))
        rec = current if abs(ratio - 1.0) <= 0.1 else math.ceil(metric / self.lag_threshold)
        rec = max(self.min_replicas, min(self.max_replicas, rec))
        self.history = [(t, n) for t, n in self.history if t > now - 300] + [(now, rec)]
        up = rec  # scaleUp stabilization 0: the current recommendation
        down = max(n for t, n in self.history if t > now - 300)
        desired = min(max(current, up), down)
        if desired > current:
            desired = min(desired, max(current * 2, current + 4))
        return max(self.min_replicas, min(self.max_replicas, desired))


@dataclass
class Result:
    decision_s: float | None
    cleared_s: float | None
    peak_lag: float
    max_workers: int
    worker_seconds: float
    changes: int


def simulate(sc: Scenario, policy: str, worker_rate: float, startup: float, catch_up: float) -> Result:
    poll = 15.0
    cl = Cluster(sc.partitions, worker_rate)
    spec = AutoscaleSpec(enabled=True, min_workers=1, max_workers=sc.partitions, lag_per_worker=sc.lag_per_worker,
                         poll_seconds=poll, catch_up_seconds=catch_up)
    keda = HpaKeda(sc.lag_per_worker, 1, sc.partitions, sc.partitions)
    state = GroupLagState()
    decision_s = cleared_s = None
    peak, peak_t, max_workers, worker_seconds, changes = 0.0, 0.0, 1, 0.0, 0
    for sec in range(sc.duration):
        now = float(sec)
        stalled = {p for p, t in sc.stalled.items() if now >= t}
        cl.tick(now, sc.rate(now), stalled)
        worker_seconds += cl.workers
        lag = cl.lag(stalled)
        if lag > peak:
            peak, peak_t = lag, now
        if cleared_s is None and now > peak_t and now > sc.backlog_at and peak > 500 and lag <= 500:
            cleared_s = now - sc.backlog_at
        if sec % int(poll):
            continue
        current = cl.workers
        if policy == "lagpilot":
            snap = build_snapshot("g", now, {}, {("t", p): int(cl.ends[p]) for p in range(sc.partitions)},
                                  {("t", p): int(cl.committed[p]) for p in range(sc.partitions)})
            step = run_autoscaling_step(state, snap, spec, current, cl.ready, now)
            state = step.state
            desired = step.workers if step.workers is not None else current
        else:
            desired = keda.decide(now, current, cl.lag())
        if desired != current:
            changes += 1
            if desired > current and decision_s is None and now >= sc.backlog_at:
                decision_s = now - sc.backlog_at
            cl.scale(desired, now, startup)
            max_workers = max(max_workers, desired)
    return Result(decision_s, cleared_s, peak, max_workers, worker_seconds, changes)


def burst(base: float, high: float, start: float, end: float) -> Rate:
    return lambda t: high if start <= t < end else base


def load_trace(path: Path) -> Rate:
    points = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            t, r = line.split(",")[:2]
            points.append((float(t), float(r)))
    points.sort()

    def rate(t: float) -> float:
        current = points[0][1]
        for pt, pr in points:
            if pt > t:
                break
            current = pr
        return current

    return rate


def fmt(v: float | None, unit: str = "s") -> str:
    return "never" if v is None else f"{v:.0f}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path)
    ap.add_argument("--worker-rate", type=float, default=200.0, help="records/s one worker delivers")
    ap.add_argument("--startup", type=float, default=10.0, help="seconds before a new worker is ready")
    ap.add_argument("--catch-up", type=float, default=120.0, help="lagpilot catchUpSeconds")
    args = ap.parse_args()
    b = burst(150.0, 1500.0, 53.0, 233.0)
    if args.trace:
        scenarios = [Scenario(f"trace {args.trace.name}", load_trace(args.trace))]
    else:
        scenarios = [
            Scenario("burst 150->1500/s for 180s, lagPerWorker 1000", b),
            Scenario("burst 150->1500/s for 180s, lagPerWorker 20000", b, lag_per_worker=20000),
            Scenario("steady 150/s, partition 5 stalls at 53s, lagPerWorker 1000", lambda t: 150.0,
                     stalled={5: 53.0}),
        ]
    print(f"worker rate {args.worker_rate:g}/s, startup {args.startup:g}s, polls every 15s, 12 partitions, "
          f"lagpilot catchUpSeconds {args.catch_up:g}, both: min 1, max 12, scale-down window 300s\n")
    print(f"{'scenario / policy':<62} {'decide':>7} {'cleared':>8} {'peak lag*':>9} {'max w':>6} "
          f"{'worker-s':>9} {'changes':>8}")
    for sc in scenarios:
        results = {}
        for policy in ("keda-style", "lagpilot"):
            catch_up = args.catch_up if policy == "lagpilot" else 0.0
            r = simulate(replace(sc), policy, args.worker_rate, args.startup, catch_up)
            results[policy] = r
            print(f"{sc.name + ' / ' + policy:<62} {fmt(r.decision_s):>7} {fmt(r.cleared_s):>8} "
                  f"{r.peak_lag:>9.0f} {r.max_workers:>6} {r.worker_seconds:>9.0f} {r.changes:>8}")
        k, lp = results["keda-style"], results["lagpilot"]
        ratios = []
        if k.cleared_s and lp.cleared_s:
            ratios.append(f"time to clear x{lp.cleared_s / k.cleared_s:.2f}")
        if k.peak_lag:
            ratios.append(f"peak lag x{lp.peak_lag / k.peak_lag:.2f}")
        ratios.append(f"worker-seconds x{lp.worker_seconds / k.worker_seconds:.2f}")
        print(f"{'  lagpilot vs keda-style:':<62} " + ", ".join(ratios) + "\n")
    print("decide: backlog start -> first scale-up decision; cleared: backlog start -> backlog <= 500 after its "
          "peak;\n*peak lag and cleared leave stalled partitions aside (their lag never clears)")


if __name__ == "__main__":
    main()
