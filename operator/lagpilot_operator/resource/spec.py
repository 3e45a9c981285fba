"""ConsumerGroup spec: parse the raw CR, apply defaults, and validate what the CRD schema cannot express.

The API server's OpenAPI schema rejects most bad input; this module is the second line. It never raises on
bad input: `parse()` returns a typed `ConsumerGroupSpec` (or None) plus a list of `Problem`s with stable
codes, which the operator reports as `Degraded=True, reason=InvalidSpec` and as an Event. It also accepts
objects written before the schema had a default (so every default is applied here as well).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lagpilot.protocol import ASSIGNMENT_CONFIGMAP_SUFFIX, GROUP, PartitionId, parse_partition_id, parse_status_codes
from lagpilot.redact import redact_url
from lagpilot.routes import UNMATCHED, Route, RouteError, parse_routes
from lagpilot.timefmt import parse_rfc3339

# Longest ConsumerGroup name: "<name>-<10 hex revision>" must stay a 63-character DNS label.
MAX_NAME_LENGTH = 52

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CONNECTIONS = ("pooled", "perRequest")
FORMATS = ("raw", "cloudevents-binary", "cloudevents-structured")
ORDERINGS = ("key", "partition", "none")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
START_FROM = ("earliest", "latest")
STRATEGIES = ("Rolling", "BlueGreen", "Canary")
CANARY_THEN = ("Rolling", "BlueGreen")

# Env names the operator sets itself; template.env may not shadow them.
RESERVED_ENV = ("POD_NAME", "POD_NAMESPACE", "POD_IP", "POD_UID")
RESERVED_ENV_PREFIX = "LAGPILOT_"
# Label keys the operator uses for selection; template.podLabels may not override them.
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", f"{GROUP}/")

URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*$")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
ON_ABORT = ("none", "replayFromCheckpoint")
TOPIC_RE = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
# canary.partitions entries: topic:partition, or a bare number meaning that partition of every topic
CanaryPick = PartitionId | int
DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds of a duration written as Kubernetes and Go write them (``90s``, ``10m``, ``1h30m``,
    ``500ms``); None if it is not one."""
    if not DURATION_RE.match(text):
        return None
    return sum(float(n) * _DURATION_UNIT[u] for n, u in _DURATION_PART.findall(text))
# host:port, with IPv6 addresses in brackets ([::1]:9092, [fd00::5]:9093)
BOOTSTRAP_RE = re.compile(r"^(?:[^\s,:\[\]]+|\[[0-9A-Fa-f:.]+(?:%[\w.-]+)?\]):\d{1,5}$")
KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret/ConfigMap data key
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: `field` is the JSON path, `code` a stable machine-readable word."""

    field: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class KeyRef:
    """One key of a Secret or ConfigMap in the group's namespace (material is referenced, never inlined)."""

    kind: str  # "Secret" | "ConfigMap"
    name: str
    key: str


@dataclass(frozen=True)
class KafkaTLSSpec:
    ca: KeyRef | None = None  # None: the system's trusted CAs
    client_certificate: KeyRef | None = None  # with client_key: mTLS
    client_key: KeyRef | None = None
    verify_hostname: bool = True


@dataclass(frozen=True)
class OAuthSpec:
    """OAUTHBEARER via OIDC client credentials (librdkafka fetches and refreshes the token)."""

    token_url: str
    client_id: str
    client_secret: KeyRef
    scope: str | None = None
    ca: KeyRef | None = None  # the token endpoint's CA; None: the system's trusted CAs


@dataclass(frozen=True)
class TargetSpec:
    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_from_secret: str | None = None
    timeout_seconds: float = 10.0
    connection: str = "pooled"
    success_codes: str | None = None  # None: the worker's defaults
    retry_codes: str | None = None
    unavailable_codes: str | None = None
    max_requests_per_second: float | None = None
    format: str = "raw"
    header_mapping: tuple[str, ...] = ()
    idempotency_header: str | None = None
    tls: KafkaTLSSpec | None = None  # the same shape as the brokers' (verify_hostname: verify at all)
    bearer_token: KeyRef | None = None
    oauth2: OAuthSpec | None = None


@dataclass(frozen=True)
class RetrySpec:
    max_attempts: int = 5
    initial_backoff_ms: int = 200
    max_backoff_ms: int = 30000
    park_topic: str | None = None  # spec.retry.park.topic: durable ordered retries (none: retries in memory)
    park_after_seconds: float = 60.0  # spec.retry.park.after


