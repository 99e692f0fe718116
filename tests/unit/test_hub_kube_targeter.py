"""The targeter: the tap's regex and namespaces -> per node the matching pod addresses ->
each worker's PUT /targets, re-sent when its share changes (workers mocked with respx)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import respx

from hub.kube.resolver import Resolver
from hub.kube.targeter import SpecError, TargetSpec, Targeter, node_targets, targeted_pods
from hub.kube.tobjects import bumped, tpod
from hub.kube.store import Change, Store
from hub.workers import WorkerPool

T0 = 1_700_000_000.0
W1, W2 = "http://172.18.0.2:8897", "http://172.18.0.3:8897"
NODES = {W1 + "/api/v1": "node-a", W2 + "/api/v1": "node-b"}


def test_spec_errors_name_the_field_and_position():
    with pytest.raises(SpecError, match=r"regex: 'front\(' is not a valid regular expression: .* at position 5"):
        TargetSpec.parse({"regex": "front("})
    with pytest.raises(SpecError, match=r"namespaces\[1\]: 'Shop_1' is not a namespace name"):
        TargetSpec.parse({"namespaces": ["default", "Shop_1"]})
    with pytest.raises(SpecError, match=r"namespaces: expected a list"):
        TargetSpec.parse({"namespaces": "shop"})
    with pytest.raises(SpecError, match=r"regex: expected a string"):
        TargetSpec.parse({"regex": 5})
    with pytest.raises(SpecError, match=r"pods: unknown field; expected regex and namespaces"):
        TargetSpec.parse({"pods": "x"})
    with pytest.raises(SpecError, match=r"body: expected a JSON object"):
        TargetSpec.parse(["x"])
    assert TargetSpec.parse({"regex": None, "namespaces": ["a", "a"]}) == TargetSpec(None, ("a",))


def test_targeted_pods_and_each_nodes_share():
    pods = [
        tpod("front-1", "shop", ip="10.1.0.2", node="node-a"),
        tpod("front-2", "shop", ip="10.1.1.2", node="node-b"),
        tpod("orders-1", "shop", ip="10.1.0.3", node="node-a"),
        tpod("front-x", "other", ip="10.1.0.4", node="node-a"),            # another namespace
        tpod("front-p", "shop", ip=None, node="node-a", phase="Pending"),  # no address yet
        tpod("front-done", "shop", ip="10.1.0.5", node="node-a", phase="Succeeded"),
        tpod("front-host", "shop", ip="172.18.0.2", node="node-a", host_network=True),
        tpod("shark-front", "shark", ip="10.1.0.6", node="node-a"),        # the hub's own namespace
    ]
    spec = TargetSpec("front", ("shop", "shark"))
    found = targeted_pods(spec, pods, exclude_namespaces=("shark",))
    assert [p.name for p in found] == ["front-1", "front-2"]
    assert node_targets(found, "node-a").ips == ("10.1.0.2",) and not node_targets(found, "node-a").idle
    assert node_targets(found, "node-c").idle                          # nothing there: capture nothing
    # no regex, no namespaces: every pod with an address of its own, but the hub's namespace
    everyone = targeted_pods(TargetSpec(), pods, exclude_namespaces=("shark",))
    assert [p.name for p in everyone] == ["front-x", "front-1", "front-2", "orders-1"]   # by namespace, name
    # search semantics, as kubeshark's POD_REGEX: anywhere in the name; anchors when given
    assert [p.name for p in targeted_pods(TargetSpec("^orders"), pods)] == ["orders-1"]


class Workers:
    """Two mocked workers that record every PUT /targets and report it in /status."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.puts: dict[str, list[dict]] = {W1: [], W2: []}
        self.answer: dict[str, int] = {W1: 200, W2: 200}
        self.reported: dict[str, dict] = {W1: {}, W2: {}}
        self.detail: dict[str, str] = {}
        for url in (W1, W2):
            router.put(f"{url}/api/v1/targets").mock(side_effect=lambda r, url=url: self._put(url, r))
            router.get(f"{url}/api/v1/status").mock(side_effect=lambda r, url=url: httpx.Response(
                200, json={"node": NODES[url + "/api/v1"], "targets": self.reported[url]}))

    def _put(self, url: str, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.puts[url].append(body)
        code = self.answer[url]
        if code == 200:
            self.reported[url] = {"ips": body["ips"], "idle": body["idle"], "names": len(body["names"])}
            return httpx.Response(200, json=body)
        return httpx.Response(code, json={"error": "bad request",
                                          "detail": self.detail.get(url, f"ips: refused ({code})")})


def make(spec: TargetSpec) -> tuple[WorkerPool, Resolver, Store, Targeter]:
    pool = WorkerPool([W1, W2], retries=0, timeout=1.0)
    resolver = Resolver()
    pods = Store()
    targeter = Targeter(pool, resolver, pods, NODES.get, spec=spec, exclude_namespaces=("shark",),
                        debounce_s=0.0, verify_s=3600, names_interval_s=0.0)
    return pool, resolver, pods, targeter


def add(pods: Store, resolver: Resolver, obj: dict, kind: str = "ADDED") -> None:
    for change in pods.apply(kind, obj, T0):
        resolver.on_pod(change)


@respx.mock
def test_each_worker_gets_its_nodes_pods_and_everyones_names():
    workers = Workers(respx.mock)

    async def go():
        pool, resolver, pods, targeter = make(TargetSpec("^front", ("shop",)))
        add(pods, resolver, tpod("front-1", "shop", ip="10.1.0.2", node="node-a", started=T0))
        add(pods, resolver, tpod("orders-1", "shop", ip="10.1.0.3", node="node-b", started=T0))
        await targeter.reconcile()
        a, b = workers.puts[W1][-1], workers.puts[W2][-1]
        assert (a["ips"], a["idle"]) == (["10.1.0.2"], False)
        assert (b["ips"], b["idle"]) == ([], True)                     # no front pod on node-b
        names = {"10.1.0.2": {"name": "front-1", "namespace": "shop", "kind": "pod"},
                 "10.1.0.3": {"name": "orders-1", "namespace": "shop", "kind": "pod"}}
        assert a["names"] == names and b["names"] == names           # peers are named too

        # nothing changed: nothing is sent
        await targeter.reconcile()
        assert len(workers.puts[W1]) == len(workers.puts[W2]) == 1

        # a front pod starts on node-b: both get the new names, node-b its new target
        add(pods, resolver, tpod("front-2", "shop", ip="10.1.1.2", node="node-b", started=T0))
        await targeter.reconcile()
        assert workers.puts[W2][-1]["ips"] == ["10.1.1.2"] and not workers.puts[W2][-1]["idle"]
        assert len(workers.puts[W1]) == 2 and "10.1.1.2" in workers.puts[W1][-1]["names"]

        # the spec changes through the API: every worker is re-sent before set_spec returns
        await targeter.set_spec(TargetSpec(None, ("shop",)))
        assert workers.puts[W1][-1]["ips"] == ["10.1.0.2", "10.1.0.3"] or workers.puts[W2][-1]["ips"] == ["10.1.0.3", "10.1.1.2"]
        view = targeter.view()
        assert [p["name"] for p in view["pods"]] == ["front-1", "front-2", "orders-1"]
        assert {w["node"]: w["ips"] for w in view["workers"]} == {"node-a": ["10.1.0.2"], "node-b": ["10.1.0.3", "10.1.1.2"]}
        assert all(w["ok"] for w in view["workers"])

        # neither regex nor namespaces: every pod
        add(pods, resolver, tpod("db-0", "data", ip="10.1.0.9", node="node-a", started=T0))
        await targeter.set_spec(TargetSpec())
        assert workers.puts[W1][-1]["ips"] == ["10.1.0.2", "10.1.0.9"]
        assert len(targeter.view()["pods"]) == 4
        await pool.close()

    asyncio.run(go())


@respx.mock
def test_refusals_wait_for_a_change_failures_are_retried_restarts_resent():
    workers = Workers(respx.mock)

    async def go():
        pool, resolver, pods, targeter = make(TargetSpec("web"))
        add(pods, resolver, tpod("web-1", ip="10.1.0.2", node="node-a", started=T0))
        workers.answer[W1] = 400        # e.g. the capture refused the filter
        workers.answer[W2] = 503        # e.g. starting up
        await targeter.reconcile()
        view = {w["node"]: w for w in targeter.view()["workers"]}
        assert view["node-a"]["ok"] is False and "HTTP 400: ips: refused (400)" in view["node-a"]["error"]
        assert view["node-b"]["ok"] is False and "HTTP 503" in view["node-b"]["error"]
        # the next check retries the transient failure only
        assert targeter.check_reported()
        workers.answer[W2] = 200
        await targeter.reconcile()
        assert len(workers.puts[W1]) == 1 and len(workers.puts[W2]) == 2
        assert not targeter.check_reported()
        # a change to node-a's share is sent again, though it refused the last one
        workers.answer[W1] = 200
        add(pods, resolver, tpod("web-2", ip="10.1.0.4", node="node-a", started=T0))
        await targeter.reconcile()
        assert workers.puts[W1][-1]["ips"] == ["10.1.0.2", "10.1.0.4"]
        assert len(workers.puts[W2]) == 3                       # new names for node-b too
        assert not targeter.check_reported()

        # node-b's worker restarts and reports empty targets in its /status: sent again
        workers.reported[W2] = {"ips": [], "idle": False, "names": 0}
        await pool.refresh_all()
        assert targeter.check_reported()
        await targeter.reconcile()
        assert workers.puts[W2][-1]["idle"] is True and len(workers.puts[W2]) == 4

        # a worker leaving is forgotten; one joining is sent its share
        await pool.remove(W2)
        targeter.membership(type("C", (), {"url": W2 + "/api/v1"})(), False)
        assert [w["node"] for w in targeter.view()["workers"]] == ["node-a"]
        await pool.add(W2)
        await targeter.reconcile()
        assert len(workers.puts[W2]) == 5
        await pool.close()

    asyncio.run(go())


@respx.mock
def test_bursts_of_changes_become_one_round():
    workers = Workers(respx.mock)

    async def go():
        pool, resolver, pods, targeter = make(TargetSpec("web"))
        targeter.debounce_s = 0.2
        resolver.on_change.append(targeter.mark)
        targeter.start()
        for i in range(20):
            add(pods, resolver, tpod(f"web-{i}", ip=f"10.1.0.{i + 10}", node="node-a", started=T0))
            await asyncio.sleep(0)
        for _ in range(100):
            if workers.puts[W1]:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert len(workers.puts[W1]) == 1 and len(workers.puts[W1][0]["ips"]) == 20
        await targeter.close()
        await pool.close()

    asyncio.run(go())


def test_store_decides_added_and_modified_and_sees_recreations():
    store = Store()
    p = tpod("web-0", ip="10.1.0.2")
    assert [c.type for c in store.apply("MODIFIED", p, T0)] == ["ADDED"]       # unknown: an addition
    assert [c.type for c in store.apply("ADDED", bumped(p), T0)] == ["MODIFIED"]
    again = tpod("web-0", ip="10.1.0.9")                                        # same name, new uid
    assert [c.type for c in store.apply("MODIFIED", again, T0)] == ["DELETED", "ADDED"]
    assert store.apply("DELETED", tpod("never-seen"), T0) == []
    same = store.replace([again], T0)
    assert same == []                                                           # same resourceVersion: no change
    assert [c.type for c in store.replace([], T0)] == ["DELETED"]
    assert [Change("DELETED", again, T0).deleted] == [True]


@respx.mock
def test_new_names_go_out_at_most_every_names_interval():
    workers = Workers(respx.mock)

    async def go():
        pool, resolver, pods, targeter = make(TargetSpec("web"))
        targeter.names_interval_s = 0.5
        targeter.debounce_s = 0.01
        resolver.on_change.append(targeter.mark)
        targeter.start()
        add(pods, resolver, tpod("web-1", ip="10.1.0.2", node="node-a", started=T0))
        for _ in range(100):
            if workers.puts[W1]:
                break
            await asyncio.sleep(0.02)
        first = len(workers.puts[W1])
        started = asyncio.get_running_loop().time()
        add(pods, resolver, tpod("db-1", ip="10.1.0.7", node="node-b", started=T0))   # names only
        await asyncio.sleep(0.2)
        assert len(workers.puts[W1]) == first            # held back: too soon after the last names
        for _ in range(250):
            if len(workers.puts[W1]) > first:
                break
            await asyncio.sleep(0.02)
        assert asyncio.get_running_loop().time() - started >= 0.25
        assert "10.1.0.7" in workers.puts[W1][-1]["names"]
        await targeter.close()
        await pool.close()

    asyncio.run(go())


@respx.mock
def test_a_huge_refusal_is_shown_bounded():
    """A worker that refused its targets with a 1.2 MB detail (an older worker echoing the whole
    BPF filter of 60k addresses): /targets shows its first 1000 characters and its length."""
    workers = Workers(respx.mock)
    huge = "ips: the capture filter was refused: bad BPF filter " + " or ".join(f"host 10.0.{i // 256}.{i % 256}" for i in range(60_000))

    async def go():
        pool, resolver, pods, targeter = make(TargetSpec("web"))
        add(pods, resolver, tpod("web-1", ip="10.1.0.2", node="node-a", started=T0))
        workers.answer[W1], workers.detail[W1] = 400, huge
        await targeter.reconcile()
        error = {w["node"]: w for w in targeter.view()["workers"]}["node-a"]["error"]
        assert error.startswith("HTTP 400: ips: the capture filter was refused: bad BPF filter host 10.0.0.0")
        assert len(error) < 1100 and f"({len(huge)} characters in all)" in error
        await pool.close()

    asyncio.run(go())
