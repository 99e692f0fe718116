"""GET /healthz: the worker's data-free health for probes, outside /api/v1 and without the token
(shark/auth.py lets it through): 200 while the process serves."""

from __future__ import annotations

from litestar import MediaType, get

from shark.auth import HEALTH_PATH


@get(HEALTH_PATH, media_type=MediaType.TEXT, include_in_schema=False, sync_to_thread=False)
def healthz() -> str:
    return "ok\n"
