"""Reading the fields the hub needs from Kubernetes objects, as the API sends them (JSON dicts).

No I/O here: the watches hand these functions decoded objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def spec(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def status(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, dict) else {}


def key(obj: dict[str, Any]) -> str:
    """namespace/name (name alone for cluster-scoped objects): what watch events identify."""
    m = meta(obj)
    namespace = m.get("namespace") or ""
    return f"{namespace}/{m.get('name', '')}" if namespace else str(m.get("name", ""))


def uid(obj: dict[str, Any]) -> str:
    """The object's uid; a re-created object with the same name is another object."""
    m = meta(obj)
    return str(m.get("uid") or key(obj))


def name(obj: dict[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace(obj: dict[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def resource_version(obj: dict[str, Any]) -> str | None:
    value = meta(obj).get("resourceVersion")
    return str(value) if value else None


def parse_time(text: Any) -> float | None:
    """An RFC 3339 timestamp of the API ("2025-01-02T03:04:05Z") as epoch seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def created(obj: dict[str, Any]) -> float | None:
    return parse_time(meta(obj).get("creationTimestamp"))


def terminating(obj: dict[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


# -- pods -----------------------------------------------------------------------------------
def pod_ips(pod: dict[str, Any]) -> list[str]:
    """The pod's own addresses (both families when dual-stack); none for host-network pods,
    whose address is their node's."""
    if spec(pod).get("hostNetwork"):
        return []
    st = status(pod)
    ips = [str(item["ip"]) for item in st.get("podIPs") or [] if isinstance(item, dict) and item.get("ip")]
    if not ips and st.get("podIP"):
        ips = [str(st["podIP"])]
    return ips


def pod_phase(pod: dict[str, Any]) -> str:
    return str(status(pod).get("phase") or "")


def pod_holds_ips(pod: dict[str, Any]) -> bool:
    """False once the pod has finished: a Succeeded or Failed pod keeps `podIP` in its status,
    but its address was given back and may already be another pod's."""
    return pod_phase(pod) not in TERMINAL_PHASES


def pod_started(pod: dict[str, Any]) -> float | None:
    """When the pod's address began to be used, as near as the object says: the kubelet's
    `startTime` (set before the sandbox and its address exist), else its creation."""
    return parse_time(status(pod).get("startTime")) or created(pod)


def pod_node(pod: dict[str, Any]) -> str:
    return str(spec(pod).get("nodeName") or "")


def container_port(pod: dict[str, Any], port_name: str) -> int | None:
    """The port named `port_name` of the pod's containers (hostPort when set)."""
    for container in spec(pod).get("containers") or []:
        for port in (container or {}).get("ports") or []:
            if isinstance(port, dict) and port.get("name") == port_name:
                value = port.get("hostPort") or port.get("containerPort")
                if isinstance(value, int) and 0 < value < 65536:
                    return value
    return None


# -- services, endpoints, nodes ---------------------------------------------------------------
def service_ips(service: dict[str, Any]) -> list[str]:
    """The addresses a service answers on: cluster IPs (not "None" of headless services),
    external IPs and load-balancer ingress IPs."""
    sp = spec(service)
    ips: list[str] = []
    for ip in sp.get("clusterIPs") or ([sp["clusterIP"]] if sp.get("clusterIP") else []):
        if isinstance(ip, str) and ip and ip != "None":
            ips.append(ip)
    ips += [ip for ip in sp.get("externalIPs") or [] if isinstance(ip, str) and ip]
    for ingress in (status(service).get("loadBalancer") or {}).get("ingress") or []:
        if isinstance(ingress, dict) and ingress.get("ip"):
            ips.append(str(ingress["ip"]))
    return list(dict.fromkeys(ips))


def endpoint_addresses_without_pod(endpoints: dict[str, Any]) -> list[str]:
    """Addresses of an Endpoints object that are not a pod's (no targetRef to a Pod): the
    API server behind `default/kubernetes`, a database outside the cluster behind a
    selector-less service. Pod addresses are named after their pods."""
    ips: list[str] = []
    for subset in endpoints.get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        for address in (subset.get("addresses") or []) + (subset.get("notReadyAddresses") or []):
            if not isinstance(address, dict) or not address.get("ip"):
                continue
            target = address.get("targetRef")
            if isinstance(target, dict) and target.get("kind") == "Pod":
                continue
            ips.append(str(address["ip"]))
    return list(dict.fromkeys(ips))


NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP")


def node_ips(node: dict[str, Any]) -> list[str]:
    ips = [str(a["address"]) for a in status(node).get("addresses") or []
           if isinstance(a, dict) and a.get("type") in NODE_ADDRESS_TYPES and a.get("address")]
    return list(dict.fromkeys(ips))


def node_pod_cidrs(node: dict[str, Any]) -> list[str]:
    """The pod networks allocated to the node (spec.podCIDRs); empty when the network plugin
    allocates addresses itself (e.g. a cloud VPC plugin), as many do."""
    sp = spec(node)
    cidrs = sp.get("podCIDRs") or ([sp["podCIDR"]] if sp.get("podCIDR") else [])
    return [str(c) for c in cidrs if isinstance(c, str) and c]
