"""The hub's live feed: one upstream per (worker, query), shared by every client with that query.

Clients that ask /stream (or /ws) for the same KFL query join one `Group`. The group follows
each worker's /stream once, with the query pushed down, and fans every entry out to its
members: the workers see one connection per query, however many browsers, curl -N and scripts
watch it (before, each client opened its own connection to every worker; docs/BENCHMARKS.md
has the comparison).

Event ids are positions, not counters: the id of an entry event lists, for every node the group
follows, the last entry of that node the group had sent with it (`node@store:seq`, comma
separated; `store` names the worker's index, so a reset store is told apart). A client that
comes back with Last-Event-ID therefore says exactly what it has seen, and any hub can answer
it, the same process or one started since on another node with another clock: from the ring of
recent events when its id is there, otherwise re-read from each worker's index after that
node's position up to where the group is now. What cannot be given is said with `event: lost`
naming the node and why (a worker down, a node not in the feed then, a store reset since).

Each client has one bounded queue (shark/queues.py): when it is full the oldest event goes and
the client is told with `event: lost` {lost: N}. Entries move in batches: a worker's stream is
cut into events a read at a time (worker_batches), each batch goes into every member's queue in
one put, and a client's writer takes all it has queued in one get (Feed.batches).

Events are hub/events.py's HubEvent, made once per event and shared by the group's clients;
an entry is named (in a cluster) once, when the group publishes it, not per client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

import httpx

from hub.events import HubEvent, entry_event, lost_event, status_event, tags_event
from hub.workers import WorkerClient, WorkerPool, describe
from shark.queues import DropOldest
from shark.seq import parse_seq

log = logging.getLogger("shark.hub.stream")

RECENT_SIZE = 2_000        # events a group keeps to replay without asking the workers
CLIENT_QUEUE = 1_000        # events a live client's queue holds before it loses the oldest
SEND_BATCH = 1_000         # events a client gets in one write, at most (all it has queued)
LINGER_S = 30.0            # an empty group waits this long for clients reconnecting
CATCH_UP_TIMEOUT_S = 10.0  # longest wait for a worker to replay what a client missed
REPLAY_LIMIT = 100_000     # entries one resume re-reads from the workers, at most
RECONNECT_S = (0.2, 5.0)   # first and longest wait before reconnecting to a worker
BUSY_RETRY_MAX_S = 60.0    # longest wait before asking a busy worker again (its Retry-After, doubled per refusal)
READY_S = 5.0              # longest a new client waits for a query's worker streams to open
MAX_LIVE_CLIENTS = 1_000   # SSE + WebSocket clients at once (each holds a queue of CLIENT_QUEUE events)
MAX_LIVE_QUERIES = 100     # distinct live queries at once (each holds one stream per worker)

Positions = dict[str, tuple[str, int]]   # node -> (worker store id, last worker seq sent)
Rewrite = Callable[[bytes], bytes]       # an entry's JSON as clients get it (names filled in)


def format_positions(positions: Positions) -> str:
    """The event id of a position: `node@store:seq,...`, nodes sorted, names %-quoted."""
    if len(positions) == 1:       # one worker: the id of every entry event, made per entry
        [(node, (store, seq))] = positions.items()
        return f"{_quoted(node)}@{store}:{seq}"
    return ",".join(f"{_quoted(node)}@{store}:{seq}" for node, (store, seq) in sorted(positions.items()))


@lru_cache(maxsize=4096)
def _quoted(node: str) -> str:
    return quote(node, safe="")


def parse_positions(text: str) -> Positions:
    """A Last-Event-ID of this hub -> positions; ValueError naming the part that is wrong."""
    positions: Positions = {}
    for index, part in enumerate(text.split(",")):
        node, at, rest = part.partition("@")
        store, colon, number = rest.rpartition(":")
        seq = parse_seq(number)
        if not (node and at and colon and seq is not None) or (store and not store.isalnum()):
            raise ValueError(f"Last-Event-ID: part {index + 1} {part!r} is not NODE@STORE:SEQ "
                             "(an event id of this hub's /stream)")
        positions[unquote(node)] = (store, seq)
    return positions


async def _sse_batches(response: httpx.Response) -> AsyncIterator[list[tuple[str, str, bytes]]]:
    """The events of an SSE response as (event, id, data), a list per chunk read: a busy worker
    sends hundreds of events in one write, and cutting them out of the bytes in C (split on the
    blank line) instead of line by line is what lets one hub follow it."""
    rest = b""
    async for chunk in response.aiter_bytes():
        buffer, held = rest + chunk, b""
        if buffer.endswith(b"\r"):       # perhaps the first half of a CRLF: the next chunk says
            buffer, held = buffer[:-1], b"\r"
        batch, rest = _sse_cut(buffer)
        rest += held
        if batch:
            yield batch
    if rest.endswith(b"\r"):             # the stream ended on a lone CR: it ended a line
        batch, _ = _sse_cut(rest[:-1] + b"\n")
        if batch:
            yield batch


def _sse_cut(buffer: bytes) -> tuple[list[tuple[str, str, bytes]], bytes]:
    """The whole events at the start of `buffer` as (event, id, data), and what is left of it."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    blocks = buffer.split(b"\n\n")
    rest = blocks.pop()
    batch = []
    for block in blocks:
        lines = block.split(b"\n")
        if len(lines) == 3 and lines[1] == b"event: entry" and lines[0][:4] == b"id: " and lines[2][:6] == b"data: ":
            # a worker's entry event, as it writes each (worker/api/app.py): the same fields the
            # loop below finds, a few C calls instead of a partition per line
            batch.append(("entry", lines[0][4:].decode("utf-8", "replace"), lines[2][6:]))
            continue
        name, ident, data = "", "", []
        for line in lines:
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value.decode("utf-8", "replace")
            elif field == b"id":
                ident = value.decode("utf-8", "replace")
        if data:                          # comments (pings) and events without data are skipped
            batch.append((name, ident, b"\n".join(data)))
    return batch, rest


