"""``lagpilot-consumer``: parse configuration (exit 2 with one line if invalid), build the partition
source, serve metrics/health, run the poll loop until SIGTERM/SIGINT, drain, commit, exit 0."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from lagpilot_consumer import logs
from lagpilot_consumer.config import Config, ConfigError, parse
from lagpilot_consumer.metrics import Metrics
from lagpilot_consumer.runtime import ConsumerRuntime
from lagpilot_consumer.sources.base import PartitionSource
from lagpilot_consumer.sources.kafka import KafkaGroupSource
from lagpilot_consumer.sources.static import StaticPartitionSource

log = logging.getLogger("lagpilot.consumer")


def make_source(cfg: Config, runtime: ConsumerRuntime) -> PartitionSource:
    if cfg.assignment == "static":
        return StaticPartitionSource(cfg.partitions)
    if cfg.assignment == "kafka":
        return KafkaGroupSource()
    from lagpilot_consumer.sources.k8s import K8sPartitionSource  # imports the Kubernetes client: only here

    return K8sPartitionSource(namespace=cfg.namespace, pod_name=cfg.pod_name,
                              configmap_name=cfg.assignment_configmap, fence_timeout_s=cfg.fence_timeout_seconds,
                              lease_renew_s=cfg.lease_renew_seconds, sink=runtime,
                              delivery_timeout_s=cfg.timeout_seconds, pod_uid=os.environ.get("POD_UID", ""),
                              default_topic=cfg.default_topic)


class _Deferred:
    """Placeholder source so the runtime (the sink) can exist before the real source is built."""

    subscribe = False

    def start(self, sink: Any) -> None: ...
    def stop(self) -> None: ...
    def ready(self) -> bool:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = parse(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"lagpilot-consumer: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_format, cfg.log_level)
    metrics = Metrics()
    runtime = ConsumerRuntime(cfg, _Deferred(), metrics)
    try:
        runtime.source = make_source(cfg, runtime)
    except ConfigError as exc:
        print(f"lagpilot-consumer: {exc}", file=sys.stderr)
        return 2
    runtime.subscribe = runtime.source.subscribe
    server = None
    if cfg.http_port:
        from lagpilot_consumer.httpserver import serve

        try:
            server = serve(cfg.bind, cfg.http_port, metrics.registry, runtime.healthy, runtime.ready)
        except OSError as exc:
            print(f"lagpilot-consumer: invalid --http-port {cfg.http_port} / --bind {cfg.bind!r}: "
                  f"cannot listen ({exc.strerror})", file=sys.stderr)
            return 2

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal received, shutting down", extra={"signal": signal.Signals(signum).name})
        runtime.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        code = runtime.run()
    except ConfigError as exc:  # found at start against the brokers (the park topic)
        print(f"lagpilot-consumer: {exc}", file=sys.stderr)
        code = 2
    except Exception:
        log.exception("consumer failed")
        code = 1
    finally:
        if server is not None:
            server.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
