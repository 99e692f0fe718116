"""worker/api/asgi.py answers as the Litestar app it replaced did (docs/API.md, "Worker API"):
a path's trailing and doubled slashes do not matter, an unknown path is a JSON 404, a known one
with another method a JSON 405 (HEAD included), OPTIONS a 204 naming the first route's methods,
the first of a repeated query parameter counts, a body above 10 MB is a 413, a Host header with
characters no host has is a 400, and a failing route is answered by the app's error handlers.
tests/bench/diff_worker_api.py compares whole answers with the Litestar app's, on demand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from worker.api.asgi import MAX_BODY, App, BadRequest, HTTPError, Request, Response, json_response


async def _echo(request: Request) -> Response:
    return json_response({"query": request.query(), "param": request.param})


async def _body(request: Request) -> Response:
    return Response(await request.body(), content_type="text/plain; charset=utf-8")


async def _bad(request: Request) -> Response:
    raise BadRequest("limit: 'x' is not a whole number")


async def _broken(request: Request) -> Response:
    raise RuntimeError("boom")


APP = App({"/a/b": {"GET": _echo, "PUT": _body}, "/bad": {"GET": _bad}, "/broken": {"GET": _broken},
           "/post": {"POST": _body}},
          {"/a/{}/c": {"GET": _echo}}, {},
          on_error=lambda _request, error: json_response({"detail": str(error)}, getattr(error, "status_code", 500)),
          on_unexpected=lambda _request, error: json_response({"unexpected": repr(error)}, 500))


def call(method: str, path: str, query: bytes = b"", body: list[bytes] | None = None,
         headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    chunks = list(body or [b""])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query,
             "headers": headers or [(b"host", b"127.0.0.1:8897")]}
    asyncio.run(APP(scope, receive, send))
    start, *rest = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in rest)


def test_paths_match_without_their_trailing_or_doubled_slashes_and_take_a_parameter():
    for path in ("/a/b", "/a/b/", "//a//b", "/a/b//"):
        assert call("GET", path)[0] == 200, path
    status, headers, body = call("GET", "/a/node-a:42/c/")
    assert status == 200 and json.loads(body)["param"] == "node-a:42"
    assert headers[b"content-type"] == b"application/json" and headers[b"content-length"] == b"%d" % len(body)
    assert call("GET", "/a/x/y")[0] == 404


def test_unknown_paths_and_methods_are_json_errors():
    assert call("GET", "/nope") == (404, {b"content-type": b"application/json", b"content-length": b"22"},
                                   b'{"detail":"Not Found"}')
    for method in ("POST", "DELETE", "HEAD"):
        status, _, body = call(method, "/a/b")
        assert (status, json.loads(body)) == (405, {"detail": "Method Not Allowed"}), method


def test_options_names_the_methods_of_the_first_route():
    assert call("OPTIONS", "/a/b")[:2] == (204, {b"allow": b"GET, OPTIONS"})
    assert call("OPTIONS", "/post")[:2] == (204, {b"allow": b"OPTIONS, POST"})
    assert call("OPTIONS", "/nope")[0] == 404


def test_the_first_of_a_repeated_query_parameter_counts_and_blank_ones_are_kept():
    _, _, body = call("GET", "/a/b", query=b"limit=2&limit=5&q=&flag&q=x+y&e=%C3%A9")
    assert json.loads(body)["query"] == {"limit": "2", "q": "", "flag": "", "e": "é"}


def test_bodies_are_read_whole_up_to_ten_megabytes():
    assert call("PUT", "/a/b", body=[b'{"ips":', b" []}"])[2] == b'{"ips": []}'
    announced = [(b"host", b"h"), (b"content-length", b"%d" % (MAX_BODY + 1))]
    assert call("PUT", "/a/b", body=[b"x"], headers=announced)[0] == 413
    streamed = [b"x" * (MAX_BODY // 2), b"x" * (MAX_BODY // 2), b"x"]
    status, _, body = call("PUT", "/a/b", body=streamed)
    assert (status, json.loads(body)) == (413, {"detail": "Request Entity Too Large"})


def test_errors_go_to_the_handlers_and_a_bad_host_is_a_400():
    assert json.loads(call("GET", "/bad")[2]) == {"detail": "limit: 'x' is not a whole number"}
    assert call("GET", "/bad")[0] == 400
    status, _, body = call("GET", "/broken")
    assert (status, json.loads(body)) == (500, {"unexpected": "RuntimeError('boom')"})
    status, _, body = call("GET", "/a/b", headers=[(b"host", b"a b")])
    assert (status, json.loads(body)) == (400, {"detail": "Invalid host header"})
    assert HTTPError(status_code=410).detail == "Gone"
