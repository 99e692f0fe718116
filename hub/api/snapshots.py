"""Traffic snapshots: /api/v1/snapshots (docs/API.md, Snapshots). What a snapshot is and where
it is kept is hub/snapshots.py's SnapshotStore; these are its routes."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath
from litestar.response import File

from hub.api import API, PCAP_MEDIA_TYPE
from hub.errors import BadRequest
from hub.inject import Injected
from hub.kube.names import Names
from hub.params import json_body, limit as parse_limit
from hub.rowbudget import RowBudget
from hub.snapshots import MAX_ENTRIES, SnapshotStore
from hub.workers import WorkerPool


class SnapshotsController(Controller):
    path = f"{API}/snapshots"

    @post("/", status_code=201)
    async def create(self, request: Request, pool: Injected[WorkerPool], snapshots: Injected[SnapshotStore],
                     names: Injected[Names]) -> dict[str, Any]:
        """Save the packets and entries of a window (q, since, until) under a name; in a
        cluster the entries keep the names the hub gives them now."""
        raw = await request.body()
        body = json_body(raw) if raw.strip() else None
        return await snapshots.create(pool, body, names.fill)

    @get("/")
    async def list(self, snapshots: Injected[SnapshotStore]) -> dict[str, Any]:
        """Every snapshot, oldest first, and the bytes they use of the limit."""
        return {"snapshots": snapshots.list(), "bytes": snapshots.used(), "limit": snapshots.limit}

    @get("/{name:str}")
    async def meta(self, name: FromPath[str], snapshots: Injected[SnapshotStore]) -> dict[str, Any]:
        """One snapshot's description."""
        return snapshots.meta(name)

    @get("/{name:str}/pcap")
    async def pcap(self, name: FromPath[str], snapshots: Injected[SnapshotStore]) -> File:
        """The snapshot's packets."""
        return File(path=snapshots.path(name, "packets.pcap"), filename=f"{name}.pcap", media_type=PCAP_MEDIA_TYPE)

    @get("/{name:str}/entries")
    async def entries(self, request: Request, name: FromPath[str], snapshots: Injected[SnapshotStore],
                      row_budget: Injected[RowBudget]) -> Response[Any]:
        """The snapshot's entries, newest first: all as saved, or those matching q within
        since/until, at most limit (what the UI shows when a snapshot is opened)."""
        params = dict(request.query_params)
        if not params:
            return Response(snapshots.path(name, "entries.json").read_bytes(), media_type="application/json")
        # the matching rows are held whole until the answer is written: taken from what all
        # requests may hold at once (hub/rowbudget.py), at most as many as the snapshot saved
        limit = parse_limit(params, MAX_ENTRIES, snapshots.max_rows)
        saved = snapshots.meta(name).get("entries")
        await row_budget.take(min(limit, saved) if isinstance(saved, int) else limit, request.scope)
        found = await asyncio.to_thread(snapshots.query, name, params)
        return Response(found, media_type="application/json")

    @get("/{name:str}/entries/{entry_id:str}")
    async def entry(self, name: FromPath[str], entry_id: FromPath[str], snapshots: Injected[SnapshotStore]) -> Response[bytes]:
        """One of the snapshot's entries in full, as saved."""
        found = await asyncio.to_thread(snapshots.detail, name, entry_id)
        return Response(found, media_type="application/json")

    @delete("/{name:str}", status_code=204)
    async def remove(self, name: FromPath[str], snapshots: Injected[SnapshotStore]) -> None:
        snapshots.delete(name)
