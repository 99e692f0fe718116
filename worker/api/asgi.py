"""The worker API's HTTP layer: a plain ASGI app that routes, reads bodies and sends answers the
way the Litestar app it replaces did, byte for byte (docs/API.md, "Worker API").

Why not a framework: Litestar's import and app construction were ~0.17 s of CPU of every worker
start, about half of what the API process spent before it answered (docs/BENCHMARKS.md, "Worker
start, fifth round"); the worker's API is 13 fixed routes, two with a path parameter, and its
contract is what Litestar answered, including its quirks (a path's trailing and doubled slashes
do not matter, HEAD is a 405, OPTIONS a 204 naming the methods, the first of a repeated query
parameter counts, bodies above 10 MB are a 413). Starlette's router answers each of those
differently and its import alone costs ~25 ms; what is here is the little the worker uses. The
hub stays on Litestar (ARCHITECTURE.md).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from decimal import Decimal
from http import HTTPStatus
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import PurePath
from typing import Any, Union
from urllib.parse import parse_qsl

import anyio
import msgspec

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 10_000_000   # bytes of a request body (Litestar's default, the worker's limit since)
JSON = "application/json"


class HTTPError(Exception):
    """An answer with this status and `{"error", "detail"}` (the detail defaults to the reason)."""
    status_code = 500

    def __init__(self, detail: str = "", status_code: int | None = None) -> None:
        if status_code is not None:
            self.status_code = status_code
        self.detail = detail or HTTPStatus(self.status_code).phrase
        super().__init__(self.detail)


class BadRequest(HTTPError):
    status_code = 400


class NotFound(HTTPError):
    status_code = 404


# -- requests ---------------------------------------------------------------------------------
class Request:
    """What a route reads of a request: method, path parameter, query, headers, body."""
    __slots__ = ("scope", "receive", "param")

    def __init__(self, scope: Scope, receive: Receive, param: str = "") -> None:
        self.scope = scope
        self.receive = receive
        self.param = param   # the {id} of /entries/{id}[/pcap]

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def query(self) -> dict[str, str]:
        """The query's parameters, each its first value (blank ones kept, `+` a space)."""
        params: dict[str, str] = {}
        for name, value in parse_qsl(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            params.setdefault(name, value)
        return params

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.scope["headers"] if key == name), None)

    async def body(self) -> bytes:
        """The whole body; a 413 beyond MAX_BODY (announced or sent)."""
        announced = self.header(b"content-length")
        if announced is not None:
            try:
                length = int(announced)
            except ValueError:
                raise BadRequest(f"Invalid content-length: {announced.decode('latin-1')!r}") from None
            if length > MAX_BODY:
                raise HTTPError(status_code=413)
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise HTTPError("client disconnected prematurely")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise HTTPError(status_code=413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


# -- answers ----------------------------------------------------------------------------------
def _header_list(headers: Iterable[tuple[str, str]], content_type: str | None) -> list[tuple[bytes, bytes]]:
    out = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if content_type is not None:
        out.append((b"content-type", content_type.encode("latin-1")))
    return out


class Response:
    """A whole body: its headers, then content-type and content-length (none for a 204)."""
    __slots__ = ("status", "body", "headers")

    def __init__(self, body: bytes, status: int = 200, content_type: str = JSON,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status, self.body = status, body
        if status == 204:
            self.headers = _header_list(headers, None)
        else:
            self.headers = [*_header_list(headers, content_type), (b"content-length", b"%d" % len(body))]

    async def __call__(self, send: Send, receive: Receive) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _encode_hook(value: Any) -> Any:
    """What msgspec does not encode itself, as Litestar's serializer wrote it."""
    for kind, encode in _ENCODERS:
        if isinstance(value, kind):
            return encode(value)
    raise TypeError(f"Unsupported type: {type(value)!r}")


_ENCODERS: tuple[tuple[type | tuple[type, ...], Callable[[Any], Any]], ...] = (
    ((PurePath, IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network), str),
    (deque, list),
    (Decimal, lambda val: int(val) if val.as_tuple().exponent >= 0 else float(val)),
    (re.Pattern, lambda val: val.pattern),
    (str, str), (int, int), (float, float), (bytes, bytes), (frozenset, frozenset), (set, set),
)
_JSON_ENCODER = msgspec.json.Encoder(enc_hook=_encode_hook)


def json_response(value: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    return Response(_JSON_ENCODER.encode(value), status, JSON, headers)


Chunks = Union[AsyncIterable[bytes], Iterable[bytes]]


class Stream:
    """A chunked body from an iterator (a plain one is read in a worker thread, a step at a
    time), stopped when the client goes away."""
    __slots__ = ("chunks", "headers")

    def __init__(self, chunks: Chunks, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.chunks = chunks
        self.headers = _header_list(headers, content_type)

    async def __call__(self, send: Send, receive: Receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        async with anyio.create_task_group() as group:
            group.start_soon(self._body, send)
            while True:
                if (await receive())["type"] == "http.disconnect":
                    group.cancel_scope.cancel()
                    break

    async def _body(self, send: Send) -> None:
        chunks = self.chunks
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            iterator = iter(chunks)
            while (chunk := await anyio.to_thread.run_sync(_next, iterator)) is not None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _next(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)


Answer = Union[Response, Stream]
Route = Callable[[Request], Awaitable[Answer]]
RawRoute = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorAnswer = Callable[[Request, Exception], Answer]


# -- the app ----------------------------------------------------------------------------------
_HOST = re.compile(rb"\A[0-9A-Za-z!$&'()*+,;=\-._~:\[\]@%]*\Z")
_SLASHES = re.compile("//+")


class App:
    """Routes by path (a trailing or doubled slash does not matter) and method; `paths` maps a
    path to its routes by method, `param_paths` a path with one `{}` component the same way,
    `raw_paths` a path to an ASGI app taking every method. An HTTPError raised by a route (or
    by the routing: 404, 405, 413) is answered by `on_error`, anything else by `on_unexpected`."""

    def __init__(self, paths: dict[str, dict[str, Route]], param_paths: dict[str, dict[str, Route]],
                 raw_paths: dict[str, RawRoute], on_error: ErrorAnswer, on_unexpected: ErrorAnswer) -> None:
        self.paths = paths
        self.raw_paths = raw_paths
        self.params = {tuple(path.strip("/").split("/")): routes for path, routes in param_paths.items()}
        self.on_error, self.on_unexpected = on_error, on_unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":   # no WebSocket route (uvicorn runs with ws="none")
            return
        request = Request(scope, receive)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            path = scope["path"] = _SLASHES.sub("/", "/" + scope["path"].strip("/"))
            host = request.header(b"host")
            if host is not None and not _HOST.match(host):
                raise BadRequest("Invalid host header")
            raw = self.raw_paths.get(path)
            if raw is not None:
                await raw(scope, receive, watched)
                return
            routes = self._routes(path, request)
            if request.method == "OPTIONS":
                # Litestar's answer named the methods of the path's first route only (a path
                # with GET and PUT answered "GET, OPTIONS"): so does this one.
                allow = ", ".join(sorted({next(iter(routes)), "OPTIONS"}))
                answer: Answer = Response(b"", 204, headers=[("allow", allow)])
            elif request.method not in routes:
                raise HTTPError(status_code=405)
            else:
                answer = await routes[request.method](request)
        except Exception as error:   # noqa: BLE001 - every failure is answered, as Litestar did
            if started:
                raise
            answer = (self.on_error if isinstance(error, HTTPError) else self.on_unexpected)(request, error)
        await answer(watched, receive)

    def _routes(self, path: str, request: Request) -> dict[str, Route]:
        routes = self.paths.get(path)
        if routes is not None:
            return routes
        parts = tuple(path[1:].split("/"))
        for pattern, routes in self.params.items():
            if len(pattern) == len(parts) and all(p == "{}" or p == q for p, q in zip(pattern, parts)):
                request.param = parts[pattern.index("{}")]
                return routes
        raise NotFound()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
