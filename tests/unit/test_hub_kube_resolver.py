"""The resolver on sequences of watch changes: every entry gets the identity its address had
at the entry's time, though pods come, go and hand their addresses on."""

from __future__ import annotations

from hub.kube.resolver import EXTERNAL, Identity, Resolver
from hub.kube.tobjects import bumped, tendpoints, tnode, tpod, tservice
from hub.kube.store import Change, Store

T0 = 1_700_000_000.0


def feed(resolver: Resolver, handler: str, obj: dict, at: float, kind: str = "ADDED") -> None:
    getattr(resolver, handler)(Change(kind, obj, at))


def pod(name: str, ns: str = "shop") -> Identity:
    return Identity(name, ns, "pod")


def test_a_pod_address_names_entries_from_the_pod_start_until_its_deletion():
    r = Resolver()
    orders = tpod("orders-1", "shop", ip="10.1.0.5", started=T0)
    feed(r, "on_pod", orders, at=T0 + 100)          # learned late (a list at hub start) ...
    assert r.resolve("10.1.0.5", T0 + 1) == pod("orders-1")   # ... but named from its start
    assert r.resolve("10.1.0.5", T0 - 1) is None               # before: nobody known, not "external"
    feed(r, "on_pod", orders, at=T0 + 200, kind="DELETED")
    assert r.resolve("10.1.0.5", T0 + 199) == pod("orders-1")
    assert r.resolve("10.1.0.5", T0 + 201) is None
    assert r.current() == {}


def test_an_address_handed_on_keeps_the_old_name_for_old_entries():
    r = Resolver()
    old = tpod("orders-1", "shop", ip="10.1.0.5", started=T0)
    feed(r, "on_pod", old, T0)
    feed(r, "on_pod", old, T0 + 50, "DELETED")
    new = tpod("payments-7", "billing", ip="10.1.0.5", started=T0 + 60)
    feed(r, "on_pod", new, T0 + 61)
    assert r.resolve("10.1.0.5", T0 + 10) == pod("orders-1")
    assert r.resolve("10.1.0.5", T0 + 55) is None            # between the two: unknown
    assert r.resolve("10.1.0.5", T0 + 70) == pod("payments-7", "billing")
    assert r.current() == {"10.1.0.5": pod("payments-7", "billing")}


def test_a_finished_pod_gives_its_address_back_though_its_status_still_shows_it():
    r = Resolver()
    job = tpod("migrate-x1", ip="10.1.0.9", started=T0)
    feed(r, "on_pod", job, T0)
    feed(r, "on_pod", bumped(job, phase="Succeeded"), T0 + 30, "MODIFIED")   # podIP stays in status
    assert r.current() == {}
    reuse = tpod("web-2", ip="10.1.0.9", started=T0 + 40)
    feed(r, "on_pod", reuse, T0 + 41)
    assert r.resolve("10.1.0.9", T0 + 10) == pod("migrate-x1", "default")
    assert r.resolve("10.1.0.9", T0 + 45) == pod("web-2", "default")


def test_the_newer_claim_wins_while_a_deletion_is_not_seen_yet():
    r = Resolver()
    feed(r, "on_pod", tpod("old", ip="10.1.0.7", started=T0), T0)
    feed(r, "on_pod", tpod("new", ip="10.1.0.7", started=T0 + 20), T0 + 21)   # old's DELETED comes late
    assert r.resolve("10.1.0.7", T0 + 10) == pod("old", "default")
    assert r.resolve("10.1.0.7", T0 + 25) == pod("new", "default")
    assert r.current()["10.1.0.7"] == pod("new", "default")


