"""The hub's live feed: one upstream per (worker, query), shared by every client with that query.

Clients that ask /stream (or /ws) for the same KFL query join one `Group`. The group follows
each worker's /stream once, with the query pushed down, and fans every entry out to its
members: the workers see one connection per query, however many browsers, curl -N and scripts
watch it (before, each client opened its own connection to every worker; docs/BENCHMARKS.md
has the comparison).

Event ids: every entry event gets a hub id from one counter that starts at the hub's start time
in microseconds, so ids grow, stay unique within the process and do not repeat after a restart.
A group remembers, in bounded rings, which worker and worker sequence each id stood for and the
last events themselves. A client that comes back with Last-Event-ID N gets what its group sent
after N: from the ring of recent events, or, when that has moved on, re-read from the workers'
indexes by worker sequence. When N is older than anything the group remembers (or the group
was started after N), the client is told with `event: lost` ({"lost": null, "reason": ...}).

Each client has one bounded queue: when it is full the oldest event goes and the client is
told with `event: lost` {lost: N}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
from sse_starlette import ServerSentEvent

from hub.workers import WorkerClient, WorkerPool, describe

log = logging.getLogger("shark.hub.stream")

MARKS_SIZE = 100_000       # ids a group can map back to worker positions (~2.4 MB per group)
RECENT_SIZE = 2_000        # events a group keeps to replay without asking the workers
CLIENT_QUEUE = 1_000
LINGER_S = 30.0            # an empty group waits this long for clients reconnecting
CATCH_UP_TIMEOUT_S = 10.0  # longest wait for a worker to replay what a client missed
RECONNECT_S = (0.2, 5.0)   # first and longest wait before reconnecting to a worker


class Marks:
    """The last `size` (hub id, worker, worker seq) marks of one group, in id order, kept in
    flat arrays so a busy group costs a fixed few MB."""

    def __init__(self, size: int = MARKS_SIZE) -> None:
        self.size = size
        self.ids = array("q", [0]) * size
        self.workers = array("H", [0]) * size
        self.seqs = array("q", [0]) * size
        self.count = 0                       # marks ever added
        self.worker_names: list[str] = []    # worker index -> worker URL
        self._worker_index: dict[str, int] = {}

    def add(self, hub_id: int, worker: str, worker_seq: int) -> None:
        index = self._worker_index.get(worker)
        if index is None:
            index = self._worker_index[worker] = len(self.worker_names)
            self.worker_names.append(worker)
        slot = self.count % self.size
        self.ids[slot], self.workers[slot], self.seqs[slot] = hub_id, index, worker_seq
        self.count += 1

    def _ordered(self) -> range:
        first = max(0, self.count - self.size)
        return range(first, self.count)

    @property
    def oldest_id(self) -> int | None:
        if not self.count:
            return None
        return self.ids[max(0, self.count - self.size) % self.size]

    def after(self, last_id: int, upto: int) -> list[tuple[int, str, int]]:
        """(hub id, worker, worker seq) of every mark with last_id < id <= upto, in id order."""
        out = []
        for n in self._ordered():
            slot = n % self.size
            hub_id = self.ids[slot]
            if last_id < hub_id <= upto:
                out.append((hub_id, self.worker_names[self.workers[slot]], self.seqs[slot]))
        return out


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


CONNECTED = -1   # worker_entries' (seq, data) when the stream is open: data is ""
LOST = -2        # ... when the worker dropped entries for this stream: data is its {"lost": N}


async def worker_entries(client: WorkerClient, q: str | None, after: int | None,
                         ) -> AsyncIterator[tuple[int, str]]:
    """(worker seq, Entry JSON) from one worker's /stream: what its index holds after `after`,
    then live; and the CONNECTED and LOST markers. Raises httpx.HTTPError when the worker
    cannot be reached or ends the stream."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    params = {"q": q} if q else {}
    async with client.http.stream("GET", "/stream", params=params, headers=headers,
                                  timeout=httpx.Timeout(None, connect=3.0)) as response:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request,
                                        response=response)
        yield CONNECTED, ""     # lets the caller report the worker up before any entry
        async for event in _sse_lines(response):
            if event.get("event") == "lost":
                yield LOST, event.get("data", "")
                continue
            if event.get("event") != "entry":
                continue
            try:
                worker_seq = int(event.get("id", ""))
            except ValueError:
                continue
            yield worker_seq, event["data"]
    raise httpx.RemoteProtocolError("the worker ended the stream")


def status_event(client: WorkerClient, ok: bool, error: str | None) -> ServerSentEvent:
    payload = {"node": client.node, "url": client.url, "ok": ok, "error": error}
    return ServerSentEvent(data=json.dumps(payload), event="status")


