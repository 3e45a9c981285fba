"""Configuration: every flag also from ``LAGPILOT_<FLAG_UPPER_SNAKE>`` (argv wins), extra request headers
from ``LAGPILOT_HEADER_<Name>``, extra librdkafka properties from ``LAGPILOT_KAFKA_<PROP>`` and/or a
``--kafka-config-file`` (never from argv, so secrets never show in ``ps``). Parsing is pure: argv + env
in, :class:`Config` out, or :class:`ConfigError` whose message is the one line printed before exit 2."""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from lagpilot.protocol import PartitionId
from lagpilot.routes import Route, RouteError, load_routes
from lagpilot_consumer.policy import DEFAULT_RETRY, DEFAULT_SUCCESS, DEFAULT_UNAVAILABLE, CodeSet
from lagpilot_consumer.proxy import ProxyConfigError, ProxySettings, proxy_settings
from lagpilot_consumer.sources.static import parse_partition_ids


class ConfigError(Exception):
    """Invalid configuration; ``str(exc)`` is a single line naming the value and why."""


@dataclass(frozen=True)
class Config:
    bootstrap_servers: str
    topics: tuple[str, ...]  # empty only with --assignment k8s (the grants name them) or a pattern
    group_id: str
    target_url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 10.0
    connection: str = "pooled"
    max_connection_age_seconds: float = 60.0
    threads: int = 8
    ordering: str = "key"
    assignment: str = "static"
    partitions: frozenset[PartitionId] = frozenset()
    topic_pattern: str = ""  # --assignment kafka: subscribe to every topic whose whole name matches
    max_attempts: int = 5
    initial_backoff_ms: int = 100
    max_backoff_ms: int = 30_000
    success_codes: CodeSet = field(default_factory=lambda: CodeSet.parse(DEFAULT_SUCCESS))
    retry_codes: CodeSet = field(default_factory=lambda: CodeSet.parse(DEFAULT_RETRY))
    unavailable_codes: CodeSet = field(default_factory=lambda: CodeSet.parse(DEFAULT_UNAVAILABLE))
    max_requests_per_second: float = 0.0
    max_outstanding_per_partition: int = 50_000
    format: str = "raw"
    header_mapping: tuple[str, ...] = ()
    idempotency_header: str = ""
    dead_letter_topic: str = ""
    park_topic: str = ""  # the retry park (lagpilot_consumer.park); empty: none
    park_after_seconds: float = 60.0
    park_window: int = 500
    max_inflight: int = 1000
    max_inflight_bytes: int = 64 * 1024 * 1024
    drain_seconds: float = 30.0
    commit_interval_ms: int = 1000
    http_port: int = 8080
    bind: str = "0.0.0.0"
    log_format: str = "text"
    log_level: str = "INFO"
    namespace: str = ""
    pod_name: str = ""
    assignment_configmap: str = ""
    fence_timeout_seconds: float = 20.0
    lease_renew_seconds: float = 5.0
    kafka_config: tuple[tuple[str, str], ...] = ()
    start_from: str | float = "earliest"  # or Unix seconds
    target_ca_file: str = ""
    target_cert_file: str = ""
    target_key_file: str = ""
    target_tls_verify: bool = True
    bearer_token_file: str = ""
    oauth_token_url: str = ""
    oauth_client_id: str = ""
    oauth_client_secret_file: str = ""
    oauth_scope: str = ""
    oauth_ca_file: str = ""
    routes: tuple[Route, ...] = ()  # empty: every record goes to --target-url
    proxies: ProxySettings = field(default_factory=ProxySettings)  # HTTP(S)_PROXY, NO_PROXY of the environment
    unmatched: str = "skip"  # skip | dead-letter: what happens to a record no route matches

    @property
    def default_topic(self) -> str | None:
        """The topic a bare partition number means (a format-1 assignment document, an old worker's
        Lease): the configured topic when there is exactly one, else none."""
        return self.topics[0] if len(self.topics) == 1 else None


