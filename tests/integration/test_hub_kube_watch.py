"""The hub's list+watch loop (hub/kube/watch.py) against the Kubernetes API double over real
HTTP, through the kubernetes client and a kubeconfig, as the hub runs in a cluster.

What the double reproduces of the real API server here, and these tests rely on (no API server
can run on this machine, FACTS.md): lists carry metadata.resourceVersion and page with
limit/continue; a watch is a chunked stream of {"type", "object"} JSON lines (ADDED, MODIFIED,
DELETED; BOOKMARK with only metadata.resourceVersion when allowWatchBookmarks); a watch from a
resourceVersion older than the last compaction gets an ERROR event whose object is a Status
with code 410 (reason Expired), as etcd compaction makes the real server do, and so does a list
page whose continue token's revision was compacted; timeoutSeconds and
server-side ends close the stream cleanly; RBAC refusals are 403 with a Status body. What it
does not reproduce and the hub does not rely on: watch caches, HTTP/2, protobuf, real latency.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kubernetes import client as kclient

from hub.kube.cluster import KubeSettings, api_client
from hub.kube.watch import Watch
from support.kubeapi import KubeAPI


@pytest.fixture
def kube(tmp_path: Path):
    with KubeAPI(bookmark_interval=0.2) as api:
        api.kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        api.add_node("node-a", ip="10.213.0.2")
        yield api


def core(kube: KubeAPI) -> kclient.CoreV1Api:
    return kclient.CoreV1Api(api_client(KubeSettings(kubeconfig=str(kube.kubeconfig))))


def names(store) -> list[str]:
    return sorted(obj["metadata"]["name"] for obj in store.objects.values())


class running:
    """A started Watch, stopped (its thread joined) however the test ends."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    async def __aenter__(self) -> Watch:
        self.watch.start()
        return self.watch

    async def __aexit__(self, *exc: object) -> None:
        await self.watch.stop()


