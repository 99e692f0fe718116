"""The hub's HTTP API (ARCHITECTURE.md, Hub API): a Litestar app over a WorkerPool.

`create_app` builds the hub's parts once (hub/services.py) and hands them to the routes as
dependencies; each resource's routes are one controller (hub/api/, hub/targets.py,
hub/scripts/routes.py); every error answer is written by hub/errors.py.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router

from hub import VERSION
from hub.api.entries import EntriesController
from hub.api.export import ExportController
from hub.api.live import LiveController
from hub.api.snapshots import SnapshotsController
from hub.api.status import StatusController
from hub.auth import healthz, hub_policy
from hub.errors import error_response
from hub.rowbudget import releasing
from hub.scripts import ScriptsController
from hub.services import HubServices
from hub.settings import HubSettings
from hub.targets import TargetsController
from shark.auth import protect

__all__ = ["HubSettings", "create_app"]


def create_app(settings: HubSettings) -> Litestar:
    services = HubServices.build(settings)
    handlers: list[Any] = [healthz, EntriesController, ExportController, LiveController, StatusController,
                           TargetsController, ScriptsController, SnapshotsController]
    spa_dir = settings.spa_dir if settings.spa_dir is not None and (settings.spa_dir / "index.html").is_file() else None
    if spa_dir is not None:
        handlers.append(create_static_files_router(path="/", directories=[spa_dir], html_mode=True, name="spa"))
    app = Litestar(
        route_handlers=handlers,
        dependencies=services.dependencies(),
        lifespan=services.lifespans(),
        exception_handlers={HTTPException: error_response},
        openapi_config=OpenAPIConfig(title="kubectl-shark hub", version=VERSION, path="/schema"),
        logging_config=None,
        debug=False,
    )
    app.asgi_handler = releasing(app.asgi_handler)
    return protect(app, hub_policy(settings.token, settings.allowed_hosts, spa_dir))