@dataclass(frozen=True)
class KafkaSpec:
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    credentials_secret: str | None = None
    username: str | None = None  # literal user name (Strimzi's KafkaUser Secret holds only the password)
    password_key: str = "password"
    tls: KafkaTLSSpec | None = None
    oauth: OAuthSpec | None = None
    allow_plaintext_credentials: bool = False

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class TemplateSpec:
    resources: Mapping[str, Any] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AutoscaleSpec:
    """`spec.autoscaling` with the documented defaults (docs/autoscaling.md); parsed and checked by `parse`."""

    enabled: bool = False
    min_workers: int = 1
    max_workers: int | None = None  # None: the partition count
    lag_per_worker: int = 1000
    activation_lag: int = 0
    poll_seconds: float = 15.0
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 300.0
    exclude_stalled_partitions: bool = True
    catch_up_seconds: float = 0.0

    def cap(self, partitions: int) -> int:
        """The most workers that can be busy: maxWorkers, never more than the partition count."""
        return max(0, partitions if self.max_workers is None else min(self.max_workers, partitions))


@dataclass(frozen=True)
class BlueGreenSpec:
    auto_promote: bool = True
    preview_seconds: int = 0
    scale_down_delay_seconds: int = 30


@dataclass(frozen=True)
class CanarySpec:
    """`partitions` is a count (int) or an explicit tuple of picks: a PartitionId (``topic:partition``) or a
    bare number (that partition of every topic of the group)."""

    partitions: int | tuple[CanaryPick, ...] = 1
    workers: int = 1
    analysis_seconds: int = 300
    max_error_rate: float = 0.01
    max_p99_latency_ms: int = 0
    max_lag_growth: int = 0
    then: str = "Rolling"
    auto_promote: bool = True


@dataclass(frozen=True)
class RolloutSpec:
    """spec.rollout (behaviour: the hand-off issue)."""

    strategy: str = "Rolling"
    max_partitions_in_flight: int = 0
    blue_green: BlueGreenSpec = field(default_factory=BlueGreenSpec)
    canary: CanarySpec = field(default_factory=CanarySpec)
    on_abort: str = "none"  # none | replayFromCheckpoint (an aborted canary's partitions go back to the checkpoint)


