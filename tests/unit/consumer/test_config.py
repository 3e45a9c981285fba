from __future__ import annotations

from pathlib import Path

import pytest

from lagpilot.protocol import PartitionId
from lagpilot_consumer.config import ConfigError, parse, subscription

pytestmark = pytest.mark.unit

BASE = ["--bootstrap-servers", "k:9092", "--topic", "t", "--group-id", "g", "--target-url", "http://x/y"]


def test_defaults_and_static_from_partitions() -> None:
    c = parse([*BASE, "--partitions", "0,3,6"], {})
    assert (c.assignment, c.partitions, c.threads, c.ordering, c.method, c.timeout_seconds) == \
        ("static", frozenset({PartitionId("t", 0), PartitionId("t", 3), PartitionId("t", 6)}), 8, "key", "POST", 10.0)
    assert (c.http_port, c.bind, c.connection) == (8080, "0.0.0.0", "pooled")
    assert parse(BASE, {}).assignment == "kafka"


def test_env_fills_in_and_argv_wins() -> None:
    env = {"LAGPILOT_BOOTSTRAP_SERVERS": "env:1", "LAGPILOT_TOPIC": "et", "LAGPILOT_GROUP_ID": "eg",
           "LAGPILOT_TARGET_URL": "https://t/", "LAGPILOT_THREADS": "32", "LAGPILOT_PARTITIONS": "1-3",
           "POD_IP": "10.1.2.3"}
    c = parse(["--threads", "4"], env)
    assert (c.bootstrap_servers, c.topics, c.threads, c.partitions, c.bind) == \
        ("env:1", ("et",), 4, frozenset(PartitionId("et", p) for p in (1, 2, 3)), "10.1.2.3")


def test_headers_from_json_and_env_prefix() -> None:
    c = parse([*BASE, "--headers", '{"X-A": "1"}'], {"LAGPILOT_HEADER_Authorization": "Bearer s3cret",
                                                     "LAGPILOT_HEADER_X_Api_Key": "k"})
    assert dict(c.headers) == {"X-A": "1", "Authorization": "Bearer s3cret", "X-Api-Key": "k"}


def test_header_mapping_variable_is_not_a_header() -> None:
    c = parse(BASE, {"LAGPILOT_HEADER_MAPPING": "x-tenant", "LAGPILOT_HEADER_X_A": "1"})
    assert dict(c.headers) == {"X-A": "1"}


def mounted_secret(root: Path, data: dict[str, str]) -> Path:
    """A directory laid out as the kubelet's atomic writer makes it: ..data -> a timestamped dir, and each
    key a symlink through ..data."""
    stamp = root / "..2026_12_03_09_00_00.123"
    stamp.mkdir(parents=True)
    for k, v in data.items():
        (stamp / k).write_text(v)
    (root / "..data").symlink_to(stamp.name)
    for k in data:
        (root / k).symlink_to(f"..data/{k}")
    return root


def test_headers_from_a_mounted_secret_directory(tmp_path: Path) -> None:
    d = mounted_secret(tmp_path / "h", {"Authorization": "Bearer s3cret\n", "X_Api_Key": "k"})
    c = parse([*BASE, "--headers", '{"X-A": "1"}'], {"LAGPILOT_HEADERS_DIR": str(d)})
    assert dict(c.headers) == {"X-A": "1", "Authorization": "Bearer s3cret", "X-Api-Key": "k"}


@pytest.mark.parametrize(("data", "why"), [
    ({"Authorization": "Bearer a\nb"}, "line break"),
    ({"Bad Name": "v"}, "not an HTTP token"),
])
def test_a_bad_header_file_is_refused_without_its_value(tmp_path: Path, data: dict[str, str], why: str) -> None:
    d = mounted_secret(tmp_path / "h", data)
    with pytest.raises(ConfigError, match=why) as err:
        parse([*BASE, "--headers-dir", str(d)], {})
    assert "Bearer a" not in str(err.value)


