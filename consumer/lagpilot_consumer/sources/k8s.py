"""``--assignment k8s``: the worker side of the operator's partition hand-off protocol
(docs/architecture.md, "Partition hand-off protocol").

- Watches the ConfigMap ``<consumergroup>-assignment`` (LIST, then WATCH from its resourceVersion; a fresh
  LIST after 410 Gone or any error) and tells the sink to own exactly the partitions granted to this pod,
  for every epoch newer than the last one it passed on.
- Publishes what the runtime has *applied* in its own Lease (name = pod name): holderIdentity, renewTime,
  leaseDurationSeconds and the annotations ``lagpilot.io/owned`` / ``lagpilot.io/epoch``; renewed every
  ``lease_renew_s`` and written at once after each applied epoch.
- Fences: when the Lease could not be renewed for ``fence_timeout_s``, ``sink.fence()`` (stop processing
  everything). After the API server is reachable again the source writes its Lease *first* and only then
  re-LISTs the ConfigMap and passes the current grant on (which lifts the fence) -- the order the
  operator's safety argument relies on. The same order holds at start.
- On stop (after the runtime drained, committed and reported nothing owned) the Lease is written one
  last time already expired, so the operator treats the worker as gone at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from lagpilot import kubeclient
from lagpilot.protocol import (
    ANNOTATION_EPOCH,
    ANNOTATION_OWNED,
    ASSIGNMENT_CONFIGMAP_SUFFIX,
    ASSIGNMENT_KEY,
    LABEL_CG,
    LABEL_WORKER,
    PartitionId,
    format_owned,
    lease_duration_for,
    read_grant,
)
from lagpilot_consumer.sources.base import AssignmentSink

log = logging.getLogger("lagpilot.consumer.k8s")



class WatchError(Exception):
    """An ERROR event in a watch stream (a Status object), e.g. 410 Gone when the resourceVersion expired."""

    def __init__(self, status: Any) -> None:
        status = status if isinstance(status, dict) else {}
        self.status = int(status.get("code") or 0)
        super().__init__(f"watch error {self.status}: {status.get('reason', '')} {status.get('message', '')}".strip())


def fence_is_late(silent_s: float, fence_timeout_s: float, lease_renew_s: float) -> bool:
    """Whether a fence comes too late to commit. The fence loop checks every fraction of a second, so a
    timely fence sees a silence just past the fence timeout, long before the operator may re-grant (after
    the Lease duration, see protocol.lease_duration_for). A silence a renew period or more past it means
    the process itself was not running (a frozen node, SIGSTOP, a VM pause): the operator may already
    have granted the partitions to another worker, whose commits a commit now would move back."""
    return silent_s >= fence_timeout_s + lease_renew_s


def event_resource_version(event: Mapping[str, Any]) -> str | None:
    """The resourceVersion a watch event carries. The client deserializes ADDED/MODIFIED/DELETED objects but
    leaves BOOKMARK (and ERROR) objects raw dicts, so both shapes are read."""
    obj = event.get("object")
    if isinstance(obj, dict):
        rv = (obj.get("metadata") or {}).get("resourceVersion")
    else:
        rv = getattr(getattr(obj, "metadata", None), "resource_version", None)
    return str(rv) if rv else None

class K8sPartitionSource:
    subscribe = False

    def __init__(self, namespace: str, pod_name: str, configmap_name: str, fence_timeout_s: float = 20.0,
                 lease_renew_s: float = 5.0, sink: AssignmentSink | None = None, api_client: Any = None,
                 consumergroup: str | None = None, delivery_timeout_s: float = 0.0, pod_uid: str = "",
                 default_topic: str | None = None) -> None:
        if not namespace or not pod_name:
            raise ValueError("k8s assignment needs the namespace and the pod name ($POD_NAMESPACE, $POD_NAME)")
        if not configmap_name:
            raise ValueError("k8s assignment needs --assignment-configmap")
        self.namespace = namespace
        self.pod_name = pod_name
        self.pod_uid = pod_uid  # the Lease is owned by the pod: deleting the pod garbage-collects it
        # What a bare partition number of an older operator's document (format 1) means: the worker's one
        # --topic; None (several or none configured): such a document is not read.
        self.default_topic = default_topic
        self.configmap_name = configmap_name
        self.fence_timeout_s = float(fence_timeout_s)
        self.lease_renew_s = float(lease_renew_s)
        self.lease_duration_s = lease_duration_for(self.fence_timeout_s, self.lease_renew_s, delivery_timeout_s)
        self.request_timeout_s = max(1.0, min(self.lease_renew_s, 5.0))
        self.consumergroup = consumergroup or (
            configmap_name[: -len(ASSIGNMENT_CONFIGMAP_SUFFIX)] if configmap_name.endswith(ASSIGNMENT_CONFIGMAP_SUFFIX)
            else "")
        self._sink = sink
        self._api_client = api_client
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._applied: tuple[int, frozenset[PartitionId]] | None = None
        self._desired_epoch = -1  # last epoch passed to the sink
        self._latest_epoch = -1  # newest epoch seen in the ConfigMap
        self._incarnation: str | None = None  # of the document the epochs above belong to
        self._fenced = False
        self._relist = threading.Event()  # set: the watch must LIST afresh (start, after a fence)
        self._lease_ok = threading.Event()  # set once the Lease has been written since start/fence
        self._last_renew = time.monotonic()
        self._threads: list[threading.Thread] = []
        self._watch: Any = None

    # ---- PartitionSource ---------------------------------------------------------------------------
    def start(self, sink: AssignmentSink) -> None:
        from kubernetes import client

        self._sink = sink
        if self._api_client is None:
            self._api_client = kubeclient.load()
        self._core = client.CoreV1Api(self._api_client)
        self._coord = client.CoordinationV1Api(self._api_client)
        sink.add_applied_listener(self._on_applied)
        guard = getattr(sink, "set_delivery_guard", None)
        if guard is not None:
            guard(self.lease_fresh)
        self._last_renew = time.monotonic()
        self._relist.set()
        for target, name in ((self._lease_loop, "lease"), (self._watch_loop, "assignment-watch"),
                             (self._fence_loop, "fence")):
            t = threading.Thread(target=target, name=f"lagpilot-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        w = self._watch
        if w is not None:
            w.stop()
        for t in self._threads:
            t.join(timeout=self.request_timeout_s + 2)
        # Last word: nothing owned, and already expired -> the operator may re-grant at once.
        try:
            epoch = self._applied[0] if self._applied else 0
            self._write_lease(frozenset(), epoch, expired=True)
        except Exception as exc:  # the Lease then simply expires
            log.warning("could not mark the Lease released at shutdown: %s", exc)

    def ready(self) -> bool:
        with self._lock:
            applied = self._applied
            return (applied is not None and not self._fenced and self._lease_ok.is_set()
                    and applied[0] == self._desired_epoch and self._desired_epoch == self._latest_epoch)

    # ---- sink callbacks ----------------------------------------------------------------------------
    def _on_applied(self, epoch: int, owned: frozenset[PartitionId]) -> None:
        with self._lock:
            self._applied = (epoch, frozenset(owned))
        self._wake.set()

    # ---- the Lease ---------------------------------------------------------------------------------
    def _lease_body(self, owned: frozenset[PartitionId], epoch: int, expired: bool) -> Any:
        from kubernetes import client

        now = dt.datetime.now(dt.UTC)
        renew = now - dt.timedelta(seconds=self.lease_duration_s + 1) if expired else now
        labels = {LABEL_WORKER: "true"}
        if self.consumergroup:
            labels[LABEL_CG] = self.consumergroup
        owners = [client.V1OwnerReference(api_version="v1", kind="Pod", name=self.pod_name, uid=self.pod_uid)
                  ] if self.pod_uid else None
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.pod_name, namespace=self.namespace, labels=labels, owner_references=owners,
                annotations={ANNOTATION_OWNED: format_owned(owned), ANNOTATION_EPOCH: str(epoch)}),
            # Released (a clean stop): no holder, as client-go's leader election releases a Lease; the
            # operator treats that as gone at once, on no one's clock.
            spec=client.V1LeaseSpec(holder_identity="" if expired else self.pod_name,
                                    lease_duration_seconds=self.lease_duration_s, renew_time=renew))

    def _write_lease(self, owned: frozenset[PartitionId], epoch: int, expired: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        body = self._lease_body(owned, epoch, expired)
        timeout = self.request_timeout_s
        for _ in range(3):
            try:
                current = self._coord.read_namespaced_lease(self.pod_name, self.namespace,
                                                            _request_timeout=timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                try:
                    self._coord.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
                    return
                except ApiException as cexc:
                    if cexc.status == 409:
                        continue
                    raise
            body.metadata.resource_version = current.metadata.resource_version
            body.spec.acquire_time = current.spec.acquire_time if current.spec else None
            try:
                self._coord.replace_namespaced_lease(self.pod_name, self.namespace, body,
                                                     _request_timeout=timeout)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError("Lease update kept conflicting")

    def _lease_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                applied = self._applied
            owned, epoch = (applied[1], applied[0]) if applied else (frozenset(), 0)
            self._fence_if_silent()
            try:
                self._write_lease(owned, epoch)
                self._last_renew = time.monotonic()
                if not self._lease_ok.is_set():
                    self._lease_ok.set()
                    self._relist.set()  # Lease first, then a fresh LIST of the ConfigMap
                    self._interrupt_watch()
            except Exception as exc:
                log.warning("Lease renewal failed: %s", exc)
            self._wake.wait(self.lease_renew_s)
            self._wake.clear()

    def lease_fresh(self) -> bool:
        """The Lease was renewed within the fence timeout (monotonic clock: a freeze counts)."""
        return time.monotonic() - self._last_renew < self.fence_timeout_s

    def _fence_loop(self) -> None:
        """Separate from the renewals so a hung API call cannot delay the fence."""
        while not self._stopping.wait(min(0.5, self.fence_timeout_s / 4)):
            self._fence_if_silent()

    def _fence_if_silent(self) -> None:
        """Fence when the Lease has not been renewed for the fence timeout. Called by the fence loop and by
        the renew loop before each renewal: after a freeze both wake at once, and a renewal written first
        would hide the silence from the fence loop while deliveries of lost partitions resume."""
        silent = time.monotonic() - self._last_renew
        if silent < self.fence_timeout_s:
            return
        with self._lock:
            if self._fenced:
                return
            self._fenced = True
        late = fence_is_late(silent, self.fence_timeout_s, self.lease_renew_s)
        log.error("Lease not renewed for %.1f s (fence timeout %.1f s): fencing, processing stops%s",
                  silent, self.fence_timeout_s,
                  " (noticed late: the process was not running; releasing without a commit)" if late else "")
        self._lease_ok.clear()
        self._interrupt_watch()
        if self._sink is not None:
            self._sink.fence(commit=not late)

    # ---- the ConfigMap -----------------------------------------------------------------------------
    def _interrupt_watch(self) -> None:
        w = self._watch
        if w is not None:
            w.stop()

    def _handle(self, cm: Any, fresh: bool) -> None:
        data = (cm.data or {}) if cm is not None else {}
        grant = read_grant(data.get(ASSIGNMENT_KEY), self.pod_name, self.default_topic)
        if grant is None:
            return
        epoch, partitions = grant.epoch, grant.partitions
        with self._lock:
            if self._fenced and not (fresh and self._lease_ok.is_set()):
                return  # fenced: only a LIST made after a successful Lease write lifts it
            if grant.incarnation != self._incarnation:
                if self._incarnation is not None:
                    # The operator rebuilt the document (it was deleted or unreadable): epochs start over.
                    log.warning("assignment document rebuilt (incarnation %s -> %s): following it from epoch %d",
                                self._incarnation or "-", grant.incarnation or "-", epoch)
                    self._desired_epoch = self._latest_epoch = -1
                self._incarnation = grant.incarnation
            self._latest_epoch = max(self._latest_epoch, epoch) if not fresh else epoch
            lift = self._fenced
            if epoch <= self._desired_epoch and not lift:
                return
            self._desired_epoch = epoch
            self._fenced = False
        log.info("assignment epoch %d: partitions %s", epoch, format_owned(partitions) or "(none)")
        if self._sink is not None:
            self._sink.set_desired(partitions, epoch)

    def _watch_loop(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        selector = f"metadata.name={self.configmap_name}"
        rv: str | None = None
        backoff = 0.5
        while not self._stopping.is_set():
            if not self._lease_ok.is_set():
                self._lease_ok.wait(self.lease_renew_s)  # never read grants before our Lease is written
                continue
            try:
                if rv is None or self._relist.is_set():
                    self._relist.clear()
                    lst = self._core.list_namespaced_config_map(self.namespace, field_selector=selector,
                                                                _request_timeout=self.request_timeout_s)
                    rv = lst.metadata.resource_version
                    self._handle(lst.items[0] if lst.items else None, fresh=True)
                self._watch = watch.Watch()
                for event in self._watch.stream(self._core.list_namespaced_config_map, self.namespace,
                                                field_selector=selector, resource_version=rv,
                                                timeout_seconds=60, allow_watch_bookmarks=True,
                                                _request_timeout=75):
                    if self._stopping.is_set() or self._relist.is_set() or not self._lease_ok.is_set():
                        break
                    if event["type"] == "ERROR":
                        raise WatchError(event["object"])
                    rv = event_resource_version(event) or rv
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._handle(event["object"], fresh=False)
                backoff = 0.5
            except (ApiException, WatchError) as exc:
                if exc.status == 410:
                    rv = None  # resourceVersion too old: LIST again
                    continue
                log.warning("assignment watch failed: %s", exc)
                rv = None
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:
                log.warning("assignment watch failed: %s", exc)
                rv = None
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._watch = None
