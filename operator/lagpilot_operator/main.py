"""`lagpilot-operator`: run the ConsumerGroup operator (kopf) with settings from env and flags."""

from __future__ import annotations

import logging
import os
import socket
import sys
from urllib.parse import urlsplit

import click
import kopf

from lagpilot_operator import handlers
from lagpilot_operator.kube import Kube, load_config
from lagpilot_operator.metrics import metrics, serve
from lagpilot_operator.settings import DEFAULT_LIVENESS, LOG_FORMATS, Settings, from_env, parse_namespaces
from lagpilot_operator.workload.topics import TopicReader


def configure_logging(settings: Settings) -> None:
    fmt = {"text": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}
    kopf.configure(verbose=settings.verbose, log_format=fmt[settings.log_format])
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class StartupError(RuntimeError):
    """Why the operator cannot start, in one line for the user (no traceback)."""


def pod_address() -> str | None:
    return os.environ.get("POD_IP") or None


def liveness_url(settings: Settings) -> str:
    """The liveness endpoint; the default one binds to the pod's own IP when POD_IP is set, like /metrics."""
    url = settings.liveness
    ip = pod_address()
    if url == DEFAULT_LIVENESS and ip:
        url = url.replace("0.0.0.0", f"[{ip}]" if ":" in ip else ip)
    return url


def check_liveness_port(url: str) -> None:
    """Bind the liveness address once before kopf does, so a taken port is one clear line, not a traceback
    from inside kopf's event loop."""
    if not url:
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "0.0.0.0", parts.port or 80
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port} for the liveness endpoint "
                               f"(LAGPILOT_LIVENESS / --liveness): {exc.strerror}") from None


def start_metrics(settings: Settings) -> None:
    addr = os.environ.get("LAGPILOT_METRICS_BIND") or pod_address() or "0.0.0.0"
    try:
        serve(settings.metrics_port, addr)
    except OSError as exc:
        raise StartupError(f"cannot listen on {addr}:{settings.metrics_port} for /metrics "
                           f"(LAGPILOT_METRICS_PORT / --metrics-port): {exc.strerror}") from None


def run(settings: Settings, kubeconfig: str | None = None) -> None:
    configure_logging(settings)
    liveness = liveness_url(settings)
    check_liveness_port(liveness)
    metrics()
    start_metrics(settings)
    try:
        api = load_config(kubeconfig)
    except Exception as exc:
        raise StartupError(f"cannot load the cluster configuration ({kubeconfig or 'in-cluster'}): {exc}") from None
    ctx = handlers.Context(settings=settings, kube=Kube(api),
                           topics=TopicReader(timeout=settings.broker_timeout_seconds))
    registry = kopf.OperatorRegistry()
    handlers.register(ctx, registry)
    standalone = True if settings.peering == "standalone" else None
    peering_name = None if settings.peering in ("auto", "standalone") else settings.peering
    kopf_settings = kopf.OperatorSettings()
    if peering_name:
        kopf_settings.peering.mandatory = True
    namespaces = list(settings.watch_namespaces)
    if not standalone:
        found = ctx.kube.ensure_peering(peering_name or "default", namespaces)
        logging.getLogger("lagpilot.operator").info("peering: %s", "; ".join(found) or
                                                    "kopf peering CRDs not installed, running standalone")
    requested = settings.assignment_mode_requested
    if requested and requested != settings.assignment_mode:
        logging.getLogger("lagpilot.operator").warning(
            "LAGPILOT_ASSIGNMENT_MODE=%r is neither k8s nor kafka; using %s", requested, settings.assignment_mode)
    logging.getLogger("lagpilot.operator").info(
        "watching %s; consumer image %s; metrics :%d; peering %s; assignment %s",
        ", ".join(namespaces) or "all namespaces", settings.consumer_image, settings.metrics_port,
        settings.peering, settings.assignment_mode)
    kopf.run(registry=registry, settings=kopf_settings, standalone=standalone, peering_name=peering_name,
             priority=settings.priority, liveness_endpoint=liveness or None,
             clusterwide=not namespaces, namespaces=namespaces)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--namespace", "namespaces", multiple=True,
              help="Namespace to watch (repeatable; comma lists allowed). Env LAGPILOT_WATCH_NAMESPACES; "
                   "none = all namespaces.")
@click.option("--consumer-image", help="Default worker image. Env LAGPILOT_CONSUMER_IMAGE.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), help="Env LAGPILOT_LOG_FORMAT.")
@click.option("--metrics-port", type=int, help="Prometheus /metrics port (0 = off). Env LAGPILOT_METRICS_PORT.")
@click.option("--liveness", help="kopf liveness endpoint URL ('' = off). Env LAGPILOT_LIVENESS.")
@click.option("--standalone", is_flag=True, default=None,
              help="Never use kopf peering (only safe with one replica). Env LAGPILOT_PEERING=standalone.")
@click.option("--peering", help="Peering object name; makes peering mandatory. Env LAGPILOT_PEERING.")
@click.option("--priority", type=int, help="kopf peering priority. Env LAGPILOT_PEERING_PRIORITY.")
@click.option("--resync-seconds", type=float, help="Periodic reconcile interval. Env LAGPILOT_RESYNC_SECONDS.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
              help="kubeconfig file (default: in-cluster, then KUBECONFIG).")
@click.option("-v", "--verbose", is_flag=True, default=None)
def main(namespaces: tuple[str, ...], consumer_image: str | None, log_format: str | None,
         metrics_port: int | None, liveness: str | None, standalone: bool | None, peering: str | None,
         priority: int | None, resync_seconds: float | None, kubeconfig: str | None,
         verbose: bool | None) -> None:
    """Run the lagpilot ConsumerGroup operator."""
    try:
        base = from_env(os.environ)
    except ValueError as exc:
        sys.exit(f"lagpilot-operator: {exc}")
    settings = base.with_overrides(
        watch_namespaces=parse_namespaces(",".join(namespaces)) if namespaces else None,
        consumer_image=consumer_image, log_format=log_format, metrics_port=metrics_port, liveness=liveness,
        peering="standalone" if standalone else peering, priority=priority, resync_seconds=resync_seconds,
        verbose=verbose)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    try:
        run(settings, kubeconfig or os.environ.get("KUBECONFIG"))
    except StartupError as exc:
        sys.exit(f"lagpilot-operator: {exc}")


if __name__ == "__main__":
    main()
