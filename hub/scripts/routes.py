"""/api/v1/scripts: manage scripts, read their console, their pcap snapshots, trigger hooks."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath
from litestar.response import File
from litestar.types import ASGIApp
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import JSONResponse

from hub.api import API, PCAP_MEDIA_TYPE
from hub.errors import BadRequest
from hub.inject import Injected
from hub.params import json_body
from hub.scripts.service import ScriptConflict, ScriptNotFound, ScriptRejected, Scripting
from hub.scripts.store import StoreError

SSE_PING_S = 15
MAX_LOG_LINES = 2000
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pcap$")


def _rejected(error: ScriptRejected) -> BadRequest:
    if error.syntax is not None:
        return BadRequest(str(error), line=error.syntax.line, column=error.syntax.column)
    return BadRequest(str(error))


def _object(raw: bytes) -> dict[str, Any]:
    body = json_body(raw)
    if not isinstance(body, dict):
        raise BadRequest('body: expected a JSON object, e.g. {"name": "...", "code": "..."}')
    return body


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise BadRequest(f"{name}: unknown field; expected {', '.join(allowed)}")


def _not_found(name: str) -> NotFoundException:
    return NotFoundException(f"no script named {name!r}")


def _log_query(params: dict[str, str]) -> tuple[str | None, int, bool]:
    """/scripts/logs' parameters: (script, limit, follow); the last problem found is told."""
    problem = None
    for name in params:
        if name not in ("script", "limit", "follow"):
            problem = f"{name}: unknown query parameter; expected script, limit or follow"
    limit = 100
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            problem = f"limit: {params['limit']!r} is not a whole number"
        else:
            if not 1 <= limit <= MAX_LOG_LINES:
                problem = f"limit: {limit} is outside 1-{MAX_LOG_LINES}"
    follow = params.get("follow", "false").lower()
    if follow not in ("true", "false", "1", "0", ""):
        problem = f"follow: {params['follow']!r}; expected true or false"
    if problem is not None:
        raise BadRequest(problem)
    return params.get("script") or None, limit, follow in ("true", "1")


class ScriptsController(Controller):
    path = f"{API}/scripts"

    @get()
    async def list_scripts(self, scripting: Injected[Scripting]) -> dict[str, Any]:
        """Every script with its status (without code), and the scripting settings and counters."""
        return scripting.overview()

    @post(status_code=201)
    async def create_script(self, request: Request,
                            scripting: Injected[Scripting]) -> Response[dict[str, Any]]:
        """A new script: {name, code, enabled?}; 409 when the name is taken."""
        body = _object(await request.body())
        _only(body, ("name", "code", "enabled"))
        if "name" not in body:
            raise BadRequest("name: missing")
        try:
            await scripting.put(body["name"], body.get("code"), body.get("enabled"), create_only=True)
        except ScriptRejected as error:
            raise _rejected(error) from None
        except ScriptConflict:
            raise HTTPException(status_code=409, detail=f"name: a script named {body['name']!r} exists; "
                                                        "PUT /api/v1/scripts/NAME replaces it") from None
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None
        return Response(scripting.view(body["name"]), status_code=201)

    @get("/{name:str}")
    async def get_script(self, name: FromPath[str], scripting: Injected[Scripting]) -> dict[str, Any]:
        """A script, its code and its status (last error, jobs, why it was disabled)."""
        try:
            return scripting.view(name)
        except ScriptNotFound:
            raise _not_found(name) from None

    @put("/{name:str}")
    async def put_script(self, name: FromPath[str], request: Request,
                         scripting: Injected[Scripting]) -> Response[dict[str, Any]]:
        """Create or replace a script, or enable/disable it: {code?, enabled?}."""
        body = _object(await request.body())
        _only(body, ("code", "enabled"))
        try:
            created = await scripting.put(name, body.get("code"), body.get("enabled"))
        except ScriptRejected as error:
            raise _rejected(error) from None
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None
        return Response(scripting.view(name), status_code=201 if created else 200)

    @delete("/{name:str}", status_code=204)
    async def delete_script(self, name: FromPath[str], scripting: Injected[Scripting]) -> None:
        try:
            await scripting.delete(name)
        except ScriptNotFound:
            raise _not_found(name) from None
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None

    @post("/{name:str}/jobs/{job:str}/run", status_code=200)
    async def run_job(self, name: FromPath[str], job: FromPath[str],
                      scripting: Injected[Scripting]) -> dict[str, Any]:
        """Run one of a script's jobs now: {ok, error}."""
        try:
            error = await scripting.run_job(name, job)
        except ScriptNotFound:
            raise NotFoundException(f"no running script named {name!r}") from None
        except LookupError:
            raise NotFoundException(f"script {name!r} has no job named {job!r}") from None
        return {"ok": error is None, "error": error}

    @post("/actions", status_code=202)
    async def hub_action(self, request: Request, scripting: Injected[Scripting]) -> dict[str, Any]:
        """onHubAction(action, data) in every script that has it: {action, data}."""
        body = _object(await request.body())
        _only(body, ("action", "data"))
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("action: expected a non-empty string")
        scripting.hub_action(action, body.get("data"))
        return {"action": action, "queued": True}

    @get("/snapshots")
    async def list_snapshots(self, scripting: Injected[Scripting]) -> dict[str, Any]:
        """The pcap files pcap.snapshot() wrote."""
        return {"snapshots": scripting.actions.snapshots(), "directory": str(scripting.actions.snapshots_dir or "")}

    @get("/snapshots/{name:str}")
    async def get_snapshot(self, name: FromPath[str], scripting: Injected[Scripting]) -> File:
        return File(path=_snapshot_path(scripting, name), filename=name, media_type=PCAP_MEDIA_TYPE)

    @delete("/snapshots/{name:str}", status_code=204)
    async def delete_snapshot(self, name: FromPath[str], scripting: Injected[Scripting]) -> None:
        _snapshot_path(scripting, name).unlink(missing_ok=True)

    @get("/logs", include_in_schema=False)
    async def logs(self, request: Request, scripting: Injected[Scripting]) -> ASGIApp:
        """The scripts' console: {lines: [...]}, or with follow=true SSE `event: log`."""
        script, limit, follow = _log_query(dict(request.query_params))
        if not follow:
            lines = [msgspec.to_builtins(line) for line in scripting.logs.recent(script, limit)]
            return JSONResponse({"lines": lines})

        async def events() -> AsyncIterator[ServerSentEvent]:
            async for line, lost in scripting.logs.follow(script, limit):
                if lost:
                    yield ServerSentEvent(data=json.dumps({"lost": lost}), event="lost")
                yield ServerSentEvent(data=msgspec.json.encode(line).decode(), event="log", id=str(line.seq))
        return EventSourceResponse(events(), ping=SSE_PING_S,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _snapshot_path(scripting: Scripting, name: str) -> Path:
    directory = scripting.actions.snapshots_dir
    if not SNAPSHOT_NAME.match(name) or directory is None or not (directory / name).is_file():
        raise NotFoundException(f"no snapshot named {name!r}")
    return directory / name
