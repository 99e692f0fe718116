"""Files for other tools: one entry's stream as pcap, a pcap merged from every worker, HAR."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
from litestar import Controller, MediaType, Request, get
from litestar.params import FromPath
from litestar.response import Stream

from hub import params
from hub.api import API, PCAP_MEDIA_TYPE
from hub.api.entries import owner
from hub.errors import BadGateway, from_worker
from hub.har import har_chunks
from hub.inject import Injected
from hub.kube.names import Names
from hub.rowbudget import RowBudget
from hub.settings import HubSettings
from hub.workers import WorkerError, WorkerPool

HAR_LIMIT = 10_000


class ExportController(Controller):
    path = API

    @get("/entries/{entry_id:str}/pcap")
    async def entry_pcap(self, entry_id: FromPath[str], pool: Injected[WorkerPool]) -> Stream:
        """That entry's stream as a pcap file, from the worker that owns it."""
        client = await owner(pool, entry_id)
        stack = AsyncExitStack()
        try:
            response = await client.open_stream(stack, f"/entries/{entry_id}/pcap")
        except (WorkerError, httpx.HTTPError) as error:
            await stack.aclose()
            raise from_worker(error, client) from None

        async def body() -> AsyncIterator[bytes]:
            async with stack:
                async for chunk in response.aiter_bytes():
                    yield chunk
        filename = f"{entry_id.replace(':', '-')}.pcap"
        return Stream(body(), media_type=PCAP_MEDIA_TYPE,
                      headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @get("/pcap")
    async def pcap(self, request: Request, pool: Injected[WorkerPool]) -> Stream:
        """One time-ordered pcap merged from every worker's matching packets."""
        query = params.query(dict(request.query_params))
        try:
            answer = await pool.pcap(query)
        except WorkerError as error:
            raise from_worker(error, None) from None
        failed = [part for part in answer.workers if not part.ok]
        if len(failed) == len(answer.workers):
            raise BadGateway("no worker answered: " + "; ".join(part.failure for part in failed))
        headers = {"Content-Disposition": 'attachment; filename="shark.pcap"'}
        if failed:
            headers["X-Shark-Partial"] = ", ".join(part.name for part in failed)
        return Stream(answer.chunks(), media_type=PCAP_MEDIA_TYPE, headers=headers)

    @get("/har")
    async def har(self, request: Request, pool: Injected[WorkerPool], names: Injected[Names],
                  settings: Injected[HubSettings], row_budget: Injected[RowBudget]) -> Stream:
        """HAR 1.2 of the HTTP entries matching q (oldest first)."""
        query = params.query(dict(request.query_params))
        limit = params.limit(query, HAR_LIMIT, settings.max_query_rows)
        q = query.get("q", "").strip()
        query["q"] = f"http and ({q})" if q else "http"
        # the newest `limit` lines are kept until the last is written: taken from what all
        # requests may hold at once (given back when the answer ends, hub/rowbudget.py)
        await row_budget.take(limit, request.scope)
        try:
            answer = await pool.raw_entries(query, limit)
        except WorkerError as error:
            raise from_worker(error, None) from None
        return Stream(har_chunks(answer.entries, answer.workers, names.fill), media_type=MediaType.JSON)
