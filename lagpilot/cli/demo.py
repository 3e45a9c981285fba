"""`lagpilot demo`: the whole product on the local lab in one command.

Starts (or reuses) the lab, installs the CRD, runs the operator, starts an HTTP target that checks
per-key order, applies the example ConsumerGroup, produces a steady stream plus a burst, and shows a
live view until Ctrl-C or --duration. Then it keeps the lab running for kubectl or stops it.
Exit 0 when records were delivered in order, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from lagpilot import paths
from lagpilot.kubeclient import GROUP, PLURAL, VERSION
from lagpilot.lab.manager import Lab, extras, load_lab, register_extra, start_lab, stop_lab
from lagpilot.lab.proc import free_port, spawn, wait_until

NAMESPACE = "lagpilot-demo"
NAME = "orders-demo"
TOPIC = "orders"
REPO = paths.project_root()

err = Console(stderr=True)


def step(msg: str) -> None:
    err.print(f"[cyan]»[/] {msg}")


def ensure_lab() -> Lab:
    lab = load_lab(paths.lab_dir())
    if lab is not None and lab.healthy():
        step(f"reusing the running lab ({lab.workdir})")
        return lab
    if lab is not None:
        stop_lab(lab, remove=True)
    step("starting the lab (first run on a machine builds Kubernetes and fetches Kafka: several minutes)")
    return start_lab(paths.lab_dir(), progress=step)


def install_crds(lab: Lab) -> None:
    step("installing the ConsumerGroup CRD")
    lab.control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    lab.control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                              "crd/consumergroups.lagpilot.io")


def ensure_operator(lab: Lab) -> None:
    running = extras(lab.workdir)
    if "operator" in running:
        step(f"operator already running (pid {running['operator']})")
        return
    step("starting lagpilot-operator")
    bin_dir = Path(sys.executable).parent
    log = lab.workdir / "demo" / "operator.log"
    env = {**os.environ, "LAGPILOT_CONSUMER_IMAGE": "lagpilot/lagpilot:dev", "KUBECONFIG": lab.kubeconfig}
    proc = spawn([str(bin_dir / "lagpilot-operator"), "--kubeconfig", lab.kubeconfig, "--standalone",
                  "--metrics-port", str(free_port()), "--liveness", ""], log, env=env)
    register_extra(lab.workdir, "operator", proc.pid)


def ensure_target(lab: Lab) -> dict[str, Any]:
    stats_file = lab.workdir / "demo" / "target.json"
    if "target" in extras(lab.workdir) and stats_file.exists():
        return dict(json.loads(stats_file.read_text()))
    step("starting the HTTP target (checks per-key order)")
    stats_file.parent.mkdir(parents=True, exist_ok=True)
    stats_file.unlink(missing_ok=True)
    proc = spawn([sys.executable, "-m", "lagpilot.testing.demo_target", "--port", str(free_port()),
                  "--stats-file", str(stats_file)], lab.workdir / "demo" / "target.log")
    register_extra(lab.workdir, "target", proc.pid)
    wait_until(stats_file.exists, 30, "demo target")
    return dict(json.loads(stats_file.read_text()))


def apply_consumer_group(lab: Lab, target_url: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient
    from kubernetes import client

    from lagpilot.lab.kafka import create_topic

    if TOPIC not in AdminClient({"bootstrap.servers": lab.bootstrap_servers}).list_topics(timeout=10).topics:
        step(f"creating topic {TOPIC} with {partitions} partitions")
        create_topic(lab.bootstrap_servers, TOPIC, partitions)
    api = lab.control_plane.api_client()
    core = client.CoreV1Api(api)
    with contextlib.suppress(client.ApiException):
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    doc = yaml.safe_load((REPO / "examples" / "minimal.yaml").read_text())
    doc["metadata"] = {"name": NAME, "namespace": NAMESPACE}
    doc["spec"].update({"bootstrapServers": lab.bootstrap_servers, "topic": TOPIC, "workers": 3, "threads": 8})
    doc["spec"]["target"]["url"] = target_url
    custom = client.CustomObjectsApi(api)
    step(f"applying ConsumerGroup {NAMESPACE}/{NAME} (examples/minimal.yaml, 3 workers) -> {target_url}")
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, doc)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME, {"spec": doc["spec"]})


def log_ends(bootstrap: str) -> dict[int, int]:
    """Each partition's log end now: where this run's records start (the topic may hold earlier runs')."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lagpilot-demo-marks", "enable.auto.commit": False})
    try:
        parts = c.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        return {p: c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


class Producer(threading.Thread):
    """A steady keyed stream (rate/s over 100 keys) plus one burst after `burst_after` seconds."""

    def __init__(self, bootstrap: str, rate: float, burst: int, burst_after: float) -> None:
        super().__init__(name="demo-producer", daemon=True)
        from confluent_kafka import Producer as KafkaProducer

        self.producer = KafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.rate, self.burst, self.burst_after = rate, burst, burst_after
        self.produced = 0
        self.stop = threading.Event()

    def send(self, n: int) -> None:
        for _ in range(n):
            key = f"customer-{self.produced % 100}"
            self.producer.produce(TOPIC, key=key, value=json.dumps({"seq": self.produced, "key": key}))
            self.produced += 1
        self.producer.poll(0)

    def run(self) -> None:
        start = time.monotonic()
        burst_done = False
        while not self.stop.is_set():
            self.send(max(1, int(self.rate / 10)))
            if not burst_done and time.monotonic() - start >= self.burst_after:
                self.send(self.burst)
                burst_done = True
            self.stop.wait(0.1)
        self.producer.flush(10)


def target_panel(stats: dict[str, Any], produced: int, earlier: int) -> Text:
    violations = stats.get("order_violations", 0)
    held = f" (+{earlier} from earlier runs)" if earlier else ""
    return Text.assemble(
        ("target ", "bold"), f"{stats.get('url', '')}  produced {produced} this run{held}  delivered "
        f"{stats.get('this_run_distinct', 0)} of them ({stats.get('requests', 0)} requests)  per-key order: ",
        ("OK", "green") if not violations else (f"{violations} VIOLATIONS", "bold red"))


def ready(view: Any) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in view.conditions)


@click.command()
@click.option("--duration", type=float, default=0.0, help="stop after this many seconds (0 = until Ctrl-C)")
@click.option("--once", is_flag=True, help="run until the group is Ready and records flow, print the view, and stop")
@click.option("--rate", type=float, default=50.0, show_default=True, help="steady records per second")
@click.option("--burst", type=int, default=2000, show_default=True, help="records in the burst")
@click.option("--partitions", type=int, default=6, show_default=True)
@click.option("--keep-lab/--stop-lab", default=None,
              help="leave the lab running afterwards (asked when interactive; default keep)")
def demo(duration: float, once: bool, rate: float, burst: int, partitions: int, keep_lab: bool | None) -> None:
    """Run the whole product on the local lab with a live view."""
    from lagpilot.cli.view import collect, render

    lab = ensure_lab()
    install_crds(lab)
    ensure_operator(lab)
    target = ensure_target(lab)
    apply_consumer_group(lab, target["url"], partitions)
    starts = log_ends(lab.bootstrap_servers)
    earlier = sum(starts.values())
    run_id = uuid.uuid4().hex
    (lab.workdir / "demo" / "run.json").write_text(json.dumps({"id": run_id,
                                                               "from": {str(p): o for p, o in starts.items()}}))
    producer = Producer(lab.bootstrap_servers, rate, burst, burst_after=10.0)
    producer.start()
    api = lab.control_plane.api_client()
    stats_file = lab.workdir / "demo" / "target.json"
    step("live view (Ctrl-C to stop)" if not (duration or once) else "live view")
    start = time.monotonic()
    view = None
    stats: dict[str, Any] = {}
    console = Console() if sys.stdout.isatty() else Console(width=140)
    try:
        with Live(console=console, refresh_per_second=2, transient=False,
                  auto_refresh=console.is_terminal) as live:
            while True:
                with contextlib.suppress(Exception):
                    view = collect(api, NAMESPACE, NAME)
                with contextlib.suppress(OSError, ValueError):
                    fresh = json.loads(stats_file.read_text())
                    if fresh.get("run") == run_id:  # counted against this run's start offsets
                        stats = fresh
                parts: list[Any] = [target_panel(stats, producer.produced, earlier)]
                if view is not None:
                    parts.insert(0, render(view))
                if console.is_terminal:
                    live.update(Group(*parts))
                elapsed = time.monotonic() - start
                if duration and elapsed >= duration:
                    break
                if once and view is not None and stats.get("this_run_distinct", 0) > 0 and ready(view) \
                        and any(r.lag is not None for r in view.partition_rows):
                    break
                if once and elapsed > 300:
                    break
                time.sleep(1.0)
            if not console.is_terminal:
                live.update(Group(*parts))
                live.refresh()
    except KeyboardInterrupt:
        pass
    finally:
        producer.stop.set()
        producer.join(15)
    delivered = int(stats.get("this_run_distinct", 0))
    violations = int(stats.get("order_violations", 0))
    console.print()
    held = f" (the topic already held {earlier} records from earlier runs)" if earlier else ""
    console.print(f"demo summary: produced {producer.produced} this run{held}, delivered {delivered} of them "
                  f"(distinct records), per-key order violations {violations}", soft_wrap=True)
    if keep_lab is None:
        keep_lab = click.confirm("keep the lab running?", default=True) if sys.stdin.isatty() else True
    if keep_lab:
        err.print(f"lab left running: export KUBECONFIG={lab.kubeconfig}; kubectl get cg -n {NAMESPACE}; "
                  "`lagpilot lab down` stops it")
    else:
        step("stopping the lab")
        from lagpilot_operator.brokers import forget_clients

        forget_clients()
        stop_lab(lab, remove=True)
    sys.exit(0 if delivered > 0 and violations == 0 else 1)

