"""/api/v1/scripts: manage scripts, read their console, their pcap snapshots, trigger hooks."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.exceptions import HTTPException, NotFoundException
from litestar.handlers import asgi
from litestar.response import File
from litestar.types import Receive, Scope, Send
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import JSONResponse

from hub.scripts.service import ScriptConflict, ScriptNotFound, ScriptRejected, Scripting
from hub.scripts.store import StoreError

API = "/api/v1"
SSE_PING_S = 15
MAX_LOG_LINES = 2000
SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.pcap$")
PCAP_MEDIA_TYPE = "application/vnd.tcpdump.pcap"


def _bad(detail: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"error": "bad request", "detail": detail, **extra}, status_code=400)


def _rejected(error: ScriptRejected) -> Response[dict[str, Any]]:
    extra: dict[str, Any] = {}
    if error.syntax is not None:
        extra = {"line": error.syntax.line, "column": error.syntax.column}
    return _bad(str(error), **extra)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise HTTPException(status_code=400, detail=f"body: not valid JSON ({error})") from None
    if not isinstance(body, dict):
        raise HTTPException(status_code=400, detail='body: expected a JSON object, e.g. {"name": "...", "code": "..."}')
    return body


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for name in body:
        if name not in allowed:
            raise HTTPException(status_code=400, detail=f"{name}: unknown field; expected {', '.join(allowed)}")


def _not_found(name: str) -> NotFoundException:
    return NotFoundException(f"no script named {name!r}")


def script_routes(scripting: Scripting) -> list[Any]:
    @get(f"{API}/scripts")
    async def list_scripts() -> dict[str, Any]:
        """Every script with its status (without code), and the scripting settings and counters."""
        return scripting.overview()

    @post(f"{API}/scripts", status_code=201)
    async def create_script(request: Request) -> Response[dict[str, Any]]:
        """A new script: {name, code, enabled?}; 409 when the name is taken."""
        body = _object(await request.body())
        _only(body, ("name", "code", "enabled"))
        if "name" not in body:
            return _bad("name: missing")
        try:
            await scripting.put(body["name"], body.get("code"), body.get("enabled"), create_only=True)
        except ScriptRejected as error:
            return _rejected(error)
        except ScriptConflict:
            raise HTTPException(status_code=409, detail=f"name: a script named {body['name']!r} exists; "
                                                        "PUT /api/v1/scripts/NAME replaces it") from None
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None
        return Response(scripting.view(body["name"]), status_code=201)

    @get(f"{API}/scripts/{{name:str}}")
    async def get_script(request: Request) -> dict[str, Any]:
        """A script, its code and its status (last error, jobs, why it was disabled)."""
        name = request.path_params["name"]
        try:
            return scripting.view(name)
        except ScriptNotFound:
            raise _not_found(name) from None

    @put(f"{API}/scripts/{{name:str}}")
    async def put_script(request: Request) -> Response[dict[str, Any]]:
        """Create or replace a script, or enable/disable it: {code?, enabled?}."""
        name = request.path_params["name"]
        body = _object(await request.body())
        _only(body, ("code", "enabled"))
        try:
            created = await scripting.put(name, body.get("code"), body.get("enabled"))
        except ScriptRejected as error:
            return _rejected(error)
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None
        return Response(scripting.view(name), status_code=201 if created else 200)

    @delete(f"{API}/scripts/{{name:str}}", status_code=204)
    async def delete_script(request: Request) -> None:
        name = request.path_params["name"]
        try:
            await scripting.delete(name)
        except ScriptNotFound:
            raise _not_found(name) from None
        except StoreError as error:
            raise HTTPException(status_code=500, detail=str(error)) from None

    @post(f"{API}/scripts/{{name:str}}/jobs/{{job:str}}/run", status_code=200)
    async def run_job(request: Request) -> dict[str, Any]:
        """Run one of a script's jobs now: {ok, error}."""
        name, job = request.path_params["name"], request.path_params["job"]
        try:
            error = await scripting.run_job(name, job)
        except ScriptNotFound:
            raise NotFoundException(f"no running script named {name!r}") from None
        except LookupError:
            raise NotFoundException(f"script {name!r} has no job named {job!r}") from None
        return {"ok": error is None, "error": error}

    @post(f"{API}/scripts/actions", status_code=202)
    async def hub_action(request: Request) -> dict[str, Any]:
        """onHubAction(action, data) in every script that has it: {action, data}."""
        body = _object(await request.body())
        _only(body, ("action", "data"))
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise HTTPException(status_code=400, detail="action: expected a non-empty string")
        scripting.hub_action(action, body.get("data"))
        return {"action": action, "queued": True}

    @get(f"{API}/scripts/snapshots")
    async def list_snapshots() -> dict[str, Any]:
        """The pcap files pcap.snapshot() wrote."""
        return {"snapshots": scripting.actions.snapshots(), "directory": str(scripting.actions.snapshots_dir or "")}

    def _snapshot_path(name: str) -> Any:
        directory = scripting.actions.snapshots_dir
        if not SNAPSHOT_NAME.match(name) or directory is None or not (directory / name).is_file():
            raise NotFoundException(f"no snapshot named {name!r}")
        return directory / name

    @get(f"{API}/scripts/snapshots/{{name:str}}")
    async def get_snapshot(request: Request) -> File:
        name = request.path_params["name"]
        return File(path=_snapshot_path(name), filename=name, media_type=PCAP_MEDIA_TYPE)

    @delete(f"{API}/scripts/snapshots/{{name:str}}", status_code=204)
    async def delete_snapshot(request: Request) -> None:
        _snapshot_path(request.path_params["name"]).unlink(missing_ok=True)

    @asgi(f"{API}/scripts/logs", is_mount=False, copy_scope=True)
    async def logs(scope: Scope, receive: Receive, send: Send) -> None:
        """The scripts' console: {lines: [...]}, or with follow=true SSE `event: log`."""
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
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
        script = params.get("script") or None
        if problem is not None:
            await JSONResponse({"error": "bad request", "detail": problem}, status_code=400)(scope, receive, send)  # type: ignore[arg-type]
            return
        if follow not in ("true", "1"):
            lines = [msgspec.to_builtins(line) for line in scripting.logs.recent(script, limit)]
            await JSONResponse({"lines": lines})(scope, receive, send)  # type: ignore[arg-type]
            return

        async def events() -> AsyncIterator[ServerSentEvent]:
            async for line, lost in scripting.logs.follow(script, limit):
                if lost:
                    yield ServerSentEvent(data=json.dumps({"lost": lost}), event="lost")
                yield ServerSentEvent(data=msgspec.json.encode(line).decode(), event="log", id=str(line.seq))
        response = EventSourceResponse(events(), ping=SSE_PING_S,
                                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response(scope, receive, send)  # type: ignore[arg-type]

    return [list_scripts, create_script, get_script, put_script, delete_script, run_job, hub_action,
            list_snapshots, get_snapshot, delete_snapshot, logs]
