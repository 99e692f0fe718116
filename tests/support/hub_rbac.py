"""The hub's identity in the Kubernetes API double: its ServiceAccount and the RBAC `tap` applies.

The objects come from the manifests as `tap` renders them (shark.kube.render), applied the way
tap applies them (server-side, field manager kubectl-shark), so a verb or resource missing from
manifests/rbac.yaml makes the hub's requests fail with the API's 403 in these tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shark.kube.render import DeployOptions, render
from support.kubeapi import KubeAPI

RBAC_KINDS = ("ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
HUB_ACCOUNT = "shark-hub"


def rbac_objects(release_namespace: str = "shark") -> list[dict[str, Any]]:
    return [obj for obj in render(DeployOptions(release_namespace=release_namespace)) if obj["kind"] in RBAC_KINDS]


def apply_hub_rbac(kube: KubeAPI, release_namespace: str = "shark",
                   edit: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """Applies the rendered ServiceAccounts, Roles and bindings (after `edit`, which may change
    them in place). The hub then acts as HUB_ACCOUNT: `kube.write_service_account(dir,
    release_namespace, HUB_ACCOUNT)` is what its pod gets mounted."""
    objects = rbac_objects(release_namespace)
    if edit is not None:
        edit(objects)
    for obj in objects:
        kube.apply(obj, manager="kubectl-shark")
