"""Resources, Status errors and selectors of the Kubernetes API double (tests/support/kubeapi.py).

No I/O: the table of resources the double serves (what discovery lists), the Status objects
the real API answers errors with, and label/field selectors as the real API parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str                    # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()    # "status" here: main-resource writes ignore .status
    generation: bool = False              # metadata.generation bumps when the spec changes
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """pods, deployments.apps: how the real API names a resource in its messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    Resource("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "log", "portforward"),
             categories=("all",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",), categories=("all",)),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"),
             generation=True, categories=("all",)),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), generation=True,
             categories=("all",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"),
             generation=True, categories=("all",)),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale"),
             generation=True, categories=("all",)),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
)
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def resource_for(api_version: str, kind: str) -> Resource:
    try:
        return BY_KIND[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the double does not serve {kind} in {api_version or 'v1'}") from None


def group_versions() -> dict[str, list[Resource]]:
    groups: dict[str, list[Resource]] = {}
    for resource in RESOURCES:
        groups.setdefault(resource.group, []).append(resource)
    return groups


def discovery_resources(group: str, version: str) -> list[dict[str, Any]]:
    """APIResourceList.resources for one group/version, subresources included."""
    out: list[dict[str, Any]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                 "kind": r.kind, "verbs": VERBS}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub in r.subresources:
            verbs = {"status": ["get", "patch", "update"], "log": ["get"], "portforward": ["create", "get"],
                     "finalize": ["update"], "scale": ["get", "patch", "update"]}[sub]
            kind = {"log": "Pod", "portforward": "PodPortForwardOptions", "scale": "Scale"}.get(sub, r.kind)
            out.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                        "kind": kind, "verbs": verbs})
    return out


# ---- Status errors -----------------------------------------------------------------------------

REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
           500: "InternalError"}


class ApiError(Exception):
    """An answer of the API that is a metav1.Status with status Failure."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.metadata = metadata or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": dict(self.metadata),
                                "status": "Failure", "message": self.message, "reason": self.reason,
                                "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    return ApiError(404, f'{resource.qualified} "{name}" not found',
                    details={"name": name, "group": resource.group, "kind": resource.plural})


def already_exists(resource: Resource, name: str) -> ApiError:
    return ApiError(409, f'{resource.qualified} "{name}" already exists', "AlreadyExists",
                    details={"name": name, "group": resource.group, "kind": resource.plural})


def modified_conflict(resource: Resource, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and try again",
                    details={"name": name, "group": resource.group, "kind": resource.plural})


def invalid(resource: Resource, name: str, field_path: str, detail: str, cause_type: str = "FieldValueInvalid"
            ) -> ApiError:
    return ApiError(422, f'{resource.kind} "{name}" is invalid: {field_path}: {detail}',
                    details={"name": name, "group": resource.group, "kind": resource.kind,
                             "causes": [{"reason": cause_type, "message": detail, "field": field_path}]})


def forbidden(user: str, verb: str, resource: Resource, subresource: str | None, namespace: str | None,
              name: str | None) -> ApiError:
    """The authorizer's 403, worded as the real API words it."""
    what = f'{resource.qualified} "{name}"' if name else resource.qualified
    res = f"{resource.plural}/{subresource}" if subresource else resource.plural
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return ApiError(403, f'{what} is forbidden: User "{user}" cannot {verb} resource "{res}" in API group '
                    f'"{resource.group}" {scope}',
                    details={**({"name": name} if name else {}), "group": resource.group, "kind": resource.plural})


# ---- selectors ---------------------------------------------------------------------------------

_LABEL_KEY = r"(?:[a-z0-9A-Z.-]+/)?[a-zA-Z0-9][-a-zA-Z0-9_.]*"
_VALUE = r"[a-zA-Z0-9._-]*"
_REQUIREMENT = re.compile(
    rf"^\s*(?:(?P<not>!)\s*(?P<nkey>{_LABEL_KEY})"
    rf"|(?P<key>{_LABEL_KEY})\s*(?:(?P<op>==|=|!=)\s*(?P<value>{_VALUE})"
    rf"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$")


