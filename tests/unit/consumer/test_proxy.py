"""HTTP_PROXY / HTTPS_PROXY / NO_PROXY as the worker reads them (lagpilot_consumer.proxy): which target goes
through which proxy, NO_PROXY as curl reads it, and the refusals (credentials in the URL, an https proxy)."""

from __future__ import annotations

import pytest

from lagpilot_consumer.config import ConfigError, parse
from lagpilot_consumer.http1 import Origin, absolute_form, authority
from lagpilot_consumer.proxy import Proxy, ProxyConfigError, ProxySettings, bypassed, parse_proxy, proxy_settings

pytestmark = pytest.mark.unit

ARGS = ["--bootstrap-servers", "k:9092", "--topic", "t", "--group-id", "g", "--target-url", "http://t/x"]


@pytest.mark.parametrize("value, proxy", [
    ("http://proxy.corp:3128", Proxy("proxy.corp", 3128)),
    ("proxy.corp:3128", Proxy("proxy.corp", 3128)),  # no scheme: http, as curl reads it
    ("http://proxy.corp", Proxy("proxy.corp", 80)),
    ("http://[fd00::1]:8080/", Proxy("fd00::1", 8080)),
    ("HTTP://Proxy.Corp:3128", Proxy("proxy.corp", 3128)),
])
def test_proxy_urls(value: str, proxy: Proxy) -> None:
    assert parse_proxy("HTTPS_PROXY", value) == proxy


@pytest.mark.parametrize("value, says", [
    ("http://user:s3cret@proxy:3128", "credentials is refused"),
    ("http://user@proxy:3128", "credentials is refused"),
    ("https://proxy:3128", "only http:// proxies"),
    ("socks5://proxy:1080", "only http:// proxies"),
    ("http://proxy:99999", "port is not a number"),
    ("http://:3128", "no proxy host"),
])
def test_unusable_proxy_urls_are_refused_in_one_line_without_the_secret(value: str, says: str) -> None:
    with pytest.raises(ProxyConfigError) as err:
        parse_proxy("HTTPS_PROXY", value)
    assert says in str(err.value) and "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_the_worker_refuses_to_start_with_a_proxy_credential_and_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^invalid https_proxy: a proxy URL with credentials is refused"):
        parse(ARGS, {"https_proxy": "http://u:pw@p:3128"})


def test_lower_case_wins_and_empty_means_none() -> None:
    s = proxy_settings({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": " ",
                        "NO_PROXY": "a.example, .svc ,"})
    assert s == ProxySettings(http=None, https=Proxy("lower", 2), no_proxy=("a.example", "svc"))
    assert not proxy_settings({}) and parse(ARGS, {}).proxies == ProxySettings()


@pytest.mark.parametrize("host, port, entries, bypass", [
    ("billing.shop.svc.cluster.local", 80, ("svc.cluster.local",), True),   # a domain covers its subdomains
    ("billing.shop.svc.cluster.local", 80, (".cluster.local",), True),      # leading dot: the same
    ("cluster.local", 80, ("cluster.local",), True),
    ("notcluster.local", 80, ("cluster.local",), False),                    # not a subdomain
    ("api.example.com", 443, ("*",), True),
    ("10.1.2.3", 80, ("10.0.0.0/8",), True),
    ("11.1.2.3", 80, ("10.0.0.0/8",), False),
    ("127.0.0.1", 80, ("127.0.0.1",), True),
    ("::1", 80, ("::1",), True),
    ("fd00::5", 80, ("fd00::/64",), True),
    ("api.example.com", 8443, ("api.example.com:8443",), True),             # one port only
    ("api.example.com", 443, ("api.example.com:8443",), False),
    ("::1", 8080, ("[::1]:8080",), True),
    ("::1", 9090, ("[::1]:8080",), False),
    ("API.Example.com", 443, ("api.example.com",), True),
    ("127.0.0.1", 80, ("localhost",), False),  # names are not resolved: an address matches addresses only
    ("api.example.com", 443, (), False),
])
def test_no_proxy(host: str, port: int, entries: tuple[str, ...], bypass: bool) -> None:
    assert bypassed(host, port, entries) is bypass


def test_each_scheme_has_its_own_proxy() -> None:
    s = ProxySettings(http=Proxy("p", 1), https=None, no_proxy=("internal",))
    assert s.for_target("http", "a.example", 80) == Proxy("p", 1)
    assert s.for_target("https", "a.example", 443) is None  # no HTTPS_PROXY: https goes direct
    assert s.for_target("http", "x.internal", 80) is None


def test_plain_http_through_a_proxy_uses_the_absolute_request_target() -> None:
    head = b"POST /orders?x=1 HTTP/1.1\r\nHost: billing:8080\r\n\r\n"
    assert absolute_form(head, Origin("http", "billing", 8080)) == \
        b"POST http://billing:8080/orders?x=1 HTTP/1.1\r\nHost: billing:8080\r\n\r\n"
    assert absolute_form(b"PUT / HTTP/1.1\r\n\r\n", Origin("http", "::1", 80)).startswith(b"PUT http://[::1]:80/ ")


@pytest.mark.parametrize("origin, text", [
    (Origin("https", "billing.shop.svc.cluster.local", 443), "billing.shop.svc.cluster.local:443"),
    (Origin("https", "a" * 63 + ".example", 8443), "a" * 63 + ".example:8443"),  # long labels are fine
    (Origin("https", "bücher.example", 443), "xn--bcher-kva.example:443"),     # IDNA, never raw UTF-8
    (Origin("http", "fd00::1", 80), "[fd00::1]:80"),
])
def test_the_authority_a_proxy_is_asked_for(origin: Origin, text: str) -> None:
    assert authority(origin) == text
