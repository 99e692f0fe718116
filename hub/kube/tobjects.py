"""Factories of Kubernetes objects as the API serves them, for tests (after mitmproxy's
`test/tflow.py`): one call makes a realistic pod, service, endpoints or node."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timezone
from typing import Any

_versions = itertools.count(1)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, namespace: str | None, created: float | None, uid: str | None,
          labels: dict[str, str] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or str(uuid.uuid4()),
                            "resourceVersion": str(next(_versions))}
    if namespace is not None:
        meta["namespace"] = namespace
    if created is not None:
        meta["creationTimestamp"] = rfc3339(created)
    if labels:
        meta["labels"] = dict(labels)
    return meta


def tpod(name: str, namespace: str = "default", *, ip: str | None = None, node: str = "node-a",
         phase: str = "Running", started: float | None = None, host_network: bool = False,
         uid: str | None = None, labels: dict[str, str] | None = None, ports: dict[str, int] | None = None,
         ready: bool = True, restarts: int = 0, deleting: bool = False) -> dict[str, Any]:
    """A pod; `ip` None is a pod without an address yet (Pending)."""
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _meta(name, namespace, started, uid, labels),
        "spec": {"nodeName": node, "containers": [{
            "name": "main", "image": "example:1",
            "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in (ports or {}).items()]}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts}]},
    }
    if host_network:
        pod["spec"]["hostNetwork"] = True
    if ip is not None:
        pod["status"]["podIP"] = ip
        pod["status"]["podIPs"] = [{"ip": ip}]
    if started is not None:
        pod["status"]["startTime"] = rfc3339(started)
    if deleting:
        pod["metadata"]["deletionTimestamp"] = rfc3339(started or 0)
    return pod


def tservice(name: str, namespace: str = "default", *, cluster_ip: str | None = "10.96.0.10",
             created: float | None = None, uid: str | None = None,
             external_ips: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
        spec["clusterIPs"] = [cluster_ip]
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace, created, uid, None),
            "spec": spec}


def tendpoints(name: str, namespace: str = "default", *, pods: dict[str, str] | None = None,
               addresses: list[str] | None = None, created: float | None = None,
               uid: str | None = None) -> dict[str, Any]:
    """Endpoints: `pods` {ip: pod name} are addresses with a Pod targetRef; `addresses` have none."""
    listed = [{"ip": ip, "targetRef": {"kind": "Pod", "name": pod, "namespace": namespace}}
              for ip, pod in (pods or {}).items()]
    listed += [{"ip": ip} for ip in addresses or []]
    subsets = [{"addresses": listed, "ports": [{"port": 80, "protocol": "TCP"}]}] if listed else []
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": _meta(name, namespace, created, uid, None),
            "subsets": subsets}


def tnode(name: str, *, internal_ip: str, external_ip: str | None = None, created: float | None = None,
          uid: str | None = None) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": internal_ip}, {"type": "Hostname", "address": name}]
    if external_ip:
        addresses.append({"type": "ExternalIP", "address": external_ip})
    return {"apiVersion": "v1", "kind": "Node", "metadata": _meta(name, None, created, uid, None),
            "status": {"addresses": addresses}}


def bumped(obj: dict[str, Any], **status: Any) -> dict[str, Any]:
    """The same object after an update: a new resourceVersion, `status` fields changed."""
    import copy
    new = copy.deepcopy(obj)
    new["metadata"]["resourceVersion"] = str(next(_versions))
    new.setdefault("status", {}).update(status)
    return new
