"""Names filled into the entries the hub returns, for endpoints the worker did not name.

Workers name what they index from the names the hub sends them (hub/kube/targeter.py); an
entry indexed before a worker had them — or an address learned since — is named here, at read
time, with the identity its address had at the entry's `ts` (hub/kube/resolver.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from sse_starlette import ServerSentEvent

from hub.kube.resolver import Resolver

Fill = Callable[[dict[str, Any]], dict[str, Any]]
UNNAMED_MARKS = ('"kind":""', '"kind": ""')


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


def fill_json(data: bytes | str, fill: Fill) -> bytes | str:
    """An entry as JSON text, named; returned as it came when nothing needed a name."""
    text = data.decode() if isinstance(data, bytes) else data
    if not any(mark in text for mark in UNNAMED_MARKS):
        return data
    try:
        entry = json.loads(text)
    except ValueError:
        return data
    if not isinstance(entry, dict):
        return data
    out = json.dumps(fill(entry), separators=(",", ":"))
    return out.encode() if isinstance(data, bytes) else out


async def named_events(events: AsyncIterator[ServerSentEvent], fill: Fill) -> AsyncIterator[ServerSentEvent]:
    async with aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if event.event == "entry" and isinstance(event.data, str):
                named = fill_json(event.data, fill)
                if named is not event.data:
                    event = ServerSentEvent(data=named, event=event.event, id=event.id, retry=event.retry)
            yield event


class NamedFeed:
    """The hub's Feed with names filled into its entry events (what /stream and /ws read)."""

    def __init__(self, feed: Any, fill: Fill) -> None:
        self.feed = feed
        self.fill = fill

    def events(self, q: str | None, last_id: str | None) -> AsyncIterator[ServerSentEvent]:
        return named_events(self.feed.events(q, last_id), self.fill)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.feed, name)


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
