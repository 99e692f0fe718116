"""Names filled in by the hub at read time (hub/kube/names.py): entries, JSON texts and the
live feed, for the endpoints a worker left unnamed, with the identity at the entry's time."""

from __future__ import annotations

import asyncio
import json

from sse_starlette import ServerSentEvent

from factories import tentry_json
from hub.kube.names import NamedFeed, fill_json, filler
from hub.kube.resolver import Resolver
from hub.kube.store import Change
from hub.kube.tobjects import tpod
from shark.model import Endpoint

T0 = 1_700_000_000.0


def resolver() -> Resolver:
    r = Resolver()
    old = tpod("orders-1", "shop", ip="10.1.0.3", started=T0)
    r.on_pod(Change("ADDED", old, T0))
    r.on_pod(Change("DELETED", old, T0 + 100))
    r.on_pod(Change("ADDED", tpod("payments-1", "billing", ip="10.1.0.3", started=T0 + 200), T0 + 200))
    r.complete_since = T0 + 50
    return r


def entry(ts: float, src: dict | None = None, dst: dict | None = None) -> dict:
    return tentry_json(id="node-a:1", ts=ts, src=Endpoint(**{"ip": "192.0.2.7", "port": 40000, **(src or {})}),
                       dst=Endpoint(**{"ip": "10.1.0.3", "port": 80, **(dst or {})}))


def test_entries_get_the_identity_their_address_had_then():
    fill = filler(resolver())
    early = fill(entry(T0 + 10))
    assert (early["dst"]["name"], early["dst"]["namespace"], early["dst"]["kind"]) == ("orders-1", "shop", "pod")
    assert early["src"]["kind"] == ""                    # before the lists: unknown, not external
    late = fill(entry(T0 + 300))
    assert (late["dst"]["name"], late["src"]["kind"]) == ("payments-1", "external")
    # what the worker named is kept, even when the hub would say otherwise
    stamped = fill(entry(T0 + 300, dst={"name": "orders-1", "namespace": "shop", "kind": "pod"}))
    assert stamped["dst"]["name"] == "orders-1"


def test_json_texts_are_left_alone_when_nothing_needs_a_name():
    fill = filler(resolver())
    named = json.dumps(entry(T0 + 300, src={"kind": "external"}, dst={"name": "x", "kind": "pod"}),
                       separators=(",", ":")).encode()
    assert fill_json(named, fill) is named
    out = json.loads(fill_json(json.dumps(entry(T0 + 10)).encode(), fill))
    assert out["dst"]["name"] == "orders-1"
    assert fill_json("not json, \"kind\":\"\"", fill) == "not json, \"kind\":\"\""


def test_the_live_feed_is_named_and_closing_it_closes_the_upstream():
    closed = []

    class Feed:
        async def events(self, q, last_id):
            try:
                yield ServerSentEvent(data=json.dumps(entry(T0 + 10)), event="entry", id="7")
                yield ServerSentEvent(data=json.dumps({"node": "node-a", "ok": False}), event="status")
                yield ServerSentEvent(data=json.dumps(entry(T0 + 300)), event="entry", id="8")
                await asyncio.sleep(3600)
            finally:
                closed.append((q, last_id))

    async def go():
        events = NamedFeed(Feed(), filler(resolver())).events("http", 5)
        got = [await events.__anext__() for _ in range(3)]
        await events.aclose()
        return got

    first, status, second = asyncio.run(go())
    assert (first.event, first.id, json.loads(first.data)["dst"]["name"]) == ("entry", "7", "orders-1")
    assert json.loads(status.data) == {"node": "node-a", "ok": False}
    assert json.loads(second.data)["dst"]["name"] == "payments-1"
    assert closed == [("http", 5)]
