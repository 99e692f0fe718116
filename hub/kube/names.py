"""Names filled into the entries the hub returns, for endpoints the worker did not name.

Workers name what they index from the names the hub sends them (hub/kube/targeter.py); an
entry indexed before a worker had them — or an address learned since — is named here, at read
time, with the identity its address had at the entry's `ts` (hub/kube/resolver.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from hub.kube.resolver import Resolver

Fill = Callable[[dict[str, Any]], dict[str, Any]]


def filler(resolver: Resolver) -> Fill:
    def fill(entry: dict[str, Any]) -> dict[str, Any]:
        ts = entry.get("ts")
        if not isinstance(ts, (int, float)):
            return entry
        for side in ("src", "dst"):
            endpoint = entry.get(side)
            if not isinstance(endpoint, dict) or endpoint.get("kind") or not isinstance(endpoint.get("ip"), str):
                continue
            identity = resolver.resolve(endpoint["ip"], float(ts))
            if identity is not None:
                endpoint["name"], endpoint["namespace"], endpoint["kind"] = identity.name, identity.namespace, identity.kind
        return entry
    return fill


class _End(msgspec.Struct):
    ip: Any = None
    kind: Any = None


class _Ends(msgspec.Struct):
    """What of an entry tells whether it needs a name (the rest is skipped when decoding)."""
    ts: Any = None
    src: _End | None = None
    dst: _End | None = None


def needs_name(data: bytes | str) -> bool:
    """Whether an entry's JSON has an endpoint `fill` would name: with an ip and no kind."""
    try:
        ends = msgspec.json.decode(data, type=_Ends)
    except msgspec.DecodeError:     # not JSON, or src/dst not objects: nothing fill would name
        return False
    return isinstance(ends.ts, (int, float)) and any(
        end is not None and not end.kind and isinstance(end.ip, str) for end in (ends.src, ends.dst))


def fill_json(data: bytes | str, fill: Fill) -> bytes | str:
    """An entry as JSON text, named; returned as it came when nothing needed a name."""
    if not needs_name(data):
        return data
    try:
        entry = json.loads(data)
    except ValueError:
        return data
    if not isinstance(entry, dict):
        return data
    out = json.dumps(fill(entry), separators=(",", ":"))
    return out.encode() if isinstance(data, bytes) else out


class Names:
    """Names filled into what the hub answers at read time; without a `fill` (outside a
    cluster) entries pass as the workers wrote them."""

    def __init__(self, fill: Fill | None = None) -> None:
        self.fill = fill

    def entries(self, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.fill is not None:
            for entry in found:
                self.fill(entry)
        return found

    def entry_json(self, content: bytes) -> bytes:
        return content if self.fill is None else fill_json(content, self.fill)  # type: ignore[return-value]

    @property
    def line(self) -> Callable[[bytes], bytes] | None:
        """entry_json for entries streamed line by line; None when nothing is filled in."""
        return None if self.fill is None else self.entry_json
