"""The workers are the DaemonSet's pods: the hub's pool follows them through a watch.

A worker pod is a member while it is Running with an address and not being deleted; its URL
is that address (the node's: workers use the host network) and its port named `api` (else
the default port). A pod that is Running but not ready stays a member — the pool reports it
down, so a partial answer says which node is missing instead of the node silently vanishing.
Joins and leaves of one URL happen in the order they were seen (a DaemonSet pod replaced on
its node leaves and joins under the same URL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hub.kube import objects
from hub.kube.store import Change
from hub.workers import WorkerPool

log = logging.getLogger("shark.hub.kube")


@dataclass(frozen=True)
class WorkerPod:
    key: str            # namespace/name of the pod
    url: str
    node: str
    restarts: int       # the worker's container restarts: a restarted worker lost its targets


def worker_of(pod: dict[str, Any], *, port_name: str, default_port: int, scheme: str = "http") -> WorkerPod | None:
    """The worker a DaemonSet pod is, or None while it is not one (pending, finished, leaving)."""
    status = objects.status(pod)
    address = status.get("podIP")
    if objects.terminating(pod) or objects.pod_phase(pod) != "Running" or not address:
        return None
    port = objects.container_port(pod, port_name) or default_port
    host = f"[{address}]" if ":" in str(address) else str(address)
    restarts = sum(int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []
                   if isinstance(s, dict))
    return WorkerPod(objects.key(pod), f"{scheme}://{host}:{port}", objects.pod_node(pod), restarts)


class Discovery:
    def __init__(self, pool: WorkerPool, *, port_name: str = "api", default_port: int = 8897,
                 scheme: str = "http") -> None:
        self.pool = pool
        self.port_name = port_name
        self.default_port = default_port
        self.scheme = scheme
        self.members: dict[str, WorkerPod] = {}            # pod key -> worker
        self._urls: set[str] = set()                       # URLs this discovery added
        self._last_op: dict[str, asyncio.Task[None]] = {}  # url -> its latest join/leave
        self.on_workers: list[Callable[[set[str]], None]] = []   # urls whose worker (re)started

    def nodes(self) -> dict[str, str]:
        """URL -> node of every member."""
        return {worker.url: worker.node for worker in self.members.values()}

    def on_pod(self, change: Change) -> None:
        pod_key = objects.key(change.obj)
        before = self.members.get(pod_key)
        after = None if change.deleted else worker_of(
            change.obj, port_name=self.port_name, default_port=self.default_port, scheme=self.scheme)
        if before == after:
            return
        if after is None:
            del self.members[pod_key]
        else:
            self.members[pod_key] = after
        wanted = {worker.url for worker in self.members.values()}
        for url in sorted(self._urls - wanted):
            self._urls.discard(url)
            log.info("worker %s (%s) left", url, before.node if before else "?")
            self._schedule(url, lambda url=url: self.pool.remove(url))
        for url in sorted(wanted - self._urls):
            self._urls.add(url)
            log.info("worker %s (%s) joined", url, after.node if after else "?")
            self._schedule(url, lambda url=url: self.pool.add(url))
        restarted = set()
        if after is not None and (before is None or before.url != after.url or before.restarts != after.restarts
                                  or before.node != after.node):
            restarted.add(after.url)
        if restarted or before is not None:
            for callback in self.on_workers:
                callback(restarted)

    def _schedule(self, url: str, operation: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        previous = self._last_op.get(url)

        async def run() -> None:
            if previous is not None:
                await asyncio.wait({previous})
            try:
                await operation()
            except Exception as error:   # a worker's failure is the pool's health to show
                log.warning("worker %s: %s", url, error)

        task = asyncio.create_task(run(), name=f"kube-worker-{url}")
        self._last_op[url] = task
        task.add_done_callback(lambda t: self._last_op.pop(url, None) if self._last_op.get(url) is t else None)

    async def settle(self) -> None:
        """Wait for every join and leave scheduled so far."""
        while self._last_op:
            await asyncio.wait(set(self._last_op.values()))

    async def close(self) -> None:
        for task in list(self._last_op.values()):
            task.cancel()
        await asyncio.gather(*self._last_op.values(), return_exceptions=True)
