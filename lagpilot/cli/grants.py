"""`lagpilot grant-secret|revoke-secret`: let the operator read named Secrets of a namespace (the Kafka
credentials its own broker connection needs), with the caller's own rights (lagpilot.secretgrants)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from lagpilot.cli.cluster import EXIT_NOT_OK, EXIT_USAGE, Cluster, cluster_options, fail
from lagpilot.secretgrants import DEFAULT_OPERATOR, Operator, after_grant, after_revoke, grant_objects

OPERATOR_HELP = "the operator's ServiceAccount as NAMESPACE/NAME (the chart's documented install is the default)"


def _operator(text: str) -> Operator:
    try:
        return Operator.parse(text)
    except ValueError as exc:
        fail(EXIT_USAGE, str(exc))


def _update(cluster: Cluster, operator: Operator, change: Callable[[Any], list[str]], verb: str) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    rbac = client.RbacAuthorizationV1Api(cluster.connect())
    ns = cluster.namespace
    try:
        try:
            current: Any = rbac.api_client.sanitize_for_serialization(  # camelCase, as the API has it
                rbac.read_namespaced_role(operator.role_name, ns))
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        names = change(current)
        objects = grant_objects(ns, operator, names)
        if not objects:
            if current is not None:
                rbac.delete_namespaced_role_binding(operator.role_name, ns)
                rbac.delete_namespaced_role(operator.role_name, ns)
        else:
            role, binding = objects
            if current is None:
                rbac.create_namespaced_role(ns, role)
            else:
                role["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                rbac.replace_namespaced_role(operator.role_name, ns, role)
            try:
                rbac.create_namespaced_role_binding(ns, binding)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                rbac.replace_namespaced_role_binding(operator.role_name, ns, binding)
    except ApiException as exc:
        if exc.status == 403:
            fail(EXIT_NOT_OK, f"the API server refused to {verb} in namespace {ns!r}: only someone who may "
                 "read these Secrets (get secrets) and manage Roles there can grant them "
                 f"({exc.reason})")
        if exc.status == 409:
            fail(EXIT_NOT_OK, f"Role {ns}/{operator.role_name} changed meanwhile; run the command again")
        raise
    table = Table(title=f"Secrets {operator.namespace}/{operator.service_account} may read in {ns}")
    table.add_column("secret")
    for n in names:
        table.add_row(n)
    if not names:
        table.add_row("(none)")
    Console().print(table)


def secret_names_and_operator(command: Callable[..., None]) -> Callable[..., None]:
    """NAMES..., --operator and the cluster options: what both commands take."""
    command = cluster_options(command)
    command = click.option("--operator", "operator_sa", envvar="LAGPILOT_OPERATOR_SERVICEACCOUNT",
                           default=DEFAULT_OPERATOR, show_default=True, help=OPERATOR_HELP)(command)
    return click.argument("names", nargs=-1, required=True)(command)


@click.command("grant-secret")
@secret_names_and_operator
def grant_secret(names: tuple[str, ...], operator_sa: str, cluster: Cluster) -> None:
    """Let the operator read the Secrets NAMES (by name: get only) in the namespace: the Kafka credentials
    a ConsumerGroup names, for the operator's own metadata and lag reads. The API server checks that you
    may read them yourself. Workers need no grant: the kubelet mounts their Secrets."""
    _update(cluster, _operator(operator_sa), lambda role: after_grant(role, names), "grant them")


@click.command("revoke-secret")
@secret_names_and_operator
def revoke_secret(names: tuple[str, ...], operator_sa: str, cluster: Cluster) -> None:
    """Take back what grant-secret gave: the operator may no longer read the Secrets NAMES here."""
    _update(cluster, _operator(operator_sa), lambda role: after_revoke(role, names), "change the grant")


COMMANDS = [grant_secret, revoke_secret]
