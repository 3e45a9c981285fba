"""Pure planner: a ConsumerGroupSpec -> the Kubernetes objects that should exist for it.

Nothing here talks to the API. Every object carries an ownerReference to the ConsumerGroup (so deleting the
CR garbage-collects them) and the standard labels. Worker pods are configured only through `LAGPILOT_*`
environment variables (the consumer reads exactly these) plus the downward API; credentials only by Secret
reference, mounted as files (workload.kafka_client), never as literals or env values.

Revisions: everything that reaches the worker pod template is hashed into `lagpilot.io/revision`, and each
revision runs as its own Deployment `<cg>-<revision>`, so any worker-affecting change makes a new
Deployment (the hand-off moves partitions between revisions).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lagpilot.protocol import (
    API_VERSION,
    ASSIGNMENT_KEY,
    KIND,
    LABEL_CG,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_REVISION,
    MANAGER,
    WORKER_APP,
    AssignmentDoc,
)
from lagpilot.routes import routes_document
from lagpilot_operator.resource.spec import ConsumerGroupSpec
from lagpilot_operator.workload import kafka_client
from lagpilot_operator.workload.sizing import effective_workers

HTTP_PORT = 8080
DEFAULT_FENCE_TIMEOUT_SECONDS = 15

# How long a worker lets fetched records finish when it releases partitions or stops.
DRAIN_SECONDS = 30


@dataclass(frozen=True)
class Owner:
    """The ConsumerGroup that owns the planned objects."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class Plan:
    """Desired objects, kept equal to the plan. The assignment ConfigMap is not among them: the hand-off
    creates it (and rebuilds it from the workers' reports when it is lost), so a reconcile never resets it."""

    revision: str
    deployment: dict[str, Any]
    applied: tuple[dict[str, Any], ...]

    @property
    def deployment_name(self) -> str:
        return str(self.deployment["metadata"]["name"])


def worker_account_name(cg: str) -> str:
    return f"{cg}-worker"


def service_name(cg: str) -> str:
    return f"{cg}-workers"


def deployment_name(cg: str, revision: str) -> str:
    return f"{cg}-{revision}"


def group_labels(cg: str) -> dict[str, str]:
    """Labels on every object of one ConsumerGroup (and the selector for all its worker pods)."""
    return {LABEL_NAME: WORKER_APP, LABEL_INSTANCE: cg, LABEL_MANAGED_BY: MANAGER, LABEL_CG: cg}


def status_selector(cg: str) -> str:
    """status.selector (scale subresource): every worker pod of the group, all revisions."""
    return f"{LABEL_CG}={cg}"


def _meta(name: str, owner: Owner, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": dict(labels or group_labels(owner.name)),
            "ownerReferences": [owner.reference()]}


