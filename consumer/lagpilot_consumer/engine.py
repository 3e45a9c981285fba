"""The delivery engine: one event-loop thread (uvloop) with every HTTP request of the worker on it.

Why an event loop and not delivery threads: a thread per request spent ~1.1 ms of CPU per record in the
requests stack, and a record waiting for its retry held a thread for the whole backoff, so two retrying
keys with ``--threads 2`` stopped every other key. Here:

- ``--threads`` is the most requests on the wire at once; a slot is held only while a request is being
  sent and answered (and while its dead letter is written);
- a record to retry is **parked** on a timer (a heap ordered by due time): its lane stays blocked in the
  scheduler, so its key keeps its order, while every other key flows;
- the number of slots in use adapts (:class:`~lagpilot_consumer.limits.ConcurrencyLimit`): answers that
  say "unavailable" (no answer, 429, 502, 503, 504) halve it, successes grow it back, so an outage is
  probed by one request, not by every key at once; ``--max-requests-per-second`` caps the rate.

The engine owns no partition state: it asks a :class:`WorkQueue` (the runtime) for the next record that may
go now, whether a record is cancelled (released, fenced, stopping, ownership in doubt: checked right
before every attempt), and reports each record's end. Those calls take the runtime's lock briefly; the
HTTP work happens outside it."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import operator
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin

from lagpilot.routes import Route, RouteTarget, routes_for
from lagpilot_consumer import cloudevents, http1
from lagpilot_consumer.auth import target_auth
from lagpilot_consumer.config import Config
from lagpilot_consumer.delivery import Attempt, DeadLetterWriter, Record, redact_url, same_origin
from lagpilot_consumer.http1 import HttpError, Origin, Pool
from lagpilot_consumer.limits import ConcurrencyLimit, RateLimit
from lagpilot_consumer.metrics import Metrics
from lagpilot_consumer.park import MAIN, PARK, ParkedMessage, park_headers
from lagpilot_consumer.park_kafka import ParkWriter
from lagpilot_consumer.policy import backoff_seconds, header_name, header_value, next_step
from lagpilot_consumer.scheduler import Item

log = logging.getLogger("lagpilot.consumer.delivery")

MAX_REDIRECTS = 3  # 307/308 hops followed within the target's origin
SWEEP_SECONDS = 0.05  # how often parked records are checked for cancellation
_RESERVED = {"host", "content-length", "transfer-encoding", "connection"}
_OURS = {"x-lagpilot-topic", "x-lagpilot-route", "x-lagpilot-partition", "x-lagpilot-offset", "x-lagpilot-timestamp",
         "x-lagpilot-key", "x-lagpilot-key-encoding", "x-lagpilot-base64-headers"}


class UnreadableHeaders(ValueError):
    """The record's Kafka headers cannot be read (a header name that is not UTF-8)."""


# ``Message.headers()`` called through a C-level call (``PyObject_VectorcallMethod``), never a plain
# ``msg.headers()``: see HeadersOnce.
_read_headers = operator.methodcaller("headers")