def test_an_unreadable_headers_dir_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--headers-dir .*cannot read it"):
        parse([*BASE, "--headers-dir", str(tmp_path / "missing")], {})


def test_kafka_properties_from_env_and_file(tmp_path: Path) -> None:
    f = tmp_path / "k.properties"
    f.write_text("# comment\nssl.ca.location = /ca.pem\n")
    c = parse(BASE, {"LAGPILOT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "LAGPILOT_KAFKA_SASL_USERNAME": "u",
                     "LAGPILOT_KAFKA_CONFIG_FILE": str(f)})
    assert dict(c.kafka_config) == {"ssl.ca.location": "/ca.pem", "security.protocol": "SASL_SSL",
                                    "sasl.username": "u"}


def test_k8s_mode_takes_pod_identity_from_env() -> None:
    c = parse([*BASE, "--assignment", "k8s", "--assignment-configmap", "cg-assignment"],
              {"POD_NAMESPACE": "ns", "POD_NAME": "w-0"})
    assert (c.namespace, c.pod_name, c.assignment_configmap) == ("ns", "w-0", "cg-assignment")


@pytest.mark.parametrize(("args", "env", "needle"), [
    (["--threads", "0"], {}, "--threads 0"),
    (["--threads", "many"], {}, "not an integer"),
    ([], {"LAGPILOT_THREADS": "x"}, "LAGPILOT_THREADS"),
    (["--ordering", "random"], {}, "must be one of key, partition, none"),
    (["--headers", "[1]"], {}, "JSON object"),
    (["--headers", "{"], {}, "not JSON"),
    (["--target-url", "ftp://x"], {}, "http:// or https://"),
    (["--partitions", "a"], {}, "--partitions"),
    (["--partitions", "1", "--assignment", "kafka"], {}, "only valid with --assignment static"),
    (["--assignment", "static"], {}, "missing --partitions"),
    (["--assignment", "k8s"], {}, "missing --namespace"),
    (["--retry-codes", "5xx"], {}, "--retry-codes"),
    (["--initial-backoff-ms", "500", "--max-backoff-ms", "100"], {}, "--max-backoff-ms"),
    (["--no-such-flag"], {}, "unrecognized arguments"),
    ([], {"LAGPILOT_KAFKA_ENABLE_AUTO_COMMIT": "true"}, "enable.auto.commit"),
    (["--kafka-config-file", "/nonexistent/x"], {}, "cannot read"),
    (["--routes", "{"], {}, "invalid --routes (argv): routes: is not JSON"),
    ([], {"LAGPILOT_ROUTES": '[{"match": {"key": {"regex": "("}}}]'},
     "invalid --routes (LAGPILOT_ROUTES): routes[0].match.key.regex: is not a valid regular expression"),
    (["--unmatched", "dead-letter"], {}, "needs --dead-letter-topic"),
    (["--unmatched", "drop"], {}, "must be one of skip, dead-letter"),
    (["--park-topic", "t", "--partitions", "0"], {}, "invalid --park-topic 't' (argv): must differ from --topic"),
    (["--park-topic", "d", "--dead-letter-topic", "d", "--partitions", "0"], {}, "must differ"),
    (["--park-topic", "p"], {}, "needs partitions owned by --assignment k8s or static"),
    (["--park-topic", "p", "--partitions", "0", "--park-after-seconds", "-1"], {}, "--park-after-seconds"),
])
def test_invalid_values_name_the_value_and_why(args: list[str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse([*BASE, *args], env)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def ids(*texts: str) -> frozenset[PartitionId]:
    return frozenset(PartitionId(t, int(p)) for t, _, p in (x.rpartition(":") for x in texts))


K8S = ["--assignment", "k8s", "--namespace", "ns", "--pod-name", "w-0", "--assignment-configmap", "g-assignment"]


@pytest.mark.parametrize(("topic", "extra", "topics", "partitions", "default_topic"), [
    pytest.param("a", ["--partitions", "0-1"], ("a",), ids("a:0", "a:1"), "a", id="one-topic-bare-numbers"),
    pytest.param("a,b", ["--partitions", "a:0,1"], ("a", "b"), ids("a:0", "a:1", "b:1"), None,
                 id="named-and-bare-number-of-every-topic"),
    pytest.param(" a , b,a ", ["--partitions", "b:2-3,a:0"], ("a", "b"), ids("b:2", "b:3", "a:0"), None,
                 id="spaces-duplicates-ranges"),
    pytest.param("a,b", ["--partitions", "0"], ("a", "b"), ids("a:0", "b:0"), None, id="bare-number-every-topic"),
    pytest.param("", K8S, (), frozenset(), None, id="k8s-without-topic"),
    pytest.param("a", K8S, ("a",), frozenset(), "a", id="k8s-one-topic-reads-format-1"),
    pytest.param("a,b", [], ("a", "b"), frozenset(), None, id="kafka-two-topics"),
])
def test_topics_and_partitions(topic: str, extra: list[str], topics: tuple[str, ...],
                               partitions: frozenset[PartitionId], default_topic: str | None) -> None:
    c = parse(["--bootstrap-servers", "k:1", "--group-id", "g", "--target-url", "http://x/y",
               *(["--topic", topic] if topic else []), *extra], {})
    assert (c.topics, c.partitions, c.default_topic) == (topics, partitions, default_topic)


def test_topic_list_from_env_and_pattern_subscription() -> None:
    c = parse(["--bootstrap-servers", "k:1", "--group-id", "g", "--target-url", "http://x/y"],
              {"LAGPILOT_TOPIC": "a,b", "LAGPILOT_TOPIC_PATTERN": "orders-.*"})
    assert c.assignment == "kafka" and subscription(c) == ["a", "b", "^(?:orders-.*)$"]
    only = parse(["--bootstrap-servers", "k:1", "--group-id", "g", "--target-url", "http://x/y",
                  "--topic-pattern", "x|y"], {})
    assert only.topics == () and subscription(only) == ["^(?:x|y)$"]


@pytest.mark.parametrize(("args", "needle"), [
    pytest.param(["--topic", "a,b", "--park-topic", "p", "--partitions", "0"],
                 "the retry park serves one source topic: park partition p is read together with partition p",
                 id="park-with-two-topics"),
    pytest.param(["--topic", "a", "--topic-pattern", "a.*", "--park-topic", "p"],
                 "the retry park serves one source topic", id="park-with-pattern"),
    pytest.param([*K8S, "--park-topic", "p"], "the retry park serves one source topic", id="park-k8s-no-topic"),
    pytest.param(["--topic", "a", "--partitions", "c:0"], "names topic 'c', which is not in --topic",
                 id="partition-of-unknown-topic"),
    pytest.param(["--topic", "a", "--partitions", "a:x"], "invalid --partitions", id="partition-not-a-number"),
    pytest.param(["--topic", "a:b", "--partitions", "0"], "not a Kafka topic name", id="colon-in-topic"),
    pytest.param(["--topic", "a", "--partitions", "0", "--topic-pattern", "a.*"],
                 "only valid with --assignment kafka", id="pattern-with-static"),
    pytest.param(["--topic-pattern", "(unclosed"], "not a regular expression", id="bad-pattern"),
    pytest.param(["--topic", ","], "missing --topic", id="empty-topic-list"),
])
def test_topic_errors_are_one_line(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(["--bootstrap-servers", "k:1", "--group-id", "g", "--target-url", "http://x/y", *args], {})
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_required() -> None:
    with pytest.raises(ConfigError, match="missing --topic"):
        parse(["--bootstrap-servers", "k:1"], {})


@pytest.mark.parametrize(("env", "needle"), [
    pytest.param({"LAGPILOT_HEADER_Authorization": "Bearer s3cret\n"}, "line break", id="secret-trailing-newline"),
    pytest.param({"LAGPILOT_HEADER_X_Name": "caf\u00e9\u2603"}, "Latin-1", id="not-latin-1"),
    pytest.param({"LAGPILOT_HEADERS": '{"Bad Name": "v"}'}, "not an HTTP token", id="bad-name"),
    pytest.param({"LAGPILOT_HEADERS": '{"X-A": "one\\r\\nX-Injected: two"}'}, "line break", id="header-injection"),
])
def test_a_header_that_every_request_would_fail_on_is_rejected_at_start(env: dict[str, str], needle: str) -> None:
    """Issue 13: rejected with a clear line naming the header and where it came from; never the value."""
    with pytest.raises(ConfigError) as err:
        parse(BASE, env)
    text = str(err.value)
    assert needle in text and "s3cret" not in text and "two" not in text
    assert "LAGPILOT_HEADER" in text


def test_kafka_property_values_from_mounted_files(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("p@ss w0rd\n")  # a Secret written with a trailing newline
    c = parse(BASE, {"LAGPILOT_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
                     "LAGPILOT_KAFKA_SASL_USERNAME": "u"})
    assert dict(c.kafka_config) == {"sasl.password": "p@ss w0rd", "sasl.username": "u"}
    with pytest.raises(ConfigError) as err:
        parse(BASE, {"LAGPILOT_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})
    assert "LAGPILOT_KAFKA_SASL_PASSWORD_FILE" in str(err.value) and "No such file" in str(err.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("earliest", "earliest"), ("latest", "latest"),
    ("2026-11-30T12:00:00Z", 1796040000.0), ("2026-11-30T13:00:00+01:00", 1796040000.0),
])
def test_start_from(value: str, expected: object) -> None:
    assert parse([*BASE, "--start-from", value], {}).start_from == expected


@pytest.mark.parametrize("value", ["yesterday", "2026", "now"])
def test_start_from_refuses_what_it_cannot_read(value: str) -> None:
    with pytest.raises(ConfigError, match="--start-from"):
        parse([*BASE, "--start-from", value], {})


def test_target_tls_and_auth_options(tmp_path: Path) -> None:
    for name in ("ca.crt", "tls.crt", "tls.key", "secret", "token"):
        (tmp_path / name).write_text("x")
    c = parse([*BASE, "--target-ca-file", str(tmp_path / "ca.crt"), "--target-cert-file", str(tmp_path / "tls.crt"),
               "--target-key-file", str(tmp_path / "tls.key"), "--oauth-token-url", "https://idp/token",
               "--oauth-client-id", "me", "--oauth-client-secret-file", str(tmp_path / "secret")], {})
    assert (c.target_ca_file, c.oauth_client_id, c.target_tls_verify) == (str(tmp_path / "ca.crt"), "me", True)
    assert parse([*BASE, "--target-tls-verify", "false"], {}).target_tls_verify is False
    bad = [
        (["--target-cert-file", str(tmp_path / "tls.crt")], "give both or neither"),
        (["--target-ca-file", str(tmp_path / "nope")], "no such file"),
        (["--oauth-token-url", "https://idp/token"], "go together"),
        (["--oauth-token-url", "ftp://idp", "--oauth-client-id", "me", "--oauth-client-secret-file",
          str(tmp_path / "secret")], "http(s) URL"),
        (["--bearer-token-file", str(tmp_path / "token"), "--oauth-token-url", "https://i/t", "--oauth-client-id",
          "me", "--oauth-client-secret-file", str(tmp_path / "secret")], "not together"),
    ]
    for extra, why in bad:
        with pytest.raises(ConfigError, match=why.replace("(", r"\(").replace(")", r"\)")):
            parse([*BASE, *extra], {})
