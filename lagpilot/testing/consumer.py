"""Helpers for the consumer's lab tests: produce keyed records, read committed offsets, run
lagpilot-consumer as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from lagpilot.lab.proc import free_port

VENV_BIN = Path(sys.executable).parent


def produce(bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]],
            headers: list[tuple[str, str | bytes | None]] | None = None) -> int:
    """records: (partition, key, value). Returns how many were acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                  "batch.num.messages": 10000, "queue.buffering.max.messages": 500000})
    acked = [0]
    errors: list[str] = []

    def cb(err: object, _msg: object) -> None:
        if err is None:
            acked[0] += 1
        else:
            errors.append(str(err))

    for part, key, value in records:
        while True:
            try:
                p.produce(topic, value=value, key=key, partition=part, headers=headers, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    p.flush(60)
    assert not errors, errors[:3]
    return acked[0]


def keyed_records(n: int, partitions: int, keys: int) -> list[tuple[int, bytes, bytes]]:
    """n records over ``keys`` keys; a key always maps to the same partition; values say key and seq."""
    out: list[tuple[int, bytes, bytes]] = []
    seq = [0] * keys
    for i in range(n):
        k = (i * 7919) % keys
        out.append((k % partitions, f"key-{k}".encode(), f"key-{k}:{seq[k]}".encode()))
        seq[k] += 1
    return out


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}
    finally:
        c.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log end (next offset to be written) of each partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lagpilot-test-ends"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, partitions: int, expect: int, timeout: float = 30.0) -> list[Any]:
    """Every message of ``topic`` (up to ``expect``), as confluent_kafka Message objects."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in c.consume(100, timeout=0.5):
                if m.error() is None:
                    out.append(m)
        return out
    finally:
        c.close()


PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


class ConsumerProcess:
    """``.venv/bin/lagpilot-consumer`` with the given flags, output to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.log_path = log_path
        # A proxy of the machine running the tests (a developer's HTTPS_PROXY) is not the test's: the worker
        # honours those variables, so only a test that sets them gets one.
        inherited = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        full_env = {**inherited, "LAGPILOT_HTTP_PORT": str(self.http_port), "LAGPILOT_BIND": "127.0.0.1",
                    **(env or {})}
        self.log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([str(VENV_BIN / "lagpilot-consumer"), *args], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=full_env)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"consumer exited early:\n{self.tail()}"
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"consumer not ready:\n{self.tail()}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of samples of ``name`` whose labels include ``labels``."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, lbl = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in lbl for k, v in labels.items()):
                total += float(value)
        return total

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
