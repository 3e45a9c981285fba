"""Prometheus metrics of one consumer process (own registry, so tests can run several in one process).
Label children are cached: a label lookup per record would cost more than the rest of the bookkeeping.
Per-partition families carry ``topic`` and ``partition`` (a worker may own ``orders:0`` and
``payments:0`` at once); the operator reads both labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lagpilot.protocol import PartitionId

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def status_class(status: int | None) -> str:
    """``2xx``..``5xx`` for an HTTP answer, ``error`` for no answer (connection error, timeout)."""
    return "error" if status is None else f"{status // 100}xx"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("lagpilot_records_consumed", "Records fetched from Kafka", ["topic", "partition"],
                                registry=r)
        self.deliveries = Counter(
            "lagpilot_deliveries", "HTTP delivery attempts by outcome: success; retry (failed, will retry); "
            "dead_letter (failed for the last time, written to the dead-letter topic); error (failed for the "
            "last time and no dead-letter topic: the record keeps retrying at the max backoff)",
            ["outcome", "topic", "partition"], registry=r)
        self.delivery_seconds = Histogram("lagpilot_delivery_seconds", "Duration of one HTTP attempt",
                                          ["status_class", "topic", "partition"], buckets=BUCKETS, registry=r)
        self.inflight_records = Gauge("lagpilot_inflight_records", "Records fetched and not yet done",
                                      registry=r)
        self.inflight_bytes = Gauge("lagpilot_inflight_bytes", "Bytes of records fetched and not yet done",
                                    registry=r)
        self.committed_offset = Gauge("lagpilot_committed_offset", "Last offset committed (next to read)",
                                      ["topic", "partition"], registry=r)
        self.assigned_partitions = Gauge("lagpilot_assigned_partitions", "Partitions currently owned",
                                         registry=r)
        self.paused = Gauge("lagpilot_fetch_paused", "1 while fetching is paused by backpressure",
                            registry=r)
        self.assignment_epoch = Gauge("lagpilot_assignment_epoch", "Last applied assignment epoch",
                                      registry=r)
        self.dead_letter_write_errors = Counter("lagpilot_dead_letter_write_errors",
                                                "Failed dead-letter writes (retried)", registry=r)
        self.commit_errors = Counter("lagpilot_commit_errors", "Failed offset commits", registry=r)
        self.token_fetches = Counter("lagpilot_target_token_fetches", "OAuth2 tokens fetched for the target "
                                     "(outcome ok|error)", ["outcome"], registry=r)
        self.abandoned = Counter("lagpilot_abandoned_deliveries", "Deliveries given up on because their "
                                 "partition was released or the process stopped (not committed: the next "
                                 "owner re-delivers them)", registry=r)
        self.concurrency_limit = Gauge("lagpilot_concurrency_limit", "Requests allowed on the wire at once "
                                       "now (adaptive: halved while the target is unavailable)", registry=r)
        self.requests_on_wire = Gauge("lagpilot_requests_on_wire", "HTTP requests being sent or answered",
                                      registry=r)
        self.retries_parked = Gauge("lagpilot_retries_parked", "Records waiting on a timer for their next "
                                    "attempt (they hold no request slot; their key waits behind them)",
                                    registry=r)
        self.rate_limited_seconds = Counter("lagpilot_rate_limited_seconds", "Time requests waited for "
                                            "--max-requests-per-second", registry=r)
        self.outstanding_offsets = Gauge("lagpilot_outstanding_offsets", "Offsets fetched and not yet "
                                         "committable, per partition (done ones behind an undone one "
                                         "included); at --max-outstanding-per-partition the partition "
                                         "stops fetching", ["topic", "partition"], registry=r)
        self.fetch_held = Gauge("lagpilot_partition_fetch_held", "1 while a partition stops fetching "
                                "because of --max-outstanding-per-partition", ["topic", "partition"], registry=r)
        self.unmatched = Counter("lagpilot_records_unmatched", "Records that matched no route (skipped, or "
                                 "dead-lettered with --unmatched dead-letter)", registry=r)
        self.parked_records = Counter("lagpilot_records_parked", "Records moved to the retry park topic, by "
                                      "reason: failing (failed for --park-after-seconds) or key-parked (an "
                                      "earlier record of its key is parked)", ["reason"], registry=r)
        self.parked_keys = Gauge("lagpilot_parked_keys", "Keys whose records wait in the retry park",
                                 registry=r)
        self.park_write_errors = Counter("lagpilot_park_write_errors", "Failed writes to the park topic "
                                         "(each is retried)", registry=r)
        self._deliv: dict[tuple[str, PartitionId], Counter] = {}
        self._hist: dict[tuple[str, PartitionId], Histogram] = {}
        self._cons: dict[PartitionId, Counter] = {}

    def delivery(self, outcome: str, partition: PartitionId, status: int | None, seconds: float) -> None:
        c = self._deliv.get((outcome, partition))
        if c is None:
            c = self._deliv[(outcome, partition)] = self.deliveries.labels(outcome, *labels_of(partition))
        c.inc()
        sc = status_class(status)
        h = self._hist.get((sc, partition))
        if h is None:
            h = self._hist[(sc, partition)] = self.delivery_seconds.labels(sc, *labels_of(partition))
        h.observe(seconds)

    def consumed_records(self, partition: PartitionId, n: int) -> None:
        c = self._cons.get(partition)
        if c is None:
            c = self._cons[partition] = self.consumed.labels(*labels_of(partition))
        c.inc(n)


def labels_of(partition: PartitionId) -> tuple[str, str]:
    """The ``topic`` and ``partition`` label values of a partition."""
    return partition.topic, str(partition.partition)