# flag -> (kind, default, help). kind: str|int|float|choice tuple. Defaults None = required/derived.
FLAGS: dict[str, tuple[Any, Any, str]] = {
    "bootstrap-servers": (str, None, "Kafka bootstrap servers, host:port[,host:port]"),
    "topic": (str, None, "topic(s) to consume, comma-separated (k8s mode: optional, the grants name the "
              "topics; a single one reads an old operator's bare partition numbers)"),
    "topic-pattern": (str, "", "kafka mode: also subscribe to every topic whose whole name matches this "
                      "regular expression (RE2 syntax), e.g. orders-.*"),
    "group-id": (str, None, "consumer group id offsets are committed to (every mode)"),
    "target-url": (str, None, "http(s) URL each record is sent to"),
    "method": (str, "POST", "HTTP method"),
    "headers": (str, "{}", "extra request headers as a JSON object (secrets: use --headers-dir)"),
    "headers-dir": (str, "", "extra request headers from files, one per header (file name = header name, "
                    "_ turned into -; content = value): a mounted Secret, so values are in no env or argv"),
    "timeout-seconds": (float, 10.0, "per-request timeout"),
    "connection": (("pooled", "per-request"), "pooled", "keep-alive pool per thread, or a new "
                   "one per request"),
    "max-connection-age-seconds": (float, 60.0, "recycle pooled connections after this age (0 = never)"),
    "threads": (int, 8, "most HTTP requests on the wire at once (the limit adapts down while the target "
                "is unavailable); a record waiting for its retry holds none"),
    "ordering": (("key", "partition", "none"), "key", "what must be delivered one at a time, in order"),
    "assignment": (("static", "kafka", "k8s"), None, "partition source (default: static if --partitions, "
                   "else kafka)"),
    "partitions": (str, "", "static mode: partitions to own, e.g. orders:0-2,payments:0; a bare number "
                   "or range (0,3,6 or 0-5) means those partitions of every --topic"),
    "max-attempts": (int, 5, "attempts per record before it is dead-lettered"),
    "initial-backoff-ms": (int, 100, "first retry backoff cap (full jitter, doubling)"),
    "max-backoff-ms": (int, 30_000, "largest backoff cap"),
    "success-codes": (str, DEFAULT_SUCCESS, "status codes that mean delivered, e.g. 200-299"),
    "retry-codes": (str, DEFAULT_RETRY, "status codes that are retried; other non-success codes are fatal"),
    "unavailable-codes": (str, DEFAULT_UNAVAILABLE, "retry codes meaning the target as a whole is "
                          "unavailable: retried without using up --max-attempts, and fewer requests at once"),
    "max-requests-per-second": (float, 0.0, "cap on requests per second to the target (0 = none)"),
    "max-outstanding-per-partition": (int, 50_000, "offsets of a partition fetched and not yet committable "
                                      "(behind a record still retrying) before that partition stops fetching"),
    "format": (("raw", "cloudevents-binary", "cloudevents-structured"), "raw", "request form: the record "
               "value as the body, or a CloudEvent in binary or structured mode"),
    "header-mapping": (str, "", "Kafka headers (comma-separated names) also forwarded under their own names "
                       "(traceparent and tracestate always are)"),
    "idempotency-header": (str, "", "request header carrying <topic>/<partition>/<offset> (e.g. "
                           "Idempotency-Key; empty: none)"),
    "routes": (str, "", "routes as JSON (spec.routes): a record goes to every route it matches, in order, "
               "as one unit; each route's url/method/headers override --target-url/--method/--headers"),
    "unmatched": (("skip", "dead-letter"), "skip", "with --routes: a record matching no route is skipped "
                  "(counted) or written to the dead-letter topic"),
    "dead-letter-topic": (str, "", "topic for records that cannot be delivered (empty: retry forever)"),
    "park-topic": (str, "", "retry park: a record still failing --park-after-seconds after its first failure "
                   "moves to this topic (partition p into p), and so do later records of its key, in order, "
                   "so the commit moves on; the worker delivers them from there (empty: no park)"),
    "park-after-seconds": (float, 60.0, "with --park-topic: how long a record fails before it is parked"),
    "park-window": (int, 500, "with --park-topic: records of one park partition fetched and not yet done "
                    "before it stops fetching (apart from --max-inflight, so parked keys never stop the "
                    "source partitions)"),
    "max-inflight": (int, 1000, "records fetched but not done before fetching pauses"),
    "max-inflight-bytes": (int, 64 * 1024 * 1024, "bytes of record values fetched but not done before "
                           "fetching pauses"),
    "drain-seconds": (float, 30.0, "on shutdown/release, how long running deliveries may take to finish"),
    "commit-interval-ms": (int, 1000, "periodic commit interval"),
    "http-port": (int, 8080, "port for /metrics, /healthz, /readyz (0 = none)"),
    "bind": (str, None, "bind address (default $POD_IP, else 0.0.0.0)"),
    "log-format": (("json", "text"), "text", "log format"),
    "log-level": (("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"),
    "namespace": (str, None, "k8s mode: namespace (default $POD_NAMESPACE)"),
    "pod-name": (str, None, "k8s mode: this pod's name (default $POD_NAME)"),
    "assignment-configmap": (str, "", "k8s mode: the ConfigMap holding the assignment"),
    "fence-timeout-seconds": (float, 20.0, "k8s mode: stop processing when the Lease cannot be renewed "
                              "this long"),
    "lease-renew-seconds": (float, 5.0, "k8s mode: Lease renew period"),
    "kafka-config-file": (str, "", "librdkafka properties file (key=value lines), e.g. SASL/SSL settings"),
    "target-ca-file": (str, "", "PEM CA bundle the target's certificate must chain to (default: certifi's, "
                       "or SSL_CERT_FILE)"),
    "target-cert-file": (str, "", "PEM client certificate (chain) for mutual TLS with the target"),
    "target-key-file": (str, "", "PEM private key of --target-cert-file"),
    "target-tls-verify": (("true", "false"), "true", "verify the target's certificate and host name"),
    "bearer-token-file": (str, "", "file holding a bearer token sent as Authorization (re-read when it "
                          "changes: a rotated Secret needs no restart)"),
    "oauth-token-url": (str, "", "OAuth2 client-credentials token endpoint: tokens sent as Authorization: "
                        "Bearer, cached until shortly before they expire, refreshed once on a 401"),
    "oauth-client-id": (str, "", "OAuth2 client id"),
    "oauth-client-secret-file": (str, "", "file holding the OAuth2 client secret"),
    "oauth-scope": (str, "", "OAuth2 scope(s) to request"),
    "oauth-ca-file": (str, "", "PEM CA bundle for the token endpoint (default: certifi's)"),
    "start-from": (str, "earliest", "where a partition without a committed offset starts: earliest, latest, "
                   "or an RFC 3339 time (the first record at or after it)"),
}

HEADER_PREFIX = "LAGPILOT_HEADER_"
KAFKA_PREFIX = "LAGPILOT_KAFKA_"
# librdkafka properties the runtime owns; setting them would break the delivery guarantee.
RESERVED_KAFKA = {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}


def env_name(flag: str) -> str:
    return "LAGPILOT_" + flag.upper().replace("-", "_")


FLAG_ENVS = frozenset(env_name(flag) for flag in FLAGS)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lagpilot-consumer", description="Kafka -> HTTP delivery worker. Every flag may also "
                "be given as LAGPILOT_<FLAG_UPPER_SNAKE>; argv wins.", allow_abbrev=False)
    for flag, (_kind, default, help_) in FLAGS.items():
        shown = f" (default {default})" if default not in (None, "") else ""
        p.add_argument(f"--{flag}", default=None, help=f"{help_}{shown} [env {env_name(flag)}]")
    return p


