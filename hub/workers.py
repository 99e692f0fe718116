"""The hub's side of the worker API: one WorkerClient per worker, and a WorkerPool that fans
queries out to all of them and merges the answers (ARCHITECTURE.md, Hub API).

Partial answers are stated, never silent: every fan-out returns a `workers` block saying which
worker answered and which failed, and why.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import msgspec

from hub.merge import Merge
from shark.clip import clip
from shark.model import WorkerPart
from shark.pcap import MAX_SNAPLEN, PcapFormatError, PcapStream, PcapWriter, Record

log = logging.getLogger("shark.hub.workers")

API = "/api/v1"
RETRY_STATUSES = frozenset({502, 503, 504})


class WorkerError(Exception):
    """A worker did not answer usefully; `status` is its HTTP status when it answered at all."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class Health:
    ok: bool | None = None          # None until the first poll
    error: str | None = None
    last_seen: float | None = None  # epoch seconds of the last good answer
    latency_ms: float | None = None
    status: dict[str, Any] | None = None


def api_base(url: str) -> str:
    """A worker URL as given (with or without /api/v1) -> its /api/v1 base URL."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url if url.endswith(API) else url + API


def describe(error: BaseException) -> str:
    if isinstance(error, WorkerError):
        return str(error)
    if isinstance(error, httpx.TimeoutException):
        return f"timed out ({type(error).__name__})"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect ({error or 'connection refused'})"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


def _worker_error(response: httpx.Response, body: bytes) -> WorkerError:
    try:
        decoded = json.loads(body)
        detail = decoded.get("detail") if isinstance(decoded, dict) else None
    except ValueError:
        decoded, detail = None, None
    text = clip(detail) if isinstance(detail, str) and detail else (body[:200].decode("utf-8", "replace")
                                                                     or response.reason_phrase)
    return WorkerError(f"HTTP {response.status_code}: {text}", response.status_code, decoded)


class WorkerClient:
    """One worker: GETs with timeouts and retries (exponential backoff), and its health."""

    def __init__(self, url: str, *, timeout: float = 10.0, connect_timeout: float = 3.0,
                 retries: int = 2, backoff: float = 0.2, token: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = api_base(url)
        self.retries = retries
        self.backoff = backoff
        self.health = Health()
        self.node: str | None = None
        # this hub's streams the worker refuses now (busy: a 503 with Retry-After, its
        # --max-stream-clients), by follower, with its reason: it is up, only busy
        self.refusing: dict[object, str] = {}
        # The feed holds one SSE stream per worker for every distinct live query: httpx's
        # default pool of 100 connections made the 101st stream (and every request after it)
        # wait forever. The number of streams is bounded by the live queries, not by the pool.
        # Every request to the worker carries the installation's token (shark/auth.py).
        self.http = httpx.AsyncClient(
            base_url=self.url, transport=transport,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=20))

    def __repr__(self) -> str:
        return f"WorkerClient({self.url!r}, node={self.node!r})"

    async def aclose(self) -> None:
        await self.http.aclose()

    def part(self, error: str | None = None, opened: bool = False) -> WorkerPart:
        """This worker's row in a `workers` block; `opened`: its answer is being read."""
        return WorkerPart(self.node, self.url, error is None, error,
                          count=0 if opened else None, skipped=0 if opened else None)

    def state(self) -> dict[str, Any]:
        """{state, busy}: "down" (its last answer failed), "busy" (up, but refusing some of
        this hub's live streams, `busy` says why and how many), "up", or None (not polled yet)."""
        if self.health.ok is False:
            return {"state": "down", "busy": None}
        if self.refusing:
            reason = next(reversed(self.refusing.values()))
            streams = len(self.refusing)
            return {"state": "busy", "busy": f"refuses {streams} of this hub's live stream{'s' if streams > 1 else ''}: {reason}"}
        return {"state": None if self.health.ok is None else "up", "busy": None}

    def mark(self, error: BaseException | None, latency_s: float | None = None) -> None:
        if error is None:
            self.health.ok, self.health.error = True, None
            self.health.last_seen = time.time()
            if latency_s is not None:
                self.health.latency_ms = round(latency_s * 1000, 3)
        elif not (isinstance(error, WorkerError) and error.status is not None and error.status < 500):
            # a 4xx is the caller's mistake, not the worker's health
            self.health.ok, self.health.error = False, describe(error)

    async def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run an idempotent request, retrying transport errors and 502/503/504 with backoff."""
        delay = self.backoff
        for number in range(self.retries + 1):
            try:
                result = await attempt()
            except (httpx.TransportError, WorkerError) as error:
                retryable = not isinstance(error, WorkerError) or error.status in RETRY_STATUSES
                if not retryable or number == self.retries:
                    self.mark(error)
                    raise
                log.debug("%s: %s; retrying in %.2fs", self.url, describe(error), delay)
                await asyncio.sleep(delay)
                delay *= 2
            else:
                self.mark(None)
                return result
        raise AssertionError("unreachable")

    async def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """A whole (small) answer; WorkerError for a non-2xx status."""
        async def attempt() -> httpx.Response:
            response = await self.http.get(path, params=params)
            if response.status_code >= 400:
                raise _worker_error(response, response.content)
            return response
        return await self._retrying(attempt)

    async def refresh(self) -> dict[str, Any]:
        """GET /status: learns the node name, updates health."""
        started = time.monotonic()
        response = await self.get("/status")
        latency = time.monotonic() - started
        status = response.json()
        self.health.status = status
        self.health.latency_ms = round(latency * 1000, 3)
        node = status.get("node") if isinstance(status, dict) else None
        if isinstance(node, str) and node:
            self.node = node
        return status

    async def open_stream(self, stack: AsyncExitStack, path: str,
                          params: dict[str, str] | None = None) -> httpx.Response:
        """A streamed GET, closed with `stack`; retried only until the answer starts."""
        async def attempt() -> httpx.Response:
            response = await stack.enter_async_context(self.http.stream("GET", path, params=params))
            if response.status_code >= 400:
                raise _worker_error(response, await response.aread())
            return response
        return await self._retrying(attempt)


# -- the pool --------------------------------------------------------------------------------
@dataclass
class EntriesAnswer:
    entries: list[dict[str, Any]]
    workers: list[WorkerPart]


@dataclass
class RawEntriesAnswer:
    entries: list[bytes]          # each an Entry's JSON as its worker wrote it
    workers: list[WorkerPart]


class EntriesStream:
    """Every worker's /entries, open, merged newest first as the lines arrive: the first entry
    goes out once every worker has sent its first line, not when the slowest has sent all.
    Workers send newest first (their contract); a line newer than the one before it from the
    same worker is still passed on, and counted in that worker's block as `unordered`."""

    def __init__(self, stack: AsyncExitStack, opened: list[tuple[WorkerClient, httpx.Response, WorkerPart]],
                 workers: list[WorkerPart], limit: int) -> None:
        self.stack = stack
        self.opened = opened
        self.workers = workers
        self.limit = limit

    async def merged(self) -> AsyncIterator[bytes]:
        """The entries (as the workers wrote them), newest first, at most `limit`: one line per
        worker is held at a time, whatever the number of workers."""
        async with self.stack:
            readers = [_entry_lines(response).__aiter__() for _, response, _ in self.opened]
            newest_seen: list[float | None] = [None] * len(readers)

            async def pull(index: int) -> tuple[float, bytes] | None:
                client, _, part = self.opened[index]
                try:
                    while True:
                        item = await readers[index].__anext__()
                        if item is not None:
                            break
                        part.skipped = (part.skipped or 0) + 1
                except StopAsyncIteration:
                    return None
                except (httpx.HTTPError, WorkerError) as error:
                    _broke(client, part, error)
                    return None
                ts, raw = item
                _counted(client, part, raw)
                last = newest_seen[index]
                if last is not None and ts > last:
                    part.unordered += 1
                newest_seen[index] = ts
                return -ts, raw

            merge = Merge([partial(pull, index) for index in range(len(readers))])
            await merge.prime()
            if self.limit <= 0:
                return
            sent = 0
            async with aclosing(merge.items()) as items:
                async for _index, raw in items:
                    yield raw
                    sent += 1
                    if sent == self.limit:
                        break           # before the next line is read: no worker is read further

    async def newest(self) -> list[bytes]:
        """Every worker's answer read whole, the newest `limit` entries kept (a bounded heap:
        the hub holds `limit` entries, not workers x limit) and sorted newest first, whatever
        order a worker sent them in."""
        kept: list[tuple[float, int, bytes]] = []      # a min-heap: the oldest kept entry first
        order = 0

        async def read(client: WorkerClient, response: httpx.Response, part: WorkerPart) -> None:
            nonlocal order
            try:
                async for item in _entry_lines(response):
                    if item is None:
                        part.skipped = (part.skipped or 0) + 1
                        continue
                    ts, raw = item
                    _counted(client, part, raw)
                    order += 1
                    if len(kept) < self.limit:
                        heapq.heappush(kept, (ts, -order, raw))
                    elif ts > kept[0][0]:
                        heapq.heapreplace(kept, (ts, -order, raw))
            except (httpx.HTTPError, WorkerError) as error:
                _broke(client, part, error)

        async with self.stack:
            await asyncio.gather(*(read(*opened) for opened in self.opened))
        return [raw for _, _, raw in sorted(kept, reverse=True)]

    async def chunks(self, flush_at: int = 64 * 1024,
                     line: Callable[[bytes], bytes] | None = None) -> AsyncIterator[bytes]:
        """{"entries": [...], "workers": [...]}, streamed; the workers block comes last, when
        every worker's part is known. `line` changes each entry's JSON on its way (names)."""
        out = [b'{"entries":[']
        size = sent = 0
        async with aclosing(self.merged()) as entries:
            async for raw in entries:
                if line is not None:
                    raw = line(raw)
                out.append(raw if sent == 0 else b"," + raw)
                size += len(raw)
                sent += 1
                if sent == 1 or size >= flush_at:
                    yield b"".join(out)
                    out, size = [], 0
        out.append(b'],"workers":' + msgspec.json.encode(self.workers) + b"}")
        yield b"".join(out)


