"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) run with `java` from the
jars that scripts/fetch-kafka.sh resolved from Maven Central."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lagpilot import paths
from lagpilot.lab.kafkatls import HOSTS, LISTENERS, PROTOCOLS, KafkaPKI, secure_listener_properties
from lagpilot.lab.proc import free_port, pid_alive, spawn, stop_pid, wait_until

LOG4J = """log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
"""


@dataclass
class KafkaBroker:
    """A running broker: what clients need to reach it and what `stop` needs to clean it up."""

    workdir: str
    port: int
    controller_port: int
    pid: int
    secure_ports: dict[str, int] = field(default_factory=dict)  # listener name -> port (lab.kafkatls)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener(self, name: str) -> str:
        """The bootstrap address of a secured listener (SSL, MTLS, SCRAM, OAUTH; V6 on [::1])."""
        return f"{HOSTS.get(name, '127.0.0.1')}:{self.secure_ports[name]}"

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "bootstrap_servers": self.bootstrap_servers}


def ensure_jars() -> Path:
    libs = paths.kafka_libs()
    if not (libs / ".complete").exists():
        subprocess.run(["bash", str(paths.repo_scripts() / "fetch-kafka.sh")], check=True)
    return libs


def server_properties(workdir: Path, port: int, controller_port: int,
                      secure: tuple[KafkaPKI, dict[str, int]] | None = None) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(workdir / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.check.interval.ms": "5000",
        "delete.topic.enable": "true",
    }
    if secure is not None:
        pki, ports = secure
        extra = ",".join(f"{name}://{HOSTS.get(name, '127.0.0.1')}:{ports[name]}" for name in LISTENERS)
        props["listeners"] += "," + extra
        props["advertised.listeners"] += "," + extra
        props["listener.security.protocol.map"] += "," + ",".join(f"{n}:{PROTOCOLS[n]}" for n in LISTENERS)
        props.update(secure_listener_properties(pki))
    return "".join(f"{k}={v}\n" for k, v in props.items())


def start_kafka(workdir: Path, port: int | None = None, heap: str = "768m",
                timeout: float = 90.0, secure: KafkaPKI | None = None) -> KafkaBroker:
    """Format storage on first start, launch the broker, and return once the admin API answers. With
    ``secure``, the broker also has the TLS/SASL listeners of :mod:`lagpilot.lab.kafkatls`."""
    libs = ensure_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    java = shutil.which("java") or "java"
    port = port or free_port()
    controller_port = free_port()
    props_file = workdir / "server.properties"
    secure_ports = {name: free_port() for name in LISTENERS} if secure is not None else {}
    props_file.write_text(server_properties(workdir, port, controller_port,
                                            (secure, secure_ports) if secure is not None else None))
    log_file = workdir / "kafka.log"
    (workdir / "log4j.properties").write_text(LOG4J.format(log=log_file))
    cp = f"{libs}/*"
    jvm = [java, f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
           "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{workdir / 'log4j.properties'}",
           "-cp", cp]
    if not (workdir / "data" / "meta.properties").exists():
        cluster_id = subprocess.run([*jvm, "kafka.tools.StorageTool", "random-uuid"], check=True,
                                    capture_output=True, text=True).stdout.strip().splitlines()[-1]
        subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props_file)],
                       check=True, capture_output=True, text=True)
    env = {**os.environ, "KAFKA_HEAP_OPTS": f"-Xmx{heap}"}
    proc = spawn([*jvm, "kafka.Kafka", str(props_file)], workdir / "stdout.log", env=env)
    broker = KafkaBroker(workdir=str(workdir), port=port, controller_port=controller_port, pid=proc.pid,
                         secure_ports=secure_ports)
    (workdir / "broker.json").write_text(json.dumps(broker.to_json()))
    wait_until(lambda: kafka_ready(broker.bootstrap_servers), timeout, "kafka broker",
               alive=lambda: proc.poll() is None, log=workdir / "stdout.log")
    return broker


def kafka_ready(bootstrap: str) -> bool:
    import socket

    from confluent_kafka.admin import AdminClient

    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=1):
        pass  # only ask the admin API once the port listens (keeps librdkafka quiet)

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
    cluster = admin.describe_cluster(request_timeout=3).result(timeout=5)
    return len(cluster.nodes) == 1


def stop_kafka(broker: KafkaBroker, remove: bool = False) -> None:
    stop_pid(broker.pid, grace=15)
    if remove:
        shutil.rmtree(broker.workdir, ignore_errors=True)


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config or {})], operation_timeout=30)
    futures[name].result(timeout=30)
    wait_until(lambda: _topic_has_leaders(admin, name, partitions), 30, f"topic {name}")


def _topic_has_leaders(admin: object, name: str, partitions: int) -> bool:
    md = admin.list_topics(topic=name, timeout=5)  # type: ignore[attr-defined]
    t = md.topics.get(name)
    return bool(t and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values()))
