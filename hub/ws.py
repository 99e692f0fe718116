"""WS /api/v1/ws: the live feed for clients without SSE, on the same merged stream as /stream.

The first message from the client is the KFL query (plain text; "" for everything; a JSON
object {"q": "..."} is accepted too). It is validated here: an invalid query is answered with
{"type": "error", "payload": {"detail", "column"}} and the socket is closed with 1008. After
that every message is {"type", "payload"}: "entry" (an Entry, plus "seq", its SSE id: the
position after it), "status" (a worker's health changed: {node, url, ok, error}) and "lost" ({lost: N}, events
dropped from this client's bounded queue, oldest first).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from hub.metrics import StreamCounters
from hub.stream import Feed
from shark import kfl

log = logging.getLogger("shark.hub.ws")
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013          # RFC 6455 registry: the server is overloaded; come back later
FIRST_MESSAGE_TIMEOUT_S = 30.0


def parse_first(message: str) -> str:
    text = message.strip()
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            return message
        if isinstance(decoded, dict) and isinstance(decoded.get("q", ""), str):
            return decoded.get("q", "")
    return message


def as_message(event: Any) -> dict[str, Any]:
    """An sse_starlette ServerSentEvent of the Feed as a {type, payload} message."""
    payload = json.loads(event.data)
    if event.event == "entry" and isinstance(payload, dict) and event.id is not None:
        payload = {**payload, "seq": event.id}
    return {"type": event.event, "payload": payload}


def ws_handler(path: str, feed: Feed, counters: StreamCounters):  # noqa: ANN201
    @websocket(path)
    async def ws(socket: WebSocket) -> None:
        """The merged live feed over a WebSocket; first message: the KFL query."""
        await socket.accept()
        try:
            first = await asyncio.wait_for(socket.receive_text(), FIRST_MESSAGE_TIMEOUT_S)
        except (WebSocketDisconnect, asyncio.TimeoutError):
            await _close(socket, POLICY_VIOLATION)
            return
        q = parse_first(first)
        if q.strip() and (error := kfl.validate(q)) is not None:
            await socket.send_json({"type": "error", "payload": {"detail": f"q: {error}", "column": error.column}})
            await _close(socket, POLICY_VIOLATION)
            return

        problem = feed.refusal(q.strip() or None)
        if problem is not None:
            await socket.send_json({"type": "error", "payload": {"detail": problem}})
            await _close(socket, TRY_AGAIN_LATER)
            return

        async def pump() -> None:
            async for event in counters.track(feed.events(q.strip() or None, None), "ws"):
                await socket.send_json(as_message(event))

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

    return ws


async def _close(socket: WebSocket, code: int) -> None:
    try:
        await socket.close(code=code)
    except Exception:   # already closed by the client
        pass
