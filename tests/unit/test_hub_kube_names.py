"""Names filled in by the hub at read time (hub/kube/names.py): entries and JSON texts, for
the endpoints a worker left unnamed, with the identity at the entry's time. The live feed names
its entries through the same fill_json, once per event (test_hub_feed.py)."""

from __future__ import annotations

import json

from factories import tentry_json
from hub.kube.names import fill_json, filler, needs_name
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


def test_an_entry_needs_a_name_when_an_end_has_an_address_and_no_kind():
    assert needs_name(json.dumps(entry(T0)).encode())
    assert needs_name(json.dumps({"ts": T0, "src": {"ip": "10.1.0.3"}, "dst": None}))      # no kind at all
    # a header that reads like an unnamed end is not one (the old text search was fooled)
    named = entry(T0, src={"kind": "external"}, dst={"kind": "pod", "name": "x"})
    named["request"] = {"headers": {"x-note": '"kind":""'}}
    assert not needs_name(json.dumps(named, separators=(",", ":")))
    assert not needs_name(json.dumps({"src": {"ip": "10.1.0.3", "kind": ""}}))           # no ts: fill skips it
    assert not needs_name(b"not json") and not needs_name(b'{"ts": 1, "src": "10.1.0.3"}')
