"""Partition sources and the sink they feed: the seam between *who decides* which partitions this worker
reads (a static list, Kafka's group protocol, or the operator via Kubernetes) and *the consumer runtime*
that actually assigns, drains and commits them.

The runtime (``lagpilot_consumer.runtime.ConsumerRuntime``) implements :class:`AssignmentSink`. A
:class:`PartitionSource` pushes the wanted partition set into the sink; the sink applies it in the poll
loop (the only thread that touches the ``confluent_kafka.Consumer``) and reports back what it applied
through the listeners registered with :meth:`AssignmentSink.add_applied_listener`.

Contract for ``lagpilot_consumer.sources.k8s.K8sPartitionSource``, as used by
``lagpilot_consumer.main``::

    source = K8sPartitionSource(namespace=..., pod_name=..., configmap_name=...,
                                fence_timeout_s=..., lease_renew_s=..., sink=runtime)
    source.start(runtime)        # same sink again, so every source has one start() signature
    ... runtime.ready() consults source.ready() for /readyz ...
    # on SIGTERM: the runtime stops fetching, drains, commits, then calls every applied listener with
    # (last applied epoch, frozenset()) -- so the source may write an empty `owned` to its Lease --
    # and only then calls source.stop().
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from lagpilot.protocol import PartitionId

AppliedListener = Callable[[int, frozenset[PartitionId]], None]
"""``on_applied(epoch, owned)``: called by the runtime after it has fully applied an epoch."""


@runtime_checkable
class AssignmentSink(Protocol):
    """What a partition source may ask of the consumer runtime. All methods are thread-safe and
    non-blocking: they record the wish; the poll loop acts on it at its next iteration (within ~100 ms
    unless it is busy releasing partitions, which may take up to ``--drain-seconds``)."""

    def set_desired(self, partitions: frozenset[PartitionId], epoch: int) -> None:
        """Ask the runtime to own exactly ``partitions`` (topic/partition pairs, of any topics) as of
        assignment ``epoch``; a topic seen for the first time needs no restart.

        Only the latest call matters: if several arrive before the poll loop gets to them, the
        intermediate ones are skipped (their epochs are never reported as applied). Epochs are opaque
        integers to the runtime; it never compares them, it only echoes the one it applied.

        The runtime applies it in this order:

        1. *Release* every owned partition not in ``partitions``: stop fetching it (pause), drop its
           fetched-but-not-started records, let records already being delivered finish (or give up on
           them after ``--drain-seconds``; a record given up on is *not* marked done, so the commit
           stays below it and the next owner re-delivers it), commit its watermark synchronously
           (the highest offset below which every record is done), unassign it.
        2. *Start* every partition in ``partitions`` not yet owned: ``incremental_assign`` from the
           group's committed offset (``auto.offset.reset=earliest`` when the group has none).
        3. Call every applied listener with ``(epoch, owned)`` where ``owned`` is the set now assigned
           (equal to ``partitions``).

        Partitions that do not exist (or whose topic was deleted) are assigned anyway: librdkafka
        reports them as errors, the runtime logs a warning and keeps retrying them, and the worker's other
        partitions go on; released, their final commit is not retried when the topic is gone.
        """

    def fence(self, commit: bool = True) -> None:
        """Stop processing everything now: release *all* owned partitions exactly as in step 1 of
        :meth:`set_desired` (drain up to ``--drain-seconds``, commit, unassign), then call every applied
        listener with ``(last applied epoch, frozenset())``. The fence holds -- nothing is fetched --
        until the next :meth:`set_desired`, which lifts it and is applied normally (a source calls it
        once it reaches the API again and has read the current grant). ``commit=False``: release
        without committing, for a fence noticed too late (the process was frozen past its Lease), when
        another worker may already own the partitions and have committed further."""

    def add_applied_listener(self, listener: AppliedListener) -> None:
        """Register ``listener(epoch, owned)``. It is called on the poll-loop thread after each applied
        epoch, after a fence, and once more with ``(epoch, frozenset())`` at shutdown after the final
        commit. Listeners must return quickly (record the values and wake your own thread); they may
        call :meth:`set_desired` / :meth:`fence` (those only record the wish)."""

    def applied(self) -> tuple[int, frozenset[PartitionId]] | None:
        """The last ``(epoch, owned)`` reported to listeners, or None before the first one."""


@runtime_checkable
class PartitionSource(Protocol):
    """Decides which partitions this worker should own and tells the sink."""

    #: True when Kafka's group protocol decides (the runtime then subscribes and follows rebalances);
    #: False when the source decides and the runtime assigns exactly what it is told.
    subscribe: bool

    def start(self, sink: AssignmentSink) -> None:
        """Begin feeding ``sink`` (from a thread of your own if you need to wait on anything). Called
        once, after the runtime's poll loop is running. Must not block for long."""

    def stop(self) -> None:
        """Stop feeding the sink and release resources. Called once at shutdown, after the runtime has
        drained, committed and reported ``(epoch, frozenset())`` to applied listeners."""

    def ready(self) -> bool:
        """True when the worker's assignment is known and applied (feeds ``/readyz``)."""


class DesiredState:
    """The thread-safe mailbox behind ``set_desired``/``fence``: the latest wish plus a version counter
    so the poll loop can tell cheaply whether anything changed since it last looked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: frozenset[PartitionId] | None = None
        self._epoch = 0
        self._fenced = False
        self._version = 0

    def set(self, partitions: Iterable[PartitionId], epoch: int) -> None:
        with self._lock:
            self._partitions = frozenset(PartitionId(str(t), int(p)) for t, p in partitions)
            self._epoch = epoch
            self._fenced = False
            self._version += 1

    def fence(self) -> None:
        with self._lock:
            self._fenced = True
            self._version += 1

    def snapshot(self) -> tuple[int, frozenset[PartitionId] | None, int, bool]:
        """(version, partitions or None if never set, epoch, fenced)."""
        with self._lock:
            return self._version, self._partitions, self._epoch, self._fenced