class HeadersOnce:
    """A Kafka message whose ``headers()`` is called at most once, through a checked call.

    For a header name that is not UTF-8 (Kafka allows any bytes; Go clients write them) confluent-kafka's
    ``Message.headers()`` (2.16.x) returns a list holding a NULL object *with the decode error still set*
    instead of failing, and caches that list. CPython's generic call path sees the pending error and raises
    ``SystemError`` from it; but a plain ``msg.headers()`` call site that the 3.11 interpreter has
    specialised (after a few calls) skips that check: the NULL list comes back as a result, the error stays
    pending for some later unrelated call, and reading the list crashes the interpreter (the worker
    segfaulted in 4 of 12 runs of the lab test). ``operator.methodcaller`` always goes through
    ``PyObject_VectorcallMethod``, which checks. The first result, or the first exception, is kept and
    given back on every attempt: such a record crashes each attempt the same way (retried, dead-lettered
    after ``--max-attempts``), and the worker lives."""

    __slots__ = ("_headers", "_msg")

    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self._headers: Any = HeadersOnce

    def headers(self) -> Any:
        if self._headers is HeadersOnce:
            try:
                self._headers = _read_headers(self._msg)
            except Exception as exc:
                cause = exc.__cause__ or exc  # confluent-kafka wraps the UnicodeDecodeError in a SystemError
                self._headers = UnreadableHeaders(f"Kafka headers not readable ({type(cause).__name__}: {cause})")
        if isinstance(self._headers, Exception):
            raise self._headers
        return self._headers

    def topic(self) -> Any:
        return self._msg.topic()

    def partition(self) -> Any:
        return self._msg.partition()

    def offset(self) -> Any:
        return self._msg.offset()

    def key(self) -> Any:
        return self._msg.key()

    def value(self) -> Any:
        return self._msg.value()

    def timestamp(self) -> Any:
        return self._msg.timestamp()


class WorkQueue(Protocol):
    def take(self) -> Item | None: ...
    def finish(self, item: Item, outcome: str) -> None: ...
    def cancelled(self, item: Item) -> bool: ...
    def divert(self, item: Item) -> bool: ...
    def hold_key(self, item: Item) -> None: ...
    def unhold_key(self, item: Item) -> None: ...


class Job:
    """A dispatched record: its scheduler item and its attempts so far."""

    __slots__ = ("attempt", "counted", "due", "failing_since", "item", "msg", "plan", "step")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.plan: tuple[int, ...] | None = None  # the targets this record goes to, in order; None: not yet
        self.step = 0  # index in ``plan`` of the request being delivered (the ones before are done)
        if item.stream == PARK:  # read back from the park: delivered as the original, resumed where it was
            original = ParkedMessage.of(HeadersOnce(item.payload))
            self.step = getattr(original, "route_step", 0)
            self.msg = HeadersOnce(original)
        else:
            self.msg = HeadersOnce(item.payload)
        self.attempt = 0  # attempts of the current request (a record with routes has one per route)
        self.counted = 0
        self.due = 0.0
        self.failing_since: float | None = None  # monotonic time of its first failed attempt

    def record(self) -> Record:
        """The record for its dead letter. A part that cannot be read (what made the delivery crash)
        is left out rather than keeping the record from its dead-letter topic."""
        msg = self.msg
        try:
            return Record.from_message(msg)
        except Exception:
            def part(name: str) -> Any:
                try:
                    return getattr(msg, name)()
                except Exception:
                    return None

            ts = part("timestamp") or (0, 0)
            return Record(self.item_topic(msg), self.item.partition.partition, self.item.offset, part("key"),
                          part("value"), ts[1] if ts[0] else None, part("headers"))

    @staticmethod
    def item_topic(msg: Any) -> str:
        try:
            return str(msg.topic())
        except Exception:
            return ""


