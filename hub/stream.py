"""The hub's live feed: per client, one SSE connection per worker (q pushed down), merged into
one SSE stream with hub event ids.

Every entry event gets a hub sequence number as its `id:`. A bounded ring remembers, for the
most recent events, which worker and which worker sequence each id stood for; a client that
comes back with Last-Event-ID N is resumed on every worker from the newest worker sequence the
ring saw at or before N (the workers replay what was missed from their index). Each client
has one bounded queue: when it is full the oldest event goes and the client is told with
`event: lost` {lost: N}.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from sse_starlette import ServerSentEvent

from hub.workers import WorkerClient, WorkerPool, describe

log = logging.getLogger("shark.hub.stream")

RING_SIZE = 10_000
CLIENT_QUEUE = 1_000
RECONNECT_S = (0.2, 5.0)   # first and longest wait before reconnecting to a worker


@dataclass(frozen=True)
class Mark:
    hub_seq: int
    worker: int      # index into the pool's clients
    worker_seq: int


class Ring:
    """The last RING_SIZE (hub id -> worker, worker seq) marks; memory stays bounded."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.marks: deque[Mark] = deque(maxlen=size)
        self.next_seq = 1

    def add(self, worker: int, worker_seq: int) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.marks.append(Mark(seq, worker, worker_seq))
        return seq

    def positions(self, last_id: int) -> dict[int, int]:
        """Per worker, the newest worker seq sent as a hub id <= last_id."""
        marks = list(self.marks)
        cut = bisect.bisect_right([m.hub_seq for m in marks], last_id)
        found: dict[int, int] = {}
        for mark in marks[:cut]:
            found[mark.worker] = max(found.get(mark.worker, -1), mark.worker_seq)
        return found


class ClientQueue:
    """A bounded queue that drops the oldest item and counts what it dropped."""

    def __init__(self, size: int = CLIENT_QUEUE) -> None:
        self.items: deque[ServerSentEvent] = deque()
        self.size = size
        self.lost = 0
        self.ready = asyncio.Event()

    def put(self, event: ServerSentEvent) -> None:
        if len(self.items) >= self.size:
            self.items.popleft()
            self.lost += 1
        self.items.append(event)
        self.ready.set()

    async def get(self) -> tuple[ServerSentEvent, int]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        lost, self.lost = self.lost, 0
        return self.items.popleft(), lost


async def _sse_lines(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Events of an SSE response as {event, data, id} dicts."""
    event: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield {**event, "data": "\n".join(data)}
            event, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name in ("event", "id"):
                event[name] = value


class Feed:
    """The state shared by every SSE client of one hub: the ring of ids."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.ring = Ring()

    def status_event(self, client: WorkerClient) -> ServerSentEvent:
        payload = {"node": client.node, "url": client.url, "ok": client.health.ok,
                   "error": client.health.error}
        return ServerSentEvent(data=json.dumps(payload), event="status")

    async def _follow(self, index: int, q: str | None, after: int | None, queue: ClientQueue) -> None:
        """Follow one worker's /stream for one client, reconnecting while it is down."""
        client = self.pool.clients[index]
        delay = RECONNECT_S[0]
        up: bool | None = None
        while True:
            headers = {"Last-Event-ID": str(after)} if after is not None else {}
            params = {"q": q} if q else {}
            try:
                async with client.http.stream("GET", "/stream", params=params, headers=headers,
                                              timeout=httpx.Timeout(None, connect=3.0)) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                                    response=response)
                    if up is not True:
                        up = True
                        client.mark(None)
                        queue.put(self.status_event(client))
                    delay = RECONNECT_S[0]
                    async for event in _sse_lines(response):
                        if event.get("event") != "entry":
                            continue
                        try:
                            worker_seq = int(event.get("id", ""))
                        except ValueError:
                            continue
                        after = worker_seq
                        hub_seq = self.ring.add(index, worker_seq)
                        queue.put(ServerSentEvent(data=event["data"], event="entry", id=str(hub_seq)))
                raise httpx.RemoteProtocolError("the worker ended the stream")
            except httpx.HTTPError as error:
                if up is not False:
                    up = False
                    client.mark(error)
                    queue.put(self.status_event(client))
                log.debug("stream from %s: %s; reconnecting in %.1fs", client.url, describe(error), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    async def events(self, q: str | None, last_id: int | None) -> AsyncIterator[ServerSentEvent]:
        queue = ClientQueue()
        positions = self.ring.positions(last_id) if last_id is not None else {}
        tasks = [asyncio.create_task(self._follow(i, q, positions.get(i), queue))
                 for i in range(len(self.pool.clients))]
        try:
            while True:
                event, lost = await queue.get()
                if lost:
                    yield ServerSentEvent(data=json.dumps({"lost": lost}), event="lost")
                yield event
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def last_event_id(headers: dict[str, Any]) -> int | None:
    text = headers.get("last-event-id")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Last-Event-ID: {text!r} is not an event id from this hub") from None
