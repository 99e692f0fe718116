"""What `clean` removes from the nodes: the workers' stores (pcap segments keep the raw bytes,
credentials included; docs/OPERATIONS.md), with one short pod per node that ran a worker.

Each pod runs on its node (spec.nodeName, every taint tolerated: it must reach wherever a worker
ran), mounts the directory that holds the worker's hostPath store and deletes that store, with
no capability (root owns the store) and no service account token. It runs once the workers have
stopped, so nothing writes behind it. A pod that does not finish in time is reported with where
the data stays; `clean` goes on.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shark.errors import KubeApiError
from shark.kube.client import Action, Cluster
from shark.kube.resources import KINDS, MANAGED_BY, MANAGER, WORKER_SELECTOR
from shark.kube.rollout import pod_state

COMPONENT = "cleanup"
SELECTOR = f"app.kubernetes.io/name=shark,app.kubernetes.io/component={COMPONENT}"
MOUNT = "/node-stores"


@dataclass(frozen=True)
class NodeStores:
    """Where the workers kept their stores, as the DaemonSet said before clean deleted it."""
    nodes: tuple[str, ...]
    path: str                 # the hostPath of the worker's storage volume
    image: str
    pull_policy: str


def stores_of(daemonset: dict[str, Any] | None, worker_pods: list[dict[str, Any]]) -> NodeStores | None:
    """The nodes with a worker pod and the store path they used; None without a DaemonSet or
    without a hostPath store."""
    if daemonset is None:
        return None
    spec = daemonset["spec"]["template"]["spec"]
    path = next((v["hostPath"]["path"] for v in spec.get("volumes") or []
                 if v.get("name") == "storage" and "hostPath" in v), None)
    container = next((c for c in spec.get("containers") or [] if c.get("name") == "worker"), None)
    nodes = sorted({(p.get("spec") or {}).get("nodeName") for p in worker_pods} - {None, ""})
    if not path or container is None or posixpath.normpath(path) in ("/", "."):
        return None
    return NodeStores(tuple(nodes), posixpath.normpath(path), container.get("image", ""),
                      container.get("imagePullPolicy", "IfNotPresent"))


def pod_name(node: str) -> str:
    return f"shark-cleanup-{hashlib.sha256(node.encode()).hexdigest()[:12]}"


def cleanup_pod(namespace: str, node: str, stores: NodeStores) -> dict[str, Any]:
    parent, leaf = posixpath.split(stores.path)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(node), "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "shark", "app.kubernetes.io/part-of": "kubectl-shark",
                                MANAGED_BY: MANAGER, "app.kubernetes.io/component": COMPONENT}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": COMPONENT, "image": stores.image, "imagePullPolicy": stores.pull_policy,
                "command": ["rm", "-rf", "--", f"{MOUNT}/{leaf}"],
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                              "limits": {"cpu": "200m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "stores", "mountPath": MOUNT}],
            }],
            "volumes": [{"name": "stores", "hostPath": {"path": parent or "/", "type": "Directory"}}],
        },
    }


def wipe_stores(cluster: Cluster, namespace: str, stores: NodeStores, timeout: float,
                say: Callable[[str], None], poll: float = 1.0,
                sleep: Callable[[float], Any] = time.sleep) -> list[str]:
    """Delete the stores on their nodes; the lines of what could not be done (empty: all went)."""
    pods_kind = KINDS["Pod"]
    deadline = time.monotonic() + timeout
    while cluster.list(pods_kind, namespace, WORKER_SELECTOR):      # nothing may write behind us
        if time.monotonic() > deadline:
            return [f"the workers did not stop within {timeout:g}s; the stored packets stay in {stores.path} on "
                    f"{', '.join(stores.nodes)}"]
        sleep(poll)
    started: dict[str, str] = {}
    problems: list[str] = []
    for node in stores.nodes:
        pod = cleanup_pod(namespace, node, stores)
        try:
            cluster.request("POST", pods_kind.path(namespace), Action("create", pods_kind, namespace,
                                                                      pod["metadata"]["name"]), body=pod)
        except KubeApiError as error:
            if error.status != 409:       # 409: a clean before was interrupted; its pod does the same
                problems.append(f"{node}: cannot start the cleanup pod: {error.message}; the stored packets stay "
                                f"in {stores.path} there")
                continue
        started[node] = pod["metadata"]["name"]
    waiting = dict(started)
    while waiting:
        for node, name in list(waiting.items()):
            found = cluster.get(pods_kind, name, namespace)
            phase = ((found or {}).get("status") or {}).get("phase")
            if phase == "Succeeded":
                say(f"{node}: stored packets removed ({stores.path})")
                del waiting[node]
            elif phase == "Failed" or found is None:
                why = pod_state(found).describe() if found else "the pod was deleted"
                problems.append(f"{node}: the cleanup pod failed ({why}); the stored packets stay in {stores.path} "
                                "there")
                del waiting[node]
        if waiting and time.monotonic() > deadline:
            for node, name in waiting.items():
                found = cluster.get(pods_kind, name, namespace)
                why = pod_state(found).describe() if found else "gone"
                problems.append(f"{node}: the cleanup pod did not finish within {timeout:g}s ({why}); the stored "
                                f"packets may stay in {stores.path} there")
            break
        if waiting:
            sleep(poll)
    for name in started.values():
        cluster.delete(pods_kind, name, namespace)
    return problems