CONNECTED = -1   # worker_entries' (seq, data) when the stream is open: data is its hello ("" from a worker without one)
LOST = -2        # ... when the worker dropped entries for this stream: data is its {"lost": N}
NO_ID = -3       # ... for an entry the worker sent without an id (cannot be resumed from)
REPLAYED = -4    # ... when what it held after Last-Event-ID was sent: data is {"seq", "evicted"}


async def worker_batches(client: WorkerClient, q: str | None, after: str | None,
                         ) -> AsyncIterator[list[tuple[int, bytes]]]:
    """(worker seq, Entry JSON) from one worker's /stream, a list per chunk read: what its index
    holds after `after` (SEQ or STORE:SEQ), then live; and the CONNECTED, LOST, NO_ID and
    REPLAYED markers. Raises httpx.HTTPError when the worker cannot be reached or ends the stream."""
    headers = {"Last-Event-ID": after} if after is not None else {}
    params = {"q": q} if q else {}
    async with client.http.stream("GET", "/stream", params=params, headers=headers,
                                  timeout=httpx.Timeout(None, connect=3.0)) as response:
        if response.status_code != 200:
            # the worker's reason (a full worker names --max-stream-clients) reaches the
            # clients in the status event; an error body is one small JSON object, read at most
            # ERROR_BODY bytes of
            raise httpx.HTTPStatusError(f"HTTP {response.status_code}{await _error_detail(response)}",
                                        request=response.request, response=response)
        greeted = False
        async for events in _sse_batches(response):
            batch: list[tuple[int, bytes]] = []
            for kind, ident, data in events:
                if kind == "hello" and not greeted:
                    greeted = True
                    batch.append((CONNECTED, data))
                    continue
                if not greeted:     # a worker from before the hello: connected all the same
                    greeted = True
                    batch.append((CONNECTED, b""))
                if kind == "entry":
                    batch.append((int(ident) if ident.isdigit() else NO_ID, data))
                elif kind == "lost":
                    batch.append((LOST, data))
                elif kind == "live":
                    batch.append((REPLAYED, data))
            if batch:
                yield batch
        if not greeted:
            yield [(CONNECTED, b"")]
    raise httpx.RemoteProtocolError("the worker ended the stream")