def _counted(client: WorkerClient, part: WorkerPart, raw: bytes) -> None:
    part.count = (part.count or 0) + 1
    if client.node is None:          # not polled yet: its entries say which node it is
        client.node = part.node = _NODE.decode(raw).node or None


def _broke(client: WorkerClient, part: WorkerPart, error: httpx.HTTPError | WorkerError) -> None:
    part.ok, part.error = False, f"{describe(error)} (after {part.count} entries)"
    client.mark(error)


async def _entry_lines(response: httpx.Response) -> AsyncIterator[tuple[float, bytes] | None]:
    """(ts, line) per NDJSON entry line of a worker's /entries; None for a line that is not one."""
    rest = b""
    async for chunk in response.aiter_bytes():
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield _stamp(line)
    if rest.strip():
        yield _stamp(rest)


def _stamp(line: bytes) -> tuple[float, bytes] | None:
    line = line.strip()
    try:
        return _STAMP.decode(line).ts, line
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class _Stamp(msgspec.Struct):
    ts: float


_STAMP = msgspec.json.Decoder(_Stamp)


class _Node(msgspec.Struct):
    node: str | None = None


_NODE = msgspec.json.Decoder(_Node)


@dataclass
class PcapAnswer:
    """A merged pcap ready to stream: `chunks()` yields the file; `workers` says who is in it."""
    workers: list[WorkerPart]
    chunks: Callable[[], AsyncIterator[bytes]]


