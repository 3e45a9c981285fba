"""The operator's broker clients, one cache for all of it: one AdminClient per cluster connection
(bootstrap servers + every security setting, credentials included) shared by every ConsumerGroup and every
use (topic metadata, lag), plus one `__consumer_offsets` mirror per connection for every group's committed
offsets (an offsets-reading Consumer per group serves only one-off reads: the CLI, a canary's analysis).
A connection's clients are closed when the last group using it goes (`use_connection` / `release_group`).
Keys are hashes, so no credential sits in a key or a log line; a group with other credentials on the same
brokers gets its own clients."""

from __future__ import annotations

import atexit
import collections
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

# librdkafka's log lines arrive here; silent unless the application configures logging (no stderr spam).
logging.getLogger("lagpilot.kafka").addHandler(logging.NullHandler())


def connection_key(bootstrap_servers: str, security: Mapping[str, Any]) -> str:
    """Cache key: bootstrap plus security settings, hashed so that passwords never sit in a dict key/log."""
    material = bootstrap_servers + "\0" + "\0".join(f"{k}={v}" for k, v in sorted(security.items()))
    return hashlib.sha256(material.encode()).hexdigest()


_clients: dict[tuple[str, str], Any] = {}
_clients_lock = threading.Lock()


# Recent librdkafka error events per connection: (monotonic time, code name, text). A failed request only
# says "transport failure"; these say why (lagpilot_operator.brokererrors).
_errors: dict[str, collections.deque[tuple[float, str, str]]] = {}
_errors_lock = threading.Lock()


def _error_callback(conn: str) -> Any:
    def on_error(err: Any) -> None:
        with _errors_lock:
            _errors.setdefault(conn, collections.deque(maxlen=20)).append(
                (time.monotonic(), str(err.name()), str(err.str())))
    return on_error


def recent_errors(conn: str, seconds: float = 60.0) -> list[tuple[str, str]]:
    """The connection's error events of the last ``seconds`` (code name, text), oldest first."""
    since = time.monotonic() - seconds
    with _errors_lock:
        return [(code, text) for at, code, text in _errors.get(conn, ()) if at >= since]


def _base_conf(bootstrap_servers: str, security: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": "lagpilot-lag-reader",
        "socket.timeout.ms": 10000,
        "logger": logging.getLogger("lagpilot.kafka"),
        "error_cb": _error_callback(connection_key(bootstrap_servers, security)),
        **security,
    }


def admin_client(bootstrap_servers: str, security: Mapping[str, Any] | None = None) -> Any:
    """One AdminClient per (bootstrap servers, security settings), reused across polls and groups.

    `security` holds librdkafka keys such as security.protocol, sasl.mechanism, sasl.username,
    sasl.password (the operator resolves them from the credentials Secret). librdkafka's own log lines go
    to the `lagpilot.kafka` Python logger instead of stderr.
    """
    from confluent_kafka.admin import AdminClient

    security = dict(security or {})
    key = ("admin", connection_key(bootstrap_servers, security))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = AdminClient(_base_conf(bootstrap_servers, security))
        return _clients[key]


def offsets_client(bootstrap_servers: str, group: str, security: Mapping[str, Any] | None = None) -> Any:
    """A Consumer bound to `group` that never subscribes, assigns or commits: it only reads the group's
    committed offsets. (AdminClient.list_consumer_group_offsets crashes the process in librdkafka when the
    coordinator answers NOT_COORDINATOR, librdkafka#5040; the consumer's group handler retries instead.)"""
    from confluent_kafka import Consumer

    security = dict(security or {})
    key = ("offsets:" + group, connection_key(bootstrap_servers, security))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Consumer({**_base_conf(bootstrap_servers, security), "group.id": group,
                                      "enable.auto.commit": False, "enable.auto.offset.store": False})
        return _clients[key]


def commit_log(bootstrap_servers: str, security: Mapping[str, Any] | None = None) -> Any:
    """The connection's `__consumer_offsets` mirror (autoscale.commitlog.CommitLog), shared by every group."""
    from lagpilot_operator.autoscale.commitlog import CommitLog

    security = dict(security or {})
    key = ("commit-log", connection_key(bootstrap_servers, security))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = CommitLog({**_base_conf(bootstrap_servers, security),
                                       "client.id": "lagpilot-commit-log"})
        return _clients[key]


# Which groups use which connection: the connection's clients are closed when its last group goes.
_users: dict[str, set[tuple[str, str]]] = {}


def use_connection(group: tuple[str, str], bootstrap_servers: str, security: Mapping[str, Any] | None) -> str:
    """Record that `group` (namespace, name) reads through this connection; a group moving to another
    connection releases its old one. Returns the connection key."""
    key = connection_key(bootstrap_servers, dict(security or {}))
    stale: list[str] = []
    with _clients_lock:
        for conn, users in _users.items():
            if conn != key and group in users:
                users.discard(group)
                if not users:
                    stale.append(conn)
        _users.setdefault(key, set()).add(group)
        for conn in stale:
            del _users[conn]
    for conn in stale:
        _close_connection(conn)
    return key


def release_group(group: tuple[str, str]) -> None:
    """The group is gone: close its connection's clients if no other group uses them."""
    stale: list[str] = []
    with _clients_lock:
        for conn, users in list(_users.items()):
            if group in users:
                users.discard(group)
                if not users:
                    stale.append(conn)
                    del _users[conn]
    for conn in stale:
        _close_connection(conn)


def _close_connection(conn: str) -> None:
    with _clients_lock:
        keys = [k for k in _clients if k[1] == conn]
        clients = [_clients.pop(k) for k in keys]
    _close(clients)


def _close(clients: list[Any]) -> None:
    for client in clients:
        if hasattr(client, "close"):
            client.close()
        else:
            client.poll(0)


def forget_clients(group: str | None = None, bootstrap_servers: str | None = None,
                   security: Mapping[str, Any] | None = None) -> None:
    """Drop cached clients: all (tests, exit), one group's offsets client, or every client of one
    connection (a broken one, e.g. a bad address or rejected credentials, is rebuilt on next use)."""
    conn = connection_key(bootstrap_servers, dict(security or {})) if bootstrap_servers is not None else None
    with _clients_lock:
        keys = [k for k in _clients if (group is None or k[0] == "offsets:" + group)
                and (conn is None or k[1] == conn)]
        clients = [_clients.pop(k) for k in keys]
    _close(clients)
    del clients  # destroyed here, while Python can still run the logger callback


# Destroying a client with a Python logger during interpreter teardown can crash, so destroy them while
# Python is whole.
atexit.register(forget_clients)


def cached_client_count(conn: str | None = None) -> int:
    with _clients_lock:
        return sum(1 for k in _clients if conn is None or k[1] == conn)