ERROR_BODY = 4096


async def _error_detail(response: httpx.Response) -> str:
    """': DETAIL' of a worker's error answer ({"error", "detail"}), or '' when it has none."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY:
            break
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    return f": {detail}" if isinstance(detail, str) and detail else ""


async def worker_entries(client: WorkerClient, q: str | None, after: str | None,
                         ) -> AsyncIterator[tuple[int, bytes]]:
    """worker_batches one (seq, data) at a time (for a replay, which stops part-way)."""
    async with aclosing(worker_batches(client, q, after)) as batches:
        async for batch in batches:
            for item in batch:
                yield item


def _hello(data: bytes) -> tuple[str | None, str, int | None, bool]:
    """A worker's hello -> (node, store, head, reset); empty for a worker that sent none."""
    try:
        hello = json.loads(data) if data else {}
    except ValueError:
        hello = {}
    if not isinstance(hello, dict):
        hello = {}
    node = hello.get("node") if isinstance(hello.get("node"), str) and hello.get("node") else None
    store = hello.get("store") if isinstance(hello.get("store"), str) and hello["store"].isalnum() else ""
    head = hello.get("head") if isinstance(hello.get("head"), int) else None
    return node, store, head, hello.get("reset") is True


def _evicted_count(data: bytes) -> int:
    try:
        evicted = json.loads(data).get("evicted", 0)
    except (ValueError, AttributeError):
        return 0
    return evicted if isinstance(evicted, int) and evicted > 0 else 0


def worker_status(client: WorkerClient, ok: bool, error: str | None, state: Any = None,
                  retry_s: float | None = None) -> HubEvent:
    return status_event(client.node, client.url, ok, error, state, retry_s)


def busy_retry_s(error: httpx.HTTPStatusError) -> float | None:
    """A worker's 503 with Retry-After (its --max-stream-clients): seconds it asks the hub to
    wait; None for any other failure. The worker is up, only busy."""
    if error.response.status_code != 503:
        return None
    text = error.response.headers.get("retry-after", "").strip()
    return float(text) if text.isdigit() else None


class Follower:
    """One worker's /stream for a group: the node it turned out to be, and whether it has
    answered (or failed) once, which a resume waits for."""

    def __init__(self, client: WorkerClient) -> None:
        self.client = client
        self.node: str | None = None
        self.settled = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.told_no_id = False


