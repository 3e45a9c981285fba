"""The delivery engine's HTTP/1.1 client: keep-alive connections on the event loop, responses parsed by
``httptools`` (llhttp, the parser behind uvicorn). Client CPU per request against nginx on loopback
(bench/consumer/clients.py, this machine): requests 983 µs, urllib3's pool 325, http.client 213, aiohttp
148 on uvloop, this client 28 on uvloop (72 on plain asyncio). It does only what a delivery needs: one
request per connection at a time, the body read and dropped, no redirect followed here (the engine
decides), the whole attempt bounded by one deadline."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

from lagpilot_consumer.delivery import Attempt, redact_url
from lagpilot_consumer.proxy import Proxy, ProxySettings


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname or "", port)


def request_target(url: str) -> str:
    u = urlsplit(url)
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def host_header(url: str) -> str:
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if u.scheme == "https" else 80
    return host if u.port in (None, default) else f"{host}:{u.port}"


class HttpError(Exception):
    """No usable answer (connection refused/reset/closed, bad response, timeout)."""


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request at a time."""

    __slots__ = (
        "born",
        "closed",
        "complete",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "received",
        "status",
        "transport",
        "waiter",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.received = False
        self.closed = False
        self.keep_alive = True
        self.born = time.monotonic()
        self.complete = False
        self.headers_done = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        if self.parser is None:  # bytes nobody asked for: the connection is not reusable
            self.keep_alive = False
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HttpError("the target answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP answer ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.headers_done and self.parser is not None and b"content-length" not in self.headers \
                    and b"chunked" not in self.headers.get(b"transfer-encoding", b"").lower():
                self.complete = True  # a body delimited by the end of the connection
                self.keep_alive = False
                self.waiter.set_result(None)
            else:
                why = "the target closed the connection" + ("" if exc is None else f" ({exc})")
                self.waiter.set_exception(HttpError(why))

    # httptools callbacks
    def on_status(self, _status: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete = True
        self.parser = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers = {}
        self.received = False
        self.complete = False
        self.headers_done = False
        self.waiter = loop.create_future()
        return self.waiter

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()


class _Tunnel(asyncio.Protocol):
    """A proxy's answer to CONNECT, read up to its blank line (never by the HTTP parser: a 200 to CONNECT
    has no length, and what follows is the tunnel)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.reply.done():
            line = self.buffer.split(b"\r\n", 1)[0].split()
            status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0
            self.reply.set_result(status)
        elif len(self.buffer) > 65536 and not self.reply.done():
            self.reply.set_exception(HttpError("ProxyError: the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(HttpError("ProxyError: the proxy closed the connection during CONNECT"))


def authority(origin: Origin) -> str:
    """``host:port`` for CONNECT and absolute-form request lines: an IPv6 address in brackets, an
    internationalised name in its ASCII (IDNA) form."""
    host = origin.host if origin.host.isascii() else origin.host.encode("idna").decode("ascii")
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{origin.port}"


def absolute_form(head: bytes, origin: Origin) -> bytes:
    """The request line as a proxy wants it for a plain-http target: ``POST http://host:port/path``."""
    method, rest = head.split(b" ", 1)
    return method + b" http://" + authority(origin).encode("ascii") + rest


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]


def client_ssl_context(ca_file: str = "", cert_file: str = "", key_file: str = "",
                       verify: bool = True) -> ssl.SSLContext:
    """Certificates are verified (host name included) against ``ca_file`` (a private CA mounted into the
    pod), else ``SSL_CERT_FILE``/``REQUESTS_CA_BUNDLE`` when set, else certifi's bundle; ``cert_file`` and
    ``key_file`` authenticate us (mutual TLS); ``verify=False`` checks nothing (an explicit choice)."""
    cafile = ca_file or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:  # pragma: no cover - certifi comes with requests
            cafile = None
    ctx = ssl.create_default_context(cafile=cafile)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Pool:
    """Idle keep-alive connections per origin. ``max_age`` recycles connections (an L4 balancer in front
    of a target being rolled then sees new ones); ``reuse=False`` is one connection per request."""

    def __init__(self, timeout: float, max_age: float = 60.0, reuse: bool = True,
                 ssl_context: ssl.SSLContext | None = None, proxies: ProxySettings | None = None) -> None:
        self.timeout = timeout
        self.max_age = max_age
        self.reuse = reuse
        self._idle: dict[Origin, list[_Conn]] = {}
        self._ssl = ssl_context
        self._proxies = proxies if proxies else None
        self._proxy_of: dict[Origin, Proxy | None] = {}

    def proxy_for(self, origin: Origin) -> Proxy | None:
        if self._proxies is None:
            return None
        if origin not in self._proxy_of:
            self._proxy_of[origin] = self._proxies.for_target(origin.scheme, origin.host, origin.port)
        return self._proxy_of[origin]

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = client_ssl_context()
        return self._ssl

    async def _connect(self, origin: Origin, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        left = deadline - time.monotonic()
        if left <= 0:
            raise HttpError("connect timeout")
        sslctx = self._ssl_context() if origin.scheme == "https" else None
        proxy = self.proxy_for(origin)
        try:
            if proxy is None:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(_Conn, origin.host, origin.port, ssl=sslctx,
                                           server_hostname=origin.host if sslctx else None), left)
            elif sslctx is None:
                _, conn = await asyncio.wait_for(loop.create_connection(_Conn, proxy.host, proxy.port), left)
            else:
                conn = await asyncio.wait_for(self._tunnel(loop, proxy, origin, sslctx), left)
        except TimeoutError:
            via = "" if proxy is None else f" through the proxy {proxy}"
            raise HttpError(f"ConnectTimeout: no connection{via} within {self.timeout:g} s") from None
        except ssl.SSLError as exc:  # before OSError: it is one (a certificate not trusted, a bad name)
            raise HttpError(f"SSLError: {getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
        except OSError as exc:
            raise HttpError(f"ConnectionError: {exc.strerror or exc}") from None
        return conn

    @staticmethod
    async def _tunnel(loop: asyncio.AbstractEventLoop, proxy: Proxy, origin: Origin,
                      sslctx: ssl.SSLContext) -> _Conn:
        """An https target through an http proxy: CONNECT, then TLS with the target inside the tunnel (the
        proxy sees neither the records nor the target's certificate checks)."""
        transport, tunnel = await loop.create_connection(_Tunnel, proxy.host, proxy.port)
        where = authority(origin)
        transport.write(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n\r\n".encode("ascii"))
        try:
            status = await tunnel.reply
            if status != 200:
                raise HttpError(f"ProxyError: the proxy {proxy} answered {status or 'nonsense'} to CONNECT {where}")
            conn = _Conn()
            tls = await loop.start_tls(transport, conn, sslctx, server_hostname=origin.host)
        except BaseException:
            transport.abort()
            raise
        assert tls is not None
        conn.connection_made(tls)
        return conn

    def _take_idle(self, origin: Origin) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or not conn.keep_alive:
                continue
            if self.max_age > 0 and now - conn.born > self.max_age:
                conn.abort()
                continue
            return conn
        return None

    def _put_back(self, origin: Origin, conn: _Conn) -> None:
        if self.reuse and conn.keep_alive and conn.complete and not conn.closed:
            self._idle.setdefault(origin, []).append(conn)
        else:
            conn.abort()

    async def request(self, origin: Origin, head: bytes, body: bytes, deadline: float) -> Response:
        """Send one request (``head`` is the request line and headers, CRLF-terminated) and wait for the
        whole answer. A reused connection that the target had closed while idle (nothing received) is
        retried once on a new one, as browsers and Go's client do."""
        loop = asyncio.get_running_loop()
        if origin.scheme == "http" and self.proxy_for(origin) is not None:
            head = absolute_form(head, origin)  # once: the fresh try below sends the same bytes
        for fresh_try in (False, True):
            conn = None if fresh_try else self._take_idle(origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, deadline)
            waiter = conn.start(loop)
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            left = deadline - time.monotonic()
            timer = loop.call_later(max(left, 0.0), _expire, conn)
            try:
                await waiter
            except HttpError:
                conn.abort()
                if reused and not conn.received and not fresh_try:
                    continue  # the idle connection was dead: one new connection
                raise
            except asyncio.CancelledError:
                conn.abort()
                raise
            finally:
                timer.cancel()
            resp = Response(conn.status, conn.headers)
            self._put_back(origin, conn)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()


def _expire(conn: _Conn) -> None:
    conn._fail(HttpError("timeout"))


def error_text(exc: BaseException, timeout: float, url: str) -> str:
    text = str(exc)
    if text == "timeout":
        text = f"ReadTimeout: the answer took longer than {timeout:g} s"
    return text.replace(url, redact_url(url))[:300]


def attempt_from(resp: Response, t0: float) -> Attempt:
    from lagpilot_consumer.policy import parse_retry_after

    status = resp.status
    ra = resp.headers.get(b"retry-after")
    return Attempt(status, "" if 200 <= status < 300 else f"HTTP {status}", time.perf_counter() - t0,
                   parse_retry_after(ra.decode("latin-1")) if ra else None)
