"""Blue/green cut-over of 12 partitions with lagpilot's hand-off protocol, beside a plain Kafka rebalance of
the same group (stop one set of consumers, start another), in one run, under steady keyed production.

Both sides run the same real ``lagpilot-consumer`` processes against the lab Kafka broker and a recording
HTTP target; only the partition source differs (``--assignment k8s`` with the real planners and the lab API
server, versus ``--assignment kafka``, cooperative-sticky group rebalancing). Figures, from the target's
own record of every delivery (who delivered which partition, when):

- per-partition pause: first delivery by a new worker minus the last delivery by an old one;
- total cut-over: from the switch (promotion / the stop signal) to the last partition's first delivery on
  the new set;
- duplicates and overlapping deliveries of one partition by two workers (correctness during the switch).

    .venv/bin/python bench/handoff/run.py [--partitions 12] [--workers 3] [--rate 600] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lagpilot.lab.cluster import start_control_plane, stop_control_plane
from lagpilot.lab.kafka import create_topic, start_kafka, stop_kafka
from lagpilot.testing.consumer import ConsumerProcess
from lagpilot.testing.handoff import LocalCluster, SteadyProducer, duplicates, handover_gaps, overlaps
from lagpilot.testing.target import Arrival, RecordingTarget
from lagpilot_operator.resource.spec import BlueGreenSpec, RolloutSpec

ROOT = Path(__file__).resolve().parents[2]


def summarize(gaps: dict[int, float], t0: float, arrivals: list[Arrival], new: set[str]) -> dict[str, Any]:
    firsts: dict[int, float] = {}
    for a in arrivals:
        if a.worker in new and a.start >= t0:
            firsts[a.partition] = min(firsts.get(a.partition, a.start), a.start)
    values = sorted(gaps.values())
    return {
        "partitions_moved": len(values),
        "pause_per_partition_ms": {
            "median": round(statistics.median(values) * 1000, 1) if values else None,
            "max": round(max(values) * 1000, 1) if values else None,
            "min": round(min(values) * 1000, 1) if values else None,
        },
        "total_cutover_s": round(max(firsts.values()) - t0, 3) if firsts else None,
        "duplicates": len(duplicates(arrivals)),
        "overlapping_deliveries": len(overlaps(arrivals)),
    }


def lagpilot_blue_green(api: Any, kubeconfig: str, bootstrap: str, topic: str, group: str, partitions: int,
                        workers: int, target: RecordingTarget, logs: Path, finish: Callable[[], None]
                        ) -> dict[str, Any]:
    from kubernetes import client

    ns = f"bench-{int(time.time())}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
    c = LocalCluster(api=api, namespace=ns, bootstrap=bootstrap, topic=topic, partitions=partitions,
                     group=group, log_dir=logs, kubeconfig=kubeconfig, fence_timeout=6, lease_renew=1)
    c.target_urls = {"blue": target.url, "green": target.url}
    try:
        c.run_until(RolloutSpec(), "blue", workers, c.stable_on("blue"), timeout=120, interval=0.1)
        time.sleep(3)
        spec = RolloutSpec(strategy="BlueGreen", blue_green=BlueGreenSpec(scale_down_delay_seconds=1))
        t_promote: list[float] = []
        ready_wait_start = time.monotonic()

        def done(cl: LocalCluster) -> bool:
            if cl.status.get("phase") == "Promoting" and not t_promote:
                # The round that promoted has just written the revoke epoch: that is the switch.
                last = cl.history[-1].t if cl.history else time.monotonic()
                t_promote.append(last if last >= ready_wait_start else time.monotonic())
            return cl.stable_on("green")(cl)

        c.run_until(spec, "green", workers, done, timeout=180, interval=0.1)
        assert t_promote, "never promoted"
        time.sleep(2)
        finish()
        arrivals = target.arrivals()
        old = {w.name for w in c.workers.values() if w.revision == "blue"}
        new = {w.name for w in c.workers.values() if w.revision == "green"}
        t0 = t_promote[0]
        # Protocol latency per partition: revoke epoch written -> grant epoch written (harness clock).
        revoked_at: dict[int, float] = {}
        granted_at: dict[int, float] = {}
        prev: dict[int, str] = {}
        for m in c.history:
            owner = {p: w for w, ps in m.grants.items() for p in ps}
            for p in range(partitions):
                if m.t >= t0 and prev.get(p) in old and owner.get(p) != prev.get(p):
                    revoked_at.setdefault(p, m.t)
                if m.t >= t0 and owner.get(p) in new:
                    granted_at.setdefault(p, m.t)
            prev = owner
        protocol = [granted_at[p] - revoked_at[p] for p in revoked_at if p in granted_at]
        out = summarize(handover_gaps(arrivals, old, new), t0, arrivals, new)
        out["new_workers_start_to_ready_s"] = round(t0 - ready_wait_start, 3)
        out["revoke_to_grant_epoch_ms"] = {
            "median": round(statistics.median(protocol) * 1000, 1) if protocol else None,
            "max": round(max(protocol) * 1000, 1) if protocol else None}
        out["epochs_for_cutover"] = len([m for m in c.history if m.t >= t0])
        return out
    finally:
        c.close()
        client.CoreV1Api(api).delete_namespace(ns)


def kafka_rebalance(bootstrap: str, topic: str, group: str, workers: int, target: RecordingTarget,
                    logs: Path, finish: Callable[[], None]) -> dict[str, Any]:
    def start(tag: str) -> list[ConsumerProcess]:
        procs = []
        for i in range(workers):
            name = f"kafka-{tag}-{i}"
            procs.append(ConsumerProcess(
                ["--bootstrap-servers", bootstrap, "--topic", topic, "--group-id", group, "--target-url",
                 target.url, "--threads", "4", "--assignment", "kafka", "--drain-seconds", "10"],
                logs / f"{name}.log", env={"POD_NAME": name}))
        return procs

    old = start("old")
    try:
        for p in old:
            p.wait_ready(90)
        # Steady state: every partition delivering.
        target.wait_for(lambda t: len({a.partition for a in t.arrivals()
                                       if a.worker.startswith("kafka-old")}) >= 12, timeout=90)
        time.sleep(5)
        t0 = time.monotonic()
        for p in old:  # stop one deployment ...
            p.proc.send_signal(15)
        new = start("new")  # ... and start another, as a Deployment replacement does
        for p in old:
            p.proc.wait(60)
        target.wait_for(lambda t: len({a.partition for a in t.arrivals()
                                       if a.worker.startswith("kafka-new") and a.start >= t0}) >= 12,
                        timeout=120)
        time.sleep(2)
        finish()
        arrivals = target.arrivals()
        old_names = {f"kafka-old-{i}" for i in range(workers)}
        new_names = {f"kafka-new-{i}" for i in range(workers)}
        return summarize(handover_gaps(arrivals, old_names, new_names), t0, arrivals, new_names)
    finally:
        for p in old + (new if "new" in locals() else []):
            if p.proc.poll() is None:
                p.proc.send_signal(15)
        for p in old + (new if "new" in locals() else []):
            try:
                p.proc.wait(30)
            except Exception:
                pass
            p.close()


def summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds, and Kafka rebalance / lagpilot ratios (above 1: lagpilot is faster)."""
    out: dict[str, Any] = {}
    for name in ("lagpilot_blue_green", "kafka_rebalance"):
        rs = [r[name] for r in rounds if name in r]
        out[name] = {
            "pause_median_ms": statistics.median(r["pause_per_partition_ms"]["median"] for r in rs),
            "pause_max_ms": max(r["pause_per_partition_ms"]["max"] for r in rs),
            "cutover_s": statistics.median(r["total_cutover_s"] for r in rs),
            "lost": sum(r["lost"] for r in rs), "duplicates": sum(r["duplicates"] for r in rs),
            "overlaps": sum(r["overlapping_deliveries"] for r in rs),
            "order_violations": sum(r["order_violations"] for r in rs),
        }
    lp, kf = out["lagpilot_blue_green"], out["kafka_rebalance"]
    out["ratio_pause_kafka_over_lagpilot"] = round(kf["pause_median_ms"] / max(lp["pause_median_ms"], 1e-9), 2)
    out["ratio_cutover_kafka_over_lagpilot"] = round(kf["cutover_s"] / max(lp["cutover_s"], 1e-9), 2)
    return out