class Group:
    """The clients of one query and the one upstream per worker that feeds them all."""

    def __init__(self, feed: Feed, q: str | None) -> None:
        self.feed = feed
        self.q = q
        self.members: set[DropOldest[HubEvent]] = set()
        self.followers: dict[WorkerClient, Follower] = {}
        self.up: dict[WorkerClient, tuple[bool, str | None, str | None, float | None]] = {}
        self.positions: Positions = {}
        self.cursor = ""                  # format_positions(self.positions), kept current
        self.recent: deque[tuple[str, HubEvent]] = deque(maxlen=feed.recent_size)
        self.closer: asyncio.Task[None] | None = None

    # -- workers --------------------------------------------------------------------------
    def add_worker(self, client: WorkerClient) -> None:
        if client not in self.followers:
            follower = self.followers[client] = Follower(client)
            follower.task = asyncio.create_task(self._follow(follower), name=f"feed {client.url}")

    def remove_worker(self, client: WorkerClient) -> None:
        follower = self.followers.pop(client, None)
        if follower is not None and follower.task is not None:
            follower.task.cancel()
        self.up.pop(client, None)
        self._broadcast(worker_status(client, False, "left the hub's workers"))

    def _set_up(self, client: WorkerClient, ok: bool, error: str | None, state: str | None = None,
                retry_s: float | None = None) -> None:
        """Tell the members when the worker's stream changes state (up, down, busy)."""
        before = self.up.get(client)
        if before is not None and before[0] is ok and before[2] == state:
            return
        self.up[client] = (ok, error, state, retry_s)
        self._broadcast(worker_status(client, ok, error, state, retry_s))

    def _after(self, follower: Follower) -> str | None:
        """Where a reconnecting follower resumes: STORE:SEQ of its node's position."""
        if follower.node is None or follower.node not in self.positions:
            return None
        store, seq = self.positions[follower.node]
        return f"{store}:{seq}" if store else str(seq)

    async def _follow(self, follower: Follower) -> None:
        """Follow one worker's /stream for the group, resuming after its node's position."""
        try:
            await self._follow_loop(follower)
        finally:
            follower.client.refusing.pop(follower, None)   # a follower gone refuses nothing

    async def _follow_loop(self, follower: Follower) -> None:
        client = follower.client
        delay = RECONNECT_S[0]
        refusals = 0          # the worker's refusals in a row (busy): each wait twice the last
        while True:
            wait = None
            try:
                async with aclosing(worker_batches(client, self.q, self._after(follower))) as batches:
                    async for batch in batches:
                        published: list[HubEvent] = []
                        for worker_seq, data in batch:
                            if worker_seq >= 0 or worker_seq == NO_ID:
                                published.append(self._entry(follower, worker_seq, data))
                                continue
                            self._fan_out(published)     # in order: the entries before the marker first
                            published = []
                            if worker_seq == CONNECTED:
                                self._connected(follower, data)
                                delay, refusals = RECONNECT_S[0], 0
                            elif worker_seq == LOST:
                                self._worker_lost(client, data)
                            elif worker_seq == REPLAYED:
                                self._evicted(follower, data)
                        self._fan_out(published)
            except httpx.HTTPStatusError as error:
                retry = busy_retry_s(error)
                if retry is None:
                    self._down(follower, error, delay)
                else:
                    # up, only busy: not marked down; asked again after its Retry-After, and
                    # longer after each refusal in a row (bounded)
                    refusals = min(refusals + 1, 8)
                    wait = min(max(retry, RECONNECT_S[0]) * 2 ** (refusals - 1), BUSY_RETRY_MAX_S)
                    reason = str(error)
                    client.refusing[follower] = reason
                    self._set_up(client, False, f"busy: {reason}; the hub asks again in {wait:g} s", "busy", wait)
                    log.info("stream from %s refused (busy): %s; asking again in %gs", client.url, reason, wait)
            except httpx.HTTPError as error:
                self._down(follower, error, delay)
            except Exception as error:   # noqa: BLE001 - a bug here must not end this worker's feed for good
                log.exception("stream from %s failed; reconnecting in %.1fs", client.url, delay)
                self._set_up(client, False, f"{type(error).__name__}: {error}")
            follower.settled.set()
            if wait is not None:
                await asyncio.sleep(wait)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _down(self, follower: Follower, error: httpx.HTTPError, delay: float) -> None:
        client = follower.client
        client.refusing.pop(follower, None)
        client.mark(error)
        self._set_up(client, False, client.health.error or describe(error))
        log.debug("stream from %s: %s; reconnecting in %.1fs", client.url, describe(error), delay)

    def _connected(self, follower: Follower, hello: str) -> None:
        client = follower.client
        node, store, head, reset = _hello(hello)
        node = node or client.node or client.url
        if client.node is None and node != client.url:
            client.node = node
        client.mark(None)
        client.refusing.pop(follower, None)
        known = self.positions.get(node)
        if reset and known is not None:
            self._broadcast(lost_event(None, f"the worker on node {node} restarted with another store "
                                             f"(reset or rebuilt): entries after {node}:{known[1]} it had "
                                             "not streamed are gone; its new entries follow", node=node))
        if known is None or reset:
            # entries up to head were there before this group followed the node (or, after a
            # reset, the worker replays its new store from the start)
            self.positions[node] = (store, 0 if reset or head is None else head)
        elif known[0] != store and store:
            self.positions[node] = (store, known[1])
        self.cursor = format_positions(self.positions)
        follower.node = node
        self._set_up(client, True, None)
        follower.settled.set()

    def _worker_lost(self, client: WorkerClient, data: str) -> None:
        """The worker's own queue for this stream overflowed: its entries are in its index
        (/entries) but were not streamed; every member is told, with the worker named."""
        try:
            lost = int(json.loads(data)["lost"])
        except (ValueError, KeyError, TypeError):
            return
        self._broadcast(lost_event(lost, f"worker {client.node or client.url} could not stream them fast "
                                         "enough; they are in /api/v1/entries", node=client.node))

    def _evicted(self, follower: Follower, data: str) -> None:
        """Back after an outage, the worker had evicted entries this group had not streamed."""
        evicted = _evicted_count(data)
        if evicted:
            node = follower.node or follower.client.url
            self._broadcast(lost_event(evicted, f"node {node} evicted {evicted} entries (of any query) from its "
                                                "storage before this hub could stream them", node=node))

    # -- members --------------------------------------------------------------------------
    def _entry(self, follower: Follower, worker_seq: int, data: bytes) -> HubEvent:
        """The event of one entry from a worker, with the position after it; kept in the ring."""
        node = follower.node or follower.client.url
        if worker_seq == NO_ID:
            # passed on, but no resume can re-read it: the event keeps the last position
            if not follower.told_no_id:
                follower.told_no_id = True
                log.warning("worker %s sends entries without an id: a resume cannot re-read them", node)
        else:
            store, seq = self.positions.get(node, ("", 0))
            if worker_seq > seq:
                self.positions[node] = (store, worker_seq)
                self.cursor = format_positions(self.positions)
        event = entry_event(self.feed.entry(data), self.cursor or None)
        self.recent.append((self.cursor, event))
        return event

    def _fan_out(self, events: list[HubEvent]) -> None:
        """Hand a worker's batch of entry events to every member, in one put each."""
        if events:
            for member in self.members:
                member.put_many(events)

    def _broadcast(self, event: HubEvent) -> None:
        for member in self.members:
            member.put(event)

    def join(self, queue: DropOldest[HubEvent]) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        for client, (ok, error, state, retry_s) in self.up.items():
            queue.put(worker_status(client, ok, error, state, retry_s))
        self.members.add(queue)

    def leave(self, queue: DropOldest[HubEvent]) -> None:
        self.members.discard(queue)
        self.linger_if_empty()

    def linger_if_empty(self) -> None:
        if not self.members and self.closer is None:
            self.closer = asyncio.create_task(self._close_later(), name="feed group linger")

    async def _close_later(self) -> None:
        await asyncio.sleep(self.feed.linger_s)
        if not self.members:
            self.feed.forget(self)
            await self.close()

    async def close(self) -> None:
        tasks = [f.task for f in self.followers.values() if f.task is not None]
        if self.closer is not None and self.closer is not asyncio.current_task():
            tasks.append(self.closer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.followers.clear()

    # -- resume ---------------------------------------------------------------------------
    def recent_after(self, last_id: str) -> list[HubEvent] | None:
        """The ring's events after the one with id `last_id`; None when the ring lacks it."""
        found = None
        for index, (cursor, _) in enumerate(self.recent):
            if cursor == last_id:
                found = index        # the last event with that id (id-less entries repeat it)
        if found is None:
            return None
        return [event for _, event in list(self.recent)[found + 1:]]

    async def settled(self, timeout: float) -> None:
        """Wait until every worker has answered this group once (or failed), at most `timeout`."""
        waits = [f.settled.wait() for f in self.followers.values() if not f.settled.is_set()]
        if waits:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*waits)
            except TimeoutError:
                pass

    async def replay(self, seen: Positions, upto: Positions) -> AsyncIterator[HubEvent]:
        """What the group sent after the client's positions `seen` up to `upto` (the group's
        positions when the client joined), re-read from the workers, each event with the
        client's position after it; `lost` for what cannot be re-read."""
        followers = {f.node: f for f in self.followers.values() if f.node is not None}
        position = dict(seen)
        budget = [REPLAY_LIMIT]
        for node in sorted(set(seen) - set(upto)):
            store, seq = position.pop(node)
            yield lost_event(None, f"node {node} is not answering this hub now: its entries after {node}:{seq} "
                                   "are not replayed; they are in /api/v1/entries once it is back", node=node)
        for node in sorted(set(upto) - set(seen)):
            yield lost_event(None, f"node {node} was not in this feed at your Last-Event-ID: its entries "
                                   "from before it joined are not replayed; they are in /api/v1/entries", node=node)
            position[node] = upto[node]
        for node in sorted(set(seen) & set(upto)):
            (store, seq), (store_now, seq_now) = seen[node], upto[node]
            if store == store_now and seq >= seq_now:
                continue
            follower = followers.get(node)
            if follower is None:
                yield lost_event(None, f"node {node}: its worker is not followed now; entries after "
                                       f"{node}:{seq} are not replayed", node=node)
                position[node] = upto[node]
                continue
            async for event in self._replay_node(follower.client, node, seen[node], upto[node], position, budget):
                yield event

    async def _replay_node(self, client: WorkerClient, node: str, seen: tuple[str, int], upto: tuple[str, int],
                           position: Positions, budget: list[int]) -> AsyncIterator[HubEvent]:
        """One node's part of a replay: its worker's /stream after the client's position, read
        until the worker says its stored entries are sent or the group's position is passed."""
        store, seq = seen
        problem = None
        says_live = False        # a worker with a hello ends its replay with `live`
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT_S), \
                    aclosing(worker_entries(client, self.q, f"{store}:{seq}" if store else str(seq))) as entries:
                async for worker_seq, data in entries:
                    if worker_seq == CONNECTED:
                        says_live = bool(data)
                        _, store_now, _, reset = _hello(data)
                        if reset:
                            yield lost_event(None, f"the worker on node {node} has another store since "
                                                   f"{node}:{seq} (reset or rebuilt): what it held after that "
                                                   "and had not streamed is gone", node=node)
                        if upto[0] and store_now != upto[0]:
                            problem = "its store changed again while you were away"
                            break
                    elif worker_seq == REPLAYED:
                        if evicted := _evicted_count(data):
                            yield lost_event(evicted, f"node {node} evicted {evicted} entries (of any query) "
                                                      f"after {node}:{seq} from its storage", node=node)
                        break
                    elif worker_seq == NO_ID or worker_seq > upto[1]:
                        break
                    elif worker_seq > 0:
                        if budget[0] <= 0:
                            problem = f"more than {REPLAY_LIMIT} entries to replay"
                            break
                        budget[0] -= 1
                        position[node] = (upto[0], worker_seq)
                        yield entry_event(self.feed.entry(data), format_positions(position))
                        if worker_seq == upto[1] and not says_live:
                            break
        except (httpx.HTTPError, TimeoutError) as error:
            problem = describe(error) if isinstance(error, httpx.HTTPError) else \
                f"not replayed within {CATCH_UP_TIMEOUT_S:.0f} s"
            log.info("catching a client up from %s: %s", client.url, problem)
        if problem is not None:
            done = position[node][1] if position[node][0] == upto[0] else seq
            yield lost_event(None, f"node {node}: entries after {node}:{done} up to {node}:{upto[1]} were not "
                                   f"replayed ({problem}); they are in /api/v1/entries", node=node)
        position[node] = upto