class WorkerPool:
    """The workers the hub fans out to. Membership may change while it runs (in cluster the
    DaemonSet's pods come and go): `add` and `remove` tell the `on_membership` listeners, and
    every fan-out works on a snapshot of the clients taken when it starts."""

    def __init__(self, urls: Sequence[str], *, poll_interval: float = 2.0, allow_empty: bool = False,
                 **client_options: Any) -> None:
        if not urls and not allow_empty:
            raise ValueError("at least one worker URL is needed")
        self.client_options = client_options
        self.clients = [WorkerClient(url, **client_options) for url in urls]
        self.poll_interval = poll_interval
        self._poller: asyncio.Task[None] | None = None
        self.on_change: list[Callable[[WorkerClient], None]] = []
        # (client, True) when a worker joins, (client, False) when it leaves
        self.on_membership: list[Callable[[WorkerClient, bool], None]] = []

    def find(self, url: str) -> WorkerClient | None:
        base = api_base(url)
        return next((c for c in self.clients if c.url == base), None)

    async def add(self, url: str) -> WorkerClient:
        """Start fanning out to the worker at `url` (no-op when it is already a member)."""
        existing = self.find(url)
        if existing is not None:
            return existing
        client = WorkerClient(url, **self.client_options)
        self.clients = [*self.clients, client]
        for callback in self.on_membership:
            callback(client, True)
        try:
            await client.refresh()
        except (httpx.HTTPError, WorkerError, ValueError) as error:
            client.mark(error if isinstance(error, (httpx.HTTPError, WorkerError)) else WorkerError(str(error)))
        return client

    async def remove(self, url: str) -> bool:
        """Stop fanning out to the worker at `url`; False when it was not a member."""
        client = self.find(url)
        if client is None:
            return False
        self.clients = [c for c in self.clients if c is not client]
        for callback in self.on_membership:
            callback(client, False)
        await client.aclose()
        return True

    async def start(self) -> None:
        await self.refresh_all()
        self._poller = asyncio.create_task(self._poll(), name="hub-worker-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
        await asyncio.gather(*(client.aclose() for client in self.clients))

    async def refresh_all(self) -> None:
        async def one(client: WorkerClient) -> None:
            before = client.health.ok
            try:
                await client.refresh()
            except (httpx.HTTPError, WorkerError, ValueError) as error:
                client.mark(error if isinstance(error, (httpx.HTTPError, WorkerError)) else WorkerError(str(error)))
            if client.health.ok != before:
                log.info("worker %s (%s): %s", client.node or "?", client.url,
                         "up" if client.health.ok else f"down: {client.health.error}")
                for callback in self.on_change:
                    callback(client)
        await asyncio.gather(*(one(client) for client in list(self.clients)))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            await self.refresh_all()

    def health(self) -> list[dict[str, Any]]:
        return [{"node": c.node, "url": c.url, "ok": c.health.ok, "error": c.health.error,
                 "last_seen": c.health.last_seen, "latency_ms": c.health.latency_ms, **c.state()}
                for c in self.clients]

    async def owner(self, node: str) -> WorkerClient | None:
        """The client of the worker named `node`; asks workers not yet known for their name."""
        for client in self.clients:
            if client.node == node:
                return client
        unknown = [c for c in self.clients if c.node is None]
        if unknown:
            await asyncio.gather(*(c.refresh() for c in unknown), return_exceptions=True)
            for client in unknown:
                if client.node == node:
                    return client
        return None

    async def raw_entries(self, params: dict[str, str], limit: int) -> RawEntriesAnswer:
        """Every worker's matching entries, merged newest first by ts, at most `limit`, as the
        workers wrote them (EntriesStream.newest: at most `limit` held)."""
        stream = await self.open_entries(params, limit)
        return RawEntriesAnswer(await stream.newest(), stream.workers)

    async def open_entries(self, params: dict[str, str], limit: int) -> EntriesStream:
        """Every worker's /entries opened (a worker's 400 raised before anything is sent),
        to be merged as it streams (EntriesStream.chunks)."""
        params = {**params, "limit": str(limit)}
        stack = AsyncExitStack()
        clients = self.clients
        results = await asyncio.gather(*(c.open_stream(stack, "/entries", params) for c in clients),
                                       return_exceptions=True)
        opened: list[tuple[WorkerClient, httpx.Response, WorkerPart]] = []
        workers: list[WorkerPart] = []
        for client, result in zip(clients, results):
            if isinstance(result, BaseException):
                if isinstance(result, WorkerError) and result.status == 400:
                    await stack.aclose()
                    raise result   # the caller's mistake (a bad since/until/limit): say so
                if not isinstance(result, (httpx.HTTPError, WorkerError)):
                    log.exception("worker %s: unexpected error", client.url, exc_info=result)
                workers.append(client.part(describe(result)))
                continue
            part = client.part(opened=True)
            workers.append(part)
            opened.append((client, result, part))
        return EntriesStream(stack, opened, workers, limit)

    async def entries(self, params: dict[str, str], limit: int) -> EntriesAnswer:
        """As raw_entries, decoded."""
        answer = await self.raw_entries(params, limit)
        return EntriesAnswer([json.loads(raw) for raw in answer.entries], answer.workers)

    async def pcap(self, params: dict[str, str]) -> PcapAnswer:
        """Open every worker's /pcap and read each one's header and first packet: a worker that
        fails before that (no answer, not a pcap, another link type) is named in `workers`
        before the answer starts. The answer merges the rest by timestamp as it is read."""
        stack = AsyncExitStack()
        responses: list[tuple[WorkerClient, httpx.Response]] = []
        errors: dict[WorkerClient, str] = {}

        async def open_one(client: WorkerClient) -> httpx.Response:
            return await client.open_stream(stack, "/pcap", params)
        clients = self.clients
        results = await asyncio.gather(*(open_one(c) for c in clients), return_exceptions=True)
        for client, result in zip(clients, results):
            if isinstance(result, BaseException):
                if isinstance(result, WorkerError) and result.status == 400:
                    await stack.aclose()
                    raise result
                errors[client] = describe(result)
            else:
                responses.append((client, result))
        merge = PcapMerge(stack, responses)
        try:
            await merge.start()
        except BaseException:
            await stack.aclose()
            raise
        errors.update(merge.failed)
        if not merge.readers:
            await stack.aclose()
        workers = [client.part(errors.get(client)) for client in clients]
        return PcapAnswer(workers, merge.chunks)


class PcapCutShort(Exception):
    """A worker's pcap ended early or broke after the merged answer had started: the answer is
    ended without its last chunk, so the client sees an incomplete download, not a whole file."""


class PcapMerge:
    """One nanosecond pcap, time-ordered, from several workers' pcap streams; streamed, never
    whole. `start` reads every stream's header and first packet and picks the link type (the
    earliest packet's): what fails by then is in `failed` and left out, said before the answer
    starts. A stream that fails later is left out from there, and the answer ends cut short."""

    def __init__(self, stack: AsyncExitStack, responses: list[tuple[WorkerClient, httpx.Response]]) -> None:
        self.stack = stack
        self.clients = [client for client, _ in responses]
        self.readers = {index: PcapStream(response.aiter_bytes())
                        for index, (_, response) in enumerate(responses)}
        self.merge: Merge[Record] = Merge([partial(self._next, index) for index in self.readers])
        self.linktypes: dict[int, int] = {}
        self.snaplen = 0
        self.linktype = 1
        self.failed: dict[WorkerClient, str] = {}   # left out before the answer started
        self.cut: dict[WorkerClient, str] = {}      # left out after
        self.started = False

    async def _next(self, index: int) -> tuple[int, Record] | None:
        """Stream `index`'s next packet (its header first); records why it ended early."""
        reader = self.readers[index]
        try:
            if reader.header is None:
                header = await reader.read_header()
                if header is None:
                    self._drop(index, "it sent no pcap header")
                    return None
                self.linktypes[index] = header.linktype
                self.snaplen = max(self.snaplen, header.snaplen)
            record = await reader.next()
        except (httpx.HTTPError, PcapFormatError) as error:
            self._drop(index, describe(error) if isinstance(error, httpx.HTTPError) else str(error))
            return None
        return None if record is None else (record[1], record)

    def _drop(self, index: int, why: str) -> None:
        client = self.clients[index]
        self.readers.pop(index, None)
        self.merge.drop(index)
        (self.cut if self.started else self.failed)[client] = why
        log.warning("pcap from %s (%s) left out: %s", client.node, client.url, why)

    async def start(self) -> None:
        await self.merge.prime()
        first = self.merge.first()
        if first is not None:
            self.linktype = self.linktypes[first[0]]
        elif self.linktypes:
            self.linktype = next(iter(self.linktypes.values()))
        for index, linktype in list(self.linktypes.items()):
            if linktype != self.linktype and index in self.readers:
                self._drop(index, f"its link type is {linktype}, the merged file's {self.linktype}")
        self.started = True

    async def chunks(self, flush_at: int = 256 * 1024) -> AsyncIterator[bytes]:
        async with self.stack:
            writer = PcapWriter(self.linktype, self.snaplen or MAX_SNAPLEN, flush_at=flush_at)
            async with aclosing(self.merge.items()) as records:
                async for _index, (_offset, ts_ns, data, wirelen) in records:
                    chunk = writer.add(ts_ns, data, wirelen)
                    if chunk:
                        yield chunk
            last = writer.flush()
            if last:
                yield last
            if self.cut:
                raise PcapCutShort("merged pcap cut short: " + "; ".join(
                    f"{client.node or client.url}: {why}" for client, why in self.cut.items()))
