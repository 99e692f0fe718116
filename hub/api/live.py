"""The live feed: SSE at /api/v1/stream, and WS /api/v1/ws for clients without SSE.

SSE: `event: entry` (id = the client's position), `event: status`, `event: lost`, `event: tags`.

WS: the first message from the client is the KFL query (plain text; "" for everything; a JSON
object {"q": "..."} is accepted too). It is validated here: an invalid query is answered with
{"type": "error", "payload": {"detail", "column"}} and the socket is closed with 1008. After
that every message is {"type", "payload"}: "entry" (an Entry, plus "seq", its SSE id: the
position after it), "status" (a worker's health changed: {node, url, ok, error}) and "lost"
({lost: N}, events dropped from this client's bounded queue, oldest first).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from litestar import Controller, Request, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.types import ASGIApp
from sse_starlette import EventSourceResponse

from hub import params
from hub.api import API
from hub.errors import Unavailable
from hub.events import HubEvent
from hub.inject import Injected
from hub.metrics import StreamCounters
from hub.stream import Feed
from shark import kfl

log = logging.getLogger("shark.hub.ws")

SSE_PING_S = 15
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013          # RFC 6455 registry: the server is overloaded; come back later
FIRST_MESSAGE_TIMEOUT_S = 30.0


class LiveController(Controller):
    path = API

    @get("/stream", include_in_schema=False)
    async def stream(self, request: Request, feed: Injected[Feed],
                     counters: Injected[StreamCounters]) -> ASGIApp:
        """SSE: `event: entry` (id = hub sequence), `event: status`, `event: lost`."""
        q, last_id = params.live(dict(request.query_params), request.headers)
        problem = feed.refusal(q)
        if problem is not None:
            raise Unavailable(problem, headers={"Retry-After": "10"})
        # the headers say "streaming from now": sent once the query's worker streams are open
        await feed.ready(q)
        batches = counters.track(feed.batches(q, last_id))
        return EventSourceResponse(_sse(batches), ping=SSE_PING_S, headers=SSE_HEADERS)

    @websocket("/ws")
    async def ws(self, socket: WebSocket, feed: Injected[Feed],
                 counters: Injected[StreamCounters]) -> None:
        """The merged live feed over a WebSocket; first message: the KFL query."""
        await socket.accept()
        try:
            first = await asyncio.wait_for(socket.receive_text(), FIRST_MESSAGE_TIMEOUT_S)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            await _close(socket, POLICY_VIOLATION)
            return
        text = params.ws_query(first)
        q = text.strip() or None
        if q is not None and (error := kfl.validate(text)) is not None:
            await socket.send_json({"type": "error", "payload": {"detail": f"q: {error}", "column": error.column}})
            await _close(socket, POLICY_VIOLATION)
            return
        problem = feed.refusal(q)
        if problem is not None:
            await socket.send_json({"type": "error", "payload": {"detail": problem}})
            await _close(socket, TRY_AGAIN_LATER)
            return

        async def pump() -> None:
            async for batch in counters.track(feed.batches(q, None), "ws"):
                for event in batch:
                    await socket.send_text(event.ws)     # encoded once, for all of its clients

        async def watch() -> None:
            try:
                while True:
                    await socket.receive_data(mode="text")   # later messages are ignored
            except WebSocketDisconnect:
                return

        sender = asyncio.create_task(pump())
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher):
                task.cancel()
            results = await asyncio.gather(sender, watcher, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect):
                    log.debug("websocket client: %r", result)
        await _close(socket, 1000)


async def _sse(batches: AsyncIterator[list[HubEvent]]) -> AsyncIterator[bytes]:
    """Each batch of events as SSE in one write; each event encoded once for all of its
    clients (hub/events.py)."""
    async with aclosing(batches):
        async for batch in batches:
            yield batch[0].sse if len(batch) == 1 else b"".join(event.sse for event in batch)


async def _close(socket: WebSocket, code: int) -> None:
    try:
        await socket.close(code=code)
    except Exception:   # already closed by the client
        pass
