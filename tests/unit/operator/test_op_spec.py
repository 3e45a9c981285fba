"""Spec parsing: defaults, every field read, and each semantic problem reported with its code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lagpilot.protocol import PartitionId
from lagpilot_operator.resource.spec import Problem, describe, parse, partition_problems

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
IMAGE = "lagpilot:test"


def body(spec: dict[str, Any] | None = None, name: str = "orders", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"bootstrapServers": "k:9092", "topic": "orders",
                            "target": {"url": "http://t.example/x"}}
    base.update(spec or {})
    base.update(extra)
    return {"metadata": {"name": name, "namespace": "shop", "uid": "u"}, "spec": base}


def codes(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.field, p.code) for p in problems}


def test_minimal_spec_gets_every_default() -> None:
    spec, problems = parse(body(), IMAGE)
    assert problems == [] and spec is not None
    assert spec.group_id == "shop.orders"
    assert spec.image == IMAGE
    assert (spec.workers, spec.threads, spec.ordering, spec.paused) == (1, 4, "key", False)
    assert (spec.target.method, spec.target.timeout_seconds, spec.target.connection) == ("POST", 10.0, "pooled")
    assert spec.target.headers == {} and spec.target.headers_from_secret is None
    assert (spec.retry.max_attempts, spec.retry.initial_backoff_ms, spec.retry.max_backoff_ms) == (5, 200, 30000)
    assert spec.kafka.security_protocol == "PLAINTEXT" and not spec.kafka.uses_sasl
    assert spec.dead_letter_topic is None
    assert spec.autoscaling.enabled is False and spec.autoscaling.max_workers is None
    assert spec.autoscaling.scale_down_stabilization_seconds == 300
    assert spec.rollout.strategy == "Rolling" and spec.rollout.canary.partitions == 1
    assert spec.assignment_configmap == "orders-assignment"


def test_full_example_parses_without_problems_and_reads_every_field() -> None:
    docs = list(yaml.safe_load_all((ROOT / "examples" / "full.yaml").read_text()))
    cg = next(d for d in docs if d["kind"] == "ConsumerGroup")
    cg["metadata"]["namespace"] = "shop"
    spec, problems = parse(cg, IMAGE)
    assert problems == [] and spec is not None
    assert spec.group_id == "shop.orders-to-billing" and spec.image == "lagpilot/lagpilot:0.1.0"
    assert spec.target.headers == {"X-Source": "lagpilot", "Content-Type": "application/json"}
    assert spec.target.headers_from_secret == "billing-auth"
    assert (spec.workers, spec.threads) == (3, 8)
    assert spec.kafka.sasl_mechanism == "SCRAM-SHA-512" and spec.kafka.credentials_secret == "kafka-creds"
    assert spec.template.pod_labels == {"team": "billing"}
    assert spec.template.tolerations[0]["key"] == "dedicated"
    assert "podAntiAffinity" in spec.template.affinity
    assert spec.autoscaling.max_workers == 12
    assert spec.rollout.strategy == "Canary" and spec.rollout.canary.partitions == (0, 7)


def test_minimal_example_parses() -> None:
    cg = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    cg["metadata"]["namespace"] = "default"
    spec, problems = parse(cg, IMAGE)
    assert problems == [] and spec is not None and spec.group_id == "default.orders-minimal"


@pytest.mark.parametrize("missing", ["bootstrapServers", "topic", "target"])
def test_missing_required_field_gives_no_spec(missing: str) -> None:
    b = body()
    del b["spec"][missing]
    spec, problems = parse(b, IMAGE)
    assert spec is None
    assert any(p.code == ("NoTopic" if missing == "topic" else "Required") for p in problems)


def test_no_spec_at_all() -> None:
    spec, problems = parse({"metadata": {"name": "x", "namespace": "y"}}, IMAGE)
    assert spec is None and codes(problems) == {("spec", "Required")}


INVALID: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
    ("url scheme", {"target": {"url": "ftp://x/y"}}, ("spec.target.url", "InvalidURL")),
    ("status codes out of range", {"target": {"url": "http://x", "retryCodes": "500-699"}},
     ("spec.target.retryCodes", "InvalidStatusCodes")),
    ("status codes not numbers", {"target": {"url": "http://x", "unavailableCodes": "503,oops"}},
     ("spec.target.unavailableCodes", "InvalidStatusCodes")),
    ("no success code", {"target": {"url": "http://x", "successCodes": " "}},
     ("spec.target.successCodes", "InvalidStatusCodes")),
    ("format enum", {"target": {"url": "http://x", "format": "cloudevents"}}, ("spec.target.format", "NotAllowed")),
    ("mapped header name", {"target": {"url": "http://x", "headerMapping": ["bad name"]}},
     ("spec.target.headerMapping", "InvalidHeaderName")),
    ("idempotency header name", {"target": {"url": "http://x", "idempotencyHeader": "a:b"}},
     ("spec.target.idempotencyHeader", "InvalidHeaderName")),
    ("negative rate", {"target": {"url": "http://x", "maxRequestsPerSecond": -1}},
     ("spec.target.maxRequestsPerSecond", "OutOfRange")),
    ("method enum", {"target": {"url": "http://x", "method": "FETCH"}}, ("spec.target.method", "NotAllowed")),
    ("connection enum", {"target": {"url": "http://x", "connection": "keepalive"}},
     ("spec.target.connection", "NotAllowed")),
    ("timeout range", {"target": {"url": "http://x", "timeoutSeconds": 0}}, ("spec.target.timeoutSeconds",
                                                                             "OutOfRange")),
    ("header name", {"target": {"url": "http://x", "headers": {"Bad Header": "v"}}},
     ("spec.target.headers", "InvalidHeaderName")),
    ("headers type", {"target": {"url": "http://x", "headers": {"A": 1}}}, ("spec.target.headers", "WrongType")),
    ("workers negative", {"workers": -1}, ("spec.workers", "OutOfRange")),
    ("threads zero", {"threads": 0}, ("spec.threads", "OutOfRange")),
    ("threads bool", {"threads": True}, ("spec.threads", "WrongType")),
    ("ordering enum", {"ordering": "global"}, ("spec.ordering", "NotAllowed")),
    ("backoff order", {"retry": {"initialBackoffMs": 500, "maxBackoffMs": 100}},
     ("spec.retry.maxBackoffMs", "BackoffOrder")),
    ("attempts zero", {"retry": {"maxAttempts": 0}}, ("spec.retry.maxAttempts", "OutOfRange")),
    ("dlq is source", {"deadLetterTopic": "orders"}, ("spec.deadLetterTopic", "DeadLetterIsSource")),
    ("dlq name", {"deadLetterTopic": "bad topic"}, ("spec.deadLetterTopic", "InvalidTopicName")),
    ("park is source", {"retry": {"park": {"topic": "orders"}}}, ("spec.retry.park.topic", "ParkIsSource")),
    ("park is dlq", {"deadLetterTopic": "d", "retry": {"park": {"topic": "d"}}},
     ("spec.retry.park.topic", "ParkIsSource")),
    ("park without topic", {"retry": {"park": {"after": "5m"}}}, ("spec.retry.park.topic", "Required")),
    ("park after", {"retry": {"park": {"topic": "p", "after": "5 minutes"}}},
     ("spec.retry.park.after", "InvalidDuration")),
    ("topic name", {"topic": "orders/x"}, ("spec.topic", "InvalidTopicName")),
    ("bootstrap", {"bootstrapServers": "kafka"}, ("spec.bootstrapServers", "InvalidBootstrapServers")),
    ("sasl without mechanism", {"kafka": {"securityProtocol": "SASL_SSL", "credentialsSecret": "c"}},
     ("spec.kafka.saslMechanism", "SaslIncomplete")),
    ("sasl without secret", {"kafka": {"securityProtocol": "SASL_PLAINTEXT", "saslMechanism": "PLAIN"}},
     ("spec.kafka.credentialsSecret", "SaslIncomplete")),
    ("secret without sasl", {"kafka": {"credentialsSecret": "c"}}, ("spec.kafka.securityProtocol",
                                                                    "SaslNotEnabled")),
    ("reserved env prefix", {"template": {"env": [{"name": "LAGPILOT_TOPIC", "value": "x"}]}},
     ("spec.template.env[0].name", "ReservedEnv")),
    ("reserved env downward", {"template": {"env": [{"name": "POD_NAME", "value": "x"}]}},
     ("spec.template.env[0].name", "ReservedEnv")),
    ("reserved label", {"template": {"podLabels": {"lagpilot.io/revision": "x"}}},
     ("spec.template.podLabels", "ReservedLabel")),
    ("worker bounds", {"autoscaling": {"minWorkers": 5, "maxWorkers": 2}}, ("spec.autoscaling.maxWorkers",
                                                                            "WorkerBounds")),
    ("strategy enum", {"rollout": {"strategy": "Big"}}, ("spec.rollout.strategy", "NotAllowed")),
    ("canary string", {"rollout": {"canary": {"partitions": "two"}}}, ("spec.rollout.canary.partitions",
                                                                       "WrongType")),
    ("canary zero", {"rollout": {"canary": {"partitions": 0}}}, ("spec.rollout.canary.partitions", "OutOfRange")),
    ("canary empty list", {"rollout": {"canary": {"partitions": []}}}, ("spec.rollout.canary.partitions",
                                                                         "WrongType")),
    ("canary negative", {"rollout": {"canary": {"partitions": [0, -1]}}}, ("spec.rollout.canary.partitions",
                                                                            "OutOfRange")),
    ("canary duplicate", {"rollout": {"canary": {"partitions": [3, 3]}}}, ("spec.rollout.canary.partitions",
                                                                           "DuplicatePartition")),
    ("canary error rate", {"rollout": {"canary": {"maxErrorRate": 2}}}, ("spec.rollout.canary.maxErrorRate",
                                                                         "OutOfRange")),
    ("paused type", {"paused": "yes"}, ("spec.paused", "WrongType")),
    ("route match field", {"routes": [{"match": {"kee": {"exact": "x"}}}]}, ("spec.routes[0].match", "InvalidRoute")),
    ("route regex", {"routes": [{"match": {"key": {"regex": "("}}}]},
     ("spec.routes[0].match.key.regex", "InvalidRoute")),
    ("route names", {"routes": [{"name": "a"}, {"name": "a"}]}, ("spec.routes[1].name", "InvalidRoute")),
    ("route json path", {"routes": [{"match": {"json": {"path": "a..b", "exists": True}}}]},
     ("spec.routes[0].match.json.path", "InvalidRoute")),
    ("unmatched enum", {"unmatched": "drop"}, ("spec.unmatched", "NotAllowed")),
    ("unmatched dead letter without topic", {"unmatched": "deadLetter"}, ("spec.unmatched", "NoDeadLetterTopic")),
    ("template type", {"template": []}, ("spec.template", "WrongType")),
]


@pytest.mark.parametrize(("case", "patch", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_reports_documented_code(case: str, patch: dict[str, Any], expected: tuple[str, str]) -> None:
    spec, problems = parse(body(patch), IMAGE)
    assert expected in codes(problems), problems
    assert spec is not None  # still usable for reporting, with the default in place of the bad value
    assert describe(problems)


def test_name_too_long_and_invalid_name() -> None:
    _, problems = parse(body(name="x" * 53), IMAGE)
    assert ("metadata.name", "NameTooLong") in codes(problems)
    _, problems = parse(body(name="Orders_1"), IMAGE)
    assert ("metadata.name", "InvalidName") in codes(problems)
    _, problems = parse(body(name="x" * 52), IMAGE)
    assert problems == []


def test_canary_list_is_sorted_and_checked_against_partition_count() -> None:
    spec, problems = parse(body({"rollout": {"strategy": "Canary", "canary": {"partitions": [7, 0]}}}), IMAGE)
    assert spec is not None and not problems
    assert spec.rollout.canary.partitions == (0, 7)
    assert partition_problems(spec, {"orders": 8}) == []
    bad = partition_problems(spec, {"orders": 6})
    assert [(p.field, p.code) for p in bad] == [("spec.rollout.canary.partitions", "NoSuchPartition")]
    assert "no partition 7 (orders has 6)" in bad[0].message


@pytest.mark.parametrize(("fields", "topics", "pattern", "single"), [
    ({"topic": "orders"}, ("orders",), None, "orders"),
    ({"topic": None, "topics": ["orders", "payments"]}, ("orders", "payments"), None, None),
    ({"topic": "orders", "topics": ["payments"]}, ("orders", "payments"), None, None),
    ({"topic": None, "topics": ["orders"]}, ("orders",), None, "orders"),
    ({"topic": None, "topicPattern": "orders-.*"}, (), "orders-.*", None),
    # the group's own dead-letter topic may match its pattern: the pattern never reads it
    ({"topic": None, "topicPattern": "orders-.*", "deadLetterTopic": "orders-dlq"}, (), "orders-.*", None),
])
def test_topics_topic_list_and_pattern(fields: dict[str, Any], topics: tuple[str, ...], pattern: str | None,
                                       single: str | None) -> None:
    b = body({k: v for k, v in fields.items() if v is not None})
    if fields.get("topic", "x") is None:
        del b["spec"]["topic"]
    spec, problems = parse(b, IMAGE)
    assert problems == [] and spec is not None
    assert (spec.topics, spec.topic_pattern, spec.single_topic) == (topics, pattern, single)


@pytest.mark.parametrize(("fields", "where", "code"), [
    ({"topic": None}, "spec.topic", "NoTopic"),
    ({"topics": ["orders", "bad topic"]}, "spec.topics", "InvalidTopicName"),
    ({"topics": ["orders"]}, "spec.topics", "DuplicateTopic"),
    ({"topics": "orders"}, "spec.topics", "WrongType"),
    ({"topicPattern": "orders.*"}, "spec.topicPattern", "TopicsAndPattern"),
    ({"topic": None, "topicPattern": "orders(["}, "spec.topicPattern", "InvalidTopicPattern"),
    ({"topics": ["payments"], "deadLetterTopic": "payments"}, "spec.deadLetterTopic", "DeadLetterIsSource"),
    ({"topics": ["payments"], "retry": {"park": {"topic": "orders-park"}}}, "spec.retry.park.topic",
     "ParkNeedsOneTopic"),
])
def test_topic_selection_problems(fields: dict[str, Any], where: str, code: str) -> None:
    b = body({k: v for k, v in fields.items() if v is not None})
    if "topic" in fields and fields["topic"] is None:
        del b["spec"]["topic"]
    _, problems = parse(b, IMAGE)
    assert (where, code) in codes(problems)


def test_canary_picks_name_topic_partitions_or_a_number_of_every_topic() -> None:
    b = body({"topics": ["payments"],
              "rollout": {"strategy": "Canary", "canary": {"partitions": ["payments:2", 1, "orders:0"]}}})
    spec, problems = parse(b, IMAGE)
    assert spec is not None and not problems
    assert spec.rollout.canary.partitions == (1, PartitionId("orders", 0), PartitionId("payments", 2))
    assert partition_problems(spec, {"orders": 2, "payments": 3}) == []
    bad = partition_problems(spec, {"orders": 1, "payments": 2})
    # 1 exists in payments (not in orders): a bare number needs it in one topic at least
    assert [p.message for p in bad] == ["no partition payments:2 (orders has 1, payments has 2)"]
    _, problems = parse(body({"rollout": {"canary": {"partitions": ["orders:x"]}}}), IMAGE)
    assert ("spec.rollout.canary.partitions", "WrongType") in codes(problems)


def test_perrequest_connection_and_explicit_group_id() -> None:
    spec, _ = parse(body({"groupId": "g1", "target": {"url": "https://x/y", "connection": "perRequest"}}), IMAGE)
    assert spec is not None and spec.group_id == "g1" and spec.target.connection == "perRequest"


def test_number_accepts_int_timeout() -> None:
    spec, problems = parse(body({"target": {"url": "http://x", "timeoutSeconds": 3}}), IMAGE)
    assert not problems and spec is not None and spec.target.timeout_seconds == 3


def test_routes_example_parses_and_the_workers_get_the_same_routes() -> None:
    from lagpilot.routes import load_routes
    from lagpilot_consumer.config import parse as parse_config
    from lagpilot_operator.workload.plan import consumer_env

    cg = yaml.safe_load((ROOT / "examples" / "routes.yaml").read_text())
    cg["metadata"]["namespace"] = "shop"
    spec, problems = parse(cg, IMAGE)
    assert spec is not None and problems == []
    assert [r.name for r in spec.routes] == ["ledger", "refunds", "crm"] and spec.unmatched == "deadLetter"
    env = {e["name"]: e["value"] for e in consumer_env(spec, 20) if "value" in e}
    assert load_routes(env["LAGPILOT_ROUTES"]) == spec.routes
    assert env["LAGPILOT_UNMATCHED"] == "dead-letter"
    cfg = parse_config([], {**env, "POD_NAMESPACE": "shop", "POD_NAME": "w-0"})
    assert cfg.routes == spec.routes and cfg.unmatched == "dead-letter"


def test_no_routes_means_no_routes_env() -> None:
    from lagpilot_operator.workload.plan import consumer_env

    spec, _ = parse(body(), IMAGE)
    assert spec is not None and spec.routes == () and spec.unmatched == "skip"
    names = {e["name"] for e in consumer_env(spec, 20)}
    assert "LAGPILOT_ROUTES" not in names and "LAGPILOT_UNMATCHED" not in names