def _env_value(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def consumer_env(spec: ConsumerGroupSpec, fence_timeout_seconds: int, assignment_mode: str = "k8s"
                 ) -> list[dict[str, Any]]:
    """The worker's environment: every consumer flag as LAGPILOT_<FLAG>, then the downward API, then the
    user's template.env (which may not use reserved names; spec validation rejects that)."""
    t = spec.target
    env = [
        _env_value("LAGPILOT_BOOTSTRAP_SERVERS", spec.bootstrap_servers),
        _env_value("LAGPILOT_GROUP_ID", spec.group_id),
        _env_value("LAGPILOT_TARGET_URL", t.url),
        _env_value("LAGPILOT_METHOD", t.method),
    ]
    # The topics as the spec names them, never as resolved: a topic created under a pattern reaches the
    # workers through their grants (topic:partition), without a new revision of the pod template.
    if spec.topics:
        env.insert(1, _env_value("LAGPILOT_TOPIC", ",".join(spec.topics)))
    elif assignment_mode == "kafka" and spec.topic_pattern is not None:
        env.insert(1, _env_value("LAGPILOT_TOPIC_PATTERN", spec.topic_pattern))
    if t.headers:
        env.append(_env_value("LAGPILOT_HEADERS", json.dumps(dict(t.headers), sort_keys=True)))
    env += [
        _env_value("LAGPILOT_TIMEOUT_SECONDS", _format_number(t.timeout_seconds)),
        _env_value("LAGPILOT_CONNECTION", "per-request" if t.connection == "perRequest" else "pooled"),
        _env_value("LAGPILOT_THREADS", spec.threads),
        _env_value("LAGPILOT_ORDERING", spec.ordering),
        _env_value("LAGPILOT_ASSIGNMENT", assignment_mode),
        _env_value("LAGPILOT_ASSIGNMENT_CONFIGMAP", spec.assignment_configmap),
        _env_value("LAGPILOT_FENCE_TIMEOUT_SECONDS", fence_timeout_seconds),
        _env_value("LAGPILOT_MAX_ATTEMPTS", spec.retry.max_attempts),
        _env_value("LAGPILOT_INITIAL_BACKOFF_MS", spec.retry.initial_backoff_ms),
        _env_value("LAGPILOT_MAX_BACKOFF_MS", spec.retry.max_backoff_ms),
        _env_value("LAGPILOT_HTTP_PORT", HTTP_PORT),
        _env_value("LAGPILOT_DRAIN_SECONDS", DRAIN_SECONDS),
    ]
    for var, codes in (("LAGPILOT_SUCCESS_CODES", t.success_codes), ("LAGPILOT_RETRY_CODES", t.retry_codes),
                       ("LAGPILOT_UNAVAILABLE_CODES", t.unavailable_codes)):
        if codes is not None:
            env.append(_env_value(var, codes))
    if t.format != "raw":
        env.append(_env_value("LAGPILOT_FORMAT", t.format))
    if t.header_mapping:
        env.append(_env_value("LAGPILOT_HEADER_MAPPING", ",".join(t.header_mapping)))
    if t.idempotency_header:
        env.append(_env_value("LAGPILOT_IDEMPOTENCY_HEADER", t.idempotency_header))
    if t.max_requests_per_second:
        env.append(_env_value("LAGPILOT_MAX_REQUESTS_PER_SECOND", _format_number(t.max_requests_per_second)))
    if spec.dead_letter_topic:
        env.append(_env_value("LAGPILOT_DEAD_LETTER_TOPIC", spec.dead_letter_topic))
    if spec.retry.park_topic:
        env.append(_env_value("LAGPILOT_PARK_TOPIC", spec.retry.park_topic))
        env.append(_env_value("LAGPILOT_PARK_AFTER_SECONDS", _format_number(spec.retry.park_after_seconds)))
    if spec.routes:
        env.append(_env_value("LAGPILOT_ROUTES", routes_document(spec.routes)))
    if spec.unmatched == "deadLetter":
        env.append(_env_value("LAGPILOT_UNMATCHED", "dead-letter"))
    if spec.start_from != "earliest":
        env.append(_env_value("LAGPILOT_START_FROM", spec.start_from))
    env += kafka_client.worker_env(kafka_client.client_settings(spec.kafka))
    env += kafka_client.target_env(spec.target)
    env += [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("POD_IP", "status.podIP"),
        _field_env("POD_UID", "metadata.uid"),
    ]
    env += [dict(e) for e in spec.template.env]
    return env


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


HEADERS_VOLUME = "target-headers"
HEADERS_DIR = "/etc/lagpilot/target-headers"  # spec.target.headersFromSecret, one file per header


def pod_template(spec: ConsumerGroupSpec, fence_timeout_seconds: int = DEFAULT_FENCE_TIMEOUT_SECONDS,
                 revision: str | None = None, assignment_mode: str = "k8s") -> dict[str, Any]:
    """The worker pod template; with revision=None, the revision label is left out (that form is hashed)."""
    tpl = spec.template
    labels = {**tpl.pod_labels, **group_labels(spec.name)}
    if revision is not None:
        labels[LABEL_REVISION] = revision
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(HTTP_PORT),
                   "prometheus.io/path": "/metrics", **tpl.pod_annotations}
    container: dict[str, Any] = {
        "name": "consumer",
        "image": spec.image,
        "command": ["lagpilot-consumer"],
        "env": consumer_env(spec, fence_timeout_seconds, assignment_mode),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 2),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    kafka_volumes, kafka_mounts = kafka_client.worker_volumes(kafka_client.worker_materials(spec.kafka,
                                                                                             spec.target))
    container["volumeMounts"] += kafka_mounts
    if spec.target.headers_from_secret:
        # Files, not envFrom: a header's value (often a credential) is then in no process environment.
        kafka_volumes.append({"name": HEADERS_VOLUME, "secret": {"secretName": spec.target.headers_from_secret,
                                                                 "defaultMode": 0o440}})
        container["volumeMounts"].append({"name": HEADERS_VOLUME, "mountPath": HEADERS_DIR, "readOnly": True})
        container["env"].append({"name": "LAGPILOT_HEADERS_DIR", "value": HEADERS_DIR})
    if tpl.resources:
        container["resources"] = dict(tpl.resources)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": worker_account_name(spec.name),
        "automountServiceAccountToken": True,
        # Long enough to finish in-flight deliveries and commit before SIGKILL.
        # SIGTERM: the worker drains (DRAIN_SECONDS), then waits for requests on the wire (target timeout).
        "terminationGracePeriodSeconds": int(DRAIN_SECONDS + math.ceil(spec.target.timeout_seconds) + 15),
        # fsGroup: mounted Secret files (mode 0440) are readable by the worker's group only.
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *kafka_volumes],
    }
    if tpl.node_selector:
        pod_spec["nodeSelector"] = dict(tpl.node_selector)
    if tpl.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tpl.tolerations]
    if tpl.affinity:
        pod_spec["affinity"] = dict(tpl.affinity)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def revision_of(spec: ConsumerGroupSpec, fence_timeout_seconds: int = DEFAULT_FENCE_TIMEOUT_SECONDS,
                assignment_mode: str = "k8s") -> str:
    """10 hex chars of SHA-256 over the canonical JSON of the pod template: changes iff the workers would."""
    template = pod_template(spec, fence_timeout_seconds, assignment_mode=assignment_mode)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def deployment(spec: ConsumerGroupSpec, owner: Owner, replicas: int,
               fence_timeout_seconds: int = DEFAULT_FENCE_TIMEOUT_SECONDS, assignment_mode: str = "k8s"
               ) -> dict[str, Any]:
    rev = revision_of(spec, fence_timeout_seconds, assignment_mode)
    labels = {**group_labels(spec.name), LABEL_REVISION: rev}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(deployment_name(spec.name, rev), owner, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {LABEL_CG: spec.name, LABEL_REVISION: rev}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": pod_template(spec, fence_timeout_seconds, revision=rev, assignment_mode=assignment_mode),
        },
    }


