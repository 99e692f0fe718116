"""GET and PUT /api/v1/targets on the hub: which pods the workers capture.

In cluster mode (`--kube`) `PUT {regex, namespaces}` selects pods by name (a regex searched
in the pod name, as `kubectl shark tap POD_REGEX`) and namespace (empty: all), and every
worker is sent its node's share before the answer (hub/kube/targeter.py). `GET` shows the spec,
the pods it selects, what each worker was sent and how that went, and the watches' health.

Without `--kube` there are no pods to select: `PUT` is a 409 that says so (narrow a worker
with its own `PUT /targets {ips}`, or filter with KFL); `GET` shows each worker's targets as
its /status last reported them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from litestar import Controller, Request, get, put
from litestar.exceptions import HTTPException

from hub.api import API
from hub.inject import Injected
from hub.kube.targeter import SpecError, TargetSpec
from hub.params import json_body
from hub.workers import WorkerPool

if TYPE_CHECKING:
    from hub.kube.cluster import Cluster   # the kubernetes client only in cluster mode

PUT_WAIT_S = 15.0     # at most this long for the workers' answers before PUT answers anyway


def local_view(pool: WorkerPool) -> dict[str, Any]:
    rows = []
    for client in pool.clients:
        status = client.health.status if isinstance(client.health.status, dict) else {}
        reported = status.get("targets") if isinstance(status.get("targets"), dict) else {}
        rows.append({"node": client.node, "url": client.url, "ips": reported.get("ips", []),
                     "idle": bool(reported.get("idle")), "names": reported.get("names", 0),
                     "sent_at": None, "ok": client.health.ok, "error": client.health.error})
    return {"mode": "local", "regex": None, "namespaces": [], "pods": None,
            "nodes_without_worker": [], "names": 0, "cluster_nets": None, "workers": rows}


class Targets:
    """What the routes act on: the cluster's targeter, or the workers' own reports without one."""

    def __init__(self, pool: WorkerPool, cluster: Cluster | None) -> None:
        self.pool = pool
        self.cluster = cluster

    def view(self) -> dict[str, Any]:
        return self.cluster.view() if self.cluster is not None else local_view(self.pool)

    async def select(self, spec: TargetSpec) -> dict[str, Any]:
        if self.cluster is None:
            raise HTTPException(status_code=409, detail=(
                "targets: the hub is not in a cluster (started without --kube), so there are no pods "
                "to select by regex and namespace; narrow a worker's capture with its own "
                "PUT /api/v1/targets {\"ips\": [...]}, or filter entries with a KFL query (q=)"))
        try:
            await asyncio.wait_for(asyncio.shield(self.cluster.targeter.set_spec(spec)), PUT_WAIT_S)
        except asyncio.TimeoutError:
            pass   # the answer shows which workers have not answered yet
        return self.cluster.view()


class TargetsController(Controller):
    path = f"{API}/targets"

    @get()
    async def get_targets(self, targets: Injected[Targets]) -> dict[str, Any]:
        """The pods selected for capture and what each worker was sent."""
        return targets.view()

    @put(status_code=200)
    async def put_targets(self, request: Request, targets: Injected[Targets]) -> dict[str, Any]:
        """Select pods by `regex` (searched in the pod name; null: any) and `namespaces` ([]: all)."""
        raw = await request.body()
        body = json_body(raw) if raw.strip() else None
        try:
            spec = TargetSpec.parse(body)
        except SpecError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        return await targets.select(spec)
