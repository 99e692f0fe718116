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
  system:serviceaccount:NS:NAME; members of system:masters bypass authorization (cluster-admin);
- escalation prevention: creating or updating a Role/ClusterRole, or a binding to one, needs
  every permission it grants held already at that scope, or the `escalate` (roles) / `bind`
  (bindings, on the role named) verb.
Nothing grants by default: no bootstrap roles beyond the ones a test stores (discovery paths are
not authorized here, as the bootstrap system:discovery role allows them to everyone).
"""

from __future__ import annotations

import json
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
    full = f"{res.plural}/{request.subresource}" if request.subresource else res.plural
    return _rule_allows(rule, res.group, full, request.verb, request.name)


def _rule_allows(rule: dict[str, Any], group: str, resource: str, verb: str, name: str | None) -> bool:
    """`resource` as RBAC spells it (pods, pods/log); a "*" asked for is matched only by "*"."""
    if not any(g in ("*", group) for g in rule.get("apiGroups") or []):
        return False
    if not any(v in ("*", verb) for v in rule.get("verbs") or []):
        return False
    plural, _, sub = resource.partition("/")
    wanted = {"*", resource}
    if sub:
        wanted |= {f"*/{sub}", f"{plural}/*"}
    if not wanted & set(rule.get("resources") or []):
        return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


@dataclass(frozen=True)
class Policy:
    """The RBAC objects stored now."""
    roles: list[dict[str, Any]]
    cluster_roles: list[dict[str, Any]]
    bindings: list[dict[str, Any]]
    cluster_bindings: list[dict[str, Any]]


def authorize(identity: Identity, request: Attributes, roles: Iterable[dict[str, Any]],
              cluster_roles: Iterable[dict[str, Any]], bindings: Iterable[dict[str, Any]],
              cluster_bindings: Iterable[dict[str, Any]]) -> bool:
    """True when some binding of `identity` grants a rule that allows `request`."""
    res = request.resource
    full = f"{res.plural}/{request.subresource}" if request.subresource else res.plural
    return allows(identity, Policy(list(roles), list(cluster_roles), list(bindings), list(cluster_bindings)),
                  res.group, full, request.verb, request.namespace, request.name)


def allows(identity: Identity, policy: Policy, group: str, resource: str, verb: str, namespace: str | None,
           name: str | None) -> bool:
    if identity.admin:
        return True
    roles, cluster_roles, bindings, cluster_bindings = (policy.roles, policy.cluster_roles, policy.bindings,
                                                        policy.cluster_bindings)
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

    def grants(rule: dict[str, Any]) -> bool:
        return _rule_allows(rule, group, resource, verb, name)

    for binding in cluster_bindings:
        if _bound(binding.get("subjects"), identity, None) and any(
                grants(rule) for rule in rules_of(binding.get("roleRef"), None)):
            return True
    if namespace is None:               # cluster-scoped, or across all namespaces: ClusterRoleBindings only
        return False
    for binding in bindings:
        where = binding["metadata"].get("namespace")
        if where != namespace or not _bound(binding.get("subjects"), identity, where):
            continue
        if any(grants(rule) for rule in rules_of(binding.get("roleRef"), where)):
            return True
    return False


def not_held(identity: Identity, policy: Policy, rules: Any, namespace: str | None) -> list[dict[str, Any]]:
    """The rules `identity` does not hold itself in `namespace` (None: cluster-wide), one per
    apiGroup x resource x name with the verbs it lacks (as the API compacts them): what RBAC's
    escalation check refuses to let it grant (RBAC docs: "Privilege escalation prevention and
    bootstrapping")."""
    missing: dict[tuple[str, str, str | None], list[str]] = {}
    for rule in rules if isinstance(rules, list) else []:
        if not isinstance(rule, dict) or rule.get("nonResourceURLs"):
            continue
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    for name in rule.get("resourceNames") or [None]:
                        if not allows(identity, policy, group, resource, verb, namespace, name):
                            missing.setdefault((group, resource, name), []).append(verb)
    return [{"apiGroups": [group], "resources": [resource], "verbs": verbs,
             **({"resourceNames": [name]} if name else {})} for (group, resource, name), verbs in missing.items()]


def escalation(identity: Identity, kind: str, name: str, missing: list[dict[str, Any]]) -> ApiError:
    """The 403 the real API answers an attempt to grant permissions one does not hold."""
    def spell(rule: dict[str, Any]) -> str:
        parts = [f"APIGroups:[{' '.join(json.dumps(g) for g in rule['apiGroups'])}]",
                 f"Resources:[{' '.join(json.dumps(r) for r in rule['resources'])}]"]
        if rule.get("resourceNames"):
            parts.append(f"ResourceNames:[{' '.join(json.dumps(n) for n in rule['resourceNames'])}]")
        parts.append(f"Verbs:[{' '.join(json.dumps(v) for v in rule['verbs'])}]")
        return "{" + ", ".join(parts) + "}"
    groups = ",".join(json.dumps(g) for g in identity.groups)
    return ApiError(403, f'{kind}.rbac.authorization.k8s.io "{name}" is forbidden: user "{identity.user}" '
                    f"(groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n"
                    + "\n".join(spell(r) for r in missing),
                    details={"name": name, "group": "rbac.authorization.k8s.io", "kind": kind})
