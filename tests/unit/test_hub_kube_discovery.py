"""Worker discovery on sequences of pod changes: the pool follows the DaemonSet's pods."""

from __future__ import annotations

import asyncio

import httpx
import respx

from hub.kube.discovery import Discovery, worker_of
from hub.kube.tobjects import bumped, tpod
from hub.kube.store import Store
from hub.workers import WorkerPool

T0 = 1_700_000_000.0
LABELS = {"app.kubernetes.io/component": "worker"}


def worker_pod(name: str, node: str, ip: str | None, **kwargs) -> dict:
    return tpod(name, "shark", ip=ip, node=node, host_network=True, labels=LABELS,
                ports={"api": 8897}, started=T0, **kwargs)


def test_a_worker_is_a_running_pod_with_an_address_that_is_not_leaving():
    options = {"port_name": "api", "default_port": 9999}
    assert worker_of(worker_pod("w", "node-a", None, phase="Pending"), **options) is None
    assert worker_of(worker_pod("w", "node-a", "172.18.0.2", phase="Pending"), **options) is None
    assert worker_of(worker_pod("w", "node-a", "172.18.0.2", deleting=True), **options) is None
    assert worker_of(worker_pod("w", "node-a", "172.18.0.2", phase="Failed"), **options) is None
    running = worker_of(worker_pod("w", "node-a", "172.18.0.2", ready=False), **options)
    assert running is not None and running.url == "http://172.18.0.2:8897" and running.node == "node-a"
    # no port named api: the default port; IPv6 in brackets
    unnamed = tpod("w", "shark", ip="fd00::2", node="node-b", ports={"metrics": 9100})
    assert worker_of(unnamed, **options).url == "http://[fd00::2]:9999"


@respx.mock
def test_the_pool_follows_joins_leaves_and_replacements():
    respx.get(url__regex=r"http://172\.18\.0\.\d+:8897/api/v1/status").mock(
        side_effect=lambda request: httpx.Response(200, json={"node": "node-" + request.url.host[-1]}))

    async def go():
        pool = WorkerPool([], allow_empty=True, retries=0, timeout=1.0)
        discovery = Discovery(pool)
        store = Store()
        joined: list[tuple[str, bool]] = []
        pool.on_membership.append(lambda c, j: joined.append((c.url, j)))
        restarted: list[set[str]] = []
        discovery.on_workers.append(restarted.append)

        def apply(kind, obj):
            for change in store.apply(kind, obj, T0):
                discovery.on_pod(change)

        pending = worker_pod("shark-worker-a", "node-a", None, phase="Pending")
        apply("ADDED", pending)
        await discovery.settle()
        assert pool.clients == []
        running = bumped(pending, phase="Running", podIP="172.18.0.2", podIPs=[{"ip": "172.18.0.2"}])
        apply("MODIFIED", running)
        apply("ADDED", worker_pod("shark-worker-b", "node-b", "172.18.0.3"))
        await discovery.settle()
        assert sorted(c.url for c in pool.clients) == ["http://172.18.0.2:8897/api/v1", "http://172.18.0.3:8897/api/v1"]
        assert sorted(c.node for c in pool.clients) == ["node-2", "node-3"]   # learned from /status
        assert discovery.nodes() == {"http://172.18.0.2:8897": "node-a", "http://172.18.0.3:8897": "node-b"}

        # not ready: still a member (the pool shows it down rather than hiding it)
        apply("MODIFIED", bumped(running, conditions=[{"type": "Ready", "status": "False"}]))
        # the worker container restarted: the targeter is told (it lost its targets)
        apply("MODIFIED", bumped(running, containerStatuses=[{"name": "main", "restartCount": 1}]))
        await discovery.settle()
        assert len(pool.clients) == 2 and restarted[-1] == {"http://172.18.0.2:8897"}

        # the DaemonSet replaces the pod on node-a: same URL leaves, then joins again
        apply("DELETED", running)
        apply("ADDED", worker_pod("shark-worker-a2", "node-a", "172.18.0.2"))
        await discovery.settle()
        assert sorted(c.url for c in pool.clients) == ["http://172.18.0.2:8897/api/v1", "http://172.18.0.3:8897/api/v1"]
        assert [j for u, j in joined if u.startswith("http://172.18.0.2")] == [True, False, True]

        # terminating: leaves at once, before the DELETED event
        b = store.objects["shark/shark-worker-b"]
        apply("MODIFIED", {**b, "metadata": {**b["metadata"], "deletionTimestamp": "2025-01-01T00:00:00Z",
                                             "resourceVersion": "999999"}})
        await discovery.settle()
        assert [c.url for c in pool.clients] == ["http://172.18.0.2:8897/api/v1"]
        await discovery.close()
        await pool.close()

    asyncio.run(go())
