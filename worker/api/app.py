"""The worker's HTTP API (ARCHITECTURE.md, Worker API): its routes over a WorkerRuntime, served by
worker/api/asgi.py (a plain ASGI app: no web framework to import before the worker answers)."""

from __future__ import annotations

import ipaddress
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

import anyio
import msgspec

from shark.auth import LOOPBACK_HOSTS, Guard, Policy
from shark.bodies import BodyError, decode_body
from shark.clip import clip
from shark.model import ConfigUpdate, TagChanges, TargetsUpdate
from shark.pcap import PcapWriter
from shark.seq import MAX_SEQ, parse_seq
from shark.units import UnitError, check_window, parse_size, parse_time
from worker.api.asgi import (ASGIApp, App, BadRequest, HTTPError, NotFound, Receive, Request, Response, Route,
                             Scope, Send, Stream, json_response)
from worker.api.export import Span, collect_spans, span_packets
from worker.api.health import health_route
from worker.api.runtime import WorkerRuntime
from worker.detail import entry_packets, load_detail
from worker.filters import KflError, compile_query, row_predicate
from worker.names import NamesError, parse_names, parse_nets
from worker.pipeline import read_batch_for
from worker.sources.base import CaptureError
from worker.sources.targets import target_filter
from worker.store.capacity import LimitRefused, check_limit
from worker.store.index import EntryIndex, IndexRow, wal_limit_for
from worker.store.segments import SegmentEvicted, StoreError, iter_segment, list_segments

if TYPE_CHECKING:
    from sse_starlette import ServerSentEvent

log = logging.getLogger("shark.worker.api")
T = TypeVar("T")

API = "/api/v1"
MAX_LIMIT = 100_000
DEFAULT_LIMIT = 100
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
SSE_PING_S = 15
STREAM_RETRY_S = 10    # Retry-After of a /stream refused for --max-stream-clients
# A live subscriber's queue, in entries: two of the dissection's largest publishes (a batch of
# READ_BATCH packets can finish ~1000 exchanges), so a reader that keeps up loses nothing; one
# that does not costs the worker at most this many rows (~1 KB each).
SUBSCRIBER_QUEUE = 4096
STREAM_BATCH = 1024    # entries written to a /stream client in one send
REPLAY_PAGE = 500      # index rows read at a time when /stream replays from a Last-Event-ID
ENTRIES_PAGE = 500     # entries read and sent at a time by /entries


QUERY_PARAMS = ("q", "since", "until", "limit")


class BadQuery(BadRequest):
    """An invalid KFL `q`: the body carries the column as well."""

    def __init__(self, error: KflError) -> None:
        super().__init__(f"q: {error}")
        self.column = error.column


def _error_body(exc: HTTPError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": _reason(exc.status_code), "detail": exc.detail}
    if isinstance(exc, BadQuery):
        body["column"] = exc.column
    return body


def _error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPError)
    return json_response(_error_body(exc), exc.status_code)


def _unexpected(request: Request, exc: Exception) -> Response:
    """Anything a route did not handle: the index or the disk failing is a 503 saying so (the
    next request may well succeed: capture goes on), anything else a 500 naming the error; both
    are logged with the request."""
    if isinstance(exc, (sqlite3.Error, StoreError, OSError)):
        log.warning("%s %s: %s: %s", request.method, request.path, type(exc).__name__, exc)
        return json_response({"error": "unavailable", "detail": f"the store cannot answer now: {exc}"}, 503,
                             headers=[("Retry-After", "1")])
    log.exception("%s %s failed", request.method, request.path, exc_info=exc)
    return json_response({"error": "internal error", "detail": f"{type(exc).__name__}: {exc}"}, 500)


def _reason(status: int) -> str:
    return {400: "bad request", 404: "not found", 409: "conflict", 410: "gone",
            503: "unavailable"}.get(status, "error")


# -- query parameters ------------------------------------------------------------------------
def _time_param(params: Mapping[str, str], name: str, now: float) -> float | None:
    """Epoch seconds, or a duration meaning that long ago ("5m")."""
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        return parse_time(text, name, now)
    except UnitError as error:
        raise BadRequest(str(error) if "not a time" in str(error) else f"{error} (or epoch seconds)") from None