@dataclass(frozen=True)
class ConsumerGroupSpec:
    name: str
    namespace: str
    bootstrap_servers: str
    topics: tuple[str, ...]  # spec.topic and spec.topics, in order (empty with a topicPattern)
    group_id: str
    target: TargetSpec
    image: str
    topic_pattern: str | None = None  # spec.topicPattern: a regex over whole topic names, re-read each round
    workers: int = 1
    threads: int = 4
    ordering: str = "key"
    retry: RetrySpec = field(default_factory=RetrySpec)
    dead_letter_topic: str | None = None
    start_from: str = "earliest"  # earliest | latest | an RFC 3339 time: where a partition with no commit starts
    kafka: KafkaSpec = field(default_factory=KafkaSpec)
    template: TemplateSpec = field(default_factory=TemplateSpec)
    autoscaling: AutoscaleSpec = field(default_factory=AutoscaleSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    paused: bool = False
    routes: tuple[Route, ...] = ()  # empty: every record to target
    unmatched: str = "skip"  # skip | deadLetter: a record no route matches

    @property
    def assignment_configmap(self) -> str:
        return f"{self.name}{ASSIGNMENT_CONFIGMAP_SUFFIX}"

    @property
    def single_topic(self) -> str | None:
        """The group's topic when it names exactly one and no pattern: bare partition numbers (format 1 of
        the hand-off, ``canary.partitions: [1, 4]``, ``replay --to-offset 3:10``) mean that topic's."""
        return self.topics[0] if len(self.topics) == 1 and self.topic_pattern is None else None


class _Reader:
    """Typed access to a nested mapping that records a Problem (instead of raising) for each bad value."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def bad(self, path: str, code: str, message: str) -> None:
        self.problems.append(Problem(path, code, message))

    def obj(self, raw: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.bad(f"{path}.{key}", "WrongType", "must be an object")
            return {}
        return value

    def string(self, raw: Mapping[str, Any], key: str, path: str, default: str | None = None,
               required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        value = raw.get(key)
        where = f"{path}.{key}"
        if value is None or value == "":
            if required:
                self.bad(where, "Required", "is required")
            return default
        if not isinstance(value, str):
            self.bad(where, "WrongType", "must be a string")
            return default
        if choices and value not in choices:
            self.bad(where, "NotAllowed", f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def integer(self, raw: Mapping[str, Any], key: str, path: str, default: int, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value = raw.get(key)
        where = f"{path}.{key}"
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(where, "WrongType", "must be an integer")
            return default
        return self._range(where, value, default, minimum, maximum)

    def number(self, raw: Mapping[str, Any], key: str, path: str, default: float,
               minimum: float | None = None, maximum: float | None = None) -> float:
        value = raw.get(key)
        where = f"{path}.{key}"
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad(where, "WrongType", "must be a number")
            return default
        return self._range(where, value, default, minimum, maximum)

    def _range(self, where: str, value: Any, default: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            self.bad(where, "OutOfRange", f"must be >= {minimum}, got {value}")
            return default
        if maximum is not None and value > maximum:
            self.bad(where, "OutOfRange", f"must be <= {maximum}, got {value}")
            return default
        return value

    def boolean(self, raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(f"{path}.{key}", "WrongType", "must be true or false")
            return default
        return value

    def string_map(self, raw: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.bad(f"{path}.{key}", "WrongType", "must be a map of strings to strings")
            return {}
        return dict(value)

    def object_list(self, raw: Mapping[str, Any], key: str, path: str) -> tuple[Mapping[str, Any], ...]:
        value = raw.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.bad(f"{path}.{key}", "WrongType", "must be a list of objects")
            return ()
        return tuple(value)


def default_group_id(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def parse(body: Mapping[str, Any], default_image: str) -> tuple[ConsumerGroupSpec | None, list[Problem]]:
    """The typed, defaulted spec of a ConsumerGroup body, and every problem found.

    The spec is None only when a required field is missing or unusable; otherwise it is returned even when
    there are problems (with defaults in place of bad values) so callers can still report on it.
    """
    problems: list[Problem] = []
    r = _Reader(problems)
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    raw = body.get("spec")
    if not isinstance(raw, Mapping):
        return None, [Problem("spec", "Required", "is required")]
    if len(name) > MAX_NAME_LENGTH:
        r.bad("metadata.name", "NameTooLong",
              f"must be at most {MAX_NAME_LENGTH} characters (worker objects append a suffix)")
    elif not DNS_LABEL_RE.match(name):
        r.bad("metadata.name", "InvalidName", "must be a DNS label (lowercase letters, digits, '-')")

    bootstrap = r.string(raw, "bootstrapServers", "spec", required=True)
    if bootstrap is not None:
        bad = [s for s in bootstrap.split(",") if not BOOTSTRAP_RE.match(s.strip())]
        if bad:
            r.bad("spec.bootstrapServers", "InvalidBootstrapServers",
                  f"must be a comma-separated list of host:port, bad entries: {', '.join(bad)}")
    topics, topic_pattern = _parse_topics(r, raw)
    group_id = r.string(raw, "groupId", "spec", default=default_group_id(namespace, name))
    assert group_id is not None

    target = _parse_target(r, r.obj(raw, "target", "spec"))
    retry = _parse_retry(r, r.obj(raw, "retry", "spec"))
    dlq = r.string(raw, "deadLetterTopic", "spec")
    if dlq is not None:
        if not TOPIC_RE.match(dlq):
            r.bad("spec.deadLetterTopic", "InvalidTopicName", "must be 1-249 of [a-zA-Z0-9._-]")
        elif dlq in topics:  # a pattern never matches the group's own dead-letter or park topic
            r.bad("spec.deadLetterTopic", "DeadLetterIsSource",
                  "must differ from the topics the group reads (failed records would be consumed again)")
    if retry.park_topic is not None:
        if retry.park_topic in (*topics, dlq):
            r.bad("spec.retry.park.topic", "ParkIsSource",
                  "must differ from the topics the group reads and spec.deadLetterTopic (parked records would "
                  "be mixed with them)")
        elif len(topics) > 1 or topic_pattern is not None:
            r.bad("spec.retry.park.topic", "ParkNeedsOneTopic",
                  "the retry park serves a group of one topic: park partition p is owned together with source "
                  "partition p")
    kafka = _parse_kafka(r, r.obj(raw, "kafka", "spec"))
    template = _parse_template(r, r.obj(raw, "template", "spec"))
    autoscaling = _parse_autoscaling(r, r.obj(raw, "autoscaling", "spec"))
    rollout = _parse_rollout(r, r.obj(raw, "rollout", "spec"))
    image = r.string(raw, "image", "spec", default=default_image) or default_image
    workers = r.integer(raw, "workers", "spec", 1, minimum=0, maximum=1000)
    threads = r.integer(raw, "threads", "spec", 4, minimum=1, maximum=1024)
    ordering = r.string(raw, "ordering", "spec", default="key", choices=ORDERINGS) or "key"
    paused = r.boolean(raw, "paused", "spec", False)
    routes: tuple[Route, ...] = ()
    try:
        routes = parse_routes(raw.get("routes"), "spec.routes")
    except RouteError as exc:
        r.bad(exc.path, "InvalidRoute", exc.reason)
    unmatched = r.string(raw, "unmatched", "spec", default="skip", choices=UNMATCHED) or "skip"
    if unmatched == "deadLetter" and dlq is None:
        r.bad("spec.unmatched", "NoDeadLetterTopic", "deadLetter needs spec.deadLetterTopic")
    start_from = r.string(raw, "startFrom", "spec", default="earliest") or "earliest"
    if start_from not in START_FROM and ("T" not in start_from or parse_rfc3339(start_from) is None):
        r.bad("spec.startFrom", "InvalidStartFrom",
              f"must be earliest, latest or an RFC 3339 time such as 2026-01-31T00:00:00Z, got {start_from!r}")
        start_from = "earliest"

    if bootstrap is None or (not topics and topic_pattern is None) or target is None:
        return None, problems
    spec = ConsumerGroupSpec(
        name=name, namespace=namespace, bootstrap_servers=bootstrap, topics=topics, topic_pattern=topic_pattern,
        group_id=group_id,
        target=target, image=image, workers=workers, threads=threads, ordering=ordering, retry=retry,
        dead_letter_topic=dlq, start_from=start_from, kafka=kafka, template=template, autoscaling=autoscaling,
        rollout=rollout, paused=paused, routes=routes, unmatched=unmatched)
    return spec, problems


def _parse_topics(r: _Reader, raw: Mapping[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """spec.topic, spec.topics and spec.topicPattern: one of them names what the group reads (topic and
    topics may be combined; a pattern stands alone, as topics appear and go under it)."""
    topic = r.string(raw, "topic", "spec")
    listed = raw.get("topics")
    pattern = r.string(raw, "topicPattern", "spec")
    names: list[str] = [topic] if topic is not None else []
    if listed is not None:
        if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
            r.bad("spec.topics", "WrongType", "must be a list of topic names")
        else:
            names += listed
    bad = [t for t in names if not TOPIC_RE.match(t)]
    if bad:
        r.bad("spec.topics" if listed else "spec.topic", "InvalidTopicName",
              f"must be 1-249 of [a-zA-Z0-9._-], got {', '.join(repr(t) for t in bad)}")
    twice = sorted({t for t in names if names.count(t) > 1})
    if twice:
        r.bad("spec.topics", "DuplicateTopic", f"names {', '.join(twice)} more than once")
    if pattern is not None:
        if names:
            r.bad("spec.topicPattern", "TopicsAndPattern", "use either spec.topicPattern or spec.topic/topics")
        try:
            re.compile(pattern)
        except re.error as exc:
            r.bad("spec.topicPattern", "InvalidTopicPattern", f"not a regular expression: {exc}")
            pattern = None
    elif not names:
        r.bad("spec.topic", "NoTopic", "name the topics to read: spec.topic, spec.topics or spec.topicPattern")
    return tuple(dict.fromkeys(names)), pattern


def _parse_target(r: _Reader, raw: Mapping[str, Any]) -> TargetSpec | None:
    p = "spec.target"
    url = r.string(raw, "url", p, required=True)
    if url is not None and not URL_RE.match(url):
        r.bad(f"{p}.url", "InvalidURL", f"must be an http:// or https:// URL, got {redact_url(url)!r}")
    method = r.string(raw, "method", p, default="POST", choices=METHODS) or "POST"
    headers = r.string_map(raw, "headers", p)
    for hname in headers:
        if not HEADER_NAME_RE.match(hname):
            r.bad(f"{p}.headers", "InvalidHeaderName", f"{hname!r} is not a valid HTTP header name")
    secret = r.string(raw, "headersFromSecret", p)
    if secret is not None and not DNS_SUBDOMAIN_RE.match(secret):
        r.bad(f"{p}.headersFromSecret", "InvalidSecretName", f"{secret!r} is not a valid Secret name")
    timeout = r.number(raw, "timeoutSeconds", p, 10.0, minimum=0.001, maximum=3600)
    connection = r.string(raw, "connection", p, default="pooled", choices=CONNECTIONS) or "pooled"
    codes: dict[str, str | None] = {}
    for field_name in ("successCodes", "retryCodes", "unavailableCodes"):
        text = r.string(raw, field_name, p)
        if text is not None:
            try:
                if not parse_status_codes(text) and field_name == "successCodes":
                    raise ValueError("no status code would count as delivered")
            except ValueError as exc:
                r.bad(f"{p}.{field_name}", "InvalidStatusCodes", str(exc))
                text = None
        codes[field_name] = text
    rps = r.number(raw, "maxRequestsPerSecond", p, 0.0, minimum=0, maximum=1_000_000) \
        if raw.get("maxRequestsPerSecond") is not None else None
    fmt = r.string(raw, "format", p, default="raw", choices=FORMATS) or "raw"
    mapping = raw.get("headerMapping")
    if mapping is not None and not (isinstance(mapping, list) and all(isinstance(n, str) for n in mapping)):
        r.bad(f"{p}.headerMapping", "WrongType", "must be a list of header names")
        mapping = None
    for hname in mapping or ():
        if not HEADER_NAME_RE.match(hname):
            r.bad(f"{p}.headerMapping", "InvalidHeaderName", f"{hname!r} is not a valid HTTP header name")
    idempotency = r.string(raw, "idempotencyHeader", p)
    if idempotency is not None and not HEADER_NAME_RE.match(idempotency):
        r.bad(f"{p}.idempotencyHeader", "InvalidHeaderName", f"{idempotency!r} is not a valid HTTP header name")
        idempotency = None
    if url is None:
        return None
    tls = _parse_kafka_tls(r, raw, p, verify_key="verify")
    if tls is not None and not (url or "").startswith("https://"):
        r.bad(f"{p}.tls", "TlsNotEnabled", "needs an https:// url")
    auth = r.obj(raw, "auth", p)
    bearer = _key_ref(r, auth, "bearerToken", f"{p}.auth", "token")
    oauth2 = _parse_oauth(r, auth, f"{p}.auth", key="oauth2")
    if bearer is not None and oauth2 is not None:
        r.bad(f"{p}.auth", "AuthConflict", "names one of bearerToken, oauth2")
    if oauth2 is not None and not oauth2.token_url.startswith("https://"):
        r.bad(f"{p}.auth.oauth2.tokenUrl", "PlaintextCredentials",
              "an http:// token URL would send the client secret unencrypted; use https")
    return TargetSpec(url=url, method=method, headers=headers, headers_from_secret=secret,
                      tls=tls, bearer_token=bearer, oauth2=oauth2,
                      timeout_seconds=timeout, connection=connection, success_codes=codes["successCodes"],
                      retry_codes=codes["retryCodes"], unavailable_codes=codes["unavailableCodes"],
                      max_requests_per_second=rps, format=fmt,
                      header_mapping=tuple(n for n in mapping or () if HEADER_NAME_RE.match(n)),
                      idempotency_header=idempotency)


def _parse_retry(r: _Reader, raw: Mapping[str, Any]) -> RetrySpec:
    p = "spec.retry"
    attempts = r.integer(raw, "maxAttempts", p, 5, minimum=1, maximum=1000)
    initial = r.integer(raw, "initialBackoffMs", p, 200, minimum=1, maximum=3_600_000)
    maximum = r.integer(raw, "maxBackoffMs", p, 30000, minimum=1, maximum=3_600_000)
    if maximum < initial:
        r.bad(f"{p}.maxBackoffMs", "BackoffOrder",
              f"must be >= initialBackoffMs ({initial}), got {maximum}")
        maximum = initial
    park = r.obj(raw, "park", p)
    park_topic, after = None, 60.0
    if park:
        park_topic = r.string(park, "topic", f"{p}.park", required=True)
        if park_topic is not None and not TOPIC_RE.match(park_topic):
            r.bad(f"{p}.park.topic", "InvalidTopicName", "must be 1-249 of [a-zA-Z0-9._-]")
        text = r.string(park, "after", f"{p}.park", default="1m") or "1m"
        seconds = parse_duration(text)
        if seconds is None:
            r.bad(f"{p}.park.after", "InvalidDuration", f"must be a duration such as 30s, 10m or 1h, got {text!r}")
        else:
            after = seconds
    return RetrySpec(max_attempts=attempts, initial_backoff_ms=initial, max_backoff_ms=maximum,
                     park_topic=park_topic, park_after_seconds=after)


def _key_ref(r: _Reader, raw: Mapping[str, Any], key: str, path: str, default_key: str,
             config_map: bool = False) -> KeyRef | None:
    """``{secret: name, key: k}`` (or ``{configMap: name, key: k}`` where a ConfigMap may hold it)."""
    ref = r.obj(raw, key, path)
    if not ref:
        return None
    where = f"{path}.{key}"
    secret = r.string(ref, "secret", where)
    cm = r.string(ref, "configMap", where) if config_map else None
    data_key = r.string(ref, "key", where, default=default_key) or default_key
    if (secret is None) == (cm is None):
        r.bad(where, "InvalidReference", "names exactly one of secret" + (", configMap" if config_map else ""))
        return None
    name = secret or cm or ""
    if not DNS_SUBDOMAIN_RE.match(name):
        r.bad(where, "InvalidSecretName", f"{name!r} is not a valid object name")
    if not KEY_RE.match(data_key):
        r.bad(f"{where}.key", "InvalidKey", f"{data_key!r} is not a valid data key")
    return KeyRef("Secret" if secret else "ConfigMap", name, data_key)


def _parse_kafka_tls(r: _Reader, raw: Mapping[str, Any], p: str,
                     verify_key: str = "verifyHostname") -> KafkaTLSSpec | None:
    tls = r.obj(raw, "tls", p)
    if not tls:
        return None
    where = f"{p}.tls"
    ca = _key_ref(r, tls, "ca", where, "ca.crt", config_map=True)
    cert = r.obj(tls, "clientCertificate", where)
    client_cert = client_key = None
    if cert:
        cw = f"{where}.clientCertificate"
        secret = r.string(cert, "secret", cw, required=True)
        cert_key = r.string(cert, "certificate", cw, default="tls.crt") or "tls.crt"
        key_key = r.string(cert, "key", cw, default="tls.key") or "tls.key"
        if secret is not None:
            if not DNS_SUBDOMAIN_RE.match(secret):
                r.bad(f"{cw}.secret", "InvalidSecretName", f"{secret!r} is not a valid Secret name")
            for k in (cert_key, key_key):
                if not KEY_RE.match(k):
                    r.bad(cw, "InvalidKey", f"{k!r} is not a valid data key")
            client_cert, client_key = KeyRef("Secret", secret, cert_key), KeyRef("Secret", secret, key_key)
    return KafkaTLSSpec(ca=ca, client_certificate=client_cert, client_key=client_key,
                        verify_hostname=r.boolean(tls, verify_key, where, True))


def _parse_oauth(r: _Reader, raw: Mapping[str, Any], p: str, key: str = "oauth") -> OAuthSpec | None:
    oauth = r.obj(raw, key, p)
    if not oauth:
        return None
    where = f"{p}.{key}"
    url = r.string(oauth, "tokenUrl", where, required=True)
    if url is not None and not URL_RE.match(url):
        r.bad(f"{where}.tokenUrl", "InvalidURL", f"{url!r} is not an http(s) URL")
    client_id = r.string(oauth, "clientId", where, required=True)
    secret = _key_ref(r, oauth, "clientSecret", where, "clientSecret")
    if secret is None and "clientSecret" not in oauth:
        r.bad(f"{where}.clientSecret", "Required", "is required ({secret: name, key: clientSecret})")
    if url is None or client_id is None or secret is None:
        return None
    return OAuthSpec(token_url=url, client_id=client_id, client_secret=secret,
                     scope=r.string(oauth, "scope", where), ca=_key_ref(r, oauth, "ca", where, "ca.crt",
                                                                         config_map=True))


def _parse_kafka(r: _Reader, raw: Mapping[str, Any]) -> KafkaSpec:
    p = "spec.kafka"
    protocol = r.string(raw, "securityProtocol", p, default="PLAINTEXT", choices=SECURITY_PROTOCOLS) or "PLAINTEXT"
    mechanism = r.string(raw, "saslMechanism", p, choices=SASL_MECHANISMS)
    secret = r.string(raw, "credentialsSecret", p)
    username = r.string(raw, "username", p)
    password_key = r.string(raw, "passwordKey", p, default="password") or "password"
    tls = _parse_kafka_tls(r, raw, p)
    oauth = _parse_oauth(r, raw, p)
    allow_plain = r.boolean(raw, "allowPlaintextCredentials", p, False)
    spec = KafkaSpec(security_protocol=protocol, sasl_mechanism=mechanism, credentials_secret=secret,
                     username=username, password_key=password_key, tls=tls, oauth=oauth,
                     allow_plaintext_credentials=allow_plain)
    if spec.uses_sasl:
        if mechanism is None:
            r.bad(f"{p}.saslMechanism", "SaslIncomplete", f"is required with securityProtocol {protocol}")
        elif mechanism == "OAUTHBEARER":
            if "oauth" not in raw:
                r.bad(f"{p}.oauth", "SaslIncomplete", "is required with saslMechanism OAUTHBEARER "
                      "(tokenUrl, clientId, clientSecret)")
            if secret is not None:
                r.bad(f"{p}.credentialsSecret", "SaslConflict", "is for PLAIN/SCRAM; OAUTHBEARER uses oauth")
        else:
            if secret is None:
                r.bad(f"{p}.credentialsSecret", "SaslIncomplete",
                      f"is required with securityProtocol {protocol} (a Secret with keys username, password)")
            if "oauth" in raw:
                r.bad(f"{p}.oauth", "SaslConflict", "needs saslMechanism OAUTHBEARER")
        if protocol == "SASL_PLAINTEXT" and not allow_plain:
            r.bad(f"{p}.securityProtocol", "PlaintextCredentials",
                  "SASL_PLAINTEXT sends credentials unencrypted; use SASL_SSL, or set "
                  "spec.kafka.allowPlaintextCredentials: true to accept that")
    elif mechanism is not None or secret is not None or "oauth" in raw:
        r.bad(f"{p}.securityProtocol", "SaslNotEnabled",
              "saslMechanism/credentialsSecret/oauth need securityProtocol SASL_PLAINTEXT or SASL_SSL")
    if username is not None and secret is None:  # (passwordKey has a schema default: not checked)
        r.bad(f"{p}.username", "SaslIncomplete", "username goes with credentialsSecret")
    if not KEY_RE.match(password_key):
        r.bad(f"{p}.passwordKey", "InvalidKey", f"{password_key!r} is not a valid data key")
    if tls is not None and not spec.uses_tls:
        r.bad(f"{p}.tls", "TlsNotEnabled", "needs securityProtocol SSL or SASL_SSL")
    if oauth is not None and oauth.token_url.startswith("http://") and not allow_plain:
        r.bad(f"{p}.oauth.tokenUrl", "PlaintextCredentials",
              "an http:// token URL sends the client secret unencrypted; use https, or set "
              "spec.kafka.allowPlaintextCredentials: true to accept that")
    if secret is not None and not DNS_SUBDOMAIN_RE.match(secret):
        r.bad(f"{p}.credentialsSecret", "InvalidSecretName", f"{secret!r} is not a valid Secret name")
    return spec


def _parse_template(r: _Reader, raw: Mapping[str, Any]) -> TemplateSpec:
    p = "spec.template"
    env = r.object_list(raw, "env", p)
    for i, item in enumerate(env):
        ename = item.get("name")
        if not isinstance(ename, str) or not ename:
            r.bad(f"{p}.env[{i}].name", "Required", "is required")
        elif ename.startswith(RESERVED_ENV_PREFIX) or ename in RESERVED_ENV:
            r.bad(f"{p}.env[{i}].name", "ReservedEnv",
                  f"{ename!r} is set by the operator (LAGPILOT_* and {', '.join(RESERVED_ENV)} are reserved)")
    labels = r.string_map(raw, "podLabels", p)
    for key in labels:
        if key.startswith(RESERVED_LABEL_PREFIXES):
            r.bad(f"{p}.podLabels", "ReservedLabel",
                  f"{key!r} is managed by the operator (app.kubernetes.io/* and lagpilot.io/* are reserved)")
    return TemplateSpec(
        resources=dict(r.obj(raw, "resources", p)),
        node_selector=r.string_map(raw, "nodeSelector", p),
        tolerations=r.object_list(raw, "tolerations", p),
        affinity=dict(r.obj(raw, "affinity", p)),
        env=env,
        pod_labels={k: v for k, v in labels.items() if not k.startswith(RESERVED_LABEL_PREFIXES)},
        pod_annotations=r.string_map(raw, "podAnnotations", p),
    )


def _parse_autoscaling(r: _Reader, raw: Mapping[str, Any]) -> AutoscaleSpec:
    p = "spec.autoscaling"
    min_w = r.integer(raw, "minWorkers", p, 1, minimum=0, maximum=1000)
    max_raw = raw.get("maxWorkers")
    max_w: int | None = None
    if max_raw is not None:
        max_w = r.integer(raw, "maxWorkers", p, 0, minimum=1, maximum=1000) or None
    if max_w is not None and max_w < min_w:
        r.bad(f"{p}.maxWorkers", "WorkerBounds", f"must be >= minWorkers ({min_w}), got {max_w}")
        max_w = min_w or None
    return AutoscaleSpec(
        enabled=r.boolean(raw, "enabled", p, False),
        min_workers=min_w,
        max_workers=max_w,
        lag_per_worker=r.integer(raw, "lagPerWorker", p, 1000, minimum=1),
        activation_lag=r.integer(raw, "activationLag", p, 0, minimum=0),
        poll_seconds=r.integer(raw, "pollSeconds", p, 15, minimum=1, maximum=3600),
        scale_up_stabilization_seconds=r.integer(raw, "scaleUpStabilizationSeconds", p, 0, minimum=0),
        scale_down_stabilization_seconds=r.integer(raw, "scaleDownStabilizationSeconds", p, 300, minimum=0),
        exclude_stalled_partitions=r.boolean(raw, "excludeStalledPartitions", p, True),
        catch_up_seconds=r.integer(raw, "catchUpSeconds", p, 0, minimum=0),
    )


def _parse_canary_partitions(r: _Reader, raw: Mapping[str, Any], path: str) -> int | tuple[CanaryPick, ...]:
    value = raw.get("partitions")
    where = f"{path}.partitions"
    if value is None:
        return 1
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            r.bad(where, "OutOfRange", f"a partition count must be >= 1, got {value}")
            return 1
        return value
    if isinstance(value, list) and value:
        picks: list[CanaryPick] = []
        for v in value:
            if isinstance(v, int) and not isinstance(v, bool):
                if v < 0:
                    r.bad(where, "OutOfRange", "partition numbers must be >= 0")
                    return 1
                picks.append(v)
                continue
            if isinstance(v, str):
                try:
                    picks.append(parse_partition_id(v) if ":" in v else int(v))
                    continue
                except ValueError:
                    pass
            r.bad(where, "WrongType", f"{v!r} is neither a partition number nor topic:partition")
            return 1
        if len(set(picks)) != len(picks):
            r.bad(where, "DuplicatePartition", f"lists a partition twice: {value}")
            return 1
        return tuple(sorted(picks, key=lambda x: (0, "", x) if isinstance(x, int) else (1, x.topic, x.partition)))
    r.bad(where, "WrongType", "must be a partition count (integer >= 1) or a non-empty list of partition numbers "
                              "or topic:partition names")
    return 1


def _parse_rollout(r: _Reader, raw: Mapping[str, Any]) -> RolloutSpec:
    p = "spec.rollout"
    bg = r.obj(raw, "blueGreen", p)
    pb = f"{p}.blueGreen"
    canary = r.obj(raw, "canary", p)
    pc = f"{p}.canary"
    return RolloutSpec(
        strategy=r.string(raw, "strategy", p, default="Rolling", choices=STRATEGIES) or "Rolling",
        max_partitions_in_flight=r.integer(raw, "maxPartitionsInFlight", p, 0, minimum=0),
        on_abort=r.string(raw, "onAbort", p, default="none", choices=ON_ABORT) or "none",
        blue_green=BlueGreenSpec(
            auto_promote=r.boolean(bg, "autoPromote", pb, True),
            preview_seconds=r.integer(bg, "previewSeconds", pb, 0, minimum=0),
            scale_down_delay_seconds=r.integer(bg, "scaleDownDelaySeconds", pb, 30, minimum=0),
        ),
        canary=CanarySpec(
            partitions=_parse_canary_partitions(r, canary, pc),
            workers=r.integer(canary, "workers", pc, 1, minimum=1, maximum=1000),
            analysis_seconds=r.integer(canary, "analysisSeconds", pc, 300, minimum=0),
            max_error_rate=r.number(canary, "maxErrorRate", pc, 0.01, minimum=0.0, maximum=1.0),
            max_p99_latency_ms=r.integer(canary, "maxP99LatencyMs", pc, 0, minimum=0),
            max_lag_growth=r.integer(canary, "maxLagGrowth", pc, 0, minimum=0),
            then=r.string(canary, "then", pc, default="Rolling", choices=CANARY_THEN) or "Rolling",
            auto_promote=r.boolean(canary, "autoPromote", pc, True),
        ),
    )


def partition_problems(spec: ConsumerGroupSpec, topics: Mapping[str, int]) -> list[Problem]:
    """Checks that need the topics' partition counts (known only after asking the broker)."""
    problems: list[Problem] = []
    canary = spec.rollout.canary.partitions
    where = "spec.rollout.canary.partitions"
    if isinstance(canary, tuple) and topics:
        missing: list[str] = []
        for pick in canary:
            if isinstance(pick, int):
                if all(pick >= n for n in topics.values()):
                    missing.append(str(pick))
            elif pick.partition >= topics.get(pick.topic, 0):
                missing.append(str(pick))
        if missing:
            have = ", ".join(f"{t} has {n}" for t, n in sorted(topics.items()))
            problems.append(Problem(where, "NoSuchPartition", f"no partition {', '.join(missing)} ({have})"))
    return problems


# Problems that mean "do not talk to these brokers at all" (credentials would go where they must not):
# the operator reads no metadata and starts no worker, and status names the problem as its own reason.
NO_CONTACT = ("BootstrapNotAllowed", "PlaintextCredentials")


def bootstrap_problems(spec: ConsumerGroupSpec, allowed: tuple[str, ...]) -> list[Problem]:
    """The bootstrap servers that match none of the operator's ``allowed`` patterns (``fnmatch`` on
    ``host:port``, case-insensitive; no patterns: everything is allowed)."""
    if not allowed:
        return []
    import fnmatch

    servers = [s.strip() for s in spec.bootstrap_servers.split(",") if s.strip()]
    bad = [s for s in servers if not any(fnmatch.fnmatchcase(s.lower(), p.lower()) for p in allowed)]
    if not bad:
        return []
    return [Problem("spec.bootstrapServers", "BootstrapNotAllowed",
                    f"{', '.join(bad)} not allowed by this operator (allowedBootstrapServers: "
                    f"{', '.join(allowed)})")]


def describe(problems: list[Problem]) -> str:
    """One human line for a condition message / Event."""
    return "; ".join(str(p) for p in problems)
