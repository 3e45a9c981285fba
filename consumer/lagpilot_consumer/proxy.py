"""Which HTTP proxy, if any, a target is reached through: the conventional ``HTTP_PROXY``, ``HTTPS_PROXY``
and ``NO_PROXY`` variables (lower case first, as curl and requests read them). Pure.

Set them in `spec.template.env` (or the pod's environment) as for any other client in a cluster whose egress
goes through a proxy. A proxy URL with a user name or password is refused at start: a credential must never
be an environment value (the design rule every other secret of lagpilot follows), and a proxy that needs one
is better given an allowlist of the workers' addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


class ProxyConfigError(ValueError):
    """A proxy variable that cannot be used; the message is one line and never shows a credential."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class ProxySettings:
    """The proxies by target scheme, and the NO_PROXY entries (lower-cased, leading dots dropped)."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.http is not None or self.https is not None

    def for_target(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a target, None to connect directly."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or bypassed(host, port, self.no_proxy):
            return None
        return proxy


def _var(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    for var in (name.lower(), name.upper()):
        value = env.get(var)
        if value is not None and value.strip():
            return var, value.strip()
    return None


def parse_proxy(var: str, value: str) -> Proxy:
    """``http://host:port`` (a bare ``host:port`` is read as http, as curl does)."""
    u = urlsplit(value if "://" in value else f"http://{value}")
    if u.username is not None or u.password is not None:
        raise ProxyConfigError(f"invalid {var}: a proxy URL with credentials is refused (a secret must not be an "
                               "environment value); allow the workers' addresses at the proxy instead")
    if u.scheme != "http":
        raise ProxyConfigError(f"invalid {var}: only http:// proxies are supported (https targets are tunnelled "
                               f"through them with CONNECT), got {u.scheme}://")
    try:
        port = u.port or 80
    except ValueError:
        raise ProxyConfigError(f"invalid {var}: the port is not a number from 1 to 65535") from None
    if not u.hostname:
        raise ProxyConfigError(f"invalid {var}: no proxy host")
    return Proxy(u.hostname, port)


def proxy_settings(env: Mapping[str, str]) -> ProxySettings:
    found = {name: _var(env, name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")}
    http = parse_proxy(*found["HTTP_PROXY"]) if found["HTTP_PROXY"] else None
    https = parse_proxy(*found["HTTPS_PROXY"]) if found["HTTPS_PROXY"] else None
    no_proxy = found["NO_PROXY"][1] if found["NO_PROXY"] else ""
    entries = tuple(e.strip().lower().lstrip(".") for e in no_proxy.split(",") if e.strip())
    return ProxySettings(http, https, entries)


def bypassed(host: str, port: int, entries: tuple[str, ...]) -> bool:
    """NO_PROXY as curl reads it: ``*`` (everything), a host name matching itself and its subdomains
    (``svc.cluster.local`` covers ``a.b.svc.cluster.local``), an IP address, a CIDR range (``10.0.0.0/8``),
    any of them with ``:port`` to match one port only."""
    host = host.lower().strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower().lstrip(".") for e in entries):
        if entry == "*":
            return True
        name, want_port = entry, None
        if entry.startswith("["):  # [::1]:8080
            name, _, rest = entry[1:].partition("]")
            want_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, want_port = entry.split(":")
        if want_port is not None and want_port != str(port):
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(name, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False