def _window(params: Mapping[str, str]) -> tuple[float | None, float | None]:
    """since and until, each epoch seconds or a duration ago, since not after until."""
    now = time.time()
    since, until = _time_param(params, "since", now), _time_param(params, "until", now)
    try:
        check_window(since, until)
    except UnitError as error:
        raise BadRequest(str(error)) from None
    return since, until


def _limit_param(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None or text == "":
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest(f"limit: {text!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: {limit} is outside 1-{MAX_LIMIT}")
    return limit


def _check_params(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in params:
        if name not in allowed:
            raise BadRequest(f"{name}: unknown query parameter; expected one of {', '.join(allowed)}"
                             " (filters are KFL queries in q, e.g. q=http and status >= 500)")


def _query(params: Mapping[str, str]):  # type: ignore[no-untyped-def]
    """The compiled KFL query of `q` (matching everything when absent)."""
    try:
        return compile_query(params.get("q"))
    except KflError as error:
        raise BadQuery(error) from None


def _seq_of(runtime: WorkerRuntime, entry_id: str) -> int:
    node, sep, number = entry_id.rpartition(":")
    if sep and node != runtime.options.node:
        raise NotFound(f"entry {entry_id!r} belongs to node {node!r}, this is {runtime.options.node!r}")
    seq = parse_seq(number)
    if seq is None:
        raise BadRequest(f"id: {entry_id!r} is not an entry id (NODE:NUMBER, NUMBER at most {MAX_SEQ})")
    return seq


def _row(runtime: WorkerRuntime, entry_id: str) -> IndexRow:
    row = runtime.index.get(_seq_of(runtime, entry_id))
    if row is None:
        raise NotFound(f"no entry {entry_id!r} (never seen, or its packets were evicted)")
    return row


# -- pcap streaming --------------------------------------------------------------------------
def _pcap_chunks(packets: Iterator[tuple[int, int, bytes, int]], snaplen: int) -> Iterator[bytes]:
    """A pcap file from (linktype, ts_ns, data, wirelen); the first packet fixes the linktype
    and packets of another link type are left out (a pcap file holds one)."""
    writer: PcapWriter | None = None
    linktype = None
    for packet_linktype, ts_ns, data, wirelen in packets:
        if writer is None:
            linktype = packet_linktype
            writer = PcapWriter(linktype, snaplen)
        elif packet_linktype != linktype:
            continue
        chunk = writer.add(ts_ns, data, wirelen)
        if chunk:
            yield chunk
    if writer is None:
        writer = PcapWriter(1, snaplen)
    last = writer.flush()
    if last:
        yield last


def _all_packets(runtime: WorkerRuntime, since: float | None, until: float | None) -> Iterator[tuple[int, int, bytes, int]]:
    since_ns = int(since * 1e9) if since is not None else None
    until_ns = int(until * 1e9) if until is not None else None
    for segment in list_segments(runtime.options.storage_dir):
        try:
            for _ref, linktype, ts_ns, data, wirelen in iter_segment(segment.path):
                if since_ns is not None and ts_ns < since_ns:
                    continue
                if until_ns is not None and ts_ns > until_ns:
                    return
                yield linktype, ts_ns, data, wirelen
        except FileNotFoundError:  # evicted while we read: go on with the next one
            continue


def create_app(runtime: WorkerRuntime) -> ASGIApp:
    options = runtime.options

    async def status(request: Request) -> Response:
        return json_response(await anyio.to_thread.run_sync(runtime.status))

    def _collect_spans(query, since: float | None, until: float | None, limit: int) -> list[Span]:  # type: ignore[no-untyped-def]
        stored = list_segments(options.storage_dir)
        oldest = stored[0].id if stored else 0
        predicate = row_predicate(query)
        return collect_spans(runtime.index.query(since, until),
                             lambda row: row.first_seg >= oldest and predicate(row), limit)

    async def entries(request: Request) -> Stream:
        params = request.query()
        _check_params(params, QUERY_PARAMS)
        (since, until), limit = _window(params), _limit_param(params)
        query = _query(params)  # a bad query is a 400 before the stream starts
        predicate = row_predicate(query)
        stored = list_segments(options.storage_dir)
        oldest = stored[0].id if stored else 0
        first = await anyio.to_thread.run_sync(   # store errors here are still a 503
            _entries_page, runtime.index, predicate, oldest, since, until, None, min(ENTRIES_PAGE, limit))
        return Stream(_entry_lines(runtime.index, predicate, oldest, since, until, limit, first),
                      "application/x-ndjson")

    def _detail(entry_id: str) -> Response:
        row = _row(runtime, entry_id)
        try:
            entry = load_detail(options.storage_dir, row, options.body_limit, runtime.redactor)
        except SegmentEvicted as error:
            raise HTTPError(f"entry {entry_id!r}: its packets were evicted ({error})", 410) from None
        return Response(msgspec.json.encode(entry))

    async def entry_detail(request: Request) -> Response:
        return await anyio.to_thread.run_sync(_detail, request.param)

    def _entry_pcap(entry_id: str) -> Stream:
        row = _row(runtime, entry_id)
        packets = list(_safe(entry_packets(options.storage_dir, row), entry_id))
        filename = f"{entry_id.replace(':', '-')}.pcap"
        return Stream(_pcap_chunks(iter(packets), options.snaplen), PCAP_MEDIA_TYPE,
                      [("Content-Disposition", f'attachment; filename="{filename}"')])

    async def entry_pcap(request: Request) -> Stream:
        return await anyio.to_thread.run_sync(_entry_pcap, request.param)

    async def pcap(request: Request) -> Stream:
        params = request.query()
        _check_params(params, QUERY_PARAMS)
        since, until = _window(params)
        query = _query(params)
        if query.matches_all:
            packets = _all_packets(runtime, since, until)
        else:
            limit = _limit_param(params) if "limit" in params else MAX_LIMIT
            spans = await anyio.to_thread.run_sync(_collect_spans, query, since, until, limit)
            packets = span_packets(options.storage_dir, spans)
        return Stream(_pcap_chunks(packets, options.snaplen), PCAP_MEDIA_TYPE,
                      [("Content-Disposition", f'attachment; filename="{options.node}.pcap"')])

    async def validate_query(request: Request) -> Response:
        params = request.query()
        _check_params(params, ("q",))
        try:
            compile_query(params.get("q"))
        except KflError as error:
            return json_response({"valid": False, "error": str(error), "column": error.column})
        return json_response({"valid": True, "error": None, "column": None})

    def _targets() -> dict[str, Any]:
        names = runtime.pipeline.names
        return {"ips": runtime.target_ips, "idle": runtime.target_idle, "names": names.as_json(),
                "cluster_nets": names.cluster_nets}

    async def get_targets(request: Request) -> Response:
        return json_response(_targets())

    async def put_targets(request: Request) -> Response:
        """{ips, idle?, names?, cluster_nets?}: capture only these addresses (none at all when
        idle, all when ips is empty and not idle); names (with cluster_nets), when given, replace
        the names stamped into entries."""
        body = _body(await request.body(), TargetsUpdate)
        checked: list[str] = []
        for position, ip in enumerate(body.ips):
            try:
                checked.append(str(ipaddress.ip_address(ip)))
            except ValueError:
                raise BadRequest(f"ips[{position}]: {ip!r} is not an IP address") from None
        idle = body.idle
        if idle and checked:
            raise BadRequest("idle: true captures nothing; it cannot come with ips")
        names = None
        if body.cluster_nets is not msgspec.UNSET and body.names is msgspec.UNSET:
            raise BadRequest("cluster_nets: comes with names (they are replaced together)")
        if body.names is not msgspec.UNSET:
            try:
                names = parse_names(body.names)
                nets = parse_nets(None if body.cluster_nets is msgspec.UNSET else body.cluster_nets)
            except NamesError as error:
                raise BadRequest(str(error)) from None
        wanted = target_filter(options.bpf, checked, idle)
        expression = wanted.bpf
        if (checked, idle) != (runtime.target_ips, runtime.target_idle):
            try:
                await anyio.to_thread.run_sync(runtime.capture.ask, "filter", wanted)
            except CaptureError as error:
                raise BadRequest(f"ips: the capture filter ({len(expression)} characters for {len(checked)} addresses) "
                                 f"was refused: {clip(str(error))}") from None
        runtime.target_ips, runtime.target_idle = checked, idle
        if names is not None:
            runtime.pipeline.names.replace(names, nets)
        return json_response({**_targets(), "bpf": expression, "exact_in_kernel": wanted.exact_in_kernel})

    def _config() -> dict[str, Any]:
        stats = runtime.capture_stats()
        limit = stats.store.limit if stats else options.storage_limit
        return {"storage_limit": limit, "max_storage_limit": options.max_storage_limit, "bpf": options.bpf,
                "node": options.node}

    async def get_config(request: Request) -> Response:
        return json_response(await anyio.to_thread.run_sync(_config))

    async def put_config(request: Request) -> Response:
        body = _body(await request.body(), ConfigUpdate)
        try:
            limit = parse_size(body.storage_limit, "storage_limit")
        except UnitError as error:
            raise BadRequest(str(error)) from None
        try:
            await anyio.to_thread.run_sync(check_limit, limit, options.storage_dir,
                                           options.max_storage_limit, "storage_limit",
                                           str(body.storage_limit))
        except LimitRefused as error:
            raise BadRequest(str(error)) from None
        try:
            await anyio.to_thread.run_sync(runtime.capture.ask, "limit", limit)
        except CaptureError as error:
            raise BadRequest(f"storage_limit: {error}") from None
        options.storage_limit = limit
        runtime.pipeline.read_batch = read_batch_for(limit)
        runtime.index.wal_limit = wal_limit_for(limit)
        if runtime.index.budget is not None:
            runtime.index.budget.limit = limit
        return json_response({"storage_limit": limit})

    async def post_tags(request: Request) -> Response:
        """Add and remove tags on stored entries (the hub's scripts: test.pass / test.fail)."""
        changes = tag_changes(await request.body(), options.node)
        found = await anyio.to_thread.run_sync(runtime.index.update_tags, changes)
        ids = [f"{options.node}:{seq}" for seq, _, _ in changes]
        return json_response({"updated": [i for i, (seq, _, _) in zip(ids, changes) if seq in found],
                              "missing": [i for i, (seq, _, _) in zip(ids, changes) if seq not in found],
                              "tags": {f"{options.node}:{seq}": tags for seq, tags in found.items()}})

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        """Every method (the route has always taken any): an SSE answer, or a JSON error."""
        # sse_starlette (and starlette under it) load with the first /stream, not with the
        # API: ~10 ms of CPU less before the worker serves (docs/BENCHMARKS.md, "Worker start").
        from sse_starlette import EventSourceResponse
        from starlette.responses import JSONResponse
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            _check_params(params, ("q",))
            predicate = row_predicate(_query(params))
            last_id = _last_event_id(headers.get("last-event-id"))
        except HTTPError as error:
            await JSONResponse(_error_body(error), status_code=400)(scope, receive, send)
            return
        # each client holds a queue of SUBSCRIBER_QUEUE rows and a filter run on every new row:
        # counted from here to the end of its answer (no await between the check and the count)
        if runtime.stream_clients >= options.max_stream_clients:
            runtime.stream_refused += 1
            detail = (f"{options.max_stream_clients} /stream clients are connected, the most this worker serves "
                      "(--max-stream-clients); try again later")
            await JSONResponse({"error": "unavailable", "detail": detail}, status_code=503,
                               headers={"Retry-After": str(STREAM_RETRY_S)})(scope, receive, send)
            return
        runtime.stream_clients += 1
        try:
            response = EventSourceResponse(_events(runtime, predicate, last_id), ping=SSE_PING_S,
                                           headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            await response(scope, receive, send)  # type: ignore[arg-type]
        finally:
            runtime.stream_clients -= 1

    # Each path's routes by method, the first one first (OPTIONS names that one: asgi.App).
    paths: dict[str, dict[str, Route]] = {
        f"{API}/status": {"GET": status},
        f"{API}/entries": {"GET": entries},
        f"{API}/pcap": {"GET": pcap},
        f"{API}/query/validate": {"GET": validate_query},
        f"{API}/targets": {"GET": get_targets, "PUT": put_targets},
        f"{API}/config": {"GET": get_config, "PUT": put_config},
        f"{API}/tags": {"POST": post_tags},
    }
    paths.update(health_route(runtime.capture))
    app = App(paths, {f"{API}/entries/{{}}": {"GET": entry_detail}, f"{API}/entries/{{}}/pcap": {"GET": entry_pcap}},
              {f"{API}/stream": stream}, on_error=_error_response, on_unexpected=_unexpected)
    # With a token, the hub reaches the worker by whatever address the node has; without one the
    # worker listens on loopback only and answers loopback names only (a rebound name is refused).
    return Guard(app, Policy(options.token, "worker", None if options.token else LOOPBACK_HOSTS,
                             host_hint="; a worker without a token answers on loopback only"))


def _safe(packets: Iterator[tuple[int, int, bytes, int]], entry_id: str) -> Iterator[tuple[int, int, bytes, int]]:
    try:
        yield from packets
    except SegmentEvicted as error:
        raise HTTPError(f"entry {entry_id!r}: its packets were evicted ({error})", 410) from None


MAX_TAG_CHANGES = 1000
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")


def tag_changes(raw: bytes, node: str) -> list[tuple[int, list[str], list[str]]]:
    """{"changes": [{"id": "node:seq", "add": [...], "remove": [...]}]} -> (seq, add, remove)s;
    BadRequest naming the first thing wrong."""
    changes = _body(raw, TagChanges).changes
    if not changes:
        raise BadRequest('changes: expected a non-empty list, e.g. [{"id": "node-a:42", "add": ["test.fail"]}]')
    if len(changes) > MAX_TAG_CHANGES:
        raise BadRequest(f"changes: {len(changes)} changes; at most {MAX_TAG_CHANGES} per request")
    parsed = []
    for position, change in enumerate(changes):
        where = f"changes[{position}]"
        owner, sep, number = change.id.rpartition(":")
        seq = parse_seq(number)
        if not sep or seq is None:
            raise BadRequest(f"{where}.id: {change.id!r} is not an entry id (NODE:NUMBER, NUMBER at most {MAX_SEQ})")
        if owner != node:
            raise BadRequest(f"{where}.id: entry {change.id!r} belongs to node {owner!r}, this is {node!r}")
        for name, tags in (("add", change.add), ("remove", change.remove)):
            for index, tag in enumerate(tags):
                if not _TAG.match(tag):
                    raise BadRequest(f"{where}.{name}[{index}]: {tag!r} is not a tag (1-64 letters, digits "
                                     "and _ . : / -, starting with a letter or digit)")
        parsed.append((seq, change.add, change.remove))
    return parsed


def _body(raw: bytes, type_: type[T]) -> T:
    try:
        return decode_body(raw, type_)
    except BodyError as error:
        raise BadRequest(str(error)) from None


def _entries_page(index: EntryIndex, predicate: Callable[[IndexRow], bool], oldest: int, since: float | None,
                  until: float | None, after: int | None, want: int) -> tuple[list[bytes], int | None, bool]:
    """Up to `want` matching rows' JSON lines, newest first, after entry `after` (None: from the
    newest); the seq of the last row looked at, and whether the index has no more."""
    lines: list[bytes] = []
    last = after
    for row in index.query(since, until, before_seq=after, batch=ENTRIES_PAGE):
        last = row.seq
        # The pipeline prunes rows of evicted segments a moment later; never list them.
        if row.first_seg >= oldest and predicate(row):
            lines.append(row.entry_json + b"\n")
            if len(lines) >= want:
                return lines, last, False
    return lines, last, True


async def _entry_lines(index: EntryIndex, predicate: Callable[[IndexRow], bool], oldest: int, since: float | None,
                       until: float | None, limit: int,
                       first: tuple[list[bytes], int | None, bool]) -> AsyncIterator[bytes]:
    """/entries' body, read and sent a page at a time: all `limit` rows read at once held
    ~150 MB per request at limit=100000, and 8 such requests took a worker from 80 MB to 1.37 GB."""
    page, cursor, finished = first
    sent = 0
    while True:
        if page:
            sent += len(page)
            yield b"".join(page)
        if finished or sent >= limit:
            return
        page, cursor, finished = await anyio.to_thread.run_sync(
            _entries_page, index, predicate, oldest, since, until, cursor, min(ENTRIES_PAGE, limit - sent))


def _entry_events(rows: Iterable[IndexRow]) -> bytes:
    """Rows as `event: entry` SSE events, encoded once into one chunk (as sse-starlette would
    encode each, CRLF-separated: entry JSON has no raw line breaks)."""
    return b"".join(b"id: %d\r\nevent: entry\r\ndata: %s\r\n\r\n" % (row.seq, row.entry_json) for row in rows)


def _last_event_id(text: str | None) -> tuple[str | None, int] | None:
    """Last-Event-ID: a seq of this worker's stream, or STORE:SEQ naming the store it is from
    (the hub sends that, so a worker whose store was reset since cannot be taken for the old one)."""
    if not text:
        return None
    store, _, number = text.rpartition(":")
    seq = parse_seq(number)
    if seq is not None:
        return store or None, seq
    raise BadRequest(f"Last-Event-ID: {text!r} is not an event id from this worker (SEQ or STORE:SEQ)")


async def _events(runtime: WorkerRuntime, predicate, last_id: tuple[str | None, int] | None,  # type: ignore[no-untyped-def]
                  ) -> AsyncIterator[ServerSentEvent | bytes]:
    from sse_starlette import ServerSentEvent
    subscriber = runtime.broadcaster.subscribe(predicate, SUBSCRIBER_QUEUE)
    try:
        # subscribed first, so nothing indexed from here on is missed between hello and live
        head = await anyio.to_thread.run_sync(runtime.index.max_seq)
        store = runtime.index.store_id
        after = None if last_id is None else last_id[1]
        # an id from another store (this one was reset or rebuilt since), or above anything
        # this store numbered: everything it holds is new to the reader
        reset = last_id is not None and ((last_id[0] is not None and last_id[0] != store) or last_id[1] > head)
        if reset:
            after = 0
        hello = {"node": runtime.options.node, "store": store, "head": head, "reset": reset}
        yield ServerSentEvent(data=msgspec.json.encode(hello).decode(), event="hello")
        newest = head     # what is streamed is what was indexed after `after`, or after head
        if after is not None:
            # A page at a time: a resume from seq 0 on a large index never holds it all.
            first_missed = None
            cursor = after
            while True:
                page = await anyio.to_thread.run_sync(runtime.index.newer_than, cursor, REPLAY_PAGE)
                if not page:
                    break
                if first_missed is None:
                    first_missed = page[0].seq
                chunk = _entry_events(row for row in page if predicate(row))
                if chunk:
                    yield chunk
                cursor = page[-1].seq
                newest = max(newest, cursor)
                if len(page) < REPLAY_PAGE:
                    break
            # seqs are contiguous: a gap after `after` is what eviction took (of any query)
            evicted = max(0, (first_missed if first_missed is not None else head + 1) - after - 1)
            yield ServerSentEvent(data=msgspec.json.encode({"seq": newest, "evicted": evicted}).decode(),
                                  event="live")
        while True:
            rows, lost = await subscriber.queue.get_batch(STREAM_BATCH)
            if lost:
                yield ServerSentEvent(data=msgspec.json.encode({"lost": lost}).decode(), event="lost")
            chunk = _entry_events(row for row in rows if row.seq > newest)
            if chunk:
                yield chunk
    finally:
        runtime.broadcaster.unsubscribe(subscriber)
