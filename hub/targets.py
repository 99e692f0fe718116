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
import json
from typing import Any

from litestar import Request, get, put
from litestar.exceptions import HTTPException

from hub.kube.targeter import SpecError, TargetSpec
from hub.workers import WorkerPool

API = "/api/v1"
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


def target_handlers(pool: WorkerPool, cluster: Any | None) -> list[Any]:
    """The two routes; `cluster` is the hub's hub.kube.cluster.Cluster, None outside a cluster."""

    @get(f"{API}/targets")
    async def get_targets() -> dict[str, Any]:
        """The pods selected for capture and what each worker was sent."""
        return cluster.view() if cluster is not None else local_view(pool)

    @put(f"{API}/targets", status_code=200)
    async def put_targets(request: Request) -> dict[str, Any]:
        """Select pods by `regex` (searched in the pod name; null: any) and `namespaces` ([]: all)."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as error:
            raise HTTPException(status_code=400, detail=f"body: not valid JSON ({error})") from None
        try:
            spec = TargetSpec.parse(body)
        except SpecError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        if cluster is None:
            raise HTTPException(status_code=409, detail=(
                "targets: the hub is not in a cluster (started without --kube), so there are no pods "
                "to select by regex and namespace; narrow a worker's capture with its own "
                "PUT /api/v1/targets {\"ips\": [...]}, or filter entries with a KFL query (q=)"))
        try:
            await asyncio.wait_for(asyncio.shield(cluster.targeter.set_spec(spec)), PUT_WAIT_S)
        except asyncio.TimeoutError:
            pass   # the answer shows which workers have not answered yet
        return cluster.view()

    return [get_targets, put_targets]
