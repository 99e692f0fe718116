"""Authentication and RBAC authorization of the Kubernetes API double (tests/support/kubeapi.py).

No I/O: who a request is (from its bearer token) and whether the Roles, ClusterRoles and their
bindings stored in the double let that identity do a verb on a resource, as the real API's RBAC
authorizer decides (https://kubernetes.io/docs/reference/access-authn-authz/rbac/):
- a ClusterRoleBinding grants its ClusterRole's rules everywhere (cluster-scoped resources and
  every namespace, lists across all namespaces included);
- a RoleBinding grants its Role's (or a ClusterRole's) rules in its own namespace only;
- a rule matches when its apiGroups, resources (`pods`, `pods/log`, `*`, `*/log`, `pods/*`) and
  verbs hold the request's, and its resourceNames (if any) hold the object's name; a create, or a
  list/watch without a `metadata.name` field selector, has no name, so resourceNames never match it;
- subjects: User by name, Group by the identity's groups, ServiceAccount as
  system:serviceaccount:NS:NAME; members of system:masters bypass authorization (cluster-admin).
Nothing grants by default: no bootstrap roles beyond the ones a test stores (discovery paths are
not authorized here, as the bootstrap system:discovery role allows them to everyone).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from support.kubeapi_model import ApiError, Resource

MASTERS = "system:masters"
ANONYMOUS_USER = "system:anonymous"


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return MASTERS in self.groups


ANONYMOUS = Identity(ANONYMOUS_USER, ("system:unauthenticated",))


def service_account_identity(namespace: str, name: str) -> Identity:
    """What the real API makes of a service account's token."""
    return Identity(f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))


def service_account_of(identity: Identity) -> tuple[str, str] | None:
    parts = identity.user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        return parts[2], parts[3]
    return None


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


@dataclass(frozen=True)
class Attributes:
    """What the authorizer is asked: may `verb` be done on this resource?"""
    verb: str
    resource: Resource
    subresource: str | None
    namespace: str | None
    name: str | None


def _bound(subjects: Any, identity: Identity, binding_namespace: str | None) -> bool:
    for subject in subjects or []:
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User" and name == identity.user:
            return True
        if kind == "Group" and name in identity.groups:
            return True
        if kind == "ServiceAccount":
            namespace = subject.get("namespace") or binding_namespace
            if identity.user == f"system:serviceaccount:{namespace}:{name}":
                return True
    return False


def rule_allows(rule: dict[str, Any], request: Attributes) -> bool:
    res = request.resource
    if not any(g in ("*", res.group) for g in rule.get("apiGroups") or []):
        return False
    if not any(v in ("*", request.verb) for v in rule.get("verbs") or []):
        return False
    full = f"{res.plural}/{request.subresource}" if request.subresource else res.plural
    wanted = {"*", full}
    if request.subresource:
        wanted |= {f"*/{request.subresource}", f"{res.plural}/*"}
    if not wanted & set(rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


def authorize(identity: Identity, request: Attributes, roles: Iterable[dict[str, Any]],
              cluster_roles: Iterable[dict[str, Any]], bindings: Iterable[dict[str, Any]],
              cluster_bindings: Iterable[dict[str, Any]]) -> bool:
    """True when some binding of `identity` grants a rule that allows `request`."""
    if identity.admin:
        return True
    by_cluster_role = {r["metadata"]["name"]: r for r in cluster_roles}
    by_role = {(r["metadata"].get("namespace"), r["metadata"]["name"]): r for r in roles}

    def rules_of(ref: Any, namespace: str | None) -> list[dict[str, Any]]:
        if not isinstance(ref, dict):
            return []
        if ref.get("kind") == "ClusterRole":
            role = by_cluster_role.get(ref.get("name"))
        elif ref.get("kind") == "Role" and namespace is not None:
            role = by_role.get((namespace, ref.get("name")))
        else:
            role = None
        return [r for r in (role or {}).get("rules") or [] if isinstance(r, dict)]

    for binding in cluster_bindings:
        if _bound(binding.get("subjects"), identity, None) and any(
                rule_allows(rule, request) for rule in rules_of(binding.get("roleRef"), None)):
            return True
    if request.namespace is None:       # cluster-scoped, or across all namespaces: ClusterRoleBindings only
        return False
    for binding in bindings:
        namespace = binding["metadata"].get("namespace")
        if namespace != request.namespace or not _bound(binding.get("subjects"), identity, namespace):
            continue
        if any(rule_allows(rule, request) for rule in rules_of(binding.get("roleRef"), namespace)):
            return True
    return False