def _convert(flag: str, raw: str, source: str) -> Any:
    kind = FLAGS[flag][0]
    where = f"--{flag} {raw!r} ({source})"
    if isinstance(kind, tuple):
        if raw not in kind:
            raise ConfigError(f"invalid {where}: must be one of {', '.join(kind)}")
        return raw
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"invalid {where}: not an integer") from None
    if kind is float:
        try:
            v = float(raw)
        except ValueError:
            raise ConfigError(f"invalid {where}: not a number") from None
        if not math.isfinite(v):
            raise ConfigError(f"invalid {where}: not a finite number")
        return v
    return raw


def _read_properties(path: str) -> list[tuple[str, str]]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"invalid --kafka-config-file {path!r}: cannot read it ({exc.strerror})") from None
    out: list[tuple[str, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"invalid --kafka-config-file {path!r}: line {n} is not key=value")
        out.append((key.strip(), value.strip()))
    return out


def _read_secret_file(var: str, path: str) -> str:
    """A property's value from a mounted Secret file (one trailing line break dropped); never shown."""
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"invalid {var}: cannot read {path!r} ({exc.strerror})") from None


def _read_header_files(path: str) -> list[tuple[str, str]]:
    """(header, value) per regular file of a mounted Secret's directory; the kubelet's own entries
    (``..data``, ``..2026_...``) start with a dot and are skipped."""
    where = f"--headers-dir {path!r}"
    try:
        entries = sorted(e for e in Path(path).iterdir() if not e.name.startswith(".") and e.is_file())
        return [(e.name.replace("_", "-"), e.read_text().rstrip("\r\n")) for e in entries]
    except OSError as exc:
        raise ConfigError(f"invalid {where}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"invalid {where}: a header file is not UTF-8 text") from None


def parse_start_from(value: str) -> str | float:
    """``earliest``/``latest``, or an RFC 3339 time as Unix seconds."""
    if value in ("earliest", "latest"):
        return value
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else None
    except ValueError:
        when = None
    if when is None:
        raise ValueError("must be earliest, latest or an RFC 3339 time such as 2026-01-31T00:00:00Z")
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_header(name: str, value: str, origin: str) -> None:
    """Reject at start what would fail every request later (a Secret value with a trailing newline would
    send every record to the dead-letter topic). The value is never shown: it may be a credential."""
    if not HEADER_NAME.match(name):
        raise ConfigError(f"invalid request header name {name!r} (from {origin}): not an HTTP token")
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigError(f"invalid value of request header {name!r} (from {origin}): it contains a line break "
                          "(a Secret value ending in a newline?); the value is not shown")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(f"invalid value of request header {name!r} (from {origin}): only Latin-1 characters "
                          "can be sent in an HTTP header; the value is not shown") from None


def _topics(raw: str | None, source: str) -> tuple[str, ...]:
    """``--topic a,b``: the topics in the order given, each once. A colon would make ``topic:partition``
    ambiguous, and Kafka topic names cannot hold one anyway."""
    out: list[str] = []
    for name in (t.strip() for t in (raw or "").split(",")):
        if not name:
            continue
        if not TOPIC_NAME.match(name):
            raise ConfigError(f"invalid --topic {raw!r} ({source}): {name!r} is not a Kafka topic name "
                              "(letters, digits, '.', '_' and '-', at most 249)")
        if name not in out:
            out.append(name)
    return tuple(out)


def _topic_pattern(raw: str, source: str, assignment: str) -> str:
    """``--topic-pattern``: a regular expression matched against whole topic names, by Kafka's group
    protocol only (the operator's grants and a static list name their partitions)."""
    if not raw:
        return ""
    where = f"invalid --topic-pattern {raw!r} ({source})"
    if assignment != "kafka":
        raise ConfigError(f"{where}: only valid with --assignment kafka (not {assignment})")
    try:
        re.compile(raw)
    except re.error as exc:
        raise ConfigError(f"{where}: not a regular expression ({exc})") from None
    return raw


def subscription(cfg: Config) -> list[str]:
    """What ``Consumer.subscribe`` gets: the named topics, and the pattern anchored to whole names
    (librdkafka reads a name starting with ``^`` as a regular expression)."""
    return [*cfg.topics, *([f"^(?:{cfg.topic_pattern})$"] if cfg.topic_pattern else [])]


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    ns = vars(build_parser().parse_args(list(argv)))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag, (_, default, _) in FLAGS.items():
        attr = flag.replace("-", "_")
        if ns.get(attr) is not None:
            raw, source = ns[attr], "argv"
        elif env.get(env_name(flag)) is not None:
            raw, source = env[env_name(flag)], env_name(flag)
        else:
            values[attr] = default
            sources[attr] = "default"
            continue
        values[attr] = _convert(flag, raw, source)
        sources[attr] = source

    def bad(attr: str, why: str) -> ConfigError:
        flag = attr.replace("_", "-")
        return ConfigError(f"invalid --{flag} {values[attr]!r} ({sources[attr]}): {why}")

    for attr in ("bootstrap_servers", "topic", "group_id", "target_url"):
        if attr == "topic" and (values["assignment"] == "k8s" or values["topic_pattern"]):
            continue  # k8s: the grants name the topics; a pattern names them for Kafka's group protocol
        if not values[attr]:
            flag = attr.replace("_", "-")
            raise ConfigError(f"missing --{flag} (or {env_name(flag)}): it is required")
    url = urlsplit(values["target_url"])
    if url.scheme not in ("http", "https") or not url.netloc:
        raise bad("target_url", "must be an http:// or https:// URL with a host")
    try:
        hdrs = json.loads(values["headers"])
    except json.JSONDecodeError as exc:
        raise bad("headers", f"not JSON ({exc.msg})") from None
    if not isinstance(hdrs, dict) or not all(isinstance(v, str) for v in hdrs.values()):
        raise bad("headers", "must be a JSON object of string values")
    headers = list(hdrs.items())
    origins = {name: f"--headers ({sources['headers']})" for name in hdrs}
    for name, value in sorted(env.items()):
        # LAGPILOT_HEADER_MAPPING is --header-mapping's own variable, not a header called "MAPPING".
        if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX) and name not in FLAG_ENVS:
            header = name[len(HEADER_PREFIX):].replace("_", "-")
            headers.append((header, value))
            origins[header] = name
    if values["headers_dir"]:
        for header, value in _read_header_files(values["headers_dir"]):
            headers.append((header, value))
            origins[header] = f"--headers-dir file {header}"
    for name, value in headers:
        check_header(name, value, origins.get(name, "headers"))
    for attr, lo in (("threads", 1), ("max_attempts", 1), ("initial_backoff_ms", 1), ("max_backoff_ms", 1),
                     ("max_inflight", 1), ("max_inflight_bytes", 1), ("commit_interval_ms", 10),
                     ("http_port", 0), ("timeout_seconds", 0.001), ("max_connection_age_seconds", 0),
                     ("drain_seconds", 0), ("fence_timeout_seconds", 0.1), ("lease_renew_seconds", 0.1),
                     ("max_requests_per_second", 0), ("max_outstanding_per_partition", 1),
                     ("park_after_seconds", 0), ("park_window", 1)):
        if values[attr] < lo:
            raise bad(attr, f"must be >= {lo}")
    if values["http_port"] > 65535:
        raise bad("http_port", "must be a port number <= 65535")
    if values["max_backoff_ms"] < values["initial_backoff_ms"]:
        raise bad("max_backoff_ms", f"must be >= --initial-backoff-ms ({values['initial_backoff_ms']})")
    codes: dict[str, CodeSet] = {}
    for attr in ("success_codes", "retry_codes", "unavailable_codes"):
        try:
            codes[attr] = CodeSet.parse(values[attr])
        except ValueError as exc:
            raise bad(attr, str(exc)) from None
    if not codes["success_codes"].ranges:
        raise bad("success_codes", "no status code would count as success")
    assignment = values["assignment"] or ("static" if values["partitions"] else "kafka")
    topics = _topics(values["topic"], sources["topic"])
    pattern = _topic_pattern(values["topic_pattern"], sources["topic_pattern"], assignment)
    if not topics and not pattern and assignment != "k8s":
        raise ConfigError("missing --topic (or LAGPILOT_TOPIC): it is required"
                          + (" (or --topic-pattern)" if assignment == "kafka" else ""))
    partitions: frozenset[PartitionId] = frozenset()
    if values["partitions"]:
        if assignment != "static":
            raise bad("partitions", f"only valid with --assignment static (not {assignment})")
        try:
            partitions = parse_partition_ids(values["partitions"], topics)
        except ValueError as exc:
            raise bad("partitions", str(exc)) from None
    elif assignment == "static":
        raise ConfigError("missing --partitions (or LAGPILOT_PARTITIONS): --assignment static needs the "
                          "partitions to own, e.g. 0,3,6")
    namespace = values["namespace"] or env.get("POD_NAMESPACE", "")
    pod_name = values["pod_name"] or env.get("POD_NAME", "")
    if assignment == "k8s":
        for what, v in (("namespace", namespace), ("pod-name", pod_name),
                        ("assignment-configmap", values["assignment_configmap"])):
            if not v:
                raise ConfigError(f"missing --{what}: --assignment k8s needs it"
                                  + (" (or POD_NAMESPACE)" if what == "namespace" else "")
                                  + (" (or POD_NAME)" if what == "pod-name" else ""))
        if values["fence_timeout_seconds"] <= values["lease_renew_seconds"]:
            raise bad("fence_timeout_seconds", "must be longer than --lease-renew-seconds")
    kafka: list[tuple[str, str]] = []
    if values["kafka_config_file"]:
        kafka.extend(_read_properties(values["kafka_config_file"]))
    for name, value in sorted(env.items()):
        if name.startswith(KAFKA_PREFIX) and name != env_name("kafka-config-file"):
            key = name[len(KAFKA_PREFIX):].lower().replace("_", ".")
            if key.endswith(".file"):  # LAGPILOT_KAFKA_SASL_PASSWORD_FILE: the value is in that file
                kafka.append((key[:-len(".file")], _read_secret_file(name, value)))
            else:
                kafka.append((key, value))
    files = ("target_ca_file", "target_cert_file", "target_key_file", "bearer_token_file",
             "oauth_client_secret_file", "oauth_ca_file")
    for attr in files:
        if values[attr] and not Path(values[attr]).is_file():
            raise bad(attr, "no such file")
    if bool(values["target_cert_file"]) != bool(values["target_key_file"]):
        raise ConfigError("invalid --target-cert-file/--target-key-file: give both or neither")
    oauth = [a for a in ("oauth_token_url", "oauth_client_id", "oauth_client_secret_file") if values[a]]
    if oauth and len(oauth) != 3:
        raise ConfigError("invalid OAuth2 settings: --oauth-token-url, --oauth-client-id and "
                          "--oauth-client-secret-file go together")
    if oauth and values["bearer_token_file"]:
        raise ConfigError("invalid --bearer-token-file: not together with --oauth-token-url")
    if values["oauth_token_url"] and not values["oauth_token_url"].startswith(("http://", "https://")):
        raise bad("oauth_token_url", "must be an http(s) URL")
    try:
        start_from = parse_start_from(values["start_from"])
    except ValueError as exc:
        raise bad("start_from", str(exc)) from None
    for key, _ in kafka:
        if key in RESERVED_KAFKA:
            raise ConfigError(f"invalid librdkafka property {key!r} (from env/--kafka-config-file): "
                              "lagpilot sets it itself; use the flag instead")
    mapping = tuple(n.strip() for n in values["header_mapping"].split(",") if n.strip())
    for name in (*mapping, *([values["idempotency_header"]] if values["idempotency_header"] else [])):
        if not HEADER_NAME.match(name):
            raise ConfigError(f"invalid header name {name!r} (--header-mapping / --idempotency-header): "
                              "not an HTTP token")
    try:
        routes = load_routes(values["routes"])
    except RouteError as exc:
        raise ConfigError(f"invalid --routes ({sources['routes']}): {exc}") from None
    if values["unmatched"] == "dead-letter" and not values["dead_letter_topic"]:
        raise bad("unmatched", "needs --dead-letter-topic")
    if values["park_topic"]:
        if len(topics) != 1 or pattern:
            raise bad("park_topic", "the retry park serves one source topic: park partition p is read together "
                                    "with partition p (give exactly one --topic, no --topic-pattern)")
        if values["park_topic"] in (*topics, values["dead_letter_topic"]):
            raise bad("park_topic", "must differ from --topic and --dead-letter-topic")
        if assignment == "kafka":
            raise bad("park_topic", "needs partitions owned by --assignment k8s or static (park partition p "
                                    "goes with partition p), not kafka")
    try:
        proxies = proxy_settings(env)
    except ProxyConfigError as exc:
        raise ConfigError(str(exc)) from None
    bind = values["bind"] or env.get("POD_IP") or "0.0.0.0"
    return Config(
        bootstrap_servers=values["bootstrap_servers"], topics=topics, group_id=values["group_id"],
        target_url=values["target_url"], method=values["method"].upper(), headers=tuple(headers),
        timeout_seconds=values["timeout_seconds"], connection=values["connection"],
        max_connection_age_seconds=values["max_connection_age_seconds"], threads=values["threads"],
        ordering=values["ordering"], assignment=assignment, partitions=partitions, topic_pattern=pattern,
        max_attempts=values["max_attempts"], initial_backoff_ms=values["initial_backoff_ms"],
        max_backoff_ms=values["max_backoff_ms"], success_codes=codes["success_codes"],
        retry_codes=codes["retry_codes"], unavailable_codes=codes["unavailable_codes"],
        max_requests_per_second=values["max_requests_per_second"],
        max_outstanding_per_partition=values["max_outstanding_per_partition"],
        format=values["format"], header_mapping=mapping, idempotency_header=values["idempotency_header"],
        dead_letter_topic=values["dead_letter_topic"], park_topic=values["park_topic"],
        park_after_seconds=values["park_after_seconds"], park_window=values["park_window"],
        max_inflight=values["max_inflight"], max_inflight_bytes=values["max_inflight_bytes"],
        drain_seconds=values["drain_seconds"], commit_interval_ms=values["commit_interval_ms"],
        http_port=values["http_port"], bind=bind, log_format=values["log_format"],
        log_level=values["log_level"], namespace=namespace, pod_name=pod_name,
        assignment_configmap=values["assignment_configmap"],
        fence_timeout_seconds=values["fence_timeout_seconds"],
        lease_renew_seconds=values["lease_renew_seconds"], kafka_config=tuple(kafka), start_from=start_from,
        target_tls_verify=values["target_tls_verify"] == "true", routes=routes, unmatched=values["unmatched"],
        proxies=proxies,
        **{attr: values[attr] for attr in (*files, "oauth_token_url", "oauth_client_id", "oauth_scope")},
    )
