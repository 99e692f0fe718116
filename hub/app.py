"""The hub's HTTP API (ARCHITECTURE.md, Hub API): a Litestar app over a WorkerPool.

KFL is validated once here: an invalid `q` is a 400 with its column before any worker is
asked; a valid one is pushed down so only matches cross the network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from litestar import Litestar, MediaType, Request, Response, get
from litestar.exceptions import HTTPException, NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.handlers import asgi
from litestar.response import Stream
from litestar.static_files import create_static_files_router
from litestar.types import Receive, Scope, Send
from sse_starlette import EventSourceResponse
from starlette.responses import JSONResponse

from hub.auth import healthz, hub_policy
from hub.edgemetrics import DEFAULT_MAX_EDGES, EdgeMetrics
from hub.kube.names import NamedFeed, fill_json
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, StreamCounters, render as render_metrics
from hub.scripts import Scripting, script_routes
from hub.servicemap import build as build_servicemap
from hub.snapshots import DEFAULT_LIMIT as SNAPSHOT_LIMIT, DIRECTORY as SNAPSHOT_DIRECTORY, SnapshotStore
from hub.snapshots import metrics as snapshot_metrics, snapshot_handlers
from hub.stream import MAX_LIVE_CLIENTS, MAX_LIVE_QUERIES, Feed, last_event_id
from hub.targets import target_handlers
from hub.workers import WorkerClient, WorkerError, WorkerPool, describe
from hub.ws import ws_handler
from shark import kfl
from shark.auth import protect

log = logging.getLogger("shark.hub")

API = "/api/v1"
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"
DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
QUERY_PARAMS = ("q", "since", "until", "limit")
VERSION = "0.1.0"
SSE_PING_S = 15
SERVICEMAP_LIMIT = 10_000
SPA_DIR = Path(__file__).resolve().parent.parent / "spa"


@dataclass
class HubSettings:
    workers: list[str]
    poll_interval: float = 2.0
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 0.2
    client_options: dict[str, Any] = field(default_factory=dict)   # e.g. a test transport
    spa_dir: Path | None = SPA_DIR          # served at /; None serves no UI
    state_dir: Path | None = None           # where the hub keeps what must survive a restart
    kube: bool = False                      # workers and names come from the Kubernetes API
    kube_settings: Any = None               # hub.kube.cluster.KubeSettings (None: its defaults)
    scripts: Any = None                     # hub.scripts.ScriptSettings (None: its defaults)
    token: str | None = None                # the installation's token: asked of clients, sent to workers
    allowed_hosts: list[str] = field(default_factory=list)   # Host names served besides loopback's
    metrics_edges: int = DEFAULT_MAX_EDGES  # service-map edges with /metrics series of their own
    snapshot_limit: int = SNAPSHOT_LIMIT    # bytes all traffic snapshots may use (hub/snapshots.py)
    max_live_clients: int = MAX_LIVE_CLIENTS  # SSE + WebSocket clients at once
    max_live_queries: int = MAX_LIVE_QUERIES  # distinct live queries at once


@dataclass
class HubState:
    """What the parts of the hub share; each part that adds routes is handed this."""
    settings: HubSettings
    pool: WorkerPool
    feed: Feed
    counters: StreamCounters


class BadRequest(HTTPException):
    status_code = 400


class BadQuery(BadRequest):
    def __init__(self, error: kfl.KflError) -> None:
        super().__init__(detail=f"q: {error}")
        self.column = error.column


class BadGateway(HTTPException):
    status_code = 502


REASONS = {400: "bad request", 404: "not found", 409: "conflict", 410: "gone",
           500: "internal error", 502: "bad gateway", 503: "unavailable"}


def _error_response(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"error": REASONS.get(exc.status_code, "error"), "detail": exc.detail}
    if isinstance(exc, BadQuery):
        body["column"] = exc.column
    return Response(body, status_code=exc.status_code)


def _params(request: Request, allowed: tuple[str, ...] = QUERY_PARAMS) -> dict[str, str]:
    params = dict(request.query_params)
    for name in params:
        if name not in allowed:
            raise BadRequest(f"{name}: unknown query parameter; expected one of {', '.join(allowed)}"
                             " (filters are KFL queries in q, e.g. q=http and status >= 500)")
    if params.get("q"):
        try:
            kfl.compile(params["q"])
        except kfl.KflError as error:
            raise BadQuery(error) from None
    return {name: value for name, value in params.items() if value != ""}


def _limit(params: Mapping[str, str]) -> int:
    text = params.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest(f"limit: {text!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit: {limit} is outside 1-{MAX_LIMIT}")
    return limit


def _from_worker(error: WorkerError | httpx.HTTPError, client: WorkerClient | None) -> HTTPException:
    """A worker's failure as the hub's answer: its 4xx passed on, anything else a 502."""
    if isinstance(error, WorkerError) and error.status is not None and error.status < 500:
        detail = error.body.get("detail") if isinstance(error.body, dict) else str(error)
        exc = HTTPException(status_code=error.status, detail=detail or str(error))
        return exc
    where = f"worker {client.node or '?'} ({client.url})" if client else "worker"
    return BadGateway(detail=f"{where}: {describe(error)}")


def _split_id(entry_id: str) -> str:
    node, sep, number = entry_id.rpartition(":")
    if not sep or not node or not number.isdigit():
        raise BadRequest(f"id: {entry_id!r} is not an entry id (NODE:NUMBER)")
    return node


async def _owner(pool: WorkerPool, entry_id: str) -> WorkerClient:
    node = _split_id(entry_id)
    client = await pool.owner(node)
    if client is None:
        known = ", ".join(sorted(c.node for c in pool.clients if c.node)) or "none reachable"
        raise NotFoundException(f"entry {entry_id!r}: no worker named {node!r} (workers: {known})")
    return client


# -- HAR ----------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pairs(headers: Any) -> list[dict[str, str]]:
    if isinstance(headers, dict):
        items = headers.items()
    elif isinstance(headers, list):
        items = ((h[0], h[1]) if isinstance(h, (list, tuple)) else (h.get("name"), h.get("value"))
                 for h in headers)
    else:
        return []
    out = []
    for name, value in items:
        for one in value if isinstance(value, list) else [value]:
            out.append({"name": str(name), "value": str(one)})
    return out


def _url(entry: dict[str, Any]) -> str:
    request = entry.get("request") or {}
    dst = entry.get("dst") or {}
    host = request.get("host") or f"{dst.get('ip', '')}:{dst.get('port', '')}"
    scheme = "https" if entry.get("tls") else "http"
    url = f"{scheme}://{host}{request.get('path') or '/'}"
    query = request.get("query")
    if isinstance(query, dict) and query:
        url += "?" + urlencode([(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])])
    return url


def har_entry(entry: dict[str, Any]) -> dict[str, Any]:
    request = entry.get("request") or {}
    response = entry.get("response") or {}
    query = request.get("query") if isinstance(request.get("query"), dict) else {}
    elapsed = entry.get("elapsed_ms")
    elapsed = float(elapsed) if isinstance(elapsed, (int, float)) else -1
    res_headers = _pairs(response.get("headers"))
    mime = response.get("content_type") or next(
        (h["value"] for h in res_headers if h["name"].lower() == "content-type"), "")
    return {
        "startedDateTime": _iso(float(entry["ts"])),
        "time": max(elapsed, 0),
        "request": {
            "method": request.get("method") or "GET",
            "url": _url(entry),
            "httpVersion": request.get("version") or "HTTP/1.1",
            "cookies": [],
            "headers": _pairs(request.get("headers")),
            "queryString": [{"name": k, "value": str(v)} for k, vs in query.items()
                            for v in (vs if isinstance(vs, list) else [vs])],
            "headersSize": -1,
            "bodySize": int(request.get("content_length") or 0),
        },
        "response": {
            "status": int(response.get("status") or entry.get("status") or 0),
            "statusText": response.get("reason") or "",
            "httpVersion": response.get("version") or request.get("version") or "HTTP/1.1",
            "cookies": [],
            "headers": res_headers,
            "content": {"size": int(response.get("content_length") or 0), "mimeType": mime},
            "redirectURL": next((h["value"] for h in res_headers if h["name"].lower() == "location"), ""),
            "headersSize": -1,
            "bodySize": int(response.get("content_length") or 0) if response else -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": max(elapsed, 0), "receive": 0},
        "serverIPAddress": (entry.get("dst") or {}).get("ip", ""),
        "comment": entry.get("id", ""),
        # custom fields (HAR 1.2 allows them with a leading "_"): both ends, with their names
        "_src": entry.get("src") or {},
        "_dst": entry.get("dst") or {},
    }


def har_log(entries: list[dict[str, Any]], workers: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [f"{w['node'] or w['url']}: {w['error']}" for w in workers if not w["ok"]]
    log_: dict[str, Any] = {
        "version": "1.2",
        "creator": {"name": "kubectl-shark", "version": VERSION},
        "pages": [],
        "entries": [har_entry(e) for e in sorted(entries, key=lambda e: e["ts"])],
    }
    if failed:
        log_["comment"] = "partial: " + "; ".join(failed)
    return {"log": log_}


def _cluster(settings: HubSettings, pool: WorkerPool) -> Any:
    from hub.kube.cluster import Cluster, KubeSettings   # the kubernetes client only in cluster mode
    return Cluster(pool, settings.kube_settings or KubeSettings())


def create_app(settings: HubSettings) -> Litestar:
    pool = WorkerPool(settings.workers, poll_interval=settings.poll_interval, allow_empty=settings.kube,
                      timeout=settings.timeout, retries=settings.retries, backoff=settings.backoff,
                      token=settings.token, **settings.client_options)
    started = time.time()
    feed = Feed(pool, max_clients=settings.max_live_clients, max_queries=settings.max_live_queries)
    counters = StreamCounters()
    state = HubState(settings, pool, feed, counters)
    # In a cluster, endpoints the workers did not name are named at read time (hub/kube/names.py).
    cluster = _cluster(settings, pool) if settings.kube else None
    fill = cluster.fill if cluster is not None else None
    named_feed = NamedFeed(feed, fill) if fill is not None else feed
    edge_metrics = EdgeMetrics(settings.metrics_edges)
    snapshots = SnapshotStore(settings.state_dir / SNAPSHOT_DIRECTORY if settings.state_dir is not None else None,
                              settings.snapshot_limit)

    def named(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if fill is not None:
            for entry in found:
                fill(entry)
        return found

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await pool.start()
        app.state.pool = pool
        try:
            yield
        finally:
            await edge_metrics.stop()
            await feed.close()
            await pool.close()

    @get(f"{API}/entries")
    async def entries(request: Request) -> Response[Any] | Stream:
        """Entries from every worker, newest first, with the `workers` block."""
        params = _params(request)
        limit = _limit(params)
        try:
            if fill is None and not scripting.wants_queried():
                # nothing to add to the entries: merged as they stream in, passed on as the
                # workers wrote them
                merged = await pool.open_entries(params, limit)
                return Stream(merged.chunks(), media_type=MediaType.JSON)
            answer = await pool.entries(params, limit)
        except WorkerError as error:
            raise _from_worker(error, None) from None
        # onItemQueried (scripts, set up below) may tag or change what is answered
        return Response({"entries": await scripting.on_queried(named(answer.entries)), "workers": answer.workers})

    @get(f"{API}/entries/{{entry_id:str}}")
    async def entry_detail(request: Request) -> Response[bytes]:
        """One entry in full, from the worker that owns it."""
        entry_id = request.path_params["entry_id"]
        client = await _owner(pool, entry_id)
        try:
            response = await client.get(f"/entries/{entry_id}")
        except (WorkerError, httpx.HTTPError) as error:
            raise _from_worker(error, client) from None
        content = fill_json(response.content, fill) if fill is not None else response.content
        return Response(content, media_type=MediaType.JSON)

    @get(f"{API}/entries/{{entry_id:str}}/pcap")
    async def entry_pcap(request: Request) -> Stream:
        """That entry's stream as a pcap file, from the worker that owns it."""
        entry_id = request.path_params["entry_id"]
        client = await _owner(pool, entry_id)
        stack = AsyncExitStack()
        try:
            response = await client.open_stream(stack, f"/entries/{entry_id}/pcap")
        except (WorkerError, httpx.HTTPError) as error:
            await stack.aclose()
            raise _from_worker(error, client) from None

        async def body() -> AsyncIterator[bytes]:
            async with stack:
                async for chunk in response.aiter_bytes():
                    yield chunk
        filename = f"{entry_id.replace(':', '-')}.pcap"
        return Stream(body(), media_type=PCAP_MEDIA_TYPE,
                      headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @get(f"{API}/pcap")
    async def pcap(request: Request) -> Stream:
        """One time-ordered pcap merged from every worker's matching packets."""
        params = _params(request)
        try:
            answer = await pool.pcap(params)
        except WorkerError as error:
            raise _from_worker(error, None) from None
        failed = [w for w in answer.workers if not w["ok"]]
        if len(failed) == len(answer.workers):
            raise BadGateway(detail="no worker answered: " + "; ".join(
                f"{w['node'] or w['url']}: {w['error']}" for w in failed))
        headers = {"Content-Disposition": 'attachment; filename="shark.pcap"'}
        if failed:
            headers["X-Shark-Partial"] = ", ".join(f"{w['node'] or w['url']}" for w in failed)
        return Stream(answer.chunks(), media_type=PCAP_MEDIA_TYPE, headers=headers)

    @get(f"{API}/har")
    async def har(request: Request) -> dict[str, Any]:
        """HAR 1.2 of the HTTP entries matching q (oldest first)."""
        params = _params(request)
        limit = _limit(params) if "limit" in params else 10_000
        q = params.get("q", "").strip()
        params["q"] = f"http and ({q})" if q else "http"
        try:
            answer = await pool.entries(params, limit)
        except WorkerError as error:
            raise _from_worker(error, None) from None
        return har_log(named(answer.entries), answer.workers)

    @get(f"{API}/query/validate")
    async def validate_query(request: Request) -> dict[str, Any]:
        """Whether q is valid KFL, and where it goes wrong."""
        params = dict(request.query_params)
        for name in params:
            if name != "q":
                raise BadRequest(f"{name}: unknown query parameter; expected q")
        error = kfl.validate(params.get("q") or "")
        if error is None:
            return {"valid": True, "error": None, "column": None}
        return {"valid": False, "error": str(error), "column": error.column}

    @get(f"{API}/workers")
    async def workers() -> list[dict[str, Any]]:
        """Health of every worker, as last polled."""
        return pool.health()

    @get(f"{API}/status")
    async def status() -> dict[str, Any]:
        """The hub and a summary of every worker's status."""
        rows = []
        for client, health in zip(pool.clients, pool.health()):
            rows.append({**health, "status": client.health.status if client.health.ok else None})
        up = sum(1 for row in rows if row["ok"])
        return {"hub": {"version": VERSION, "uptime_s": round(time.time() - started, 3),
                        "workers": len(rows), "workers_ok": up},
                "workers": rows}

    @asgi(f"{API}/stream", is_mount=False, copy_scope=True)
    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        """SSE: `event: entry` (id = hub sequence), `event: status`, `event: lost`."""
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        body: dict[str, Any] | None = None
        unknown = [name for name in params if name != "q"]
        if unknown:
            body = {"error": "bad request", "detail": f"{unknown[0]}: unknown query parameter; expected q"}
        elif params.get("q") and (error := kfl.validate(params["q"])) is not None:
            body = {"error": "bad request", "detail": f"q: {error}", "column": error.column}
        try:
            last_id = last_event_id(headers)
        except ValueError as error:
            body = {"error": "bad request", "detail": str(error)}
        if body is not None:
            await JSONResponse(body, status_code=400)(scope, receive, send)  # type: ignore[arg-type]
            return
        problem = feed.refusal(params.get("q") or None)
        if problem is not None:
            await JSONResponse({"error": "unavailable", "detail": problem}, status_code=503,  # type: ignore[arg-type]
                               headers={"Retry-After": "10"})(scope, receive, send)
            return
        # the headers say "streaming from now": sent once the query's worker streams are open
        await feed.ready(params.get("q") or None)
        events = counters.track(named_feed.events(params.get("q") or None, last_id))
        response = EventSourceResponse(events, ping=SSE_PING_S,
                                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response(scope, receive, send)  # type: ignore[arg-type]

    @get(f"{API}/servicemap")
    async def servicemap(request: Request) -> dict[str, Any]:
        """Endpoints and src -> dst edges (count, errors, error_rate, p50/p99) of the matching
        entries (at most `limit`, default 10000), with the `workers` block."""
        params = _params(request)
        limit = _limit(params) if "limit" in params else SERVICEMAP_LIMIT
        try:
            answer = await pool.entries(params, limit)
        except WorkerError as error:
            raise _from_worker(error, None) from None
        return {**build_servicemap(named(answer.entries)), "entries": len(answer.entries), "workers": answer.workers}

    @get("/metrics", include_in_schema=False)
    async def metrics() -> Response[str]:
        """Prometheus text: worker counters as last polled, hub stream counters, and the service
        map's edges (counted from the live feed from the first scrape on)."""
        edge_metrics.start(named_feed)
        rows = [(c.node or c.url, c.health.ok, c.health.status) for c in pool.clients]
        text = render_metrics(rows, counters, feed)
        return Response(text + edge_metrics.render() + snapshot_metrics(snapshots) + scripting.metrics(),
                        media_type=METRICS_CONTENT_TYPE)

    handlers: list[Any] = [healthz, stream, entries, entry_detail, entry_pcap, pcap, har, validate_query, workers,
                           status, ws_handler(f"{API}/ws", named_feed, counters), servicemap, metrics]
    lifespans: list[Any] = [lifespan]
    # Parts with routes of their own add them here, each from its module, given `state`.
    handlers += target_handlers(pool, cluster)
    handlers += snapshot_handlers(pool, snapshots, fill)
    scripting = Scripting(state)
    handlers += script_routes(scripting)
    lifespans.append(scripting.lifespan)
    if cluster is not None:
        lifespans.append(cluster.lifespan)
    spa_dir = settings.spa_dir if settings.spa_dir is not None and (settings.spa_dir / "index.html").is_file() else None
    if spa_dir is not None:
        handlers.append(create_static_files_router(path="/", directories=[spa_dir], html_mode=True, name="spa"))
    app = Litestar(
        route_handlers=handlers,
        lifespan=lifespans,
        exception_handlers={HTTPException: _error_response},
        openapi_config=OpenAPIConfig(title="kubectl-shark hub", version=VERSION, path="/schema"),
        logging_config=None,
        debug=False,
    )
    return protect(app, hub_policy(settings.token, settings.allowed_hosts, spa_dir))
