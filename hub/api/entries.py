"""/entries (merged across workers), one entry in full, the service map over entries, and
query validation."""

from __future__ import annotations

from typing import Any

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
from hub.servicemap import build as build_servicemap
from hub.workers import WorkerClient, WorkerError, WorkerPool
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


class EntriesController(Controller):
    path = API

    @get("/entries")
    async def entries(self, request: Request, pool: Injected[WorkerPool], names: Injected[Names],
                      scripting: Injected[Scripting]) -> Response[Any] | Stream:
        """Entries from every worker, newest first, with the `workers` block."""
        query = params.query(dict(request.query_params))
        limit = params.limit(query)
        try:
            if names.fill is None and not scripting.wants_queried():
                # nothing to add to the entries: merged as they stream in, passed on as the
                # workers wrote them
                merged = await pool.open_entries(query, limit)
                return Stream(merged.chunks(), media_type=MediaType.JSON)
            answer = await pool.entries(query, limit)
        except WorkerError as error:
            raise from_worker(error, None) from None
        # onItemQueried (scripts) may tag or change what is answered
        return Response({"entries": await scripting.on_queried(names.entries(answer.entries)),
                         "workers": answer.workers})

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
    async def servicemap(self, request: Request, pool: Injected[WorkerPool],
                         names: Injected[Names]) -> dict[str, Any]:
        """Endpoints and src -> dst edges (count, errors, error_rate, p50/p99) of the matching
        entries (at most `limit`, default 10000), with the `workers` block."""
        query = params.query(dict(request.query_params))
        limit = params.limit(query, SERVICEMAP_LIMIT)
        try:
            answer = await pool.entries(query, limit)
        except WorkerError as error:
            raise from_worker(error, None) from None
        return {**build_servicemap(names.entries(answer.entries)), "entries": len(answer.entries),
                "workers": answer.workers}

    @get("/query/validate")
    async def validate_query(self, request: Request) -> dict[str, Any]:
        """Whether q is valid KFL, and where it goes wrong."""
        query = dict(request.query_params)
        params.only(query, ("q",))
        error = kfl.validate(query.get("q") or "")
        if error is None:
            return {"valid": True, "error": None, "column": None}
        return {"valid": False, "error": str(error), "column": error.column}
