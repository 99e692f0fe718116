"""/entries (merged across workers), one entry in full, the service map over entries, and
query validation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import msgspec

import httpx
from litestar import Controller, MediaType, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from hub import params
from hub.api import API
from hub.errors import from_worker
from hub.inject import Injected
from hub.kube.names import Names
from hub.scripts import Scripting
from hub.servicemap import Builder as ServiceMapBuilder
from hub.settings import HubSettings
from hub.workers import EntriesStream, WorkerClient, WorkerError, WorkerPool
from shark import kfl

SERVICEMAP_LIMIT = 10_000


async def owner(pool: WorkerPool, entry_id: str) -> WorkerClient:
    """The worker that holds an entry (its id names the node); 404 naming the known ones."""
    node = params.entry_node(entry_id)
    client = await pool.owner(node)
    if client is None:
        known = ", ".join(sorted(c.node for c in pool.clients if c.node)) or "none reachable"
        raise NotFoundException(f"entry {entry_id!r}: no worker named {node!r} (workers: {known})")
    return client


QUERIED_BATCH = 500     # entries handed to the scripts' onItemQueried at a time


async def _queried(merged: EntriesStream, names: Names, scripting: Scripting) -> AsyncIterator[bytes]:
    """{"entries": [...], "workers": [...]} as EntriesStream.chunks, each batch of entries named
    and changed by onItemQueried (scripts) on its way; the scripts' time limit holds for the
    whole answer (one `spent` across the batches)."""
    spent: dict[str, float] = {}
    batch: list[bytes] = []
    sent = 0

    async def done(raws: list[bytes]) -> bytes:
        nonlocal sent
        entries = await scripting.on_queried(names.entries([json.loads(raw) for raw in raws]), spent)
        text = b",".join(msgspec.json.encode(entry) for entry in entries)
        text, sent = (text if sent == 0 else b"," + text), sent + len(entries)
        return text

    yield b'{"entries":['
    async with aclosing(merged.merged()) as lines:
        async for raw in lines:
            batch.append(raw)
            if len(batch) >= QUERIED_BATCH:
                yield await done(batch)
                batch = []
    if batch:
        yield await done(batch)
    yield b'],"workers":' + msgspec.json.encode(merged.workers) + b"}"


class EntriesController(Controller):
    path = API

    @get("/entries")
    async def entries(self, request: Request, pool: Injected[WorkerPool], names: Injected[Names],
                      scripting: Injected[Scripting], settings: Injected[HubSettings]) -> Stream:
        """Entries from every worker, newest first, with the `workers` block."""
        query = params.query(dict(request.query_params))
        limit = params.limit(query, maximum=settings.max_query_rows)
        try:
            # merged as they stream in, each named on its way (in a cluster) and passed through
            # the scripts' onItemQueried in batches: read whole, limit=100000 held every entry
            # decoded (~900 MB for the service map's) under the hub's 512Mi limit
            merged = await pool.open_entries(query, limit)
        except WorkerError as error:
            raise from_worker(error, None) from None
        if not scripting.wants_queried():
            return Stream(merged.chunks(line=names.line), media_type=MediaType.JSON)
        return Stream(_queried(merged, names, scripting), media_type=MediaType.JSON)

    @get("/entries/{entry_id:str}")
    async def entry_detail(self, entry_id: FromPath[str], pool: Injected[WorkerPool],
                           names: Injected[Names]) -> Response[bytes]:
        """One entry in full, from the worker that owns it."""
        client = await owner(pool, entry_id)
        try:
            response = await client.get(f"/entries/{entry_id}")
        except (WorkerError, httpx.HTTPError) as error:
            raise from_worker(error, client) from None
        return Response(names.entry_json(response.content), media_type=MediaType.JSON)

    @get("/servicemap")
    async def servicemap(self, request: Request, pool: Injected[WorkerPool], names: Injected[Names],
                         settings: Injected[HubSettings]) -> dict[str, Any]:
        """Endpoints and src -> dst edges (count, errors, error_rate, p50/p99) of the matching
        entries (at most `limit`, default 10000), with the `workers` block."""
        query = params.query(dict(request.query_params))
        limit = params.limit(query, SERVICEMAP_LIMIT, settings.max_query_rows)
        try:
            merged = await pool.open_entries(query, limit)
        except WorkerError as error:
            raise from_worker(error, None) from None
        builder = ServiceMapBuilder()
        async with aclosing(merged.merged()) as lines:
            async for raw in lines:
                entry = json.loads(raw)
                if names.fill is not None:
                    names.fill(entry)
                builder.add(entry)
                if builder.entries % 1000 == 0:
                    await asyncio.sleep(0)     # a long map does not hold the event loop
        return {**builder.result(), "entries": builder.entries, "workers": merged.workers}

    @get("/query/validate")
    async def validate_query(self, request: Request) -> dict[str, Any]:
        """Whether q is valid KFL, and where it goes wrong."""
        query = dict(request.query_params)
        params.only(query, ("q",))
        error = kfl.validate(query.get("q") or "")
        if error is None:
            return {"valid": True, "error": None, "column": None}
        return {"valid": False, "error": str(error), "column": error.column}
