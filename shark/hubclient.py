"""A small client of the hub's public API for the hub-facing commands (query, pcapdump,
export, status, scripts). It finds the token itself (shark/credentials.py). Failures become
SharkErrors with one-line reasons."""

from __future__ import annotations

import json
from urllib.parse import quote
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from shark.credentials import TokenAuth, TokenFinder
from shark.errors import HubError, HubUnreachable

API = "/api/v1"
DEFAULT_HUB = "http://127.0.0.1:8899"


def _reason(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = str(error) or type(error).__name__
    if "Connection refused" in text or "connection refused" in text.lower():
        return "connection refused"
    return text


def _hub_error(response: httpx.Response, tokens: TokenFinder | None = None) -> HubError:
    if response.status_code == 401:
        return HubError(f"the hub refused the token: {_detail(response)}", 401,
                        hint=tokens.hint() if tokens is not None else None)
    try:
        body = json.loads(response.read())
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict) and body.get("column") is not None and isinstance(detail, str):
        # a bad KFL query: "q: column 9: expected ..." -> "query: column 9: expected ..."
        text = detail.removeprefix("q: ")
        return HubError(f"query: {text}", response.status_code,
                        hint="see docs/KFL.md for the filter language")
    if not detail:
        detail = response.text[:200].strip() or response.reason_phrase
    return HubError(f"hub answered {response.status_code}: {detail}", response.status_code)


def _detail(response: httpx.Response) -> str:
    try:
        body = json.loads(response.read())
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail else response.text[:200].strip() or response.reason_phrase


class HubClient:
    def __init__(self, url: str = DEFAULT_HUB, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None, tokens: TokenFinder | None = None) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url.removesuffix(API)
        self.tokens = tokens or TokenFinder()
        self.http = httpx.Client(base_url=self.url + API, transport=transport, auth=TokenAuth(self.tokens),
                                 timeout=httpx.Timeout(timeout, connect=5.0))

    def error(self, response: httpx.Response) -> HubError:
        """The hub's error answer as a HubError (a 401 with where the token was looked for)."""
        return _hub_error(response, self.tokens)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _open(self, path: str, params: dict[str, Any] | None = None,
              timeout: httpx.Timeout | None = None) -> Iterator[httpx.Response]:
        params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            extra = {"timeout": timeout} if timeout is not None else {}
            with self.http.stream("GET", path, params=params, **extra) as response:
                if response.status_code >= 400:
                    raise self.error(response)
                yield response
        except httpx.TransportError as error:
            if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
                raise HubUnreachable(self.url, _reason(error)) from error
            raise HubUnreachable(self.url, f"connection lost: {_reason(error)}") from error

    def _json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        with self._open(path, params) as response:
            data = response.read()
        try:
            return json.loads(data)
        except ValueError:
            raise HubError(f"the hub's answer to {path} is not JSON", 200) from None

    def entries(self, q: str = "", limit: int | None = None, since: float | str | None = None,
                until: float | str | None = None) -> dict[str, Any]:
        return self._json("/entries", {"q": q, "limit": limit, "since": since, "until": until})

    def entry(self, entry_id: str) -> dict[str, Any]:
        """One entry in full (bodies included), from the worker that owns it."""
        return self._json(f"/entries/{quote(entry_id, safe=':')}")

    def servicemap(self, q: str = "", limit: int | None = None, since: float | str | None = None,
                   until: float | str | None = None) -> dict[str, Any]:
        return self._json("/servicemap", {"q": q, "limit": limit, "since": since, "until": until})

    def validate(self, q: str) -> dict[str, Any]:
        return self._json("/query/validate", {"q": q})

    def status(self) -> dict[str, Any]:
        return self._json("/status")

    def har(self, q: str = "", since: float | str | None = None, until: float | str | None = None,
            limit: int | None = None) -> dict[str, Any]:
        return self._json("/har", {"q": q, "since": since, "until": until, "limit": limit})

    def stream(self, q: str = "") -> Iterator[tuple[str, Any]]:
        """SSE events from /stream as (event, decoded data); runs until the hub closes it."""
        timeout = httpx.Timeout(None, connect=5.0)
        with self._open("/stream", {"q": q}, timeout=timeout) as response:
            yield from sse_events(response)

    def pcap(self, out: BinaryIO, q: str = "", since: float | str | None = None,
             progress: Callable[[int], None] | None = None,
             until: float | str | None = None) -> tuple[int, str | None]:
        """Stream the merged pcap into `out`; returns (bytes written, workers that failed)."""
        total = 0
        with self._open("/pcap", {"q": q, "since": since, "until": until},
                        timeout=httpx.Timeout(300.0, connect=5.0)) as response:
            partial = response.headers.get("x-shark-partial")
            for chunk in response.iter_bytes():
                out.write(chunk)
                total += len(chunk)
                if progress is not None:
                    progress(total)
        return total, partial


    def json_get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._json(path, params)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, answered whole; a transport failure is HubUnreachable and a 401 the
        hub's HubError (the token), any other status is the caller's to read."""
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise HubUnreachable(self.url, _reason(error)) from error
        except httpx.TransportError as error:
            raise HubUnreachable(self.url, f"connection lost: {_reason(error)}") from error
        if response.status_code == 401:
            raise self.error(response)
        return response

    def post_json(self, path: str, body: Any, timeout: float | None = None) -> Any:
        """POST a JSON body; the hub's JSON answer, or a HubError with its reason."""
        extra = {"timeout": httpx.Timeout(timeout, connect=5.0)} if timeout is not None else {}
        response = self.request("POST", path, json=body, **extra)
        if response.status_code >= 400:
            raise self.error(response)
        return response.json() if response.content else None

    def download(self, path: str, out: Path) -> int:
        """GET `path` into the file `out` (written whole or not at all); returns its size."""
        part = out.with_name(out.name + ".part")
        total = 0
        try:
            with self._open(path, timeout=httpx.Timeout(300.0, connect=5.0)) as response, open(part, "wb") as file:
                for chunk in response.iter_bytes():
                    file.write(chunk)
                    total += len(chunk)
            part.replace(out)
        finally:
            part.unlink(missing_ok=True)
        return total


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) of an SSE response; data decoded from JSON where it is JSON."""
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    yield event, json.loads(text)
                except ValueError:
                    yield event, text
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
