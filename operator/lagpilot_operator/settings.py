"""Operator settings from the environment (LAGPILOT_*), overridable by command-line flags in main.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lagpilot import __version__

DEFAULT_IMAGE = f"lagpilot/lagpilot:{__version__}"
LOG_FORMATS = ("text", "json", "full")
PEERING_MODES = ("auto", "standalone")
ASSIGNMENT_MODES = ("k8s", "kafka")
DEFAULT_LIVENESS = "http://0.0.0.0:8091/healthz"


@dataclass(frozen=True)
class Settings:
    """`watch_namespaces` empty = all namespaces. `peering` is "auto" (kopf peering when its CRDs are
    installed, standalone otherwise), "standalone", or a peering object name (then peering is mandatory)."""

    watch_namespaces: tuple[str, ...] = ()
    consumer_image: str = DEFAULT_IMAGE
    log_format: str = "text"
    metrics_port: int = 8090
    liveness: str = DEFAULT_LIVENESS
    peering: str = "auto"
    priority: int = 0
    resync_seconds: float = 30.0
    # A group that is idle, healthy and unchanged is reconciled again only this often (spread per group):
    # every change it depends on in the API server arrives as a watch event anyway. (controller-runtime's
    # default SyncPeriod is 10 hours; an hour keeps the safety net at ~3% of a core for 1 000 groups.)
    full_resync_seconds: float = 3600.0
    broker_timeout_seconds: float = 3.0
    fence_timeout_seconds: int = 15
    # How workers get partitions: "k8s" (the operator's hand-off grants them) or "kafka" (group rebalancing,
    # no partition-precise rollouts). Env LAGPILOT_ASSIGNMENT_MODE; an unknown value falls back to k8s.
    assignment_mode: str = "k8s"
    assignment_mode_requested: str = ""
    verbose: bool = False
    # Patterns (fnmatch, host:port) a ConsumerGroup's bootstrapServers must match; empty: any. Env
    # LAGPILOT_ALLOWED_BOOTSTRAP_SERVERS (comma-separated), chart value allowedBootstrapServers.
    allowed_bootstrap_servers: tuple[str, ...] = ()

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be a number, got {raw!r}") from exc


def parse_namespaces(raw: str) -> tuple[str, ...]:
    return tuple(sorted({n.strip() for n in raw.split(",") if n.strip()}))


def from_env(env: Mapping[str, str]) -> Settings:
    log_format = env.get("LAGPILOT_LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LAGPILOT_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    mode = env.get("LAGPILOT_ASSIGNMENT_MODE", "").strip().lower()
    return Settings(
        watch_namespaces=parse_namespaces(env.get("LAGPILOT_WATCH_NAMESPACES", "")),
        consumer_image=env.get("LAGPILOT_CONSUMER_IMAGE", "").strip() or DEFAULT_IMAGE,
        log_format=log_format,
        metrics_port=_int(env, "LAGPILOT_METRICS_PORT", 8090),
        liveness=env.get("LAGPILOT_LIVENESS", "").strip() or DEFAULT_LIVENESS,
        peering=env.get("LAGPILOT_PEERING", "").strip() or "auto",
        priority=_int(env, "LAGPILOT_PEERING_PRIORITY", 0),
        resync_seconds=_float(env, "LAGPILOT_RESYNC_SECONDS", 30.0),
        full_resync_seconds=_float(env, "LAGPILOT_FULL_RESYNC_SECONDS", 3600.0),
        broker_timeout_seconds=_float(env, "LAGPILOT_BROKER_TIMEOUT_SECONDS", 3.0),
        fence_timeout_seconds=_int(env, "LAGPILOT_FENCE_TIMEOUT_SECONDS", 15),
        assignment_mode=mode if mode in ASSIGNMENT_MODES else "k8s",
        assignment_mode_requested=mode,
        allowed_bootstrap_servers=tuple(p.strip() for p in env.get("LAGPILOT_ALLOWED_BOOTSTRAP_SERVERS", "")
                                        .split(",") if p.strip()),
    )
