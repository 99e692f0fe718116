"""How the hub and its workers are: /workers, /status and the Prometheus /metrics."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Response, get

from hub import VERSION
from hub.api import API
from hub.edgemetrics import EdgeMetrics
from hub.inject import Injected
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, StreamCounters, render as render_metrics
from hub.rowbudget import RowBudget
from hub.scripts import Scripting
from hub.settings import HubSettings
from hub.snapshots import SnapshotStore, metrics as snapshot_metrics
from hub.stream import Feed
from hub.workers import WorkerPool


class StatusController(Controller):
    @get(f"{API}/workers")
    async def workers(self, pool: Injected[WorkerPool]) -> list[dict[str, Any]]:
        """Health of every worker, as last polled."""
        return pool.health()

    @get(f"{API}/status")
    async def status(self, pool: Injected[WorkerPool], started: Injected[float]) -> dict[str, Any]:
        """The hub and a summary of every worker's status."""
        rows = []
        for client, health in zip(pool.clients, pool.health()):
            rows.append({**health, "status": client.health.status if client.health.ok else None})
        up = sum(1 for row in rows if row["ok"])
        return {"hub": {"version": VERSION, "uptime_s": round(time.time() - started, 3),
                        "workers": len(rows), "workers_ok": up},
                "workers": rows}

    @get("/metrics", include_in_schema=False)
    async def metrics(self, pool: Injected[WorkerPool], feed: Injected[Feed],
                      counters: Injected[StreamCounters], edge_metrics: Injected[EdgeMetrics],
                      snapshots: Injected[SnapshotStore],
                      scripting: Injected[Scripting], settings: Injected[HubSettings],
                      row_budget: Injected[RowBudget]) -> Response[str]:
        """Prometheus text: worker counters as last polled, hub stream counters, and the service
        map's edges (counted from the live feed from the first scrape on)."""
        # The workers as polled when the scrape came: the first scrape's wait for the edge
        # metrics' feed below may meanwhile try streams that a worker refuses.
        rows = [(c.node or c.url, c.health.ok, c.health.status) for c in pool.clients]
        text = render_metrics(rows, counters, feed, settings.max_query_rows)
        await edge_metrics.start(feed)
        return Response(text + row_budget.metrics() + edge_metrics.render() + snapshot_metrics(snapshots)
                        + scripting.metrics(),
                        media_type=METRICS_CONTENT_TYPE)
