"""Who each address is (pod, service, node), as the hub last said (`PUT /targets {names}`).

Dissection stamps these names into the entries it indexes, so an entry keeps the name its
address had when it was captured, and KFL on `src.name`/`dst.namespace` runs at the worker.
With `cluster_nets` (the pod networks of the cluster's nodes) an address that is in none of
them and has no name is `external`; without, or inside them, an unnamed address stays
unnamed (a pod the hub has not told about yet: the hub names it when it reads the entry).
The table is replaced whole, by swapping one reference: the dissection thread reads it
without a lock.
"""

from __future__ import annotations

import ipaddress
from typing import Any

KINDS = ("pod", "service", "node", "external", "process")
Name = tuple[str, str, str]     # name, namespace, kind
EXTERNAL: Name = ("", "", "external")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NamesError(ValueError):
    """A names payload the worker cannot use; the message names the entry at fault."""


class _Snapshot:
    def __init__(self, names: dict[str, Name], nets: list[Network] | None) -> None:
        self.names = names
        self.nets = nets
        self.outside: dict[str, bool] = {}      # address -> outside every cluster net (cached)


class NameTable:
    def __init__(self) -> None:
        # Replaced whole by replace(), never changed: a reader that saw the same snapshot
        # before knows the names are the same (worker.dissection caches per flow by it).
        self.now = _Snapshot({}, None)

    def get(self, ip: str) -> Name | None:
        now = self.now
        name = now.names.get(ip)
        if name is not None or now.nets is None:
            return name
        outside = now.outside.get(ip)
        if outside is None:
            address = ipaddress.ip_address(ip)
            outside = now.outside[ip] = not any(address in net for net in now.nets)
        return EXTERNAL if outside else None

    def replace(self, names: dict[str, Name], nets: list[Network] | None = None) -> None:
        self.now = _Snapshot(names, nets)

    @property
    def cluster_nets(self) -> list[str] | None:
        nets = self.now.nets
        return None if nets is None else [str(net) for net in nets]

    def __len__(self) -> int:
        return len(self.now.names)

    def as_json(self) -> dict[str, dict[str, str]]:
        return {ip: {"name": n, "namespace": ns, "kind": k} for ip, (n, ns, k) in sorted(self.now.names.items())}


def parse_names(value: Any) -> dict[str, Name]:
    """{"10.0.0.5": {"name": "orders-1", "namespace": "shop", "kind": "pod"}, ...} checked."""
    if not isinstance(value, dict):
        raise NamesError('names: expected an object of IP -> {name, namespace, kind}, '
                         'e.g. {"10.0.0.5": {"name": "orders-1", "namespace": "shop", "kind": "pod"}}')
    names: dict[str, Name] = {}
    for ip, identity in value.items():
        try:
            address = str(ipaddress.ip_address(ip))
        except ValueError:
            raise NamesError(f"names[{ip!r}]: not an IP address") from None
        if not isinstance(identity, dict):
            raise NamesError(f"names[{ip!r}]: expected an object {{name, namespace, kind}}")
        unknown = sorted(set(identity) - {"name", "namespace", "kind"})
        if unknown:
            raise NamesError(f"names[{ip!r}].{unknown[0]}: unknown field; expected name, namespace, kind")
        name, namespace, kind = identity.get("name", ""), identity.get("namespace", ""), identity.get("kind", "")
        for field_name, field_value in (("name", name), ("namespace", namespace)):
            if not isinstance(field_value, str):
                raise NamesError(f"names[{ip!r}].{field_name}: expected a string")
        if kind not in KINDS:
            raise NamesError(f"names[{ip!r}].kind: {kind!r} is not one of {', '.join(KINDS)}")
        names[address] = (name, namespace, kind)
    return names


def parse_nets(value: Any) -> list[Network] | None:
    """["10.244.0.0/24", ...] (or null: the cluster's networks are not known) checked."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise NamesError('cluster_nets: expected a list of networks, e.g. ["10.244.0.0/16"], or null')
    nets: list[Network] = []
    for position, text in enumerate(value):
        try:
            nets.append(ipaddress.ip_network(text))
        except (ValueError, TypeError) as error:
            raise NamesError(f"cluster_nets[{position}]: {text!r} is not a network ({error})") from None
    return nets