def render_summary(s: dict[str, Any]) -> str:
    rows = [f"{'':24} {'pause median ms':>16} {'pause max ms':>13} {'cut-over s':>11} {'lost':>5} "
            f"{'dup':>4} {'overlap':>8} {'order':>6}"]
    for name in ("lagpilot_blue_green", "kafka_rebalance"):
        r = s[name]
        rows.append(f"{name:24} {r['pause_median_ms']:16.0f} {r['pause_max_ms']:13.0f} {r['cutover_s']:11.2f} "
                    f"{r['lost']:5d} {r['duplicates']:4d} {r['overlaps']:8d} {r['order_violations']:6d}")
    rows.append(f"kafka/lagpilot: pause x{s['ratio_pause_kafka_over_lagpilot']}, "
                f"cut-over x{s['ratio_cutover_kafka_over_lagpilot']} (medians over the rounds)")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rate", type=float, default=600.0, help="records/s produced during both runs")
    ap.add_argument("--rounds", type=int, default=3, help="both runs this many times, alternating")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lagpilot-bench-coord-") as tmp:
        root = Path(tmp)
        broker = start_kafka(root / "kafka")
        cp = start_control_plane(root / "k8s")
        try:
            from kubernetes import config

            api = config.new_client_from_config(config_file=cp.kubeconfig)
            bootstrap = broker.bootstrap_servers
            results: dict[str, Any] = {"partitions": args.partitions, "workers": args.workers,
                                       "rate_records_per_s": args.rate, "rounds": []}
            runs = [(r, n) for r in range(args.rounds) for n in ("lagpilot_blue_green", "kafka_rebalance")]
            for rnd, name in runs:
                topic = f"bench-{name.replace('_', '-')}-{rnd}-{int(time.time())}"
                create_topic(bootstrap, topic, args.partitions)
                group = f"g-{topic}"
                logs = root / f"{name}-{rnd}"
                logs.mkdir()
                with RecordingTarget() as target:
                    producer = SteadyProducer(bootstrap, topic, args.partitions, rate=args.rate).start()

                    def finish(producer: SteadyProducer = producer, target: RecordingTarget = target) -> None:
                        """Stop producing and let the (new) workers deliver the rest before teardown."""
                        producer.stop()
                        target.wait_for(lambda t: len(t.accepted_records()) >= producer.acked, timeout=60)

                    try:
                        if name == "lagpilot_blue_green":
                            res = lagpilot_blue_green(api, cp.kubeconfig, bootstrap, topic, group,
                                                      args.partitions, args.workers, target, logs, finish)
                        else:
                            res = kafka_rebalance(bootstrap, topic, group, args.workers, target, logs, finish)
                    finally:
                        producer.stop()
                    res["produced"] = producer.acked
                    res["lost"] = producer.acked - len(target.accepted_records())
                    res["order_violations"] = len(target.order_violations())
                if rnd == len(results["rounds"]):
                    results["rounds"].append({})
                results["rounds"][rnd][name] = res
                print(f"round {rnd + 1} {name}", json.dumps(res, indent=2), flush=True)
            results["summary"] = summarize_rounds(results["rounds"])
            print(render_summary(results["summary"]), flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
            print(f"written to {args.out}")
        finally:
            stop_control_plane(cp)
            stop_kafka(broker, remove=True)


if __name__ == "__main__":
    main()