def test_services_nodes_and_endpoints_without_pods():
    r = Resolver()
    feed(r, "on_service", tservice("orders", "shop", cluster_ip="10.96.3.4", created=T0), T0)
    feed(r, "on_node", tnode("node-a", internal_ip="172.18.0.2", external_ip="203.0.113.9", created=T0), T0)
    # the API server's address behind default/kubernetes is the control-plane node's: the node wins
    feed(r, "on_endpoints", tendpoints("kubernetes", addresses=["172.18.0.2"], created=T0), T0)
    # a selector-less service in front of a database outside the cluster
    feed(r, "on_endpoints", tendpoints("billing-db", "billing", addresses=["192.0.2.50"], created=T0), T0)
    # addresses of pods are named after the pods, not the service
    feed(r, "on_endpoints", tendpoints("orders", "shop", pods={"10.1.0.5": "orders-1"}, created=T0), T0)
    assert r.resolve("10.96.3.4", T0 + 1) == Identity("orders", "shop", "service")
    assert r.resolve("172.18.0.2", T0 + 1) == Identity("node-a", "", "node")
    assert r.resolve("203.0.113.9", T0 + 1) == Identity("node-a", "", "node")
    assert r.resolve("192.0.2.50", T0 + 1) == Identity("billing-db", "billing", "service")
    assert r.resolve("10.1.0.5", T0 + 1) is None
    assert set(r.current()) == {"10.96.3.4", "172.18.0.2", "203.0.113.9", "192.0.2.50"}


def test_host_network_pods_are_their_node():
    r = Resolver()
    feed(r, "on_node", tnode("node-a", internal_ip="172.18.0.2", created=T0), T0)
    feed(r, "on_pod", tpod("shark-worker-x", "shark", ip="172.18.0.2", host_network=True, started=T0), T0)
    assert r.resolve("172.18.0.2", T0 + 5) == Identity("node-a", "", "node")


def test_external_only_once_everything_has_been_listed():
    r = Resolver()
    assert r.resolve("8.8.8.8", T0) is None
    r.complete_since = T0 + 10
    assert r.resolve("8.8.8.8", T0 + 5) is None     # before the lists: it may have been a pod since gone
    assert r.resolve("8.8.8.8", T0 + 15) == EXTERNAL


def test_history_is_capped_oldest_first():
    r = Resolver(max_history=3)
    for i in range(5):
        p = tpod(f"p{i}", ip=f"10.2.0.{i}", started=T0 + i)
        feed(r, "on_pod", p, T0 + i)
        feed(r, "on_pod", p, T0 + i + 0.5, "DELETED")
    assert r.history_size() == 3
    assert r.resolve("10.2.0.0", T0 + 0.2) is None and r.resolve("10.2.0.1", T0 + 1.2) is None
    assert r.resolve("10.2.0.4", T0 + 4.2) == pod("p4", "default")


def test_listeners_hear_of_changes_to_the_current_names_only():
    r = Resolver()
    heard = []
    r.on_change.append(lambda: heard.append(1))
    p = tpod("web-1", ip="10.1.0.3", started=T0)
    feed(r, "on_pod", p, T0)
    assert len(heard) == 1
    feed(r, "on_pod", bumped(p, conditions=[{"type": "Ready", "status": "False"}]), T0 + 1, "MODIFIED")
    assert len(heard) == 1                           # same address, same identity: nothing to tell
    feed(r, "on_pod", p, T0 + 2, "DELETED")
    assert len(heard) == 2


def test_a_relist_after_410_sees_deletions_missed_meanwhile():
    """The Store turns a new list into changes: a pod gone while the watch was down is
    DELETED at the time of the new list, and its address then ends there."""
    r = Resolver()
    store = Store()
    a = tpod("a", ip="10.3.0.1", started=T0)
    b = tpod("b", ip="10.3.0.2", started=T0)
    for change in store.replace([a, b], T0 + 1):
        r.on_pod(change)
    changes = store.replace([b, tpod("c", ip="10.3.0.3", started=T0 + 5)], T0 + 10)
    assert sorted((c.type, c.obj["metadata"]["name"]) for c in changes) == [("ADDED", "c"), ("DELETED", "a")]
    for change in changes:
        r.on_pod(change)
    assert r.resolve("10.3.0.1", T0 + 9) == pod("a", "default")
    assert r.resolve("10.3.0.1", T0 + 11) is None
    assert r.resolve("10.3.0.3", T0 + 6) == pod("c", "default")