def service_account(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(worker_account_name(owner.name), owner)}


def role(spec: ConsumerGroupSpec, owner: Owner) -> dict[str, Any]:
    """Least privilege for the hand-off protocol: read/watch the group's one assignment ConfigMap, and
    write the worker's own Lease. (Lease create cannot be limited by resourceNames in RBAC.)"""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(worker_account_name(owner.name), owner),
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [spec.assignment_configmap],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "create", "update", "patch"]},
        ],
    }


def role_binding(owner: Owner) -> dict[str, Any]:
    name = worker_account_name(owner.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def service(owner: Owner) -> dict[str, Any]:
    """Headless Service over all worker pods of the group (every revision), for metrics scraping."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(owner.name), owner),
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_CG: owner.name},
            "ports": [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}],
            "publishNotReadyAddresses": True,
        },
    }


def assignment_configmap(spec: ConsumerGroupSpec, owner: Owner, doc: AssignmentDoc | None = None
                         ) -> dict[str, Any]:
    """The ConfigMap that carries the assignment document (the hand-off's only shared state)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec.assignment_configmap, owner),
        "data": {ASSIGNMENT_KEY: (doc or AssignmentDoc()).to_json()},
    }


def plan(spec: ConsumerGroupSpec, owner: Owner, replicas: int,
         fence_timeout_seconds: int = DEFAULT_FENCE_TIMEOUT_SECONDS, assignment_mode: str = "k8s") -> Plan:
    dep = deployment(spec, owner, replicas, fence_timeout_seconds, assignment_mode)
    return Plan(
        revision=dep["metadata"]["labels"][LABEL_REVISION],
        deployment=dep,
        applied=(service_account(owner), role(spec, owner), role_binding(owner), service(owner)),
    )


def desired_workers(spec: ConsumerGroupSpec, status: Mapping[str, Any] | None = None) -> int:
    """Worker count to run: spec.workers, or with autoscaling on the autoscaler's status.workers."""
    return effective_workers(spec, status)
