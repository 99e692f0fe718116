"""What a hub is started with (`python -m hub` options, or a test's choice)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.edgemetrics import DEFAULT_MAX_EDGES
from hub.params import MAX_LIMIT as MAX_QUERY_ROWS
from hub.rowbudget import DEFAULT_MAX_HELD_ROWS, WAIT_S as HELD_ROWS_WAIT_S
from hub.snapshots import DEFAULT_LIMIT as SNAPSHOT_LIMIT
from hub.stream import MAX_LIVE_CLIENTS, MAX_LIVE_QUERIES

if TYPE_CHECKING:
    from hub.kube.cluster import KubeSettings     # the kubernetes client only in cluster mode
    from hub.scripts.service import ScriptSettings

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
    kube_settings: KubeSettings | None = None   # None: its defaults
    scripts: ScriptSettings | None = None   # None: its defaults
    token: str | None = None                # the installation's token: asked of clients, sent to workers
    allowed_hosts: list[str] = field(default_factory=list)   # Host names served besides loopback's
    metrics_edges: int = DEFAULT_MAX_EDGES  # service-map edges with /metrics series of their own
    snapshot_limit: int = SNAPSHOT_LIMIT    # bytes all traffic snapshots may use (hub/snapshots.py)
    max_live_clients: int = MAX_LIVE_CLIENTS  # SSE + WebSocket clients at once
    max_live_queries: int = MAX_LIVE_QUERIES  # distinct live queries at once
    max_query_rows: int = MAX_QUERY_ROWS      # rows one query (limit=) may ask for and the hub hold
    max_held_rows: int = DEFAULT_MAX_HELD_ROWS  # rows whole answers (/har, ...) hold at once, all requests
    held_rows_wait_s: float = HELD_ROWS_WAIT_S  # how long a request waits for them before a 503
