"""The parts of one hub, built once from its settings, and handed to the routes by name as
Litestar dependencies (a route asks for `pool: WorkerPool`, `scripting: Scripting`, ...)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar import Litestar
from litestar.di import Provide

from hub.edgemetrics import EdgeMetrics
from hub.kube.names import Names
from hub.metrics import StreamCounters
from hub.rowbudget import RowBudget
from hub.scripts import ScriptSettings, Scripting
from hub.scripts.service import script_store
from hub.settings import HubSettings
from hub.snapshots import DIRECTORY as SNAPSHOT_DIRECTORY, SnapshotStore
from hub.stream import Feed
from hub.targets import Targets
from hub.workers import WorkerPool

if TYPE_CHECKING:
    from hub.kube.cluster import Cluster, KubeSettings


@dataclass
class HubServices:
    settings: HubSettings
    pool: WorkerPool
    feed: Feed
    counters: StreamCounters
    names: Names
    edge_metrics: EdgeMetrics
    snapshots: SnapshotStore
    targets: Targets
    cluster: Cluster | None
    scripting: Scripting
    started: float
    row_budget: RowBudget

    @classmethod
    def build(cls, settings: HubSettings) -> HubServices:
        pool = WorkerPool(settings.workers, poll_interval=settings.poll_interval, allow_empty=settings.kube,
                          timeout=settings.timeout, retries=settings.retries, backoff=settings.backoff,
                          token=settings.token, **settings.client_options)
        kube = _kube_settings(settings)      # None outside a cluster
        cluster = _cluster(pool, kube) if kube is not None else None
        # In a cluster, endpoints the workers did not name are named at read time (hub/kube/names.py).
        names = Names(cluster.fill if cluster is not None else None)
        feed = Feed(pool, max_clients=settings.max_live_clients, max_queries=settings.max_live_queries,
                    rewrite=names.entry_json if names.fill is not None else None)
        snapshots = SnapshotStore(settings.state_dir / SNAPSHOT_DIRECTORY if settings.state_dir is not None else None,
                                  settings.snapshot_limit, max_rows=settings.max_query_rows)
        scripts = settings.scripts or ScriptSettings()
        scripting = Scripting(scripts, pool, feed, settings.state_dir,
                              script_store(scripts, settings.state_dir, kube))
        return cls(settings, pool, feed, StreamCounters(), names, EdgeMetrics(settings.metrics_edges), snapshots,
                   Targets(pool, cluster), cluster, scripting, time.time(),
                   RowBudget(settings.max_held_rows, settings.held_rows_wait_s))

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        await self.pool.start()
        try:
            yield
        finally:
            await self.edge_metrics.stop()
            await self.feed.close()
            await self.pool.close()

    def lifespans(self) -> list[Any]:
        """Started in this order, stopped in the reverse."""
        return [self.lifespan, self.scripting.lifespan] + ([self.cluster.lifespan] if self.cluster else [])

    def dependencies(self) -> dict[str, Provide]:
        """What routes may ask for, by parameter name."""
        return {name: provided(getattr(self, name)) for name in
                ("settings", "pool", "feed", "counters", "names", "edge_metrics", "snapshots", "targets",
                 "scripting", "started", "row_budget")}


def provided(value: Any) -> Provide:
    """A dependency that is `value` itself (one of the hub's parts)."""
    def dependency() -> Any:
        return value
    return Provide(dependency, use_cache=True, sync_to_thread=False)


def _kube_settings(settings: HubSettings) -> KubeSettings | None:
    if not settings.kube:
        return None
    from hub.kube.cluster import KubeSettings   # the kubernetes client only in cluster mode
    return settings.kube_settings or KubeSettings()


def _cluster(pool: WorkerPool, kube: KubeSettings) -> Cluster:
    from hub.kube.cluster import Cluster   # the kubernetes client only in cluster mode
    return Cluster(pool, kube)