async def until(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_list_in_pages_then_watch_every_change(kube):
    for i in range(7):
        kube.add_pod(f"web-{i}", "default", ip=f"10.1.0.{i}", node="node-a")

    async def go():
        changes = []
        async with running(Watch("pods", core(kube).list_pod_for_all_namespaces,
                                 [lambda c: changes.append((c.type, c.obj["metadata"]["name"]))], page_size=3)) as watch:
            await asyncio.wait_for(watch.synced.wait(), 10)
            assert names(watch.store) == [f"web-{i}" for i in range(7)]
            pages = [r for r in kube.requests if r.path == "/api/v1/pods" and "watch" not in r.query]
            assert [r.query.get("limit") for r in pages] == ["3", "3", "3"] and "continue" in pages[1].query
            kube.add_pod("web-9", "default", ip="10.1.0.9", node="node-a")
            kube.patch_status("Pod", "web-9", "default", {"phase": "Failed"})
            kube.delete("Pod", "web-0", "default")
            await until(lambda: ("DELETED", "web-0") in changes, what="the deletion")
            # add_pod writes the status as a kubelet does: ADDED, then MODIFIED for each status write
            assert changes[7] == ("ADDED", "web-9") and changes[-1] == ("DELETED", "web-0")
            assert set(changes[8:-1]) == {("MODIFIED", "web-9")}
            assert watch.store.objects["default/web-9"]["status"]["phase"] == "Failed"
            # other kinds move the (cluster-wide) resourceVersion on; bookmarks carry it to this
            # watch though no pod changes (the double sends them every 0.2 s here), so a
            # reconnection resumes from a recent version instead of one soon compacted
            kube.add_service("orders", "default", cluster_ip="10.96.5.5")
            revision = str(kube.store.revision)
            assert watch.stats.resource_version != revision
            await until(lambda: watch.stats.resource_version == revision, what="a bookmark")
            started = time.monotonic()
        assert time.monotonic() - started < 2     # a watch blocked on the stream stops at once

    asyncio.run(go())


def test_410_gone_lists_again_and_sees_what_was_missed(kube):
    kube.add_pod("a", "default", ip="10.1.0.1", node="node-a")
    kube.add_pod("b", "default", ip="10.1.0.2", node="node-a")

    async def go():
        changes = []
        async with running(Watch("pods", core(kube).list_pod_for_all_namespaces,
                                 [lambda c: changes.append((c.type, c.obj["metadata"]["name"]))], backoff_s=(0.3, 1.0))) as watch:
            await asyncio.wait_for(watch.synced.wait(), 10)
            await until(lambda: any(r.query.get("watch") for r in kube.requests), what="the watch")
            # the watch is cut; meanwhile pods change and the server compacts its history
            kube.forbid("watch", "pods")
            kube.close_watches(abrupt=True)
            kube.delete("Pod", "a", "default")
            kube.add_pod("c", "default", ip="10.1.0.3", node="node-a")
            kube.compact()
            # first the cut stream, then the refusals, stated with what the hub needs
            await until(lambda: "HTTP 403" in (watch.stats.last_error or ""), what="the refused watch")
            assert "get/list/watch on pods" in watch.stats.last_error
            assert watch.stats.ok is False
            kube.allow_all()
            # resuming from the old version gets 410 Expired: the hub lists again, and the store
            # turns the new list into the changes it missed
            await until(lambda: watch.stats.relists_gone, what="a list after 410")
            await until(lambda: ("ADDED", "c") in changes, what="the pod added meanwhile")
            assert ("DELETED", "a") in changes and names(watch.store) == ["b", "c"]
            assert watch.stats.lists == 2
            # and it watches again from the new list
            kube.delete("Pod", "b", "default")
            await until(lambda: ("DELETED", "b") in changes, what="a deletion after the relist")
            assert watch.stats.ok is True

    asyncio.run(go())


def test_an_expired_continue_token_lists_again_from_the_start(kube):
    """Between two pages of the first list, a pod is added and the server compacts: the second
    page's continue token is too old (the real 410 Expired). The hub starts the list over, so its
    store is one consistent list (no mix of two revisions) that has the new pod."""
    for i in range(7):
        kube.add_pod(f"web-{i}", "default", ip=f"10.1.0.{i}", node="node-a")
    compacted: list[str] = []

    def compact_before_the_second_page(request) -> None:
        if "continue" in request.query and not compacted:
            kube.add_pod("web-new", "default", ip="10.1.0.99", node="node-a")
            compacted.append(str(kube.compact()))
    kube.on_request.append(compact_before_the_second_page)

    async def go():
        changes = []
        async with running(Watch("pods", core(kube).list_pod_for_all_namespaces,
                                 [lambda c: changes.append((c.type, c.obj["metadata"]["name"]))], page_size=3,
                                 backoff_s=(0.1, 0.5))) as watch:
            await asyncio.wait_for(watch.synced.wait(), 10)
            assert names(watch.store) == sorted([*(f"web-{i}" for i in range(7)), "web-new"])
            assert (watch.stats.lists, watch.stats.relists_gone, watch.stats.errors) == (1, 1, 0)
            assert watch.stats.resource_version == compacted[0]
            lists = [(r.query.get("continue") is not None, r.status) for r in kube.requests
                     if r.path == "/api/v1/pods" and "watch" not in r.query]
            assert lists == [(False, 200), (True, 410), (False, 200), (True, 200), (True, 200)]
            assert sorted(changes) == sorted(("ADDED", n) for n in names(watch.store))   # each once

    asyncio.run(go())


def test_streams_that_end_or_break_resume_without_loss_or_repeats(kube):
    async def go():
        changes = []
        async with running(Watch("pods", core(kube).list_pod_for_all_namespaces,
                                 [lambda c: changes.append((c.type, c.obj["metadata"]["name"]))],
                                 backoff_s=(0.1, 0.5), watch_timeout_s=1)) as watch:
            await asyncio.wait_for(watch.synced.wait(), 10)
            for round_ in range(3):
                kube.add_pod(f"p{round_}", "default", ip=f"10.1.1.{round_}", node="node-a")
                if round_ == 1:
                    kube.close_watches()               # a clean server-side end
                if round_ == 2:
                    kube.close_watches(abrupt=True)    # a cut connection
                kube.add_pod(f"q{round_}", "default", ip=f"10.1.2.{round_}", node="node-a")
            await asyncio.sleep(1.5)                   # and the 1 s server timeout passes too
            kube.add_pod("last", "default", ip="10.1.3.1", node="node-a")
            await until(lambda: ("ADDED", "last") in changes, what="the last pod")
            added = [name for kind, name in changes if kind == "ADDED"]
            assert added == ["p0", "q0", "p1", "q1", "p2", "q2", "last"]
            assert watch.stats.lists == 1 and watch.stats.relists_gone == 0

    asyncio.run(go())
