"""The kinds kubectl-shark creates or reads, where the API serves them, and its labels."""

from __future__ import annotations

from dataclasses import dataclass

MANAGER = "kubectl-shark"                   # server-side apply field manager
MANAGED_BY = "app.kubernetes.io/managed-by"
OURS = f"{MANAGED_BY}={MANAGER}"             # the label selector of everything we create
COMPONENT = "app.kubernetes.io/component"
HUB_SELECTOR = "app.kubernetes.io/name=shark,app.kubernetes.io/component=hub"
WORKER_SELECTOR = "app.kubernetes.io/name=shark,app.kubernetes.io/component=worker"
HUB = "shark-hub"                            # the Deployment, Service and ServiceAccount
HUB_STATE = "shark-hub-state"                # the PersistentVolumeClaim of tap --hub-storage
WORKER = "shark-worker"                      # the DaemonSet and ServiceAccount
HUB_PORT = 8899
DEFAULT_RELEASE_NAMESPACE = "shark"


@dataclass(frozen=True)
class Kind:
    kind: str
    api_version: str
    plural: str
    namespaced: bool

    @property
    def prefix(self) -> str:
        return f"/apis/{self.api_version}" if "/" in self.api_version else f"/api/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        scope = f"/namespaces/{namespace}" if self.namespaced and namespace else ""
        return f"{self.prefix}{scope}/{self.plural}" + (f"/{name}" if name else "")

    @property
    def resource(self) -> str:
        """How kubectl names it: pods, deployments.apps, clusterroles.rbac.authorization.k8s.io."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural


KINDS = {k.kind: k for k in (
    Kind("Namespace", "v1", "namespaces", False),
    Kind("ServiceAccount", "v1", "serviceaccounts", True),
    Kind("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", False),
    Kind("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    Kind("Role", "rbac.authorization.k8s.io/v1", "roles", True),
    Kind("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings", True),
    Kind("Service", "v1", "services", True),
    Kind("Secret", "v1", "secrets", True),
    Kind("PersistentVolumeClaim", "v1", "persistentvolumeclaims", True),
    Kind("Deployment", "apps/v1", "deployments", True),
    Kind("DaemonSet", "apps/v1", "daemonsets", True),
    Kind("Pod", "v1", "pods", True),
    Kind("Node", "v1", "nodes", False),
)}
# Dependencies first: a namespace before what lives in it, RBAC before the pods that use it.
APPLY_ORDER = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
               "PersistentVolumeClaim", "Deployment", "DaemonSet")
# What clean deletes, dependents first; the namespace last, and only if we created it. The
# Secret (the token, created by tap, not applied) goes once no pod reads it, the hub's volume once
# no pod mounts it.
CLEAN_ORDER = ("DaemonSet", "Deployment", "PersistentVolumeClaim", "Service", "Secret", "RoleBinding", "Role", "ServiceAccount",
               "ClusterRoleBinding", "ClusterRole")


def kind_of(obj: dict) -> Kind:
    try:
        return KINDS[obj["kind"]]
    except KeyError:
        raise KeyError(f"kubectl-shark does not handle kind {obj.get('kind')!r}") from None
