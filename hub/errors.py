"""The hub's error model, in one place: every refusal is `{error, detail, ...}` with a status.

Handlers raise `HubError` (or Litestar's HTTPException, e.g. NotFoundException); the app's one
exception handler, `error_response`, writes the body.
"""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Request, Response
from litestar.exceptions import HTTPException

from hub.workers import WorkerClient, WorkerError, describe

REASONS = {400: "bad request", 404: "not found", 409: "conflict", 410: "gone",
           500: "internal error", 502: "bad gateway", 503: "unavailable"}


class HubError(HTTPException):
    """An answer that is not a success; `fields` follow `detail` in the body (e.g. the
    column of a bad query, the line of a script's syntax error)."""

    def __init__(self, detail: str, status_code: int | None = None, headers: dict[str, str] | None = None,
                 **fields: Any) -> None:
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.fields = fields


class BadRequest(HubError):
    status_code = 400


class BadGateway(HubError):
    status_code = 502


class Unavailable(HubError):
    status_code = 503


def error_body(status_code: int, detail: Any, **extra: Any) -> dict[str, Any]:
    return {"error": REASONS.get(status_code, "error"), "detail": detail, **extra}


def error_response(request: Request, exc: HTTPException) -> Response[dict[str, Any]]:
    """The app's exception handler for every HTTPException."""
    if isinstance(exc, HubError):
        return Response(error_body(exc.status_code, exc.detail, **exc.fields), status_code=exc.status_code,
                        headers=exc.headers)
    # Litestar's own (404, 405, ...) answered as the hub always answered them: without their headers
    return Response(error_body(exc.status_code, exc.detail), status_code=exc.status_code)


def from_worker(error: WorkerError | httpx.HTTPError, client: WorkerClient | None) -> HTTPException:
    """A worker's failure as the hub's answer: its 4xx passed on, anything else a 502."""
    if isinstance(error, WorkerError) and error.status is not None and error.status < 500:
        detail = error.body.get("detail") if isinstance(error.body, dict) else str(error)
        return HTTPException(status_code=error.status, detail=detail or str(error))
    where = f"worker {client.node or '?'} ({client.url})" if client else "worker"
    return BadGateway(f"{where}: {describe(error)}")