def lost_event(lost: int | None, reason: str | None = None, node: str | None = None) -> ServerSentEvent:
    payload: dict[str, Any] = {"lost": lost}
    if reason:
        payload["reason"] = reason
    if node:
        payload["node"] = node
    return ServerSentEvent(data=json.dumps(payload), event="lost")


class Group:
    """The clients of one query and the one upstream per worker that feeds them all."""

    def __init__(self, feed: Feed, q: str | None) -> None:
        self.feed = feed
        self.q = q
        self.started_id = feed.last_id    # ids at or below this were never this group's
        self.members: set[ClientQueue] = set()
        self.followers: dict[WorkerClient, asyncio.Task[None]] = {}
        self.up: dict[WorkerClient, tuple[bool, str | None]] = {}
        self.marks = Marks(feed.marks_size)
        self.recent: deque[tuple[int, ServerSentEvent]] = deque(maxlen=feed.recent_size)
        self.last_id = self.started_id
        self.closer: asyncio.Task[None] | None = None

    # -- workers --------------------------------------------------------------------------
    def add_worker(self, client: WorkerClient) -> None:
        if client not in self.followers:
            self.followers[client] = asyncio.create_task(self._follow(client), name=f"feed {client.url}")

    def remove_worker(self, client: WorkerClient) -> None:
        task = self.followers.pop(client, None)
        if task is not None:
            task.cancel()
        self.up.pop(client, None)
        self._broadcast(status_event(client, False, "left the hub's workers"))

    def _set_up(self, client: WorkerClient, ok: bool, error: str | None) -> None:
        if self.up.get(client, (None, None))[0] is ok:
            return
        self.up[client] = (ok, error)
        self._broadcast(status_event(client, ok, error))

    async def _follow(self, client: WorkerClient) -> None:
        """Follow one worker's /stream for the group, resuming after the last seq seen."""
        delay = RECONNECT_S[0]
        after: int | None = None
        while True:
            try:
                async with aclosing(worker_entries(client, self.q, after)) as entries:
                    async for worker_seq, data in entries:
                        if worker_seq == CONNECTED:
                            client.mark(None)
                            self._set_up(client, True, None)
                            delay = RECONNECT_S[0]
                            continue
                        if worker_seq == LOST:
                            self._worker_lost(client, data)
                            continue
                        after = worker_seq
                        self._publish(client, worker_seq, data)
            except httpx.HTTPError as error:
                client.mark(error)
                self._set_up(client, False, client.health.error or describe(error))
                log.debug("stream from %s: %s; reconnecting in %.1fs", client.url, describe(error), delay)
            except Exception as error:   # noqa: BLE001 - a bug here must not end this worker's feed for good
                log.exception("stream from %s failed; reconnecting in %.1fs", client.url, delay)
                self._set_up(client, False, f"{type(error).__name__}: {error}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _worker_lost(self, client: WorkerClient, data: str) -> None:
        """The worker's own queue for this stream overflowed: its entries are in its index
        (/entries) but were not streamed; every member is told, with the worker named."""
        try:
            lost = int(json.loads(data)["lost"])
        except (ValueError, KeyError, TypeError):
            return
        self._broadcast(lost_event(lost, f"worker {client.node or client.url} could not stream them fast "
                                         "enough; they are in /api/v1/entries", node=client.node))

    # -- members --------------------------------------------------------------------------
    def _publish(self, client: WorkerClient, worker_seq: int, data: str) -> None:
        hub_id = self.feed.next_id()
        self.last_id = hub_id
        self.marks.add(hub_id, client.url, worker_seq)
        event = ServerSentEvent(data=data, event="entry", id=str(hub_id))
        self.recent.append((hub_id, event))
        for member in self.members:
            member.put(event)

    def _broadcast(self, event: ServerSentEvent) -> None:
        for member in self.members:
            member.put(event)

    def join(self, queue: ClientQueue) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        for client, (ok, error) in self.up.items():
            queue.put(status_event(client, ok, error))
        self.members.add(queue)

    def leave(self, queue: ClientQueue) -> None:
        self.members.discard(queue)
        if not self.members and self.closer is None:
            self.closer = asyncio.create_task(self._close_later(), name="feed group linger")

    async def _close_later(self) -> None:
        await asyncio.sleep(self.feed.linger_s)
        if not self.members:
            self.feed.forget(self)
            await self.close()

    async def close(self) -> None:
        tasks = list(self.followers.values())
        if self.closer is not None and self.closer is not asyncio.current_task():
            tasks.append(self.closer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.followers.clear()

    # -- resume ---------------------------------------------------------------------------
    def remembers(self, last_id: int) -> bool:
        """Whether every event this group sent after `last_id` is still in its marks."""
        if last_id <= self.started_id:
            return False
        oldest = self.marks.oldest_id
        return self.marks.count <= self.marks.size or (oldest is not None and last_id >= oldest)

    async def missed(self, last_id: int, upto: int) -> AsyncIterator[ServerSentEvent]:
        """What this group sent after `last_id` up to `upto`, in id order."""
        if last_id >= upto and last_id > self.started_id:
            return
        if not self.remembers(last_id):
            yield lost_event(None, f"Last-Event-ID {last_id} is older than what the hub remembers "
                                   "for this query; entries since then are in /api/v1/entries")
            return
        wanted = self.marks.after(last_id, upto)
        recent = {hub_id: event for hub_id, event in self.recent}
        missing = [(hub_id, worker, seq) for hub_id, worker, seq in wanted if hub_id not in recent]
        fetched = await self._refetch(missing) if missing else {}
        lost = 0
        for hub_id, _, _ in wanted:
            if hub_id in recent:
                yield recent[hub_id]
            elif hub_id in fetched:
                yield ServerSentEvent(data=fetched[hub_id], event="entry", id=str(hub_id))
            else:
                lost += 1
        if lost:
            yield lost_event(lost, "evicted from the workers' storage, or a worker did not answer")

    async def _refetch(self, missing: list[tuple[int, str, int]]) -> dict[int, str]:
        """Ask each worker again, by worker seq, for the entries the recent ring no longer has:
        its /stream replays from its index after the seq given as Last-Event-ID."""
        by_worker: dict[str, dict[int, int]] = {}
        for hub_id, worker, seq in missing:
            by_worker.setdefault(worker, {})[seq] = hub_id
        clients = {client.url: client for client in self.feed.pool.clients}
        found: dict[int, str] = {}

        async def one(url: str, seqs: dict[int, int]) -> None:
            client = clients.get(url)
            if client is None:
                return
            end = max(seqs)
            try:
                async with asyncio.timeout(CATCH_UP_TIMEOUT_S), \
                        aclosing(worker_entries(client, self.q, min(seqs) - 1)) as entries:
                    async for worker_seq, data in entries:
                        if worker_seq < 0:
                            continue
                        if worker_seq in seqs:
                            found[seqs[worker_seq]] = data
                        if worker_seq >= end:
                            return
            except (httpx.HTTPError, TimeoutError) as error:
                log.info("catching a client up from %s: %s", url, describe(error))
        await asyncio.gather(*(one(url, seqs) for url, seqs in by_worker.items()))
        return found


class Feed:
    """Every live group of one hub, and the id counter they share."""

    def __init__(self, pool: WorkerPool, *, linger_s: float = LINGER_S, marks_size: int = MARKS_SIZE,
                 recent_size: int = RECENT_SIZE, queue_size: int = CLIENT_QUEUE) -> None:
        self.pool = pool
        self.linger_s = linger_s
        self.marks_size = marks_size
        self.recent_size = recent_size
        self.queue_size = queue_size
        self.groups: dict[str | None, Group] = {}
        self.last_id = int(time.time() * 1_000_000)
        pool.on_membership.append(self._membership)

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def _membership(self, client: WorkerClient, joined: bool) -> None:
        for group in self.groups.values():
            if joined:
                group.add_worker(client)
            else:
                group.remove_worker(client)

    def group(self, q: str | None) -> Group:
        q = q or None
        group = self.groups.get(q)
        if group is None:
            group = self.groups[q] = Group(self, q)
            for client in self.pool.clients:
                group.add_worker(client)
        return group

    def forget(self, group: Group) -> None:
        if self.groups.get(group.q) is group:
            del self.groups[group.q]

    async def close(self) -> None:
        groups = list(self.groups.values())
        self.groups.clear()
        await asyncio.gather(*(group.close() for group in groups))

    def announce_tags(self, entry_id: str, tags: list[str]) -> None:
        """An entry's tags changed (a script tagged it after it was streamed): every live
        client is told with `event: tags` {id, tags}; no `id:`, so resuming is unaffected."""
        event = ServerSentEvent(data=json.dumps({"id": entry_id, "tags": tags}), event="tags")
        for group in self.groups.values():
            group._broadcast(event)

    def upstreams(self) -> int:
        """Connections to workers the feed holds (for /metrics)."""
        return sum(len(group.followers) for group in self.groups.values())

    async def events(self, q: str | None, last_id: int | None) -> AsyncIterator[ServerSentEvent]:
        group = self.group(q)
        queue = ClientQueue(self.queue_size)
        upto = group.last_id
        group.join(queue)
        try:
            if last_id is not None:
                # live events queue up meanwhile; what was missed comes first, in id order
                async for event in group.missed(last_id, upto):
                    yield event
            while True:
                event, lost = await queue.get()
                if lost:
                    yield lost_event(lost)
                yield event
        finally:
            group.leave(queue)


def last_event_id(headers: dict[str, Any]) -> int | None:
    text = headers.get("last-event-id")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"Last-Event-ID: {text!r} is not an event id from this hub") from None