@dataclass
class Requirement:
    key: str
    op: str                      # = != in notin exists !exists
    values: list[str] = field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        return not has or value not in self.values     # notin


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label_selector(text: str | None) -> list[Requirement]:
    """The label selector syntax of the API (a=b, a!=b, a in (x,y), a notin (x), a, !a)."""
    if not text or not text.strip():
        return []
    requirements = []
    for part in _split_top_level(text):
        match = _REQUIREMENT.match(part)
        if not match:
            raise ApiError(400, f"unable to parse requirement: {part.strip()!r}: found unexpected "
                           "token in label selector")
        if match["not"]:
            requirements.append(Requirement(match["nkey"], "!exists"))
        elif match["setop"]:
            values = [v.strip() for v in match["values"].split(",") if v.strip()]
            requirements.append(Requirement(match["key"], match["setop"], values))
        elif match["op"]:
            requirements.append(Requirement(match["key"], "!=" if match["op"] == "!=" else "=",
                                            [match["value"]]))
        else:
            requirements.append(Requirement(match["key"], "exists"))
    return requirements


# The field selectors the real API accepts, per resource (metadata.* for all).
FIELD_LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "pods": {"spec.nodeName": ("spec", "nodeName"), "status.phase": ("status", "phase"),
             "spec.serviceAccountName": ("spec", "serviceAccountName"),
             "status.podIP": ("status", "podIP"), "spec.restartPolicy": ("spec", "restartPolicy")},
    "namespaces": {"status.phase": ("status", "phase")},
    "nodes": {"spec.unschedulable": ("spec", "unschedulable")},
    "secrets": {"type": ("type",)},
    "services": {"spec.clusterIP": ("spec", "clusterIP"), "spec.type": ("spec", "type")},
}


@dataclass
class FieldRequirement:
    path: tuple[str, ...]
    equal: bool
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        node: Any = obj
        for key in self.path:
            node = node.get(key) if isinstance(node, dict) else None
        text = "" if node is None else (str(node).lower() if isinstance(node, bool) else str(node))
        return (text == self.value) == self.equal


def parse_field_selector(text: str | None, resource: Resource) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    out = []
    for part in text.split(","):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not match:
            raise ApiError(400, f"invalid selector: {part.strip()!r}; can't understand {part.strip()!r}")
        name, op, value = match.groups()
        if name in ("metadata.name", "metadata.namespace"):
            path: tuple[str, ...] = ("metadata", name.split(".")[1])
        elif name in FIELD_LABELS.get(resource.plural, {}):
            path = FIELD_LABELS[resource.plural][name]
        else:
            raise ApiError(400, f'field label not supported: {name}')
        out.append(FieldRequirement(path, op != "!=", value))
    return out


@dataclass
class Selector:
    labels: list[Requirement] = field(default_factory=list)
    fields: list[FieldRequirement] = field(default_factory=list)
    namespace: str | None = None

    def matches(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(f.matches(obj) for f in self.fields)


NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def name_problem(resource: Resource, name: str) -> str | None:
    """Why a name is not valid for this resource (RFC 1123), or None."""
    if not name:
        return "name or generateName is required"
    label_only = resource.plural in ("namespaces", "services")
    pattern, limit = (LABEL_NAME_RE, 63) if label_only else (NAME_RE, 253)
    if resource.plural in ("clusterroles", "clusterrolebindings", "roles", "rolebindings"):
        return None if "/" not in name and name not in (".", "..") else f'Invalid value: "{name}"'
    if len(name) > limit or not pattern.match(name):
        kind = "RFC 1123 label" if label_only else "RFC 1123 subdomain"
        return (f'Invalid value: "{name}": a lowercase {kind} must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character")
    return None


def unknown_fields(obj: dict[str, Any], version: tuple[int, int]) -> list[str]:
    """Fields of `obj` that the Kubernetes OpenAPI schema of `version` does not declare (what
    fieldValidation=Strict refuses), as the API spells them: spec.template.spec.containers[0].bogus.
    Schemas from the kubernetes-validate package (offline). Other schema errors are not reported
    here: for an apply patch (a partial object) required fields may legitimately be missing."""
    import jsonschema
    import referencing
    from kubernetes_validate import utils

    wanted = f"{version[0]}.{version[1]}"
    release = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(wanted)][-1]
    api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
    folder = f"kubernetes-json-schema/v{release}-local-strict"
    try:
        schema = utils.schema_contents(f"{folder}/{obj['kind'].lower()}-{api_version}.json", wanted)
    except FileNotFoundError:
        return []
    definitions = utils.schema_contents(f"{folder}/_definitions.json", wanted)
    registry = referencing.Resource.from_contents(definitions) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry())
    found = []
    for error in jsonschema.validators.Draft202012Validator(schema, registry=registry).iter_errors(obj):
        if error.validator != "additionalProperties":
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        for extra in sorted(set(error.instance) - set(error.schema.get("properties") or {})):
            found.append(f"{where}.{extra}" if where else extra)
    return found
