"""The operator (a real `lagpilot-operator` process) reading lag and autoscaling real worker pods: the lab
control plane and runner, the lab broker, and a RecordingTarget as a slow HTTP target.

Windows are short (pollSeconds 2, scaleDownStabilizationSeconds 20, so the Burrow window is 20 s) to keep
the suite under a few minutes; the assertions are on behaviour (order of decisions, the figures behind
them, the status timestamps the operator wrote), not on how fast the machine is.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.request import urlopen

import pytest
import yaml

from lagpilot.testing.operator import Operator
from lagpilot.testing.wait import wait_for

pytestmark = pytest.mark.lab

POLL = 2
DOWN_WINDOW = 20
LAG_PER_WORKER = 20


def cg_doc(name: str, bootstrap: str, topic: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "lagpilot.io/v1alpha1", "kind": "ConsumerGroup", "metadata": {"name": name},
            "spec": {"bootstrapServers": bootstrap, "topic": topic, "target": {"url": url}, **spec}}


def autoscaling(**over: Any) -> dict[str, Any]:
    return {"enabled": True, "minWorkers": 1, "lagPerWorker": LAG_PER_WORKER, "pollSeconds": POLL,
            "scaleDownStabilizationSeconds": DOWN_WINDOW, **over}


def apply(k8s: Any, ns: str, doc: dict[str, Any]) -> None:
    k8s.kubectl("apply", "-f", "-", namespace=ns, input=yaml.safe_dump(doc))


def get_cg(k8s: Any, ns: str, name: str) -> dict[str, Any]:
    return json.loads(k8s.kubectl("get", "consumergroup", name, "-o", "json", namespace=ns).stdout)


def ready(cg: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in cg.get("status", {}).get("conditions", []))


def events(k8s: Any, ns: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(k8s.kubectl("get", "events", "-o", "json", namespace=ns).stdout)["items"]
    return [e for e in out if e["involvedObject"].get("name") == name]


def replicas(k8s: Any, ns: str, name: str) -> int:
    deps = json.loads(k8s.kubectl("get", "deployments", "-l", f"lagpilot.io/consumergroup={name}", "-o", "json",
                                  namespace=ns).stdout)["items"]
    return sum(int(d["spec"].get("replicas") or 0) for d in deps)


def epoch(rfc3339: str) -> int:
    return calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ"))


def metric(op: Operator, name: str, **labels: str) -> float | None:
    text = urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@dataclass(frozen=True)
class Seen:
    """One distinct status.lag the operator wrote, with the worker count beside it."""

    workers: int
    lag: dict[str, Any]


class StatusWatch:
    """Samples the CR's status every 0.3 s in the background; keeps each distinct (lag, workers)."""

    def __init__(self, k8s: Any, ns: str, name: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(k8s.api_client())
        self.ns, self.name = ns, name
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            with contextlib.suppress(Exception):
                st = self.api.get_namespaced_custom_object("lagpilot.io", "v1alpha1", self.ns, "consumergroups",
                                                           self.name).get("status") or {}
                if "lag" in st and "workers" in st:
                    s = Seen(int(st["workers"]), dict(st["lag"]))
                    if not self.seen or self.seen[-1] != s:
                        self.seen.append(s)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def latest(self) -> Seen | None:
        return self.seen[-1] if self.seen else None


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, int | None]], delivered: list[tuple[int, int]]
            ) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})

    def done(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered.append((msg.partition(), msg.offset()))

    for i, (key, partition) in enumerate(records):
        kw: dict[str, Any] = {} if partition is None else {"partition": partition}
        p.produce(topic, key=key, value=f"v{i}".encode(), on_delivery=done, **kw)
        p.poll(0)
    assert p.flush(30) == 0


def wait_seen(watch: StatusWatch, check: Callable[[Seen], bool], timeout: float, what: str) -> Seen:
    return wait_for(lambda: next((s for s in reversed(watch.seen) if check(s)), None), timeout, what, interval=0.3)


def test_backlog_scales_up_to_partition_cap_then_down_after_stabilization_without_loss(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Any) -> None:
    from lagpilot.testing.target import RecordingTarget

    topic = topic_factory(partitions=3)
    name = "scaler"
    with RecordingTarget(latency_s=0.05) as target, StatusWatch(k8s, namespace, name) as watch:
        apply(k8s, namespace, cg_doc(name, bootstrap, topic, target.url, workers=1, threads=2,
                                     autoscaling=autoscaling()))
        wait_for(lambda: ready(get_cg(k8s, namespace, name)), 180, "Ready with 1 worker")
        wait_seen(watch, lambda s: s.lag.get("desiredWorkers") == 1, 30, "first lag poll")

        delivered: list[tuple[int, int]] = []
        total = 900
        produce(bootstrap, topic, [(f"k{i % 30}".encode(), None) for i in range(total)], delivered)

        up = wait_seen(watch, lambda s: s.workers == 3, 60, "scale-up to 3 workers")
        assert up.lag["desiredWorkers"] == 3
        assert "capped at 3 partitions" in up.lag["reason"], up.lag
        wait_for(lambda: replicas(k8s, namespace, name) == 3, 30, "Deployment sized to 3")
        ups = [e for e in events(k8s, namespace, name) if e["reason"] == "ScaledUp"]
        assert ups and ups[0]["message"].startswith("1 -> 3 workers: lag "), ups

        target.wait_for(lambda t: len(t.accepted_records()) >= total, timeout=150)
        def first_down() -> int | None:
            seen = list(watch.seen)
            top = next(i for i, s in enumerate(seen) if s.workers == 3)
            return next((i for i in range(top, len(seen)) if seen[i].workers < 3), None)

        wait_for(first_down, 90, "scale-down", interval=0.3)
        seen = list(watch.seen)
        first_down_at = first_down()
        assert first_down_at is not None
        t_down = epoch(seen[first_down_at].lag["updatedAt"])
        lower = seen[first_down_at].workers
        # The HPA rule: down to `lower` only once no poll of the last window recommended more than `lower`.
        # (A sample with a STALL partition is left out: its lag may not have counted; leaving it out can only
        # make the bound below easier to meet, never fail a correct rule.)
        higher = [s for s in seen[:first_down_at]
                  if s.lag["total"] > LAG_PER_WORKER * lower and not s.lag["stalledPartitions"]]
        assert higher, "never saw the backlog"
        t_last_high = max(epoch(s.lag["updatedAt"]) for s in higher)
        assert t_down - t_last_high >= DOWN_WINDOW - 1, (t_down, t_last_high, seen)
        print(f"scale-down 3 -> {lower} {t_down - t_last_high}s after the last poll that needed more "
              f"(window {DOWN_WINDOW}s); {len(seen)} distinct status.lag values seen")
        held = [s for s in seen[:first_down_at] if s.workers == 3 and s.lag["total"] <= LAG_PER_WORKER * lower]
        assert held and all("scale-down stabilization" in s.lag["reason"] for s in held), held
        downs = [e for e in events(k8s, namespace, name) if e["reason"] == "ScaledDown"]
        assert downs and downs[0]["message"].startswith(f"3 -> {lower} workers"), downs

        wait_seen(watch, lambda s: s.workers == 1, 90, "back to minWorkers 1")
        wait_for(lambda: replicas(k8s, namespace, name) == 1, 30, "Deployment sized to 1")
        final = get_cg(k8s, namespace, name)
        assert final["spec"]["workers"] == 1  # the user's field was never touched
        lag = final["status"]["lag"]
        assert lag["total"] == 0 and lag["status"] == "OK" and lag["desiredWorkers"] == 1

        assert metric(operator, "lagpilot_scale_events_total", namespace=namespace, direction="up") == 1
        assert (metric(operator, "lagpilot_scale_events_total", namespace=namespace, direction="down") or 0) >= 1
        assert metric(operator, "lagpilot_consumergroup_lag_total", namespace=namespace) == 0
        assert metric(operator, "lagpilot_consumergroup_desired_workers", namespace=namespace) == 1
        assert metric(operator, "lagpilot_consumergroup_lag", namespace=namespace, topic=topic, partition="2") == 0

        # No record lost while workers came and went; per-key order kept (redelivery allowed).
        assert len(delivered) == total
        assert target.accepted_records() >= set(delivered)
        assert target.order_violations() == []


def test_stalled_partition_does_not_scale_up_until_exclusion_is_turned_off(
        k8s: Any, namespace: str, operator: Operator, bootstrap: str, topic_factory: Any) -> None:
    from lagpilot.testing.target import RecordingTarget

    topic = topic_factory(partitions=2)
    name = "stalled"
    with RecordingTarget() as target, StatusWatch(k8s, namespace, name) as watch:
        target.reject_keys([b"poison"], status=503)
        doc = cg_doc(name, bootstrap, topic, target.url, workers=1, threads=2,
                     retry={"maxAttempts": 2, "initialBackoffMs": 100, "maxBackoffMs": 500},
                     autoscaling=autoscaling())
        apply(k8s, namespace, doc)
        wait_for(lambda: ready(get_cg(k8s, namespace, name)), 180, "Ready with 1 worker")

        delivered: list[tuple[int, int]] = []
        produce(bootstrap, topic, [(b"poison", 0)] + [(b"a", 0)] * 5, delivered)
        stalled = wait_seen(watch, lambda s: s.lag["stalledPartitions"] == [f"{topic}:0"], 20 * POLL + 30,
                            "partition 0 STALL")
        assert stalled.lag["status"] == "STALL" and stalled.workers == 1
        assert any(e["reason"] == "LagStall" for e in events(k8s, namespace, name))

        # A backlog behind the stuck record: far above lagPerWorker, but more workers would not move it.
        # Partition 1 gets fewer records than lagPerWorker (20): its own lag, however slowly it drains
        # while a thread is held by the poison key, is never a reason to scale, so only partition 0's counts.
        produce(bootstrap, topic, [(f"b{i % 7}".encode(), 0) for i in range(300)]
                + [(f"c{i % 7}".encode(), 1) for i in range(15)], delivered)
        mark = len(watch.seen)
        wait_seen(watch, lambda s: s.lag["total"] > 300, 30, "the backlog in status.lag")
        polls = metric(operator, "lagpilot_lag_polls_total", namespace=namespace) or 0
        wait_for(lambda: (metric(operator, "lagpilot_lag_polls_total", namespace=namespace) or 0) >= polls + 5, 60,
                 "5 more lag polls")
        after = watch.seen[mark:]
        assert get_cg(k8s, namespace, name)["status"]["workers"] == 1
        assert all(s.workers == 1 for s in after), after
        assert all(s.lag["stalledPartitions"] == [f"{topic}:0"] for s in after if s.lag["total"] > 300), after
        big = [s for s in after if s.lag["total"] > 300]
        assert all("on 1 stalled partition" in s.lag["reason"] for s in big), big
        assert not [e for e in events(k8s, namespace, name) if e["reason"] == "ScaledUp"]
        target.wait_for(lambda t: len({(a.partition, a.offset) for a in t.accepted()}) >= 320, timeout=60)
        ok = {(p, o) for p, o in delivered} - {(a.partition, a.offset) for a in target.arrivals()
                                                if a.key == b"poison"}
        assert target.accepted_records() >= ok  # everything but the poison record is delivered

        # The same lag counted (excludeStalledPartitions false) does scale up: the rule above is what held.
        apply(k8s, namespace, {**doc, "spec": {**doc["spec"],
                                               "autoscaling": autoscaling(excludeStalledPartitions=False)}})
        up = wait_seen(watch, lambda s: s.workers == 2, 30, "scale-up once stalled lag counts")
        assert "capped at 2 partitions" in up.lag["reason"]