class RequestBuilder:
    """Request bytes for a record: the constant part (request line, Host, configured headers, worker)
    built once; per record the record's own topic (a worker may read several), partition, offset,
    timestamp, key, Kafka headers and length.
    ``--format`` adds the CloudEvents form (:mod:`lagpilot_consumer.cloudevents`); ``traceparent`` and
    ``tracestate`` (W3C trace context) and the ``--header-mapping`` names are forwarded as themselves
    too, so tracing works end to end; ``--idempotency-header`` names a header carrying
    ``<topic>/<partition>/<offset>``, the same on every redelivery."""

    def __init__(self, cfg: Config, url: str | None = None, method: str | None = None,
                 headers: tuple[tuple[str, str], ...] = (), route: str | None = None) -> None:
        self.cfg = cfg
        self.url = url or cfg.target_url
        worker = cfg.pod_name or f"{socket.gethostname()}-{os.getpid()}"
        base: list[tuple[str, str]] = [("X-Lagpilot-Worker", worker), *cfg.headers, *headers]
        seen: dict[str, tuple[str, str]] = {}
        for name, value in base:  # later ones win, as they did when headers were a dict
            if name.lower() in _RESERVED - {"host"} or name.lower() in _OURS:
                continue
            seen[name.lower()] = (name, value)
        host = seen.pop("host", ("Host", http1.host_header(self.url)))[1]
        lines = [f"Host: {host}"] + [f"{n}: {v}" for n, v in seen.values()]
        if route is not None:
            lines.append(f"X-Lagpilot-Route: {route}")
        self.rest = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        # The same without a configured Content-Type, for requests whose Content-Type is the event's.
        no_ct = [ln for ln in lines if not ln.lower().startswith("content-type:")]
        self.rest_no_content_type = ("\r\n".join(no_ct) + "\r\n").encode("latin-1")
        self.method = method or cfg.method
        self.format = cfg.format
        self.forwarded = {"traceparent", "tracestate", *(n.lower() for n in cfg.header_mapping)}
        self.idempotency = cfg.idempotency_header.encode("latin-1")

    def line(self, url: str) -> bytes:
        return f"{self.method} {http1.request_target(url)} HTTP/1.1\r\n".encode("latin-1")

    def body(self, msg: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The body and the headers that go with it (Content-Type and ``ce-*`` for CloudEvents)."""
        value = msg.value()
        if self.format == "raw":
            return value or b"", []
        ts_type, ts = msg.timestamp()
        attrs, content_type = cloudevents.attributes(msg.topic(), msg.partition(), msg.offset(),
                                                     ts if ts_type != 0 else None, msg.headers())
        if cloudevents.is_structured(content_type):
            assert content_type is not None
            return value or b"", [(b"Content-Type", content_type.encode("latin-1", "replace"))]
        if self.format == "cloudevents-binary":
            return value or b"", cloudevents.binary_headers(attrs, content_type)
        return (cloudevents.structured_body(attrs, content_type, value),
                [(b"Content-Type", b"application/cloudevents+json; charset=utf-8")])

    def head(self, line: bytes, msg: Any, body_len: int, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
        own_type = extra is not None and any(n == b"Content-Type" for n, _ in extra)
        topic = msg.topic().encode("latin-1")  # Kafka topic names are ASCII
        parts = [line, self.rest_no_content_type if own_type else self.rest,
                 b"X-Lagpilot-Topic: %s\r\nX-Lagpilot-Partition: %d\r\nX-Lagpilot-Offset: %d\r\n"
                 % (topic, msg.partition(), msg.offset())]
        ts_type, ts = msg.timestamp()
        if ts_type != 0:
            parts.append(b"X-Lagpilot-Timestamp: %d\r\n" % ts)
        key = msg.key()
        if key is not None:
            v, encoded = header_value(key)
            parts.append(b"X-Lagpilot-Key: " + v + b"\r\n")
            if encoded:
                parts.append(b"X-Lagpilot-Key-Encoding: base64\r\n")
        kh = msg.headers()
        if kh:
            encoded_names: list[str] = []
            for name, value in kh:
                hn = header_name(name)
                v, encoded = header_value(value or b"")
                parts.append(b"X-Kafka-Header-" + hn.encode() + b": " + v + b"\r\n")
                if encoded:
                    encoded_names.append(hn)
                elif name.lower() in self.forwarded and hn == name:
                    parts.append(hn.encode() + b": " + v + b"\r\n")
            if encoded_names:
                parts.append(b"X-Lagpilot-Base64-Headers: " + ",".join(encoded_names).encode() + b"\r\n")
        if self.idempotency:
            parts.append(self.idempotency + b": %s/%d/%d\r\n" % (topic, msg.partition(), msg.offset()))
        for name, value in extra or ():
            parts.append(name + b": " + value + b"\r\n")
        parts.append(b"Content-Length: %d\r\n\r\n" % body_len)
        return b"".join(parts)


@dataclass(frozen=True)
class Target:
    """Where one request of a record goes: ``--target-url``, or a route's own url/method/headers."""

    name: str | None  # the route's name; None without routes
    url: str
    origin: Origin
    builder: RequestBuilder
    line: bytes

    @classmethod
    def of(cls, cfg: Config, route: Route | None = None) -> Target:
        name, t = (route.name, route.target) if route is not None else (None, RouteTarget())
        url = t.url or cfg.target_url
        builder = RequestBuilder(cfg, url, t.method, t.headers, name)
        return cls(name, url, Origin.of(url), builder, builder.line(url))


class DeliveryEngine:
    """Runs the event loop in its own thread; every public method but the coroutines is thread-safe."""

    def __init__(self, cfg: Config, metrics: Metrics, work: WorkQueue, dlq: DeadLetterWriter | None,
                 parker: ParkWriter | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.work = work
        self.dlq = dlq
        self.parker = parker
        self.limit = ConcurrencyLimit(cfg.threads)
        self.rate = RateLimit(cfg.max_requests_per_second)
        self.targets = [Target.of(cfg, r) for r in cfg.routes] if cfg.routes else [Target.of(cfg)]
        self.auth = target_auth(cfg, metrics)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: Pool | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._busy = 0  # slots in use: requests on the wire (and dead letters being written)
        self._due: deque[Job] = deque()  # parked records whose time has come, first served
        self._parked: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._wake_pending = False
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._dlq_pool: ThreadPoolExecutor | None = None
        self._park_pool: ThreadPoolExecutor | None = None

    # ---- thread-safe API -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_loop, name="delivery-loop", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def wake(self) -> None:
        """New records may be ready (called by the poll loop after a batch): pump soon, once."""
        loop = self.loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # loop closed: stopping
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel parked records, give requests on the wire up to ``timeout`` to end, stop the loop."""
        loop = self.loop
        if loop is None or self._thread is None:
            return
        done = threading.Event()

        async def shutdown() -> None:
            self._stopping = True
            self._sweep(everything=True)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=timeout)
            for t in list(self._tasks):
                t.cancel()
            if self.pool is not None:
                self.pool.close()
            done.set()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop)
        except RuntimeError:
            return
        done.wait(timeout + 5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=5)
        for pool in (self._dlq_pool, self._park_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def parked(self) -> int:
        return len(self._parked) + len(self._due)

    # ---- loop thread -----------------------------------------------------------------------------------
    def _run_loop(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        cfg = self.cfg
        self.pool = Pool(cfg.timeout_seconds, cfg.max_connection_age_seconds, reuse=cfg.connection == "pooled",
                         ssl_context=http1.client_ssl_context(cfg.target_ca_file, cfg.target_cert_file,
                                                              cfg.target_key_file, cfg.target_tls_verify),
                         proxies=cfg.proxies)
        loop.call_later(SWEEP_SECONDS, self._tick)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _on_wake(self) -> None:
        self._wake_pending = False
        self._pump()

    def _tick(self) -> None:
        self._sweep()
        m = self.metrics
        m.concurrency_limit.set(self.limit.allowed())
        m.requests_on_wire.set(self._busy)
        m.retries_parked.set(self.parked())
        self._pump()
        if not self._stopping and self.loop is not None:
            self.loop.call_later(SWEEP_SECONDS, self._tick)

    def _next_job(self) -> Job | None:
        if self._stopping:
            return None
        if self._due:
            return self._due.popleft()
        item = self.work.take()
        return None if item is None else Job(item)

    def _pump(self) -> None:
        """Start as many records as free slots allow: parked ones that are due first, then new ones."""
        assert self.loop is not None
        allowed = self.limit.allowed()
        while self._busy < allowed:
            job = self._next_job()
            if job is None:
                return
            self._busy += 1
            task = self.loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job | None) -> None:
        """One slot: deliver a record's attempt, then carry on with the next one while the limit allows
        (a task per slot rather than per record)."""
        try:
            while job is not None:
                try:
                    await self._attempt(job)
                except asyncio.CancelledError:
                    self.work.finish(job.item, "cancelled")
                    raise
                except Exception as exc:  # never complete a lane on a crash: a failed attempt, in order
                    log.exception("delivery crashed; retrying the record",
                                  extra={"partition": str(job.item.partition), "offset": job.item.offset})
                    await self._crashed(job, exc)
                job = self._next_job() if self._busy <= self.limit.allowed() else None
        finally:
            self._busy -= 1

    def _plan(self, job: Job) -> tuple[int, ...]:
        if not self.cfg.routes:
            return (0,)
        return routes_for(self.cfg.routes, job.msg)

    async def _attempt(self, job: Job) -> None:
        """The record's next attempt: its current request and, when that is delivered, the requests of the
        routes after it, one after the other, until one fails (parked: its retry resumes there) or the
        last is done."""
        item = job.item
        if job.plan is None:
            if self.parker is not None and item.stream == MAIN and not self.work.cancelled(item) \
                    and self.work.divert(item):
                await self._move_to_park(job, "key-parked")  # an earlier record of its key is parked
                return
            job.plan = self._plan(job)
            if not job.plan:
                await self._unmatched(job)
                return
        cfg = self.cfg
        while True:
            if await self._cancelled_after_rate_wait(job):
                return
            job.attempt += 1
            target = self.targets[job.plan[job.step]]
            a = await self._send(job.msg, target)
            decision = next_step(a.status, a.retry_after, job.attempt, job.counted, success=cfg.success_codes,
                                 retry=cfg.retry_codes, unavailable=cfg.unavailable_codes,
                                 max_attempts=cfg.max_attempts, initial_ms=cfg.initial_backoff_ms,
                                 max_ms=cfg.max_backoff_ms, dead_letter=self.dlq is not None)
            p = item.partition
            if decision.action == "done":
                self.limit.on_success()
                self.metrics.delivery("success", p, a.status, a.seconds)
                job.step += 1
                if job.step < len(job.plan):
                    job.attempt = job.counted = 0
                    continue
                self.work.finish(item, "success")
                return
            break
        if decision.overload and self.limit.on_overload(time.monotonic()):
            log.info("target overloaded or unavailable: fewer requests at once",
                     extra={"limit": self.limit.allowed(), "status": a.status, "error": a.error})
        if decision.counted:
            job.counted += 1
        if decision.action != "dead_letter" and self.parker is not None and item.stream == MAIN:
            now = time.monotonic()
            job.failing_since = job.failing_since if job.failing_since is not None else now
            if now - job.failing_since >= cfg.park_after_seconds:
                self.metrics.delivery("retry", p, a.status, a.seconds)
                self.work.hold_key(item)
                await self._move_to_park(job, "failing")
                return
        if decision.action == "dead_letter":
            self.metrics.delivery("dead_letter", p, a.status, a.seconds)
            await self._dead_letter(job, a, decision.verdict)
            return
        if decision.action == "hold":
            self.metrics.delivery("error", p, a.status, a.seconds)
            if job.counted == cfg.max_attempts or (decision.verdict == "fatal" and job.attempt == 1) \
                    or job.attempt % 10 == 0:
                log.error("record failed and there is no dead-letter topic: retrying at the max backoff",
                          extra={"partition": str(p), "offset": item.offset, "status": a.status,
                                 "error": a.error, "attempts": job.attempt, "route": target.name})
        else:
            self.metrics.delivery("retry", p, a.status, a.seconds)
        self._park(job, decision.delay)

    async def _cancelled_after_rate_wait(self, job: Job) -> bool:
        """Checks ownership right before a request (and again after waiting for the rate limit); a
        cancelled record ends here."""
        item = job.item
        if self.work.cancelled(item):
            self.work.finish(item, "cancelled")
            return True
        wait = self.rate.reserve(time.monotonic())
        if wait > 0:
            self.metrics.rate_limited_seconds.inc(wait)
            await asyncio.sleep(wait)
            if self.work.cancelled(item):
                self.work.finish(item, "cancelled")
                return True
        return False

    async def _unmatched(self, job: Job) -> None:
        """A record no route takes: skipped (done, so the commit moves past it) or dead-lettered."""
        self.metrics.unmatched.inc()
        if self.cfg.unmatched == "dead-letter" and self.dlq is not None:
            await self._dead_letter(job, Attempt(None, "the record matched no route", 0.0), "unmatched")
            return
        if self.work.cancelled(job.item):
            self.work.finish(job.item, "cancelled")
            return
        self.work.finish(job.item, "skipped")

    async def _crashed(self, job: Job, exc: Exception) -> None:
        """An exception while delivering (hostile input, a bug) counts as a failed attempt of this
        record: retried with backoff, dead-lettered after ``--max-attempts`` when there is a topic for
        it, never completed unfinished (its key's next record would overtake it, the commit would
        freeze)."""
        cfg = self.cfg
        job.counted += 1
        a = Attempt(None, f"{type(exc).__name__}: {exc}"[:300], 0.0)
        self.metrics.delivery("retry", job.item.partition, None, 0.0)
        if self.dlq is not None and job.counted >= cfg.max_attempts:
            try:
                await self._dead_letter(job, a, "retry")
                return
            except Exception:
                log.exception("dead-lettering a crashed record failed; retrying it")
        self._park(job, backoff_seconds(job.counted, cfg.initial_backoff_ms, cfg.max_backoff_ms))

    async def _send(self, msg: Any, target: Target | None = None) -> Attempt:
        """One attempt, every 307/308 hop within the origin included, bounded as a whole by the timeout.
        Other redirects are answers, not followed: a 301/302/303 would turn the POST into a body-less GET
        and a 2xx from there would commit a record never processed."""
        assert self.pool is not None
        cfg = self.cfg
        t0 = time.perf_counter()
        deadline = time.monotonic() + cfg.timeout_seconds
        target = target or self.targets[0]
        builder = target.builder
        body, extra = builder.body(msg)
        url, line, origin = target.url, target.line, target.origin
        auth, refreshed = self.auth, False
        try:
            hop = 0
            while hop <= MAX_REDIRECTS:
                headers = extra
                if auth is not None:
                    sent = await auth.header()
                    headers = [*extra, (b"Authorization", sent)]
                resp = await self.pool.request(origin, builder.head(line, msg, len(body), headers), body,
                                               deadline)
                status = resp.status
                if status == 401 and auth is not None and auth.refreshable and not refreshed:
                    auth.invalidate(sent)  # expired or revoked early: one fresh token, then the usual rules
                    refreshed = True
                    continue
                hop += 1
                if 300 <= status < 400:
                    loc = resp.headers.get(b"location", b"").decode("latin-1")
                    hop_url = urljoin(url, loc)
                    if status in (307, 308) and same_origin(hop_url, target.url) and hop <= MAX_REDIRECTS:
                        url, line = hop_url, builder.line(hop_url)
                        continue
                    why = ("to another origin, or too many" if status in (307, 308) else
                           "it would re-send the record as a GET without its body")
                    return Attempt(status, f"HTTP {status}: redirect to {redact_url(hop_url)} not followed "
                                           f"({why})", time.perf_counter() - t0)
                return http1.attempt_from(resp, t0)
        except HttpError as exc:
            return Attempt(None, http1.error_text(exc, cfg.timeout_seconds, target.url), time.perf_counter() - t0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _dead_letter(self, job: Job, a: Attempt, verdict: str) -> None:
        assert self.dlq is not None and self.loop is not None
        rec = job.record()
        why = {"fatal": "rejected", "unmatched": "unmatched"}.get(verdict, "attempts-exhausted")
        reason = {"reason": why,
                  "status": "" if a.status is None else str(a.status), "error": a.error,
                  "attempts": str(job.attempt), "original-topic": rec.topic,
                  "original-partition": str(rec.partition), "original-offset": str(rec.offset)}
        if rec.timestamp_ms is not None:
            reason["original-timestamp"] = str(rec.timestamp_ms)
        if self.cfg.routes and job.plan:
            # Which request failed, and which of the record's requests were delivered before it.
            names = [self.targets[i].name or "" for i in job.plan]
            reason["route"] = names[min(job.step, len(names) - 1)]
            reason["routes-delivered"] = ",".join(names[:job.step])
        log.warning("dead-lettering record", extra={"partition": rec.partition, "offset": rec.offset,
                                                    "status": a.status, "error": a.error,
                                                    "attempts": job.attempt})
        if self._dlq_pool is None:
            self._dlq_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dead-letter")
        item = job.item
        stored = await self.loop.run_in_executor(self._dlq_pool, self.dlq.write, rec, reason,
                                                 lambda: self.work.cancelled(item))
        self.work.finish(item, "dead_letter" if stored else "cancelled")

    async def _move_to_park(self, job: Job, reason: str) -> None:
        """Write the record to its partition's park (``--park-topic``) and count it done here once stored.
        Its key was counted as parked before (by ``divert`` or ``hold_key``); a write given up (the
        partition released) uncounts it."""
        assert self.parker is not None and self.loop is not None
        item, msg = job.item, job.msg
        ts_type, ts = msg.timestamp()
        ours = park_headers(item.partition.topic, item.partition.partition, item.offset, ts if ts_type != 0 else None,
                            job.attempt, job.step, reason)
        if self._park_pool is None:
            self._park_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="park")
        try:
            stored = await self.loop.run_in_executor(self._park_pool, self.parker.park, msg, item.partition.partition,
                                                     ours, lambda: self.work.cancelled(item))
        except BaseException:
            self.work.unhold_key(item)
            raise
        if stored:
            self.metrics.parked_records.labels(reason).inc()
            self.work.finish(item, "parked")
        else:
            self.work.unhold_key(item)
            self.work.finish(item, "cancelled")

    # ---- records waiting on a timer -----------------------------------------------------------------------
    def _park(self, job: Job, delay: float) -> None:
        assert self.loop is not None
        job.due = self.loop.time() + delay
        heapq.heappush(self._parked, (job.due, next(self._seq), job))
        if self._parked[0][2] is job:
            self._arm()

    def _arm(self) -> None:
        assert self.loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._parked:
            self._timer = self.loop.call_at(self._parked[0][0], self._release_due)

    def _release_due(self) -> None:
        assert self.loop is not None
        self._timer = None
        now = self.loop.time()
        while self._parked and self._parked[0][0] <= now:
            self._due.append(heapq.heappop(self._parked)[2])
        self._arm()
        self._pump()

    def _sweep(self, everything: bool = False) -> None:
        """Parked records whose partition was released or fenced end now (as cancelled), so a release
        does not wait for their timers."""
        if not self._parked and not self._due:
            return
        cancelled = self.work.cancelled
        keep = [e for e in self._parked if not (everything or cancelled(e[2].item))]
        if len(keep) != len(self._parked):
            gone = [e[2] for e in self._parked if everything or cancelled(e[2].item)]
            heapq.heapify(keep)
            self._parked = keep
            for job in gone:
                self.work.finish(job.item, "cancelled")
            self._arm()
        if self._due:
            due = [j for j in self._due if everything or cancelled(j.item)]
            if due:
                self._due = deque(j for j in self._due if j not in due)
                for job in due:
                    self.work.finish(job.item, "cancelled")