class Feed:
    """Every live group of one hub."""

    def __init__(self, pool: WorkerPool, *, linger_s: float = LINGER_S,
                 recent_size: int = RECENT_SIZE, queue_size: int = CLIENT_QUEUE,
                 max_clients: int = MAX_LIVE_CLIENTS, max_queries: int = MAX_LIVE_QUERIES,
                 rewrite: Rewrite | None = None) -> None:
        self.pool = pool
        self.rewrite = rewrite
        self.linger_s = linger_s
        self.recent_size = recent_size
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_queries = max_queries
        self.refused_clients = 0       # clients turned away: max_clients were connected
        self.refused_queries = 0       # ... or theirs would have been a query past max_queries
        self.groups: dict[str | None, Group] = {}
        pool.on_membership.append(self._membership)

    def entry(self, data: bytes) -> bytes:
        """An entry's JSON from a worker as every client of the feed gets it."""
        return self.rewrite(data) if self.rewrite is not None else data

    def clients(self) -> int:
        return sum(len(group.members) for group in self.groups.values())

    def refusal(self, q: str | None) -> str | None:
        """Why a new live client of `q` is turned away (counted), or None: the hub holds a
        queue per client and a stream per worker per distinct query, so both are bounded."""
        if self.clients() >= self.max_clients:
            self.refused_clients += 1
            return (f"{self.max_clients} live clients are connected, the most this hub serves "
                    "(--max-live-clients); try again later")
        if (q or None) not in self.groups and len(self.groups) >= self.max_queries:
            self.refused_queries += 1
            return (f"{self.max_queries} distinct live queries are followed, the most this hub serves "
                    "(--max-live-queries); use a query already followed, or try again later")
        return None

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
        event = tags_event(entry_id, tags)
        for group in self.groups.values():
            group._broadcast(event)

    def queued(self) -> int:
        """Events waiting in the live clients' queues (for /metrics): at most clients x
        queue_size, however slowly the clients read."""
        return sum(len(member.items) for group in self.groups.values() for member in group.members)

    def upstreams(self) -> int:
        """Connections to workers the feed holds (for /metrics)."""
        return sum(len(group.followers) for group in self.groups.values())

    async def ready(self, q: str | None, timeout: float = READY_S) -> None:
        """Wait, at most `timeout`, until every worker's stream for `q` has opened (or failed):
        a client that starts reading after this misses nothing captured from then on, even when
        its query's upstreams are new."""
        group = self.group(q)
        try:
            await group.settled(timeout)
        finally:
            group.linger_if_empty()   # the client may never join (it left while waiting)

    async def batches(self, q: str | None, last_id: str | None) -> AsyncIterator[list[HubEvent]]:
        """A live client's events, a list at a time: what it missed (from the ring, or
        re-read from the workers after its Last-Event-ID), then live, each get taking all
        that is queued (up to SEND_BATCH) so a writer sends it in one write."""
        group = self.group(q)
        queue: DropOldest[HubEvent] = DropOldest(self.queue_size)
        missed: list[HubEvent] = []
        seen: Positions | None = None
        if last_id is not None:
            recent = group.recent_after(last_id)
            if recent is not None:
                missed = recent
            elif parse_seq(last_id) is not None:
                missed = [lost_event(None, f"Last-Event-ID {last_id} is an id of an older hub version, not a "
                                           "position this hub can resume from; entries since then are in "
                                           "/api/v1/entries")]
            else:
                seen = parse_positions(last_id)
                await group.settled(CATCH_UP_TIMEOUT_S)
        upto = dict(group.positions)
        group.join(queue)          # no await since `upto` and the ring: live events are all after them
        try:
            for start in range(0, len(missed), SEND_BATCH):
                yield missed[start:start + SEND_BATCH]
            if seen is not None:
                async for event in group.replay(seen, upto):
                    yield [event]
            while True:
                events, lost = await queue.get_batch(SEND_BATCH)
                yield [lost_event(lost), *events] if lost else events
        finally:
            group.leave(queue)

    async def events(self, q: str | None, last_id: str | None) -> AsyncIterator[HubEvent]:
        """batches() one event at a time (scripts, the edge metrics)."""
        async with aclosing(self.batches(q, last_id)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event


def last_event_id(headers: dict[str, Any]) -> str | None:
    """The Last-Event-ID header, checked; ValueError naming what is wrong."""
    text = headers.get("last-event-id")
    if not text:
        return None
    if parse_seq(text) is None:
        parse_positions(text)
    return text
